"""MEDS -> time-to-event labels: task vocabulary, time bins, TTE and benchmark labels.

* ``meds``: streaming MEDS reader (one subject shard at a time) and input validation.
* ``core``: pure numpy steps around the kernels (row layout, bins, ranking, benchmark labels).
* ``kernels``: the per-event steps compiled with numba (what ``build`` runs; their numpy reference is tests/unit/ehr/numpy_ref.py).
* ``vocab``: code registry and ontology closure.
* ``build``: ``tte-scale labels`` (``build_labels``): one scan of the MEDS files, then the label pass.
* ``store``: the labels folder format and ``load_labels`` (docs/formats.md).
* ``precomputed``: benchmark labels a release ships (``labels --bench-labels``), used instead of the codes.
* ``reference``: a plain pandas implementation used as the test oracle and benchmark baseline.
"""

from tte_scale.ehr.config import BenchTask, LabelsConfig, TaskSet, load_task_set
from tte_scale.ehr.store import Labels, load_labels


def build_labels(*args, **kwargs):
    """See :func:`tte_scale.ehr.build.build_labels` (imported lazily)."""
    from tte_scale.ehr.build import build_labels as _build

    return _build(*args, **kwargs)


__all__ = ["BenchTask", "LabelsConfig", "Labels", "TaskSet", "build_labels", "load_labels", "load_task_set"]
