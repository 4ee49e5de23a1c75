"""The pretraining loop: fetch batch -> forward -> loss -> backward -> step.

The loss is the objective's (``cfg.objective``): the fused TTE loss, or the supervised
baseline's masked BCE on the benchmark labels; ``parts.model_inputs`` picks the batch fields.

Legend: B micro-batch per rank, K tasks, J time bins.

``train(cfg)`` reads top to bottom: check the config, set up ranks, build the model and
data, resume, then loop {step, log, checkpoint, evaluate} until ``max_steps`` or a
preemption signal. One optimizer step = ``optim.grad_accum_steps`` micro-batches per rank;
DeepSpeed applies the update on the last one (``engine.step()`` counts micro-steps itself,
so the accumulation boundary is never computed here).

Host synchronization: a step reads nothing back from the device. Its loss, gradient norm and
"skipped" flag stay device tensors (the non-finite check is all-reduced on the device, see
train/guards.py), so the host queues step n+1 -- including the next batch's copy out of the
loader's shared memory and its non-blocking host-to-device copy -- while the device still runs
step n. The figures are reduced over ranks and read once per ``telemetry.log_every`` steps (and
at checkpoint / evaluation steps and the last one), together with the preemption flag; the
non-finite guard then sees each step of the interval in order. A preemption signal is
therefore acted on at the next such step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from tte_scale.config import ConfigError
from tte_scale.errors import InputError, TteScaleError
from tte_scale.train import ds_config, run_dir, telemetry
from tte_scale.train.best import BestTracker
from tte_scale.train.checkpoint import (
    CheckpointManager,
    Found,
    checksum_share,
    tag_for,
    to_universal,
    trainer_state_name,
)
from tte_scale.train.config import PretrainConfig, resolve_batch
from tte_scale.train.dist import (
    DistEnv,
    cuda_device_index,
    dist_env,
    init_distributed,
    leave_process_group,
    wait_group,
)
from tte_scale.train.evaluate import evaluate
from tte_scale.train.guards import GuardedAdamW, NonFiniteGuard
from tte_scale.train.metrics_log import MetricsWriter
from tte_scale.train.parts import RunParts, build_parts, check_model_config, model_inputs, with_volume_shape
from tte_scale.train.rng import capture_rng, restore_rng, seed_everything
from tte_scale.train.signals import EXIT_REQUEUE, StopFlag, signals_blocked
from tte_scale.train.task_weights import learnability_weights, task_weight_summary

log = logging.getLogger(__name__)

TRAINER_STATE_VERSION = 1


@dataclass(slots=True)
class Run:
    """Everything the loop mutates, in one place."""

    cfg: PretrainConfig
    env: DistEnv
    device: torch.device
    parts: RunParts
    engine: Any
    optimizer: torch.optim.Optimizer
    ckpts: CheckpointManager
    guard: NonFiniteGuard
    aug_gen: torch.Generator
    writer: MetricsWriter
    run_id: str | None = None
    step: int = 0
    eval_start: dict | None = None
    last_saved: int = -1
    extra: dict = field(default_factory=dict)


def train(cfg: PretrainConfig, parts: RunParts | None = None, stop: StopFlag | None = None) -> int:
    """Train until ``cfg.max_steps``; returns 0, or :data:`EXIT_REQUEUE` after a preemption signal
    (the process group is then still up: the caller calls
    :func:`tte_scale.train.dist.leave_process_group` when done).

    ``stop``: an already installed flag (a launcher installs it before the slow imports and
    setup, so a signal that arrives then is not lost, and reads ``stop.signum`` afterwards);
    the caller then uninstalls it. By default the loop installs its own.
    """
    setup = _set_up(cfg, check_data=parts is None)
    code = _train(setup, parts, stop)
    # Every rank gets here together. A finished run leaves its process group (see
    # leave_process_group); after a preemption the caller still needs it (launch/job.py waits on
    # it for rank 0's requeue) and leaves it then. On an exception it is left alone: another rank
    # may still be in a collective, and the process is ending anyway.
    if code != EXIT_REQUEUE:
        leave_process_group()
    return code


def _train(setup: SetUp, parts: RunParts | None, stop: StopFlag | None) -> int:
    cfg, env = setup.cfg, setup.env
    seed_everything(cfg.seed)  # identical initial weights on every rank
    parts = parts or build_parts(cfg, setup.micro, env.rank, env.world_size)
    run = _build_run(setup, parts)
    if setup.resume is not None:
        _load(run, setup.resume)
    else:
        seed_everything(cfg.seed + 1 + env.rank)  # per-rank dropout / drop-path streams
    run.writer.write(  # a new attempt: readers drop what earlier attempts logged after this step
        {
            "kind": "start",
            "step": run.step,
            "run_id": run.run_id,
            "resumed_from": setup.resume.path.name if setup.resume else None,
            "world_size": env.world_size,
        }
    )

    own_stop = stop is None
    stop = StopFlag().install() if own_stop else stop
    batches = _stream(parts.train_loader)
    bar = _progress(run)
    first_step = run.step
    pending: list[dict] = []
    interval_start = time.perf_counter()
    try:
        while run.step < cfg.max_steps:
            out = train_step(run, batches)
            run.step += 1
            pending.append(out)
            bar.update(1)
            if run.step == first_step + 1:
                run.extra["memory"] = telemetry.model_state_bytes(run.engine.module, run.optimizer)
            _heartbeat(
                run, force=run.step in (first_step + 1, cfg.max_steps) or _every(run.step, cfg.checkpoint.every_steps)
            )
            if not _sync_step(run):
                continue
            records, stop_now = _reduce_interval(run, pending, interval_start, stop.requested)
            pending, interval_start = [], time.perf_counter()
            for stats in records:
                run.guard.update(stats["skipped"], stats["step"], stats["loss"], stats["grad_norm"])
                _log(run, stats, bar, stop_now)
            if stop_now:
                _save(run)
                log.warning("rank %d: preemption signal: saved step %d, exiting for requeue", env.rank, run.step)
                return EXIT_REQUEUE
            if _every(run.step, cfg.checkpoint.every_steps):
                _save(run)
            if _every(run.step, cfg.eval.every_steps) and _eval(run):
                break  # early stopping (eval.patience): the step is saved below
        if run.last_saved != run.step:
            _save(run)
        if not _every(run.step, cfg.eval.every_steps):
            _eval(run)
        if cfg.checkpoint.export_encoder:
            _export(run)
        return 0
    finally:
        if own_stop:
            stop.uninstall()
        batches.close()
        parts.train_loader.close()  # its workers outlive epochs; stop them with the run
        bar.close()
        run.writer.close()


def train_step(run: Run, batches: Iterator[dict]) -> dict[str, Any]:
    """One optimizer step over ``grad_accum_steps`` micro-batches: this rank's figures, the loss,
    gradient norm and skipped flag as device tensors (read later, once per log interval)."""
    cfg, engine = run.cfg, run.engine
    for group in run.optimizer.param_groups:
        group["lr"] = ds_config.lr_at(run.step, cfg)
    loss_sum = torch.zeros((), dtype=torch.float32, device=run.device)
    bad = torch.zeros((), dtype=torch.bool, device=run.device)
    data_s, grad_norm = 0.0, None
    for micro in range(cfg.optim.grad_accum_steps):
        t0 = time.perf_counter()
        raw = next(batches, None)
        if raw is None:
            raise InputError(
                f"split {cfg.data.train_split!r} of {cfg.data.shards_dir} gives no batch of "
                f"{cfg.optim.global_batch_size} samples"
            )
        batch = _prepare(run, raw)
        data_s += time.perf_counter() - t0
        loss = engine(*model_inputs(cfg.objective, batch, run.parts.bin_starts))
        if run.step + 1 in cfg.guards.inject_nonfinite_steps:
            loss = loss * float("nan")
        bad = bad | _any_rank(~torch.isfinite(loss.detach()))
        # A non-finite loss on any rank makes every rank's gradients NaN, so all ranks skip
        # the update together (DeepSpeed's overflow check or GuardedAdamW) and stay in sync.
        engine.backward(loss * torch.where(bad, float("nan"), 1.0).to(loss.dtype))
        if cfg.zero.stage == 0 and micro == cfg.optim.grad_accum_steps - 1:
            grad_norm = _full_grad_norm(engine.module, run.device)  # DeepSpeed reports none without ZeRO
        engine.step()
        loss_sum += loss.detach().float()
    if grad_norm is None:
        grad_norm = _as_device_scalar(engine.get_global_grad_norm(), run.device)
    return {
        "step": run.step + 1,
        "loss": loss_sum / cfg.optim.grad_accum_steps,
        "data_s": data_s,
        "grad_norm": grad_norm,
        "skipped": bad | ~torch.isfinite(grad_norm),
        "lr": run.optimizer.param_groups[0]["lr"],
    }


def _as_device_scalar(value, device: torch.device) -> torch.Tensor:
    """DeepSpeed's global gradient norm (a tensor, a float, or None when it computes none) as a
    0-d float32 tensor on ``device``, without reading a device value back."""
    if value is None:
        return torch.full((), math.nan, device=device)
    if isinstance(value, torch.Tensor):
        return value.detach().reshape(()).float().to(device, non_blocking=True)
    return torch.full((), float(value), device=device)


# -- setup ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class SetUp:
    """What ``train`` knows before it builds anything: the checked config, ranks, device, run folder."""

    cfg: PretrainConfig
    env: DistEnv
    micro: int
    device: torch.device
    ckpts: CheckpointManager
    resume: Found | None
    started: run_dir.RunStart


def _set_up(cfg: PretrainConfig, check_data: bool = True) -> SetUp:
    """Every check that can fail before the run changes anything, then the run folder's start.

    Config, device, run folder and the inputs' metadata are checked on every rank alike before the
    ranks connect; rank 0 then checks the labels fingerprint, every rank verifies its share of the
    resume checkpoint, and only after all agree does rank 0 touch ``out_dir``.
    """
    env = dist_env()
    micro = resolve_batch(cfg, env.world_size)  # config errors before any work
    check_model_config(cfg)  # again below, once model.img_size follows the shards
    device = _pick_device(cfg, env)
    ckpts = CheckpointManager(cfg.out_dir / "checkpoints", cfg.checkpoint.keep_last)
    plan = run_dir.plan_start(
        cfg.out_dir,
        resume=cfg.checkpoint.resume,
        overwrite=cfg.checkpoint.overwrite,
        has_checkpoint=not cfg.checkpoint.resume and ckpts.newest_complete() is not None,
        inputs=[cfg.data.shards_dir, cfg.data.labels_dir, cfg.model.init_encoder, cfg.model.init_weights],
    )
    if check_data:
        cfg = _check_inputs(cfg)  # format, K, volume shape -> model.img_size (metadata only)
    unused = check_model_config(cfg)["unused"]
    if unused and env.rank == 0:
        log.warning(
            "model %s does not have %s: these model settings are not used",
            cfg.model.name,
            ", ".join(f"{k}={v!r}" for k, v in unused.items()),
        )
    if check_data:
        _check_shared_memory(cfg, micro, env)
    if device.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    init_distributed(device.type, cfg.dist.timeout_minutes)
    _set_cpu_group(cfg)
    try:
        if check_data:
            _on_rank0(lambda: _check_labels(cfg), env)  # one pass over the labels, on one rank
        resume = _resume_point(cfg, env, ckpts) if plan == "resume" else None
        started = _start_run(cfg, env, plan, resume)
    except (TteScaleError, ConfigError):
        leave_process_group()  # every rank refuses alike; leave the group before the process exits
        raise
    return SetUp(cfg=cfg, env=env, micro=micro, device=device, ckpts=ckpts, resume=resume, started=started)


def _pick_device(cfg: PretrainConfig, env: DistEnv) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise ConfigError(f"device: cuda, but {why} (torch {torch.__version__}); set device=cpu or auto")
        index = cuda_device_index(env.local_rank, torch.cuda.device_count())
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _check_shared_memory(cfg: PretrainConfig, micro: int, env: DistEnv) -> None:
    """/dev/shm holds the train and eval loaders' slot rings of every rank on this node (the train
    loader's workers live on while an evaluation runs), before anything is allocated."""
    from tte_scale.data.shm import check_shm, ring_bytes

    d = cfg.data
    per_loader = ring_bytes(d.num_workers, d.prefetch_factor, micro, tuple(cfg.model.img_size))
    check_shm(2 * per_loader, env.local_world_size, what="the train and eval loaders' worker slots")


def _on_rank0(fn, env: DistEnv):
    """``fn()`` on rank 0 only, its result (or its InputError/ConfigError, raised again) on every rank."""
    out = [None]
    if env.is_main:
        try:
            out[0] = ("ok", fn())
        except (InputError, ConfigError) as exc:
            out[0] = ("error", exc)
    if dist.is_initialized() and env.world_size > 1:
        dist.broadcast_object_list(out, src=0, group=_cpu_group())
    status, value = out[0]
    if status == "error":
        raise value
    return value


def _check_inputs(cfg: PretrainConfig) -> PretrainConfig:
    """Refuse shards and labels that do not belong together, from their metadata (every rank,
    instant); returns ``cfg`` with ``model.img_size`` set to the shards' volume shape."""
    from tte_scale.data.build_info import check_run_inputs

    d = cfg.data
    if d.shards_dir is None or d.labels_dir is None:
        raise ConfigError("data.shards_dir and data.labels_dir: both are required to train")
    info = check_run_inputs(d.shards_dir, d.labels_dir, d.format, fingerprint=False)
    # Both loaders are built (evaluation runs at the end even with eval.every_steps=0): a split
    # without scans is refused here, not minutes later after DeepSpeed has started.
    for key, split in (("data.train_split", d.train_split), ("data.eval_split", d.eval_split)):
        if info.splits is not None and split not in info.splits:
            raise ConfigError(
                f"{key}={split}: the shards {d.shards_dir} hold no `ok` scans in split {split!r} (splits: "
                f"{', '.join(info.splits) or 'none'}); set {key} to one of them"
            )
    return with_volume_shape(cfg, info.volume_shape, d.shards_dir)


def _check_labels(cfg: PretrainConfig) -> None:
    """Rank 0: ``data.labels_dir`` is the labels folder the shards were built from (fingerprint)."""
    from tte_scale.data.build_info import check_run_inputs

    d = cfg.data
    info = check_run_inputs(d.shards_dir, d.labels_dir, d.format)
    if info.labels_fingerprint is None:
        log.warning(
            "%s/manifest/build.json records no labels_fingerprint: cannot check that data.labels_dir %s is the "
            "labels folder the shards were built from",
            d.shards_dir,
            d.labels_dir,
        )


def _resume_point(cfg: PretrainConfig, env: DistEnv, ckpts: CheckpointManager) -> Found:
    """The checkpoint every rank resumes from: ``latest``'s folder or the newest verified one before
    it; each rank checksums its share of the files and the verdicts are all-reduced."""
    from tte_scale.outputs import read_marker

    def all_agree(ok: bool) -> bool:
        t = torch.tensor([float(ok)])  # gloo group on CPU tensors, whatever the training device
        if dist.is_initialized() and env.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MIN, group=_cpu_group())
        return bool(t.item())

    run_id = (read_marker(cfg.out_dir) or {}).get("run_id")
    return ckpts.require_resume_point(run_id=run_id, rank=env.rank, world_size=env.world_size, all_agree=all_agree)


_CPU_GROUP = None


def _set_cpu_group(cfg: PretrainConfig) -> None:
    """Every rank creates the run's gloo group (``dist.rank0_work_timeout_minutes``) right after the
    process group, so the ranks create it in the same order."""
    global _CPU_GROUP
    _CPU_GROUP = wait_group(cfg.dist.rank0_work_timeout_minutes)


def _cpu_group():
    """The gloo group for the object/flag exchanges of the set-up (NCCL reduces device tensors only)
    and for waiting while rank 0 works alone (its own, longer timeout: train/dist.py)."""
    if _CPU_GROUP is None:
        raise RuntimeError("_set_up creates the gloo group first")
    return _CPU_GROUP


def _start_run(cfg: PretrainConfig, env: DistEnv, plan: str, resume: Found | None) -> run_dir.RunStart:
    """Rank 0 clears a replaced run and writes the owner marker, after every rank has agreed."""
    if dist.is_initialized():
        dist.barrier(group=_cpu_group())  # rank 0 may have spent long on the labels check
    hint = resume.run_id if resume is not None else None
    return _on_rank0(lambda: run_dir.start_run(cfg.out_dir, plan, hint), env)


def _build_run(setup: SetUp, parts: RunParts) -> Run:
    import deepspeed

    from tte_scale.data import AugmentConfig

    cfg, env, device, resume, started = setup.cfg, setup.env, setup.device, setup.resume, setup.started
    ds = ds_config.build_ds_config(cfg, env.world_size, device.type)
    if resume is not None and resume.world_size != env.world_size and cfg.zero.stage >= 1:
        ds["checkpoint"] = {"load_universal": True}  # partitions are re-cut for the new world size
    groups = ds_config.param_groups(parts.model, cfg.optim.weight_decay)
    if cfg.zero.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps, adamw_mode=True)
    else:
        optimizer = GuardedAdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps)
    engine, _, _, _ = deepspeed.initialize(model=parts.model, optimizer=optimizer, config=ds)
    parts.bin_starts = parts.bin_starts.to(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 1_000_003 + env.rank)
    run = Run(
        cfg=cfg,
        env=env,
        device=device,
        parts=parts,
        engine=engine,
        optimizer=optimizer,
        ckpts=setup.ckpts,
        guard=NonFiniteGuard(cfg.guards.max_consecutive_nonfinite),
        aug_gen=gen,
        writer=MetricsWriter(
            cfg.out_dir, enabled=env.is_main, tensorboard=cfg.telemetry.tensorboard, attempt=started.attempt
        ),
        run_id=started.run_id,
    )
    lo, hi = cfg.data.hu_window
    run.extra["augment"] = AugmentConfig(
        enabled=cfg.data.augmentation, hu_min=lo, hu_max=hi, flip_axes=tuple(cfg.data.flip_axes)
    )
    run.extra["dtype"] = torch.bfloat16 if ds["bf16"]["enabled"] else torch.float32
    run.extra["peak"] = telemetry.device_peak(device, cfg.telemetry.peak_tflops)  # a PeakSpec: MFU names its entry
    run.extra["best"] = BestTracker.from_config(cfg.eval)
    if parts.eval_loader is not None:
        run.eval_start = parts.eval_loader.state_dict()
    return run


def _prepare(run: Run, raw: dict, augment: bool = True) -> dict:
    """Move a loader batch to the device: int16 HU -> float volume (augmented when enabled)."""
    import dataclasses

    from tte_scale.data import augment_batch, to_device

    aug = run.extra["augment"]
    aug = aug if augment else dataclasses.replace(aug, enabled=False)  # same HU window
    batch = augment_batch(to_device(raw, run.device), aug, run.aug_gen)
    batch["volume"] = batch["volume"].to(run.extra["dtype"])
    batch["tte_time"] = batch["tte_time"].float()
    batch["tte_event"] = batch["tte_event"].bool()
    cols = run.parts.bench_columns
    if cols is not None:  # supervised_tasks: the chosen benchmark tasks only (loss, C-index report)
        for key in ("bench_label", "bench_time", "bench_event"):
            if key in batch:
                batch[key] = batch[key][:, cols]
    return batch


def _stream(loader, limit: int | None = None) -> Iterator[dict]:
    """Batches across epochs (or ``limit`` of one pass), fetched with preemption signals blocked.

    The loader keeps its workers from one epoch to the next, so a new pass here costs nothing.
    """
    served, empty_passes = 0, 0
    while limit is None or served < limit:
        it, empty = iter(loader), True
        try:
            while limit is None or served < limit:
                with signals_blocked():  # DataLoader workers started here inherit the mask
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                empty = False
                served += 1
                yield batch
        finally:
            it.close()
        # A resumed cursor at the very end of an epoch gives one empty pass (which advances
        # the epoch); two in a row mean the split cannot fill a batch.
        empty_passes = empty_passes + 1 if empty else 0
        if empty_passes == 2 or limit is not None:
            return


# -- per-step bookkeeping -------------------------------------------------------------------------


def _full_grad_norm(module: torch.nn.Module, device: torch.device) -> torch.Tensor:
    """L2 norm of the (already all-reduced, unclipped) gradients when every rank holds them all;
    a 0-d float32 device tensor (not read back here)."""
    grads = [p.grad.detach() for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=device)
    return torch.nn.utils.get_total_norm(grads, 2.0).float().reshape(())


def _any_rank(flag: torch.Tensor) -> torch.Tensor:
    """``flag`` (a 0-d bool device tensor) OR-ed over ranks, on the device (NCCL reduces device tensors only)."""
    t = flag.reshape(1).float()
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t[0] > 0


def _sync_step(run: Run) -> bool:
    """Whether the figures are read back after this step: every ``telemetry.log_every`` steps, before
    a checkpoint or evaluation (the guard and the stop flag are then up to date), and at the end."""
    cfg, step = run.cfg, run.step
    return (
        _every(step, cfg.telemetry.log_every)
        or step == cfg.max_steps
        or _every(step, cfg.checkpoint.every_steps)
        or _every(step, cfg.eval.every_steps)
    )


def _reduce_interval(run: Run, steps: list[dict], started: float, stop: bool) -> tuple[list[dict[str, Any]], bool]:
    """All ranks' figures of the steps since the last read, summed/maxed over ranks and read back
    in one transfer (the interval's only host sync); also syncs the stop flag. Returns one record
    per step (what rank 0 logs) and whether any rank got a preemption signal."""
    n = len(steps)
    dev = run.device
    per_step = torch.stack(
        [torch.stack([o["loss"].double(), o["grad_norm"].double(), o["skipped"].double()]) for o in steps]
    ).flatten()
    host = torch.tensor([o["data_s"] for o in steps] + [float(stop)], dtype=torch.float64)
    sums = torch.cat([per_step, host.to(dev, non_blocking=True)])
    mem = run.extra.pop("memory", None)
    maxes = torch.tensor(
        [float(telemetry.peak_memory_bytes(dev))] + ([mem["param_bytes"], mem["optim_bytes"]] if mem else []),
        dtype=torch.float64,
    ).to(dev, non_blocking=True)
    if dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(maxes, op=dist.ReduceOp.MAX)
    values = torch.cat([sums, maxes]).tolist()  # the one read back to the host
    interval_s = time.perf_counter() - started  # the device work of the interval is done by now
    world = run.env.world_size
    figures, data_s, stop_now = values[: 3 * n], values[3 * n : 4 * n], values[4 * n] > 0
    peak_mem, model_mem = values[4 * n + 1], values[4 * n + 2 :]
    if model_mem and run.env.is_main:
        run.writer.write(
            {
                "kind": "memory",
                "step": steps[0]["step"],
                "param_bytes_per_rank": int(model_mem[0]),
                "optim_bytes_per_rank": int(model_mem[1]),
                "zero_stage": run.cfg.zero.stage,
                "world_size": world,
            }
        )
    # Per-step wall times are not measurable without a sync per step: each step of the interval
    # gets the interval's mean.
    step_s = interval_s / n
    rates = telemetry.throughput(
        samples=run.cfg.optim.global_batch_size,
        step_seconds=step_s,
        data_seconds=sum(data_s) / world / n,
        flops_per_sample=run.parts.flops_per_sample,
        tokens_per_sample=run.parts.tokens_per_sample,
        world_size=world,
        peak=run.extra["peak"],
    )
    records, skipped_total = [], run.guard.total
    for i, o in enumerate(steps):
        loss, grad_norm, skipped = figures[3 * i] / world, figures[3 * i + 1] / world, figures[3 * i + 2] > 0
        skipped_total += skipped
        records.append(
            {
                "step": o["step"],
                "loss": loss,
                "lr": o["lr"],
                "grad_norm": grad_norm,
                "skipped": skipped,
                "skipped_total": skipped_total,
                "step_s": step_s,
                "data_s": data_s[i] / world,
                "peak_mem_gib": peak_mem / 2**30,
                **rates,
            }
        )
    return records, stop_now


def _log(run: Run, stats: dict, bar, stop: bool) -> None:
    last = stats["step"] == run.step  # the step the interval was read at
    if run.env.is_main and (_every(stats["step"], run.cfg.telemetry.log_every) or stats["skipped"] or (stop and last)):
        run.writer.write({"kind": "train", **stats})
    if bar is not None and last:
        bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}", refresh=False)


HEARTBEAT_S = 30.0
"""At most one per-rank progress line per this many seconds (plus the first, last and checkpoint steps)."""


def _heartbeat(run: Run, force: bool = False) -> None:
    """Every rank logs the step it finished, so its own log shows how far it got (a rank that
    stalls or dies stands out; `tte-scale launch status` reads these lines)."""
    now = time.monotonic()
    if force or now - run.extra.get("heartbeat", -math.inf) >= HEARTBEAT_S:
        log.info("rank %d: step %d done", run.env.rank, run.step)
        run.extra["heartbeat"] = now


def _progress(run: Run):
    from tqdm import tqdm

    if not (run.env.is_main and run.cfg.telemetry.progress_bar):
        return _NoBar()
    return tqdm(total=run.cfg.max_steps, initial=run.step, desc="train", unit="step", dynamic_ncols=True)


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kw) -> None: ...
    def close(self) -> None: ...


def _every(step: int, n: int) -> bool:
    return n > 0 and step % n == 0


# -- checkpoint, evaluation, export ---------------------------------------------------------------


def _trainer_state(run: Run) -> dict:
    return {
        "version": TRAINER_STATE_VERSION,
        "step": run.step,
        "world_size": run.env.world_size,
        "rng": capture_rng(),
        "aug_gen": run.aug_gen.get_state(),
        "guard": run.guard.state_dict(),
        "loader": run.parts.train_loader.state_dict(),
        "best": run.extra["best"].state_dict(),
    }


def _save(run: Run) -> None:
    """All ranks write their shards and trainer state, then checksum their share of the folder; rank 0
    marks it complete. An earlier attempt's folder of the same step is removed first (marker first)."""
    if run.env.is_main:
        run.ckpts.clear(run.step)
    dist.barrier()
    folder = run.ckpts.folder(run.step)
    run.engine.save_checkpoint(
        str(run.ckpts.root), tag=folder.name, save_latest=False, client_state={"universal_checkpoint_info": {}}
    )
    torch.save(_trainer_state(run), folder / trainer_state_name(run.env.rank))
    dist.barrier()
    share = checksum_share(folder, run.env.rank, run.env.world_size)
    stats = getattr(run.parts.train_loader, "stats", dict)()
    gathered = [None] * run.env.world_size if run.env.is_main else None
    dist.gather_object((share, stats), gathered, dst=0, group=_cpu_group())
    if run.env.is_main:
        files = {name: rec for rank_share, _ in gathered for name, rec in rank_share.items()}
        run.ckpts.publish(run.step, run.env.world_size, files=files, run_id=run.run_id)
        run.writer.write({"kind": "data", "step": run.step, **_sum_loader_stats([st for _, st in gathered])})
    dist.barrier()
    run.last_saved = run.step


def _sum_loader_stats(per_rank: list[dict]) -> dict:
    """The loaders' counters (samples served, corrupt/missing samples replaced, damaged shards) summed
    over ranks, since the run started; the cursor (epoch, consumed) is the same on every rank."""
    out = {k: v for k, v in per_rank[0].items() if k in ("epoch", "consumed")}
    for stats in per_rank:
        for k, v in stats.items():
            if k not in ("epoch", "consumed") and isinstance(v, int):
                out[k] = out.get(k, 0) + v
    return out


def _load(run: Run, found: Found) -> None:
    """Restore DeepSpeed state, then this rank's step, RNG streams, guard and loader cursor."""
    path = found.path
    if found.world_size != run.env.world_size and run.cfg.zero.stage >= 1:
        if run.env.is_main:
            to_universal(found)
        dist.barrier(group=_cpu_group())  # rank 0 alone converts: the long-timeout group
        path = found.path.with_name(found.path.name + "_universal")
    load_path, _ = run.engine.load_checkpoint(str(run.ckpts.root), tag=path.name, load_lr_scheduler_states=False)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load {path}")
    own = path / trainer_state_name(run.env.rank)
    state = torch.load(own if own.exists() else path / trainer_state_name(0), map_location="cpu", weights_only=False)
    if state.get("version") != TRAINER_STATE_VERSION:
        raise RuntimeError(f"{own}: trainer state version {state.get('version')!r}, expected {TRAINER_STATE_VERSION}")
    run.step = run.last_saved = int(state["step"])
    run.guard.load_state_dict(state["guard"])
    run.extra["best"].load_state_dict(state.get("best"))
    run.ckpts.protected = run.extra["best"].protected()
    run.parts.train_loader.load_state_dict(state["loader"])
    if own.exists() and state["world_size"] == run.env.world_size:
        restore_rng(state["rng"])
        run.aug_gen.set_state(state["aug_gen"])
    else:  # another world size: rank streams cannot be matched, start fresh ones from the step
        seed_everything(run.cfg.seed + 1 + run.env.rank + 7919 * run.step)
    log.info("rank %d: resumed from %s at step %d", run.env.rank, path, run.step)


def _eval(run: Run) -> bool:
    """Evaluate on the tuning split; True when early stopping says to stop (tte_scale/train/best.py)."""
    loader = run.parts.eval_loader
    if loader is None:
        return False
    loader.load_state_dict(run.eval_start)  # every evaluation sees the same first batches
    batches = _stream(loader, limit=run.cfg.eval.max_batches)
    learn = run.cfg.objective == "tte" and run.cfg.head.task_weights == "learnability"
    task_losses: dict | None = {} if learn else None
    try:
        metrics = evaluate(
            run.engine,
            batches,
            lambda b: _prepare(run, b, augment=False),
            run.parts.bin_starts,
            max_batches=run.cfg.eval.max_batches,
            zero_stage=run.cfg.zero.stage,
            bench_tasks=run.parts.bench_tasks,
            objective=run.cfg.objective,
            task_losses=task_losses,
        )
    finally:
        batches.close()
        loader.close()  # the next evaluation restarts at eval_start anyway: no idle workers until then
    if task_losses:  # same all-reduced sums on every rank: same weights everywhere
        weights = learnability_weights(task_losses["model"], task_losses["baseline"], *run.cfg.head.task_weights_range)
        run.engine.module.head.set_task_weights(weights)
        metrics.update(task_weight_summary(weights))
    if run.env.is_main:
        run.writer.write({"kind": "eval", "step": run.step, **metrics})
    best = run.extra["best"]
    decision = best.update(run.step, metrics)  # same metrics on every rank: same decision
    if decision.improved:
        run.ckpts.protected = best.protected()
        if run.last_saved != run.step:
            _save(run)
    return decision.stop


def _export(run: Run) -> None:
    from tte_scale.train.export import export_encoder

    if run.env.is_main:
        best = run.extra["best"]
        selection = best.record(run.step) if best.active else None
        tag = tag_for(best.export_step(run.step))
        out = export_encoder(run.cfg, run.ckpts.root, tag, run.cfg.out_dir / "encoder", selection)
        log.info("exported the encoder to %s", out)
    dist.barrier(group=_cpu_group())  # rank 0 alone exports: the long-timeout group
