"""`tte-scale synth` runs without pandas (not a runtime dependency; an offline GPU node running
`make gpu-check` from a wheelhouse lacks it): the event rates of the benchmark tasks are computed
from the label column directly, nulls (unknown) left out."""

from __future__ import annotations

import math
import subprocess
import sys

import pyarrow as pa

from tte_scale.synth.generate import BENCH_TASKS, _rates


def test_rates_skip_unknown_labels():
    tasks = list(BENCH_TASKS)
    t0, t1 = tasks[0], tasks[1]
    bench = pa.table(
        {
            "task": [t0, t0, t0, t1],
            "label": pa.array([True, None, False, None], pa.bool_()),
            "time": [1.0, 2.0, 3.0, 4.0],
            "event": [True, False, True, False],
            "log_hazard": [0.5, 0.1, 0.2, 0.0],
        }
    )
    rates, _ = _rates(bench)
    assert rates[t0] == 0.5 and math.isnan(rates[t1])


def test_synth_imports_no_pandas(tmp_path):
    code = (
        # `import pandas` fails as where it is not installed (pyarrow then runs without it)
        "import sys\n"
        "class NoPandas:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'pandas':\n"
        "            raise ModuleNotFoundError(\"No module named 'pandas'\", name='pandas')\n"
        "sys.meta_path.insert(0, NoPandas())\n"
        "from tte_scale.synth import SynthConfig, generate\n"
        f"generate(SynthConfig(subjects=3, workers=1), {str(tmp_path / 'c')!r}, progress=False)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
