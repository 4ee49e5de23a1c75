"""Which benchmark script measures which stage, with its small and full sizes.

The scripts are the modules ``benchmarks/bench_<stage>.py`` (installed as
``tte_scale.benchmarks.bench_<stage>``); their baselines (MONAI, lifelines, pandas, ...) come
with the ``dev`` extra. Each script keeps the contract ``main(argv=None) -> int`` with
``--out DIR`` and ``--machine NAME`` and writes ``DIR/<stage>.json`` and ``DIR/<stage>.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tte_scale.errors import InputError


@dataclass(frozen=True, kw_only=True, slots=True)
class Stage:
    """One benchmark: a script and the arguments of its small (default) and full runs."""

    name: str
    """Stage name on the command line; also the results file stem (``<name>.json``)."""
    module: str
    """The script's module (``python -m MODULE`` runs it alone)."""
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


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            name="synth",
            module="tte_scale.benchmarks.bench_synth",
            what="synthetic cohort: subjects/s, peak RSS vs N",
            small={"cpu": ("--sizes", "60")},
            full={"cpu": ("--sizes", "200", "2000")},
        ),
        Stage(
            name="labels",
            module="tte_scale.benchmarks.bench_labels",
            what="MEDS -> TTE labels: events/CPU-s and peak RSS vs the pandas reference",
            small={"cpu": ("--events", "300000", "--tasks", "1024")},
            full={"cpu": ("--events", "20000000")},
        ),
        Stage(
            name="shard",
            module="tte_scale.benchmarks.bench_shard",
            what="codecs (ratio, decode GB/s); sharding volumes/s: plain loop vs Ray 1/2 workers",
            small={"cpu": ("--subjects", "8")},
            full={"cpu": ()},
        ),
        Stage(
            name="loader",
            module="tte_scale.benchmarks.bench_loader",
            what="loader volumes/s (WebDataset/Zarr, 1/2 workers) vs MONAI and the decode limit",
            small={"cpu": ("--n", "8", "--repeat", "2", "--shape", "64", "96", "96")},
            full={"cpu": ()},
        ),
        Stage(
            name="loss",
            module="tte_scale.benchmarks.bench_loss",
            takes_device=True,
            what="TTE head + survival loss fwd+bwd: fused vs eager vs torch.compile",
            small={
                "cpu": ("--batch", "8", "--tasks", "1024", "--repeats", "3"),
                "cuda": ("--batch", "32", "--tasks", "8192", "--repeats", "10"),
            },
            full={"cpu": (), "cuda": ()},
        ),
        Stage(
            name="model",
            module="tte_scale.benchmarks.bench_model",
            takes_device=True,
            what="3D ViT training step: ours vs MONAI ViT (samples/s, TFLOP/s, MFU)",
            small={
                "cpu": ("--img", "32", "64", "64", "--steps", "3", "--warmup", "1"),
                "cuda": ("--model", "vit3d_base", "--steps", "10", "--warmup", "3"),
            },
            full={"cpu": (), "cuda": ("--model", "vit3d_base", "vit3d_large")},
        ),
        Stage(
            name="train",
            module="tte_scale.benchmarks.bench_train",
            takes_device=True,
            what="real trainer on real shards: volumes/s, tokens/s, MFU, data wait per world size",
            small={"cpu": ("--steps", "8", "--worlds", "1", "2"), "cuda": ("--steps", "20", "--worlds", "1")},
            full={
                "cpu": ("--steps", "20", "--worlds", "1", "2", "--zero", "0", "1", "2", "3"),
                "cuda": ("--steps", "50"),
            },
        ),
        Stage(
            name="eval",
            module="tte_scale.benchmarks.bench_eval",
            what="Harrell C-index vs lifelines/sksurv, bootstrap, probe fits",
            small={"cpu": ("--max-n", "100000", "--repeat", "1")},
            full={"cpu": ()},
        ),
        Stage(
            name="rehearsal",
            module="tte_scale.benchmarks.bench_rehearsal",
            what="full-size rehearsal: every stage at 160x224x224, ViT-B width, K=8,192 (time, CPU-s, RSS, bytes)",
            small={"cpu": ("--quick",)},
            full={"cpu": ()},
        ),
    )
}

#: What ``all`` runs, in pipeline order.
ORDER = ("synth", "labels", "shard", "loader", "loss", "model", "train", "eval", "rehearsal")


def select(names: list[str]) -> list[Stage]:
    """Stages by name (``all`` = every stage in pipeline order); unknown names are an error."""
    if not names:
        raise InputError(f"name a stage: {', '.join(ORDER)} or all")
    unknown = [n for n in names if n != "all" and n not in STAGES]
    if unknown:
        raise InputError(f"unknown stage(s) {', '.join(map(repr, unknown))}; choose from {', '.join(ORDER)}, all")
    wanted = set(ORDER) if "all" in names else set(names)
    return [STAGES[n] for n in ORDER if n in wanted]
