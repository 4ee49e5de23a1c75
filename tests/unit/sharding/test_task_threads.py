"""A Ray scan task holds its libraries to the one core Ray reserved for it (issue 17): with N
workers on N cores, torch's grid_sample, Blosc and numexpr must not each start a thread per core."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, os
os.environ.pop("NUMEXPR_MAX_THREADS", None)
import torch
torch.set_num_threads(4)  # what torch picks on a 4-core node
from tte_scale.sharding.executor import task_threads
info = task_threads(1)
import numcodecs.blosc
print(json.dumps({**info, "torch_now": torch.get_num_threads(), "blosc_use_threads": numcodecs.blosc.use_threads}))
"""


def test_task_threads_holds_each_library_to_the_tasks_cores():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=120)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["torch_threads"] == info["torch_now"] == 1
    assert info["blosc_use_threads"] is False and info["blosc_threads_in_tasks"] == 1
    assert info["NUMEXPR_MAX_THREADS"] == "1"
