"""Which benchmark script measures which stage, with its small and full sizes.

The scripts live in ``benchmarks/`` of a repository checkout (they compare against baselines
such as MONAI, lifelines and pandas that the wheel does not depend on), so the suite first finds
that folder. Each script keeps the contract ``main(argv=None) -> int`` with ``--out DIR`` and
``--machine NAME`` and writes ``DIR/<stage>.json`` and ``DIR/<stage>.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tte_scale.errors import InputError


@dataclass(frozen=True, kw_only=True, slots=True)
class Stage:
    """One benchmark: a script and the arguments of its small (default) and full runs."""

    name: str
    """Stage name on the command line; also the results file stem (``<name>.json``)."""
    script: str
    """Script path relative to the repository root."""
    what: str
    """One line: what is measured against what."""
    small: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Arguments of the default run by device ('cpu', 'cuda'); minutes on a laptop."""
    full: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Arguments of the ``--full`` run by device (the sizes the committed results use)."""
    takes_device: bool = False
    """Whether the script takes ``--device cpu|cuda``; the others always run on the CPU."""

    def argv(self, device: str, full: bool) -> list[str]:
        sizes = self.full if full else self.small
        args = list(sizes.get(device if self.takes_device else "cpu", sizes.get("cpu", ())))
        return (["--device", device] if self.takes_device else []) + args


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage(name="synth", script="benchmarks/bench_synth.py", what="synthetic cohort: subjects/s, peak RSS vs N",
          small={"cpu": ("--sizes", "60")}, full={"cpu": ("--sizes", "200", "2000")}),
    Stage(name="labels", script="benchmarks/bench_labels.py",
          what="MEDS -> TTE labels: events/CPU-s and peak RSS vs the pandas reference",
          small={"cpu": ("--events", "300000", "--tasks", "1024")}, full={"cpu": ("--events", "20000000")}),
    Stage(name="shard", script="benchmarks/bench_shard.py",
          what="codecs (ratio, decode GB/s); sharding volumes/s: plain loop vs Ray 1/2 workers",
          small={"cpu": ("--subjects", "8")}, full={"cpu": ()}),
    Stage(name="loader", script="benchmarks/bench_loader.py",
          what="loader volumes/s (WebDataset/Zarr, 1/2 workers) vs MONAI and the decode limit",
          small={"cpu": ("--n", "8", "--repeat", "2", "--shape", "64", "96", "96")}, full={"cpu": ()}),
    Stage(name="loss", script="benchmarks/bench_loss.py", takes_device=True,
          what="TTE head + survival loss fwd+bwd: fused vs eager vs torch.compile",
          small={"cpu": ("--batch", "8", "--tasks", "1024", "--repeats", "3"),
                 "cuda": ("--batch", "32", "--tasks", "8192", "--repeats", "10")},
          full={"cpu": (), "cuda": ()}),
    Stage(name="model", script="benchmarks/bench_model.py", takes_device=True,
          what="3D ViT training step: ours vs MONAI ViT (samples/s, TFLOP/s, MFU)",
          small={"cpu": ("--img", "32", "64", "64", "--steps", "3", "--warmup", "1"),
                 "cuda": ("--model", "vit3d_base", "--steps", "10", "--warmup", "3")},
          full={"cpu": (), "cuda": ("--model", "vit3d_base", "vit3d_large")}),
    Stage(name="train", script="benchmarks/bench_train.py", takes_device=True,
          what="real trainer on real shards: volumes/s, tokens/s, MFU, data wait per world size",
          small={"cpu": ("--steps", "8", "--worlds", "1", "2"), "cuda": ("--steps", "20", "--worlds", "1")},
          full={"cpu": ("--steps", "20", "--worlds", "1", "2", "--zero", "0", "1", "2", "3"),
                "cuda": ("--steps", "50")}),
    Stage(name="eval", script="benchmarks/bench_eval.py",
          what="Harrell C-index vs lifelines/sksurv, bootstrap, probe fits",
          small={"cpu": ("--max-n", "100000", "--repeat", "1")}, full={"cpu": ()}),
)}

#: What ``all`` runs, in pipeline order.
ORDER = ("synth", "labels", "shard", "loader", "loss", "model", "train", "eval")


def find_repo(explicit: Path | None = None, cwd: Path | None = None) -> Path:
    """The repository root holding ``benchmarks/``: ``explicit``, else the checkout this package
    was installed from (editable installs), else the current folder or one above it."""
    if explicit is not None:
        candidates = [Path(explicit)]
    else:
        here = Path(__file__).resolve().parents[2]
        start = Path(cwd or Path.cwd()).resolve()
        candidates = [here, start, *start.parents]
    for root in candidates:
        if (root / "benchmarks" / "common.py").is_file():
            return root
    where = f"{explicit}" if explicit is not None else f"{candidates[0]} or {candidates[1]} (and above)"
    raise InputError(
        f"no benchmarks/ folder in {where}: the benchmark scripts are not part of the installed package; run "
        "`tte-scale bench` from a checkout of the tte_scale repository (or pass --repo DIR)")


def select(names: list[str]) -> list[Stage]:
    """Stages by name (``all`` = every stage in pipeline order); unknown names are an error."""
    if not names:
        raise InputError(f"name a stage: {', '.join(ORDER)} or all")
    unknown = [n for n in names if n != "all" and n not in STAGES]
    if unknown:
        raise InputError(f"unknown stage(s) {', '.join(map(repr, unknown))}; choose from {', '.join(ORDER)}, all")
    wanted = set(ORDER) if "all" in names else set(names)
    return [STAGES[n] for n in ORDER if n in wanted]
