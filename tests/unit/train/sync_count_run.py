"""Run a few real training steps in this process and count host synchronizations (a helper of
test_host_syncs.py, run as a subprocess so its process group and patches die with it).

Usage: python sync_count_run.py DATA_DIR RUN_DIR OUT.json [--set key=value ...]
(DATA_DIR written by tests/dist/train_data.make_data; the ranks' environment comes from the caller.)

A host synchronization is a device value read back by the host: Tensor.item / tolist / bool /
float / int conversion (and .numpy() / .cpu() from the trainer's own code; the loader's numpy
calls are on host buffers by design). Each one is attributed to the innermost tte_scale or
deepspeed frame that caused it, with the optimizer step it happened in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
sys.path[:0] = [str(HERE.parents[2] / "dist"), str(HERE.parents[2])]

from train_data import config_overrides  # noqa: E402

from tte_scale.config import load_config  # noqa: E402
from tte_scale.train import PretrainConfig, loop  # noqa: E402

state = {"phase": "setup", "step": 0}
events: list[dict] = []


def _origin() -> tuple[str, str]:
    f = sys._getframe(2)
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if mod.startswith(("tte_scale", "deepspeed")):
            return mod.split(".")[0], f"{mod}:{f.f_lineno}"
        f = f.f_back
    return "other", "?"


def _patch(name: str, trainer_only: bool = False) -> None:
    orig = getattr(torch.Tensor, name)

    def counted(self, *args, **kwargs):
        who, where = _origin()
        if not trainer_only or where.startswith("tte_scale.train"):
            events.append({"phase": state["phase"], "step": state["step"], "who": who, "where": where, "op": name})
        return orig(self, *args, **kwargs)

    setattr(torch.Tensor, name, counted)


def _wrap(name: str, phase: str | None = None) -> None:
    orig = getattr(loop, name)

    def wrapped(run, *args, **kwargs):
        if name == "train_step":
            state["phase"], state["step"] = "loop", run.step + 1
        elif phase is not None:
            state["phase"] = phase
        return orig(run, *args, **kwargs)

    setattr(loop, name, wrapped)


def main() -> None:
    data, run_dir, out, overrides = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
    sets = [o for flag, o in zip(overrides[::2], overrides[1::2]) if flag == "--set"]
    cfg = load_config(PretrainConfig, None, config_overrides(data / "shards", data / "labels", run_dir) + sets)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        _patch(name)
    for name in ("numpy", "cpu"):
        _patch(name, trainer_only=True)
    _wrap("train_step")
    _wrap("_save", "after")
    _wrap("_eval", "after")
    code = loop.train(cfg)
    # The run leaves its process group itself (an abandoned gloo group can abort the exit).
    left = not torch.distributed.is_initialized()
    out.write_text(json.dumps({"code": code, "events": events, "left_process_group": left}))


if __name__ == "__main__":
    main()
