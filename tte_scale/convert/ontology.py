"""`tte-scale convert ontology`: parent codes from an OMOP vocabulary (Athena) download.

Athena (athena.ohdsi.org) ships tab-separated files with a header and no quoting:

* ``CONCEPT.csv`` (required): ``concept_id``, ``concept_name``, ``vocabulary_id``,
  ``concept_code``, ``standard_concept`` ... A concept's MEDS code is ``vocabulary_id/concept_code``
  (how the OMOP -> MEDS ETLs write codes, e.g. ``SNOMED/59282003``, ``ICD10CM/I26.99``).
* ``CONCEPT_ANCESTOR.csv``: ``ancestor_concept_id``, ``descendant_concept_id``,
  ``min_levels_of_separation``; rows at separation 1 are direct parents.
* ``CONCEPT_RELATIONSHIP.csv``: ``concept_id_1``, ``concept_id_2``, ``relationship_id``. ``Maps to``
  from a non-standard concept (an ICD10CM code, say) to its standard concept is a parent edge;
  ``Is a`` rows give the hierarchy when ``CONCEPT_ANCESTOR.csv`` is absent.

At least one of the two relation files is needed. These are the edges FEMR's ``Ontology`` reads
(the paper's code): ``Maps to`` for non-standard concepts plus direct ancestors.

Every code of the dataset is looked up; the codes found and all their ancestors get rows in
``codes.parquet`` with ``parent_codes`` (sorted) and, where the input had none, the concept name
as ``description``. Codes that could not be mapped keep what they had and are reported
(``ontology_unmapped.parquet``: ``code``, ``reason``): ``no_vocabulary_prefix`` (no ``/``, e.g.
``MEDS_DEATH``), ``unknown_vocabulary`` (the prefix is no ``vocabulary_id`` of the download),
``not_in_vocabulary`` (the vocabulary is there, the code is not). The relation files are read in
blocks and only the edges kept (about 16 bytes each), never the whole file.
"""

from __future__ import annotations

import json
import time as _time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tte_scale.convert.staging import StagedOutput, replace_file
from tte_scale.errors import InputError
from tte_scale.outputs import read_marker

__all__ = ["convert_ontology", "read_athena", "Athena", "parent_table", "UNMAPPED_SCHEMA"]

COMMAND = "convert ontology"
UNMAPPED_SCHEMA = pa.schema([("code", pa.string()), ("reason", pa.string())])
_CONCEPT = ("concept_id", "concept_name", "vocabulary_id", "concept_code", "standard_concept")
_ANCESTOR = ("ancestor_concept_id", "descendant_concept_id", "min_levels_of_separation")
_RELATIONSHIP = ("concept_id_1", "concept_id_2", "relationship_id")


def _athena_file(root: Path, name: str) -> Path | None:
    for p in (root / name, root / name.lower()):
        if p.is_file():
            return p
    return None


def _reader(path: Path, columns: tuple[str, ...], types: dict[str, pa.DataType]):
    import pyarrow.csv as pacsv

    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False)
    try:
        with pacsv.open_csv(path, parse_options=parse) as r:
            names = r.schema.names
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: cannot read as a tab-separated Athena file: {exc}") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing} of an Athena download; has {names}")
    convert = pacsv.ConvertOptions(
        include_columns=list(columns), column_types=types, strings_can_be_null=True, null_values=[""]
    )
    return pacsv.open_csv(
        path, parse_options=parse, convert_options=convert, read_options=pacsv.ReadOptions(block_size=1 << 26)
    )


def _batches(path: Path, columns, types, bar):
    try:
        with _reader(path, columns, types) as reader:
            for batch in reader:
                bar.update(batch.num_rows)
                yield batch
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"{path}: bad value: {exc}") from None


@dataclass
class Athena:
    """The parts of a download the parent codes need (concept ids sorted)."""

    concept_id: np.ndarray
    """int64 [C], sorted."""
    code: pa.Array
    """string [C]: ``vocabulary_id/concept_code``."""
    name: pa.Array
    """string [C]: ``concept_name``."""
    vocabularies: set[str]
    child: np.ndarray
    """int64 [E] concept ids: ``parent[e]`` is a direct parent of ``child[e]`` (sorted by child)."""
    parent: np.ndarray
    sources: list[str]
    """File names that gave edges."""


def read_athena(root: str | Path, progress: bool = True) -> Athena:
    """Read the concepts and the parent edges of an Athena download folder."""
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: Athena folder not found")
    concept_path = _athena_file(root, "CONCEPT.csv")
    if concept_path is None:
        raise InputError(f"{root}: no CONCEPT.csv (an Athena download holds CONCEPT.csv, CONCEPT_ANCESTOR.csv, ...)")
    ancestor_path = _athena_file(root, "CONCEPT_ANCESTOR.csv")
    relation_path = _athena_file(root, "CONCEPT_RELATIONSHIP.csv")
    if ancestor_path is None and relation_path is None:
        raise InputError(f"{root}: neither CONCEPT_ANCESTOR.csv nor CONCEPT_RELATIONSHIP.csv: no parent relation")
    bar = tqdm(desc="athena rows", unit=" rows", unit_scale=True, disable=not progress, dynamic_ncols=True)
    ids, codes, names, standard = [], [], [], []
    s = pa.string()
    for b in _batches(concept_path, _CONCEPT, {"concept_id": pa.int64(), **{c: s for c in _CONCEPT[1:]}}, bar):
        ids.append(b.column("concept_id"))
        codes.append(pc.binary_join_element_wise(b.column("vocabulary_id"), b.column("concept_code"), "/"))
        names.append(b.column("concept_name"))
        standard.append(pc.is_valid(b.column("standard_concept")))
    concept_id = pa.chunked_array(ids, pa.int64())
    if concept_id.null_count:
        raise InputError(f"{concept_path}: empty concept_id")
    order = np.argsort(concept_id.to_numpy(), kind="stable")
    cid = concept_id.to_numpy()[order]
    code = pa.chunked_array(codes, s).combine_chunks().take(order)
    name = pa.chunked_array(names, s).combine_chunks().take(order)
    is_standard = pa.chunked_array(standard, pa.bool_()).to_numpy()[order]
    vocabularies = set(pc.unique(_prefix(code)).to_pylist())

    child, parent, sources = [], [], []
    if ancestor_path is not None:
        types = {c: pa.int64() for c in _ANCESTOR}
        for b in _batches(ancestor_path, _ANCESTOR, types, bar):
            keep = pc.equal(b.column("min_levels_of_separation"), 1)
            child.append(pc.filter(b.column("descendant_concept_id"), keep).to_numpy(zero_copy_only=False))
            parent.append(pc.filter(b.column("ancestor_concept_id"), keep).to_numpy(zero_copy_only=False))
        sources.append(ancestor_path.name)
    if relation_path is not None:
        wanted = ["Maps to"] + (["Is a"] if ancestor_path is None else [])
        types = {"concept_id_1": pa.int64(), "concept_id_2": pa.int64(), "relationship_id": s}
        for b in _batches(relation_path, _RELATIONSHIP, types, bar):
            rel = b.column("relationship_id")
            keep = pc.and_(
                pc.is_in(rel, value_set=pa.array(wanted, s)),
                pc.not_equal(b.column("concept_id_1"), b.column("concept_id_2")),
            )
            c1 = pc.filter(b.column("concept_id_1"), keep).to_numpy(zero_copy_only=False)
            c2 = pc.filter(b.column("concept_id_2"), keep).to_numpy(zero_copy_only=False)
            r = pc.filter(rel, keep).to_numpy(zero_copy_only=False)
            # ``Maps to`` is a parent edge only from a non-standard concept (a standard concept
            # maps to itself, and a mapping between standard concepts is not a hierarchy).
            pos = np.searchsorted(cid, c1).clip(0, max(len(cid) - 1, 0))
            known = len(cid) > 0
            nonstandard = (cid[pos] == c1) & ~is_standard[pos] if known else np.zeros(len(c1), bool)
            use = (r == "Is a") | ((r == "Maps to") & nonstandard)
            child.append(c1[use])
            parent.append(c2[use])
        sources.append(relation_path.name)
    bar.close()
    child = np.concatenate(child) if child else np.zeros(0, np.int64)
    parent = np.concatenate(parent) if parent else np.zeros(0, np.int64)
    order = np.argsort(child, kind="stable")
    return Athena(cid, code, name, vocabularies, child[order], parent[order], [concept_path.name, *sources])


def _prefix(code: pa.Array) -> pa.Array:
    """``VOCAB`` of ``VOCAB/CODE`` (the whole string when there is no ``/``)."""
    return pc.list_element(pc.split_pattern(code, "/", max_splits=1), 0)


def _concept_rows(ath: Athena, ids: np.ndarray) -> np.ndarray:
    """Row of each concept id in ``ath`` (-1 when the id is not a concept of CONCEPT.csv)."""
    if len(ath.concept_id) == 0:
        return np.full(len(ids), -1, np.int64)
    pos = np.searchsorted(ath.concept_id, ids).clip(0, len(ath.concept_id) - 1)
    return np.where(ath.concept_id[pos] == ids, pos, -1)


def parent_table(codes: list[str], ath: Athena) -> tuple[pa.Table, pa.Table, dict]:
    """(rows ``code``/``name``/``parent_codes`` for the mapped codes and all their ancestors,
    the unmapped codes with a reason, counts). Pure given ``ath``."""
    s = pa.string()
    code_arr = pa.array(sorted(set(codes)), s)
    # A code may name several concepts (rare duplicates of vocabulary/code): all of them count.
    concepts = pa.table({"code": ath.code, "row": pa.array(np.arange(len(ath.code)), pa.int64())})
    hits = pa.table({"code": code_arr}).join(concepts, "code", join_type="inner")
    mapped = set(hits.column("code").to_pylist())
    unmapped_codes = [c for c in code_arr.to_pylist() if c not in mapped]
    reasons = []
    for c in unmapped_codes:
        if "/" not in c:
            reasons.append("no_vocabulary_prefix")
        elif c.split("/", 1)[0] not in ath.vocabularies:
            reasons.append("unknown_vocabulary")
        else:
            reasons.append("not_in_vocabulary")
    unmapped = pa.table({"code": pa.array(unmapped_codes, s), "reason": pa.array(reasons, s)}, schema=UNMAPPED_SCHEMA)

    # Walk up the edges from the dataset's concepts: every ancestor gets a row too, so the
    # closure `tte-scale labels` computes from codes.parquet reaches the top of the hierarchy.
    start = ath.concept_id[hits.column("row").to_numpy()]
    seen = np.unique(start)
    frontier = seen
    edge_child, edge_parent = [], []
    while len(frontier):
        lo = np.searchsorted(ath.child, frontier, "left")
        hi = np.searchsorted(ath.child, frontier, "right")
        n = hi - lo
        idx = np.repeat(lo, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        edge_child.append(ath.child[idx])
        edge_parent.append(ath.parent[idx])
        new = np.setdiff1d(np.unique(ath.parent[idx]), seen, assume_unique=True)
        seen = np.union1d(seen, new)
        frontier = new
    child = np.concatenate(edge_child) if edge_child else np.zeros(0, np.int64)
    parent = np.concatenate(edge_parent) if edge_parent else np.zeros(0, np.int64)
    crow, prow = _concept_rows(ath, child), _concept_rows(ath, parent)
    dangling = int(((crow < 0) | (prow < 0)).sum())  # an edge to a concept CONCEPT.csv lacks
    ok = (crow >= 0) & (prow >= 0)
    edges = pa.table({"code": ath.code.take(crow[ok]), "parent": ath.code.take(prow[ok])})
    edges = edges.filter(pc.not_equal(edges.column("code"), edges.column("parent")))
    grouped = edges.group_by("code").aggregate([("parent", "distinct")]).select(["code", "parent_distinct"])
    srow = _concept_rows(ath, seen)
    nodes = pa.table({"code": ath.code.take(srow[srow >= 0]), "name": ath.name.take(srow[srow >= 0])})
    nodes = nodes.group_by("code").aggregate([("name", "min")]).select(["code", "name_min"])
    found = grouped.column("parent_distinct").take(pc.index_in(nodes.column("code"), value_set=grouped.column("code")))
    parents = pa.array([sorted(p) if p else None for p in found.to_pylist()], pa.list_(s))
    rows = pa.table({"code": nodes.column("code"), "name": nodes.column("name_min"), "parent_codes": parents})
    rows = rows.take(pc.sort_indices(rows, sort_keys=[("code", "ascending")]))
    counts = {
        "dataset_codes": len(code_arr),
        "mapped": len(mapped),
        "unmapped": len(unmapped_codes),
        "unmapped_by_reason": {r: reasons.count(r) for r in sorted(set(reasons))},
        "unmapped_by_vocabulary": _top_prefixes(unmapped_codes),
        "ancestor_codes_added": int(
            rows.num_rows - len(set(rows.column("code").to_pylist()) & set(code_arr.to_pylist()))
        ),
        "parent_edges": int(sum(len(p) for p in parents.to_pylist() if p)),
        "edges_to_unknown_concepts": dangling,
    }
    return rows, unmapped, counts


def _top_prefixes(codes: list[str], k: int = 20) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in codes:
        p = c.split("/", 1)[0] if "/" in c else "(no prefix)"
        counts[p] = counts.get(p, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k])


def merge_codes(existing: pa.Table, rows: pa.Table) -> pa.Table:
    """``codes.parquet`` with the ontology: mapped codes and ancestors get the Athena parents;
    unmapped codes keep their own; an existing description is never replaced."""
    s = pa.string()
    lst = pa.list_(s)
    old_code = existing.column("code").to_pylist()
    old_desc = (
        existing.column("description").to_pylist() if "description" in existing.column_names else [None] * len(old_code)
    )
    old_par = (
        existing.column("parent_codes").to_pylist()
        if "parent_codes" in existing.column_names
        else [None] * len(old_code)
    )
    desc = dict(zip(old_code, old_desc))
    par = dict(zip(old_code, old_par))
    for c, n, p in zip(*(rows.column(k).to_pylist() for k in ("code", "name", "parent_codes"))):
        if desc.get(c) is None:
            desc[c] = n
        par[c] = p
    codes = sorted(desc)
    return pa.table(
        {
            "code": pa.array(codes, s),
            "description": pa.array([desc[c] for c in codes], s),
            "parent_codes": pa.array([par.get(c) for c in codes], lst),
        }
    )


def dataset_codes(meds: Path) -> pa.Table:
    """The code table of a MEDS folder: ``metadata/codes.parquet`` (MEDS lists every code there),
    else the distinct codes of the data files (read one column at a time)."""
    from tte_scale.convert.meds import data_files, read_code_metadata

    path = meds / "metadata" / "codes.parquet"
    if path.is_file():
        tab = read_code_metadata(path)
        return tab.filter(pc.is_valid(tab.column("code")))

    codes: set[str] = set()
    for f in data_files(meds):
        try:
            col = pq.read_table(f, columns=["code"]).column("code")
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise InputError(f"{f}: cannot read column 'code' (a current-MEDS data file?): {exc}") from None
        codes.update(c for c in pc.unique(col).to_pylist() if c is not None)
    return pa.table({"code": pa.array(sorted(codes), pa.string())})


def convert_ontology(
    meds: str | Path,
    athena: str | Path,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Parent codes for the codes of the MEDS folder ``meds`` from the Athena folder ``athena``.

    Without ``out``: ``meds/metadata/codes.parquet`` is rewritten in place (one rename), only in a
    folder that `tte-scale convert meds` wrote. With ``out``: a new folder holding
    ``codes.parquet`` and the reports. Returns the counts (also in ``ontology.json``)."""
    meds, athena = Path(meds), Path(athena)
    if not meds.is_dir():
        raise InputError(f"--meds {meds}: folder not found")
    stage = None
    if out is None:
        owner = (read_marker(meds) or {}).get("command")
        if owner != "convert meds":
            raise InputError(
                f"--meds {meds}: not written by `tte-scale convert meds`; convert ontology rewrites "
                "metadata/codes.parquet only in a folder tte-scale wrote (run `tte-scale convert meds "
                f"--input {meds} --out NEW` first, or write the result elsewhere with --out DIR)"
            )
    else:
        stage = StagedOutput(out, COMMAND, inputs=[meds, athena], overwrite=overwrite)
    t0 = _time.perf_counter()
    existing = dataset_codes(meds)
    ath = read_athena(athena, progress)
    rows, unmapped, counts = parent_table(existing.column("code").to_pylist(), ath)
    codes = merge_codes(existing, rows)
    from tte_scale.convert.meds import _meds, _validate

    _validate(_meds().CodeMetadataSchema, codes, meds / "metadata" / "codes.parquet", "MEDS code metadata")
    report = {"athena": str(athena), "files": ath.sources, **counts, "seconds": round(_time.perf_counter() - t0, 2)}

    def write_all(folder: Path, replace: bool) -> None:
        items = [
            ("codes.parquet", lambda p: pq.write_table(codes, p)),
            ("ontology_unmapped.parquet", lambda p: pq.write_table(unmapped, p)),
            ("ontology.json", lambda p: p.write_text(json.dumps(report, indent=2) + "\n")),
        ]
        for name, write in reversed(items):  # codes.parquet last: the reports describe it when it lands
            if replace:
                replace_file(folder / name, write)
            else:
                write(folder / name)

    if stage is None:
        write_all(meds / "metadata", replace=True)
    else:
        with stage as tmp:
            write_all(tmp, replace=False)
            stage.publish(meds=str(meds), athena=str(athena))
    return report
