"""`convert ontology`: parent codes from an Athena download, as `tte-scale labels` reads them."""

from __future__ import annotations

import json

import meds
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from convert_fixtures import ANCESTORS, CONCEPTS, RELATIONSHIPS, write_athena, write_meds

from tte_scale.convert import convert_meds, convert_ontology
from tte_scale.convert.ontology import parent_table, read_athena
from tte_scale.ehr.meds import open_meds, read_parents
from tte_scale.ehr.vocab import Ontology
from tte_scale.errors import InputError

PE_CLOSURE = ("ICD10CM/I26.99", "SNOMED/19829001", "SNOMED/404684003", "SNOMED/59282003")


@pytest.fixture
def converted(tmp_path):
    src = write_meds(tmp_path / "src", "0.2")
    splits = tmp_path / "splits.parquet"
    pq.write_table(pa.table({"subject_id": [1, 2, 3], "split": ["train", "train", "held_out"]}), splits)
    convert_meds(src, tmp_path / "meds", splits=splits, progress=False)
    return tmp_path / "meds"


def _codes(meds_dir):
    t = pq.read_table(meds_dir / "metadata" / "codes.parquet")
    return {r["code"]: r for r in t.to_pylist()}


@pytest.mark.parametrize("files", ["both", "ancestor", "relationship"])
def test_parents_from_athena(tmp_path, converted, files):
    athena = write_athena(
        tmp_path / "athena",
        CONCEPTS,
        ancestors=ANCESTORS if files in ("both", "ancestor") else None,
        relationships=RELATIONSHIPS if files in ("both", "relationship") else None,
    )
    report = convert_ontology(converted, athena, progress=False)
    codes = _codes(converted)
    meds.CodeMetadataSchema.validate(pq.read_table(converted / "metadata" / "codes.parquet"))
    if files == "ancestor":  # no `Maps to` without CONCEPT_RELATIONSHIP: ICD10CM stays a root
        assert codes["ICD10CM/I26.99"]["parent_codes"] is None
        assert not [c for c in codes if c.startswith("SNOMED/")]
        return
    # The SNOMED hierarchy (direct ancestors, or `Is a` without CONCEPT_ANCESTOR), reached through `Maps to`.
    assert codes["SNOMED/59282003"]["parent_codes"] == ["SNOMED/19829001"]
    assert codes["SNOMED/19829001"]["parent_codes"] == ["SNOMED/404684003"]
    assert codes["SNOMED/404684003"]["parent_codes"] is None
    assert codes["SNOMED/59282003"]["description"] == "Pulmonary embolism"
    assert codes["ICD10CM/I26.99"]["parent_codes"] == ["SNOMED/59282003"]
    assert codes["ICD10CM/I27.20"]["parent_codes"] == ["SNOMED/70995007"]
    # A standard concept mapping to itself is no parent.
    assert codes["LOINC/2160-0"]["parent_codes"] is None
    # What `tte-scale labels` makes of it: the ICD code counts for every ancestor.
    ont = Ontology(read_parents(open_meds(converted)))
    assert ont.closure("ICD10CM/I26.99") == PE_CLOSURE
    assert report["mapped"] == 5 and report["ancestor_codes_added"] == 5
    # Unmapped codes, each with its reason.
    unmapped = dict(
        zip(*pq.read_table(converted / "metadata" / "ontology_unmapped.parquet").to_pydict().values(), strict=True)
    )
    assert unmapped == {
        "CUSTOM/7": "unknown_vocabulary",
        "MEDS_BIRTH": "no_vocabulary_prefix",
        "MEDS_DEATH": "no_vocabulary_prefix",
        "NOTE/x": "unknown_vocabulary",
    }
    saved = json.loads((converted / "metadata" / "ontology.json").read_text())
    assert saved["unmapped_by_reason"] == {"no_vocabulary_prefix": 2, "unknown_vocabulary": 2}


@pytest.mark.parametrize("files", ["ancestor", "relationship"])
def test_hierarchy_from_either_relation_file(tmp_path, files):
    ath = read_athena(
        write_athena(
            tmp_path / "athena",
            CONCEPTS,
            ancestors=ANCESTORS if files == "ancestor" else None,
            relationships=RELATIONSHIPS if files == "relationship" else None,
        ),
        progress=False,
    )
    rows, unmapped, counts = parent_table(["SNOMED/59282003", "SNOMED/70995007"], ath)
    got = dict(zip(rows.column("code").to_pylist(), rows.column("parent_codes").to_pylist(), strict=True))
    assert got == {
        "SNOMED/404684003": None,
        "SNOMED/19829001": ["SNOMED/404684003"],
        "SNOMED/59282003": ["SNOMED/19829001"],
        "SNOMED/56265001": ["SNOMED/404684003"],
        "SNOMED/70995007": ["SNOMED/56265001"],
    }
    assert unmapped.num_rows == 0 and counts["ancestor_codes_added"] == 3


def test_not_in_vocabulary_reason_and_rerun_is_stable(tmp_path, converted):
    athena = write_athena(tmp_path / "athena", [c for c in CONCEPTS if c[3] != "I27.20"], ANCESTORS, RELATIONSHIPS[:1])
    r1 = convert_ontology(converted, athena, progress=False)
    first = _codes(converted)
    unmapped = pq.read_table(converted / "metadata" / "ontology_unmapped.parquet").to_pydict()
    assert dict(zip(unmapped["code"], unmapped["reason"]))["ICD10CM/I27.20"] == "not_in_vocabulary"
    r2 = convert_ontology(converted, athena, progress=False)  # codes.parquet now holds the ancestors too
    assert _codes(converted) == first and r2["unmapped"] == r1["unmapped"]


def test_in_place_only_in_a_folder_convert_meds_wrote(tmp_path):
    src = write_meds(tmp_path / "src", "current")
    athena = write_athena(tmp_path / "athena", CONCEPTS, ANCESTORS, RELATIONSHIPS)
    with pytest.raises(InputError, match="not written by `tte-scale convert meds`"):
        convert_ontology(src, athena, progress=False)
    assert not (src / "metadata").exists()
    # --out: a new folder beside; the input untouched.
    report = convert_ontology(src, athena, out=tmp_path / "onto", progress=False)
    assert report["mapped"] == 5
    assert {p.name for p in (tmp_path / "onto").iterdir()} >= {"codes.parquet", "ontology_unmapped.parquet"}
    assert not (src / "metadata").exists()


def test_bad_athena_inputs(tmp_path, converted):
    before = {p.name: p.read_bytes() for p in (converted / "metadata").iterdir()}
    athena = tmp_path / "athena"
    athena.mkdir()
    with pytest.raises(InputError, match="no CONCEPT.csv"):
        convert_ontology(converted, athena, progress=False)
    write_athena(athena, CONCEPTS)
    with pytest.raises(InputError, match="neither CONCEPT_ANCESTOR.csv nor CONCEPT_RELATIONSHIP.csv"):
        convert_ontology(converted, athena, progress=False)
    (athena / "CONCEPT_ANCESTOR.csv").write_text("ancestor_concept_id\tdescendant\n1\t2\n")
    with pytest.raises(InputError, match=r"CONCEPT_ANCESTOR.csv: missing column\(s\) \['descendant_concept_id'"):
        convert_ontology(converted, athena, progress=False)
    (athena / "CONCEPT_ANCESTOR.csv").write_text(
        "ancestor_concept_id\tdescendant_concept_id\tmin_levels_of_separation\n1\tx\t1\n"
    )
    with pytest.raises(InputError, match="CONCEPT_ANCESTOR.csv: bad value"):
        convert_ontology(converted, athena, progress=False)
    # nothing half-written: the metadata folder is byte for byte what it was before the failed runs
    assert {p.name: p.read_bytes() for p in (converted / "metadata").iterdir()} == before


def test_athena_text_with_quotes_is_not_parsed_as_quoting(tmp_path, converted):
    """Athena files have no quoting: a concept name with a quote must not swallow lines."""
    concepts = [(1, 'Clinical "finding', "SNOMED", "404684003", "S"), *CONCEPTS[1:]]
    athena = write_athena(tmp_path / "athena", concepts, ANCESTORS, RELATIONSHIPS)
    convert_ontology(converted, athena, progress=False)
    assert _codes(converted)["SNOMED/404684003"]["description"] == 'Clinical "finding'
