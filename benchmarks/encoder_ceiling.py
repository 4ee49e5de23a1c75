"""Can the encoder learn an image biomarker at all? Train it directly on the true value.

Before asking why TTE pretraining does not learn a small lesion (issue #18), ask whether the
encoder, at this geometry and training budget, learns it from the cleanest target there is: the
synthetic cohort's own truth (``truth/scans.parquet``, e.g. ``lesion_size``), a dense, noise-free
value for every train scan. The encoder, batch size, optimizer, learning-rate schedule, HU window
and seed are the pretraining config's (``--config``, ``--set``; its augmentation too when
``data.augmentation`` is on); a LayerNorm + linear head on the pooled features is trained with the mean squared error on the standardized target. Every
``--eval-every`` steps it reports the train MSE of the steps since the last report relative to
the target's variance (1.0 = no better than predicting the mean) and the Spearman correlation
of prediction and truth on the held-out scans. A target the images show globally
(``--target body_scale``) is the control: it tells a broken set-up from a hard biomarker.

    python -m tte_scale.benchmarks.encoder_ceiling --shards runs/sparse/shards \\
        --truth runs/sparse/cohort/truth --target lesion_size --steps 1800

Writes ``encoder_ceiling_<target>[_<tag>].json`` / ``.md`` under ``--out``. Volumes of the train
and held-out splits are held in memory as int16 (``--max-gib`` guards it); reads go through the
loader's own checked readers, and a scan that fails them is left out and counted.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

from tte_scale.benchmarks.common import add_output_args, md_table, script_exit, script_parser, write_stamped
from tte_scale.errors import InputError

PRETRAIN = "configs/pretrain/demo.yaml"
SPLITS = ("train", "held_out")


def read_truth(truth: Path, target: str, option: str = "--target") -> dict[str, float]:
    """scan_id -> target value from ``truth/scans.parquet``; a missing column or a non-finite value
    is refused with the file, row and field named."""
    import pyarrow.parquet as pq

    path = Path(truth) / "scans.parquet"
    if not path.is_file():
        raise InputError(f"{path}: not found; --truth is the synthetic cohort's truth/ folder")
    names = pq.read_schema(path).names
    if target not in names:
        raise InputError(f"{path}: no column {target!r} ({option}); numeric columns are among: {', '.join(names)}")
    t = pq.read_table(path, columns=["scan_id", target]).to_pydict()
    out: dict[str, float] = {}
    for row, (sid, v) in enumerate(zip(t["scan_id"], t[target])):
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{path}: row {row} (scan_id {sid}), field {target}: {v!r} is not a number") from None
        if not math.isfinite(x):
            raise InputError(f"{path}: row {row} (scan_id {sid}), field {target}: {v!r} is not finite")
        out[sid] = x
    return out


def load_split(scans, shards: str, truth: dict[str, float], truth_path: Path, max_bytes: int):
    """(int16 volumes [N, D, H, W], target [N], scans left out by the reader's checks) of one
    split's ``SplitScans`` (tte_scale.embed.scans)."""
    from tte_scale.embed.scans import verified_batches

    split = scans.split
    n, shape = len(scans), tuple(scans.index.shape)
    if n == 0:
        raise InputError(f"{shards}: the {split} split holds no ok scans")
    need = n * math.prod(shape) * 2
    if need > max_bytes:
        raise InputError(
            f"{shards}: the {split} split's {n} volumes of {list(shape)} need {need / 2**30:.1f} GiB in memory, "
            f"over --max-gib {max_bytes / 2**30:g}"
        )
    ids = scans.scan_ids
    missing = [s for s in ids if s not in truth]
    if missing:
        raise InputError(
            f"{truth_path / 'scans.parquet'}: no row for scan_id {missing[0]} ({len(missing)} {split} scans)"
        )
    vol = np.empty((n, *shape), np.int16)
    keep: list[int] = []
    bad: list[dict] = []
    for batch, positions in verified_batches(scans, range(n), 16, bad):
        vol[len(keep) : len(keep) + len(positions)] = batch[:, 0]
        keep += positions
    y = np.array([truth[ids[i]] for i in keep], np.float64)
    return vol[: len(keep)], y, bad


def add_truth_args(ap) -> None:
    """The shards, the truth and the target column: the inputs every ceiling tool shares."""
    ap.add_argument("--shards", type=Path, required=True, help="a `tte-scale shard` output folder")
    ap.add_argument("--truth", type=Path, required=True, help="the synthetic cohort's truth/ folder")
    ap.add_argument("--target", default="lesion_size", help="column of truth/scans.parquet (default lesion_size)")


def add_tail_args(ap) -> None:
    ap.add_argument("--max-gib", type=float, default=8.0, help="memory the volumes of one split may take (default 8)")
    ap.add_argument("--tag", default="", help="suffix of the result files' name")
    add_output_args(ap)


def write_ceiling(args, tool: str, result: dict, device: str, markdown) -> None:
    """``<tool>_<target>[_<tag>].json`` / ``.md`` under ``--out``, with the machine recorded."""
    write_stamped(args, f"{tool}_{args.target}" + (f"_{args.tag}" if args.tag else ""), result, device, markdown)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def run(args) -> dict:
    import torch

    from tte_scale.config import load_config
    from tte_scale.data import AugmentConfig, augment_batch, hu_to_float
    from tte_scale.embed.scans import resolve_format, split_scans
    from tte_scale.models import create_model
    from tte_scale.train import PretrainConfig
    from tte_scale.train.ds_config import lr_at
    from tte_scale.train.parts import encoder_overrides, with_volume_shape
    from tte_scale.train.rng import seed_everything

    shards = str(args.shards)
    fmt = resolve_format(shards, "auto")
    scans = {s: split_scans(shards, s, fmt) for s in SPLITS}
    cfg = load_config(PretrainConfig, args.config, args.overrides)  # bad settings fail before any volume read
    cfg = dataclasses.replace(with_volume_shape(cfg, scans["train"].index.shape, shards), max_steps=args.steps)
    truth = read_truth(args.truth, args.target)
    data = {s: load_split(scans[s], shards, truth, args.truth, int(args.max_gib * 2**30)) for s in SPLITS}
    vol_tr, y_tr, _ = data["train"]
    vol_ho, y_ho, _ = data["held_out"]
    if len(y_tr) < 2 or float(np.std(y_tr)) == 0.0:
        raise InputError(f"{args.truth / 'scans.parquet'}: {args.target} is constant over the train scans")
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    seed_everything(cfg.seed)
    encoder = create_model(cfg.model.name, **encoder_overrides(cfg)).to(device)
    head = torch.nn.Sequential(torch.nn.LayerNorm(encoder.num_features), torch.nn.Linear(encoder.num_features, 1))
    head = head.to(device)
    params = [*encoder.parameters(), *head.parameters()]
    o = cfg.optim
    opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    mu, sd = float(y_tr.mean()), float(y_tr.std())
    z_tr = torch.from_numpy((y_tr - mu) / sd).float()
    lo, hi = cfg.data.hu_window
    batch = o.global_batch_size
    # The trainer's augmentation, from the same settings (data.augmentation, data.flip_axes).
    augment = AugmentConfig(enabled=cfg.data.augmentation, hu_min=lo, hu_max=hi, flip_axes=tuple(cfg.data.flip_axes))
    gen = torch.Generator().manual_seed(cfg.seed)

    def inputs(vol: np.ndarray) -> torch.Tensor:
        return hu_to_float(torch.from_numpy(vol), lo, hi)[:, None].to(device)

    @torch.no_grad()
    def held_out_spearman() -> float:
        encoder.eval(), head.eval()
        pred = [head(encoder(inputs(vol_ho[i : i + 16])))[:, 0].float().cpu().numpy() for i in range(0, len(y_ho), 16)]
        encoder.train(), head.train()
        return spearman(np.concatenate(pred), y_ho)

    rng = np.random.default_rng(cfg.seed)
    order: list[int] = []
    curve = [{"step": 0, "train_mse_rel": None, "held_out_spearman": held_out_spearman(), "seconds": 0.0}]
    print(f"step 0: held-out Spearman {curve[0]['held_out_spearman']:+.3f}", flush=True)
    losses: list[float] = []
    t0 = time.perf_counter()
    train_s = 0.0  # optimizer steps only, without the held-out reports
    for step in range(args.steps):
        t_step = time.perf_counter()
        if len(order) < batch:  # a fresh permutation per epoch: each train scan once per epoch
            order = rng.permutation(len(y_tr)).tolist()
        idx = np.sort([order.pop() for _ in range(batch)])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x = augment_batch({"volume": torch.from_numpy(vol_tr[idx])[:, None]}, augment, gen)["volume"]
        pred = head(encoder(x.to(device)))[:, 0]
        loss = torch.nn.functional.mse_loss(pred.float(), z_tr[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        opt.step()
        losses.append(loss.item())
        train_s += time.perf_counter() - t_step
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            row = {
                "step": step + 1,
                "train_mse_rel": float(np.mean(losses)),
                "held_out_spearman": held_out_spearman(),
                "seconds": time.perf_counter() - t0,
            }
            curve.append(row)
            losses = []
            print(
                f"step {row['step']}: train MSE / variance {row['train_mse_rel']:.3f}, "
                f"held-out Spearman {row['held_out_spearman']:+.3f} ({row['seconds']:.0f} s)",
                flush=True,
            )
    return {
        "target": args.target,
        "shards": str(args.shards),
        "truth": str(args.truth),
        "config": str(args.config),
        "overrides": list(args.overrides),
        "command": " ".join(["python -m tte_scale.benchmarks.encoder_ceiling", *sys.argv[1:]]),
        "model": {"name": cfg.model.name, **{k: v for k, v in encoder_overrides(cfg).items()}},
        "steps": args.steps,
        "batch_size": batch,
        "augmentation": {"enabled": augment.enabled, "flip_axes": list(augment.flip_axes)},
        "device": device.type,
        "scans": {s: len(data[s][1]) for s in SPLITS},
        "scans_left_out": {s: len(data[s][2]) for s in SPLITS},
        "seconds_per_step": train_s / max(args.steps, 1),
        "curve": curve,
        "final_held_out_spearman": curve[-1]["held_out_spearman"],
        "best_held_out_spearman": max(r["held_out_spearman"] for r in curve),
    }


def markdown(r: dict, machine: str) -> str:
    lines = [
        f"# Encoder ceiling: `{r['target']}` learned directly from the images",
        "",
        f"Machine: {machine}. {r['scans']['train']} train / {r['scans']['held_out']} held-out scans, "
        f"batch {r['batch_size']}, {r['steps']} steps, {r['seconds_per_step']:.2f} s per optimizer step ({r['device']}; "
        "elapsed includes the held-out reports).",
        f"Command: `{r['command']}`",
        "",
        *md_table(
            ["step", "train MSE / variance", "held-out Spearman", "elapsed (s)"],
            [
                [
                    c["step"],
                    "" if c["train_mse_rel"] is None else f"{c['train_mse_rel']:.3f}",
                    f"{c['held_out_spearman']:+.3f}",
                    f"{c['seconds']:.0f}",
                ]
                for c in r["curve"]
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = script_parser("tte_scale.benchmarks.encoder_ceiling", __doc__)
    add_truth_args(ap)
    ap.add_argument(
        "--config", default=PRETRAIN, help=f"pretraining config: encoder, optimizer, seed (default {PRETRAIN})"
    )
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--steps", type=int, default=900, help="optimizer steps (default 900, the demo's)")
    ap.add_argument("--eval-every", type=int, default=100, help="steps between held-out reports (default 100)")
    add_tail_args(ap)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.eval_every < 1:
        raise InputError(f"--steps {args.steps} / --eval-every {args.eval_every}: must be >= 1")
    result = run(args)
    write_ceiling(args, "encoder_ceiling", result, result["device"], markdown)
    return 0


if __name__ == "__main__":
    script_exit(main, "python -m tte_scale.benchmarks.encoder_ceiling")
