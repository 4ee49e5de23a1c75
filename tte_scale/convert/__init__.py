"""Real cohorts in: older MEDS, an OMOP vocabulary and a released cohort -> the inputs of `tte-scale labels`.

* ``meds``: ``convert_meds`` -- any older MEDS generation (0.1 / 0.2 nested rows, 0.3 flat
  ``patient_id`` tables) or current MEDS -> current MEDS (0.4), one input file in memory at a time,
  validated with the ``meds`` package's own schemas.
* ``legacy``: which MEDS generation a file is, and its rows as flat current-MEDS columns (pure).
* ``ontology``: ``convert_ontology`` -- parent codes from an Athena (OMOP vocabulary) download
  into ``metadata/codes.parquet`` ``parent_codes``, with a report of the codes it could not map.
* ``cohort``: ``convert_cohort`` -- a released cohort's study/label/split tables and image folder
  (INSPECT by default) -> ``scans.parquet``, the release's benchmark labels and subject splits.
* ``release``: the release's study, split and label tables read and checked value by value.
* ``mapping``: the ``--map`` YAML schema (which column holds what; ``configs/convert/inspect.yaml``).
* ``tables``: delimited text tables read as strings, with errors naming file, line and column.
* ``staging``: an output folder written whole under a temporary name and renamed at the end.

The input contracts are in docs/formats.md ("Converter inputs").
"""

from tte_scale.convert.cohort import convert_cohort
from tte_scale.convert.mapping import CohortMap, load_map
from tte_scale.convert.meds import convert_meds
from tte_scale.convert.ontology import convert_ontology

__all__ = ["CohortMap", "convert_cohort", "convert_meds", "convert_ontology", "load_map"]
