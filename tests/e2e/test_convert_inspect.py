"""From an INSPECT-shaped download to a first pretraining run, through the CLI only:
convert inspect -> convert meds -> convert ontology -> labels --bench-labels -> shard -> train -> eval.

The fixture is made from a synthetic cohort laid out the way the release is: study_mapping /
splits / labels TSVs dated 20250611 with TRUE / FALSE / Censored labels taken from the cohort's
ground truth, CT volumes as CTPA/PE<hex>.nii.gz, the EHR as MEDS 0.3 (patient_id) with the death
and inpatient-visit codes scrubbed, and the ontology as an Athena download (CONCEPT.csv,
CONCEPT_ANCESTOR.csv) instead of parent_codes. Nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "convert"))

from convert_fixtures import COLUMN_OF as COLUMN  # noqa: E402
from convert_fixtures import write_athena, write_tsv  # noqa: E402

CLI = [sys.executable, "-m", "tte_scale.cli"]
SCRUBBED = ("MEDS_DEATH", "Visit/IP")


def cli(*args, cwd=REPO, timeout=600):
    res = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert res.returncode == 0, (
        f"tte-scale {args[0]} {args[1] if len(args) > 1 else ''}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    return res.stdout


def make_download(syn: Path, root: Path) -> dict:
    """The release (images + tables), the EHR (MEDS 0.3, scrubbed) and an Athena download."""
    scans = pq.read_table(syn / "scans.parquet").to_pylist()
    split_of = dict(zip(*pq.read_table(syn / "metadata" / "subject_splits.parquet").to_pydict().values(), strict=True))
    release = root / "inspect"
    studies = []
    for i, s in enumerate(scans):
        study = str(20000 + i)
        image = f"PE{hash(s['scan_id']) & 0xFFFFFFFF:08x}{i:04x}"
        (release / "CTPA").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(syn / s["image_path"], release / "CTPA" / f"{image}.nii.gz")
        studies.append((study, s, image))
    write_tsv(
        release / "study_mapping_20250611.tsv",
        ["impression_id", "person_id", "procedure_DATETIME", "image_id"],
        [[st, s["subject_id"], s["prediction_time"].isoformat(sep=" "), im] for st, s, im in studies],
    )
    name = {"train": "train", "tuning": "valid", "held_out": "test"}
    write_tsv(
        release / "splits_20250611.tsv",
        ["impression_id", "split"],
        [[st, name[split_of[s["subject_id"]]]] for st, s, _ in studies],
    )
    truth = {(r["scan_id"], r["task"]): r["label"] for r in pq.read_table(syn / "truth" / "bench.parquet").to_pylist()}
    word = {True: "TRUE", False: "FALSE", None: "Censored"}
    write_tsv(
        release / "labels_20250611.tsv",
        ["impression_id", *COLUMN.values()],
        [[st, *[word[truth[(s["scan_id"], t)]] for t in COLUMN]] for st, s, _ in studies],
    )
    # The EHR: MEDS 0.3 (patient_id), one file per synth file, outcome codes scrubbed, no code metadata.
    ehr = root / "meds_omop_inspect"
    for f in sorted((syn / "data").rglob("*.parquet")):
        t = pq.read_table(f)
        t = t.filter(pc.invert(pc.is_in(t.column("code"), value_set=pa.array(SCRUBBED))))
        dest = ehr / "data" / f.relative_to(syn / "data")
        dest.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t.rename_columns(["patient_id" if n == "subject_id" else n for n in t.column_names]), dest)
    # Athena: every VOCAB/CODE of the synthetic ontology as a concept, its parents as ancestors.
    codes = pq.read_table(syn / "metadata" / "codes.parquet").to_pylist()
    ids = {c["code"]: 1000 + i for i, c in enumerate(codes) if "/" in c["code"]}
    athena = root / "athena"
    write_athena(
        athena,
        [(i, f"concept {c}", *c.split("/", 1), "S") for c, i in ids.items()],
        ancestors=[
            (ids[p], ids[c["code"]], 1)
            for c in codes
            if c["code"] in ids
            for p in (c["parent_codes"] or [])
            if p in ids
        ],
    )
    parents = {c["code"]: sorted(p for p in c["parent_codes"] or [] if p in ids) for c in codes if c["code"] in ids}
    return {"release": release, "ehr": ehr, "athena": athena, "truth": truth, "studies": studies, "parents": parents}


@pytest.mark.slow
def test_inspect_download_to_first_pretraining_run(tmp_path):
    cli("synth", "--out", tmp_path / "syn", "--subjects", 48, "--seed", 3, "--no-progress")
    d = make_download(tmp_path / "syn", tmp_path / "download")
    cohort, meds, labels = tmp_path / "cohort", tmp_path / "meds", tmp_path / "labels"

    out = cli("convert", "inspect", "--release", d["release"], "--out", cohort, "--no-progress")
    assert f"{len(d['studies'])} of {len(d['studies'])} studies" in out
    out = cli(
        "convert",
        "meds",
        "--input",
        d["ehr"],
        "--out",
        meds,
        "--splits",
        cohort / "subject_splits.parquet",
        "--no-progress",
    )
    assert "MEDS 0.3.0-0.3.2" in out
    out = cli("convert", "ontology", "--meds", meds, "--athena", d["athena"], "--no-progress")
    assert "not mapped" in out  # MEDS_BIRTH has no vocabulary prefix
    codes = pq.read_table(meds / "metadata" / "codes.parquet").to_pylist()
    got = {c["code"]: c["parent_codes"] for c in codes if c["parent_codes"]}
    assert got == {c: p for c, p in d["parents"].items() if p and c in {x["code"] for x in codes}}

    common = ["--meds", meds, "--scans", cohort / "scans.parquet", "--tasks", 64, "--bins", 4, "--no-progress"]
    out = cli("labels", *common, "--bench-labels", cohort / "bench_labels.parquet", "--out", labels)
    assert "bench labels of " in out and "mortality_12m" in out
    scan_of = {st: s["scan_id"] for st, s, _ in d["studies"]}
    bench = pq.read_table(labels / "bench.parquet").to_pylist()
    assert bench and all(r["label"] == d["truth"][(scan_of[r["scan_id"]], r["task"])] for r in bench)
    # The trap the release labels avoid: from the scrubbed codes, no death and no readmission at all.
    cli("labels", *common, "--out", tmp_path / "labels_from_codes")
    recomputed = pq.read_table(tmp_path / "labels_from_codes" / "bench.parquet").to_pylist()
    assert not any(r["label"] for r in recomputed if r["task"].startswith(("mortality", "readmission")))
    assert any(r["label"] for r in bench if r["task"].startswith(("mortality", "readmission")))

    shards = tmp_path / "shards"
    cli(
        "shard", "--scans", cohort / "scans.parquet", "--labels", labels, "--out", shards,
        "--config", "configs/shard/demo.yaml", "--workers", 0, "--no-progress",
    )  # fmt: skip
    pre = tmp_path / "pretrain"
    sets = [
        f"out_dir={pre}", f"data.shards_dir={shards}", f"data.labels_dir={labels}", "max_steps=4",
        "checkpoint.every_steps=2", "eval.every_steps=2", "data.num_workers=0", "optim.warmup_steps=1",
        "optim.global_batch_size=4",
    ]  # fmt: skip
    cli("train", "--config", "configs/pretrain/demo.yaml", *[a for s in sets for a in ("--set", s)], timeout=900)
    assert (pre / "encoder" / "model.safetensors").is_file()
    ev = tmp_path / "eval"
    cli(
        "eval", "--checkpoint", pre / "encoder", "--shards", shards, "--labels", labels, "--out", ev,
        "--baseline", "random", "--bootstrap", 10, timeout=900,
    )  # fmt: skip
    assert "mortality_12m" in (ev / "report.md").read_text()
