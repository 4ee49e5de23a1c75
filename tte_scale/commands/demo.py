"""`tte-scale demo`: the whole pipeline on the embedded synthetic cohort, stage by stage."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tte_scale.commands import add_config_arguments
from tte_scale.config import check, resolve_config_path
from tte_scale.errors import InputError, TteScaleError
from tte_scale.outputs import MARKER, check_not_input, mark, read_marker

HELP = "Run the whole pipeline on the embedded synthetic cohort"
DESCRIPTION = """\
Run every stage on the embedded synthetic cohort (sizes in configs/demo.yaml):

  synth  -> OUT/cohort    (MEDS + NIfTI CTs + scans.parquet + truth/)
  labels -> OUT/labels    (task vocabulary, bins, TTE arrays, benchmark labels)
  shard  -> OUT/shards    (WebDataset + Zarr via local Ray)
  train  -> OUT/pretrain  (DeepSpeed ZeRO on the CPU, exported encoder)
  supervised -> OUT/pretrain_supervised (the baseline: same encoder and budget, trained on
            the benchmark labels only, `--set objective=supervised`)
  eval   -> OUT/eval      (probes: tte vs supervised vs random init vs the oracle; report.md)

Each stage is the same `tte-scale <stage>` command a user runs by hand (printed before it
runs). Resumable: a stage whose command is unchanged and that finished before is skipped;
--fresh redoes everything. --out must be absent, empty or a folder made by `tte-scale demo`
(it carries its marker): each stage replaces only what that stage wrote there.

`--set` takes the demo's keys (configs/demo.yaml) and the pretraining config's: those go to both
training runs, e.g. `--set model.name=densenet121_3d` trains the paper's DenseNet instead of the
ViT (its ViT-only settings are reported unused), `--set max_steps=300` a shorter budget.

Another seed on the same cohort: `--set train_seed=1 --set cohort_from=runs/demo` trains and
evaluates in --out with seed 1 on runs/demo's cohort, labels and shards (checked against this
config, never rewritten); `python -m tte_scale.benchmarks.bench_demo --same-cohort` does it for
several seeds and pools them.
"""

STAMPS = ".stages"
COMMAND = "demo"
"""Owner name in the ``tte_scale.outputs`` marker of the demo's folder."""


@dataclass(kw_only=True, slots=True)
class DemoConfig:
    """Sizes and configs of the demo run."""

    subjects: int = 320
    """Subjects of the synthetic cohort (each has 1-2 scans)."""
    seed: int = 0
    """Seed of the cohort, and of the training runs and the evaluation unless ``train_seed`` is set."""
    train_seed: int | None = None
    """Seed of the training runs (initialization, data order) and of the evaluation's bootstrap
    (default: ``seed``). With ``cohort_from`` it repeats pretraining on one cohort: what the
    initialization and data order alone change (`python -m tte_scale.benchmarks.bench_demo
    --same-cohort`)."""
    cohort_from: str = ""
    """A finished `tte-scale demo` folder whose cohort, labels and shards this run uses instead of
    making its own. They must be what this config makes: its synth, labels and shard commands
    (with that folder's paths) and config files are compared with the folder's stage records, and
    a mismatch is refused. Nothing in that folder is written."""
    profile: str = "compact"
    """`tte-scale synth --profile`: compact (the INSPECT-like cohort) or sparse (one small
    lesion drives two outcomes; configs/demo_sparse.yaml)."""
    workers: int = 2
    """Worker processes of `synth` and Ray workers of `shard`."""
    tasks: int = 1024
    """Pretraining tasks (codes) kept by `tte-scale labels`."""
    bins: int = 8
    """Piecewise-exponential time bins."""
    shard_config: str = "configs/shard/demo.yaml"
    """Sharding config (canonical shape/spacing, codec, shard sizes)."""
    pretrain_config: str = "configs/pretrain/demo.yaml"
    """Pretraining config (model, optimizer, ZeRO stage, steps)."""
    pretrain_overrides: list[str] = field(default_factory=list)
    """Extra `--set KEY=VALUE` for `tte-scale train`."""
    task_set: str = "configs/tasks/inspect.yaml"
    """Benchmark task set."""
    bootstrap: int = 300
    """Bootstrap resamples for the evaluation CIs."""
    supervised: bool = True
    """Also pretrain the supervised baseline (same config, ``objective=supervised``) and compare."""

    def __post_init__(self) -> None:
        check(self.subjects >= 20, "subjects", f"needs >= 20 so every split has scans, got {self.subjects}")
        check(self.tasks > 0, "tasks", f"must be > 0, got {self.tasks}")
        check(self.bins > 0, "bins", f"must be > 0, got {self.bins}")
        check(self.workers > 0, "workers", f"must be > 0, got {self.workers}")
        check(self.bootstrap >= 0, "bootstrap", f"must be >= 0, got {self.bootstrap}")
        check(
            self.train_seed is None or isinstance(self.train_seed, int),
            "train_seed",
            f"an integer or null, got {self.train_seed!r}",
        )
        from tte_scale.synth.config import PROFILES

        check(self.profile in PROFILES, "profile", f"one of {sorted(PROFILES)}, got {self.profile!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder (default runs/demo)")
    add_config_arguments(parser)
    parser.add_argument("--fresh", action="store_true", help="redo every stage even if its outputs exist")
    parser.add_argument(
        "--until", choices=["synth", "labels", "shard", "train", "supervised", "eval"], help="stop after this stage"
    )


def _stages(cfg: DemoConfig, out: Path) -> list[tuple[str, list[str], Path]]:
    """(name, arguments of `tte-scale`, the output whose existence marks the stage done).

    With ``cfg.cohort_from`` the data stages (``DATA_STAGES``) are that folder's: their arguments
    name its paths, and the later stages read from there."""
    data = Path(cfg.cohort_from) if cfg.cohort_from else out
    cohort, labels, shards = (data / n for n in ("cohort", "labels", "shards"))
    pre, sup, ev = (out / n for n in ("pretrain", "pretrain_supervised", "eval"))
    seed = cfg.seed if cfg.train_seed is None else cfg.train_seed
    common = [f"data.shards_dir={shards}", f"data.labels_dir={labels}", f"seed={seed}", *cfg.pretrain_overrides]
    train_sets = [f"out_dir={pre}", *common]
    sup_sets = [f"out_dir={sup}", *common, "objective=supervised"]
    baselines = ["--baseline", "random"]
    curves = ["--loss-curve", f"tte={pre / 'metrics.jsonl'}"]
    if cfg.supervised:
        baselines += ["--baseline", f"supervised={sup / 'encoder'}"]
        curves += ["--loss-curve", f"supervised={sup / 'metrics.jsonl'}"]
    stages = [
        (
            "synth",
            [
                "synth",
                "--out",
                str(cohort),
                "--subjects",
                str(cfg.subjects),
                "--seed",
                str(cfg.seed),
                "--workers",
                str(cfg.workers),
                *(["--profile", cfg.profile] if cfg.profile != "compact" else []),
                "--overwrite",
            ],
            cohort / "scans.parquet",
        ),
        (
            "labels",
            [
                "labels",
                "--meds",
                str(cohort),
                "--scans",
                str(cohort / "scans.parquet"),
                "--out",
                str(labels),
                "--tasks",
                str(cfg.tasks),
                "--bins",
                str(cfg.bins),
                "--bench-tasks",
                cfg.task_set,
                "--overwrite",
            ],
            labels / "bins.json",
        ),
        (
            "shard",
            [
                "shard",
                "--scans",
                str(cohort / "scans.parquet"),
                "--labels",
                str(labels),
                "--out",
                str(shards),
                "--config",
                cfg.shard_config,
                "--workers",
                str(cfg.workers),
                "--overwrite",
            ],
            shards / "manifest" / "build.json",
        ),
        (
            "train",
            ["train", "--config", cfg.pretrain_config, *[a for s in train_sets for a in ("--set", s)]],
            pre / "encoder" / "config.json",
        ),
    ]
    if cfg.supervised:
        stages.append(
            (
                "supervised",
                ["train", "--config", cfg.pretrain_config, *[a for s in sup_sets for a in ("--set", s)]],
                sup / "encoder" / "config.json",
            )
        )
    stages.append(
        (
            "eval",
            [
                "eval",
                "--checkpoint",
                str(pre / "encoder"),
                "--shards",
                str(shards),
                "--labels",
                str(labels),
                "--out",
                str(ev),
                "--tasks",
                cfg.task_set,
                *baselines,
                "--truth",
                str(cohort / "truth"),
                *curves,
                "--bootstrap",
                str(cfg.bootstrap),
                "--seed",
                str(seed),
            ],
            ev / "summary.json",
        )
    )
    return stages


def _digest(argv: list[str], files: list[str]) -> str:
    h = hashlib.sha256(json.dumps(argv).encode())
    for f in files:
        p = resolve_config_path(f)
        h.update(p.read_bytes() if p.is_file() else f.encode())
    return h.hexdigest()[:16]


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(the demo's own ``--set``s, those for `tte-scale train`): a key whose first part is a
    pretraining setting and not a demo one (``model.name=densenet121_3d``, ``max_steps=300``) goes
    to both training runs, after ``pretrain_overrides``; anything else is the demo's (an unknown
    key is refused there, naming it)."""
    import dataclasses

    from tte_scale.train.config import PretrainConfig

    demo = {f.name for f in dataclasses.fields(DemoConfig)}
    pretrain = {f.name for f in dataclasses.fields(PretrainConfig)}
    own, train = [], []
    for o in overrides:
        key = o.partition("=")[0].strip().split(".")[0]
        (train if key in pretrain and key not in demo else own).append(o)
    return own, train


def run(args: argparse.Namespace) -> int:
    from tte_scale.config import load_config

    own, train = split_overrides(args.overrides)
    cfg = load_config(DemoConfig, args.config or "configs/demo.yaml", own)
    cfg.pretrain_overrides = [*cfg.pretrain_overrides, *train]
    out = Path(args.out)
    _check_out(out, [args.config, *(resolve_config_path(f) for f in _config_files(cfg))])
    if cfg.cohort_from:
        check_not_input(out, [cfg.cohort_from], inside_too=True)
    (out / STAMPS).mkdir(parents=True, exist_ok=True)
    mark(out, COMMAND)
    # A single-process "cluster" for DeepSpeed on the CPU; a user's own launcher overrides these.
    # One intra-op thread per process unless the user says otherwise: every stage already runs
    # `workers` processes or small tensors, and on shared cores extra OpenMP threads spin
    # waiting for each other (a 275x96 probe fit ran 20x slower with 2 threads on busy cores).
    env = dict(
        os.environ,
        DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    changed = args.fresh
    t_all = time.time()
    stages = _stages(cfg, out)
    # With cohort_from, the digests of its data stages enter every later stage's: a cohort rebuilt
    # there redoes training and evaluation here.
    upstream = _check_cohort_from(cfg) if cfg.cohort_from else []
    for name, sub in _TRAIN_DIRS.items():  # before any stage runs
        _check_trained_here(out / sub, out / STAMPS / f"{name}.json")
    for i, (name, argv, done_marker) in enumerate(stages, 1):
        if cfg.cohort_from and name in DATA_STAGES:
            print(f"[{i}/{len(stages)}] {name}: from {cfg.cohort_from} (checked: {done_marker})", flush=True)
            if args.until == name:
                break
            continue
        stamp = out / STAMPS / f"{name}.json"
        digest = _digest([*argv, *upstream], _stage_files(cfg, name))
        old = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if not changed and old.get("digest") == digest and done_marker.exists():
            print(f"[{i}/{len(stages)}] {name}: up to date, skipped ({done_marker})", flush=True)
        else:
            changed = True  # every later stage depends on this one's outputs
            if name in _TRAIN_DIRS:
                _clear_checkpoints(out / _TRAIN_DIRS[name], stamp)
            # Written before the stage runs: from now on what it writes is this demo's to replace.
            stamp.write_text(json.dumps({"digest": None, "argv": argv}))
            print(f"[{i}/{len(stages)}] {name}: tte-scale {shlex.join(argv)}", flush=True)
            t0 = time.time()
            rc = subprocess.call([sys.executable, "-m", "tte_scale.cli", *argv], env=env)
            if rc != 0:
                raise TteScaleError(
                    f"stage {name!r} failed with exit status {rc}; fix the cause and re-run "
                    f"`tte-scale demo --out {out}` (finished stages are kept)"
                )
            stamp.write_text(json.dumps({"digest": digest, "seconds": round(time.time() - t0, 1), "argv": argv}))
            print(f"[{i}/{len(stages)}] {name}: done in {time.time() - t0:.0f} s", flush=True)
        if args.until == name:
            break
    summary = out / "eval" / "summary.json"
    if summary.is_file() and args.until in (None, "eval"):
        print(_headline(json.loads(summary.read_text())))
    print(f"demo finished in {time.time() - t_all:.0f} s; report: {out / 'eval' / 'report.md'}")
    return 0


DATA_STAGES = ("synth", "labels", "shard")


def _stage_files(cfg: DemoConfig, name: str) -> list[str]:
    """The config files a stage reads: a new pretraining config must not redo the cohort."""
    return {
        "labels": [cfg.task_set],
        "shard": [cfg.shard_config],
        "train": [cfg.pretrain_config],
        "supervised": [cfg.pretrain_config],
        "eval": [cfg.task_set],
    }.get(name, [])


def _check_cohort_from(cfg: DemoConfig) -> list[str]:
    """The digests of ``cfg.cohort_from``'s data stages, once each is found finished there with
    the command and config files this config gives it; else an :class:`InputError` naming the
    stage. The folder may be named by another path than the one it was made with (relative,
    absolute, a link): its commands are compared under the path they recorded."""
    import dataclasses

    src = Path(cfg.cohort_from)
    owner = read_marker(src) if src.is_dir() else None
    if owner is None or owner.get("command") != COMMAND:
        raise InputError(f"cohort_from {src}: not a `tte-scale demo` output folder")
    records = {}
    for name in DATA_STAGES:
        stamp = src / STAMPS / f"{name}.json"
        records[name] = json.loads(stamp.read_text()) if stamp.is_file() else {}
    made_in = Path(_after(records["synth"].get("argv", []), "--out") or src / "cohort").parent
    root = str(made_in) if made_in.resolve() == src.resolve() else str(src)
    digests = []
    for name, argv, done_marker in _stages(dataclasses.replace(cfg, cohort_from=root), src):
        if name not in DATA_STAGES:
            continue
        rec = records[name]
        if not rec.get("digest") or not done_marker.exists():
            raise InputError(f"cohort_from {src}: its {name} stage has not finished (run `tte-scale demo` there first)")
        if rec["digest"] != _digest(argv, _stage_files(cfg, name)):
            raise InputError(
                f"cohort_from {src}: its {name} stage ran `tte-scale {shlex.join(rec.get('argv', []))}` or with other "
                f"config files, not what this config gives (`tte-scale {shlex.join(argv)}`)"
            )
        digests.append(rec["digest"])
    return digests


def _after(argv: list[str], flag: str) -> str | None:
    return next((b for a, b in zip(argv, argv[1:]) if a == flag), None)


def _headline(summary: dict) -> str:
    """Mean held-out AUROC / C-index over the tasks per model, 95% CIs (from eval's summary.json)."""
    lines = ["", "mean over the benchmark tasks (held_out, 95% bootstrap CI):"]
    for key, (v, lo, hi) in summary.get("mean_over_tasks", {}).items():
        if v is not None:
            ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
            lines.append(f"  {key:<32} {v:.3f}{ci}")
    for d in summary.get("tte_minus", []):
        ci = f" [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d["ci_low"] is not None else ""
        lines.append(f"  tte - {d['model']:<14} {d['probe']}/{d['metric']:<10} {d['diff']:+.3f}{ci}")
    return "\n".join(lines)


def _config_files(cfg: DemoConfig) -> list[str]:
    return [cfg.shard_config, cfg.pretrain_config, cfg.task_set]


def _check_out(out: Path, inputs: list) -> None:
    """The demo writes (and its stages replace) folders only inside an ``out`` it made itself.

    A folder that is not empty and lacks the demo's marker (``tte_scale.outputs``) is refused
    before any stage runs: a later stage would replace ``out/cohort``, ``out/labels``, ... and
    clear ``out/pretrain/checkpoints``."""
    check_not_input(out, [p for p in inputs if p is not None])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        owner = read_marker(out) if out.is_dir() else None
        if owner is None or owner.get("command") != COMMAND:
            found = f"written by `tte-scale {owner.get('command')}`" if owner else f"no {MARKER}"
            raise InputError(
                f"--out {out}: exists and is not a `tte-scale demo` output ({found}); choose another folder "
                "(or delete it yourself if it is an old demo run)"
            )


def _clear_checkpoints(pretrain: Path, stamp: Path) -> None:
    """A changed training stage starts from scratch: old checkpoints belong to other inputs.

    Only what this demo's own training stage wrote (its stamp says it ran into ``pretrain``):
    anything else there is refused, never deleted."""
    import shutil

    _check_trained_here(pretrain, stamp)
    for sub in _TRAIN_OUTPUTS[:-1]:
        shutil.rmtree(pretrain / sub, ignore_errors=True)
    metrics = pretrain / _TRAIN_OUTPUTS[-1]
    if metrics.exists():
        metrics.unlink()


# What `tte-scale train` writes into its out_dir (tb/ too: train refuses a folder holding a run).
_TRAIN_OUTPUTS = ("checkpoints", "encoder", "tb", "metrics.jsonl")
_TRAIN_DIRS = {"train": "pretrain", "supervised": "pretrain_supervised"}


def _check_trained_here(pretrain: Path, stamp: Path) -> None:
    """Refuse a training folder that holds something although this demo never started its
    stage there (the stamp is written when the stage starts)."""
    if not stamp.is_file() and pretrain.exists() and any(pretrain.iterdir()):
        raise InputError(
            f"{pretrain}: not written by this demo's training stage (no stamp {stamp}); refusing to clear "
            f"{', '.join(_TRAIN_OUTPUTS)} in it (move it away or delete it yourself)"
        )
