"""`PretrainConfig`: every setting of a pretraining run, one small section per component.

Loaded with :func:`tte_scale.config.load_config` from ``configs/pretrain/*.yaml`` plus
``--set a.b=c``. Checks that need the world size (batch divisibility) live in
:func:`resolve_batch`, called before any model or data is built.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tte_scale.config import ConfigError, check
from tte_scale.data.config import LoaderSettings
from tte_scale.models.monai3d import CONFIGS as MONAI_CONFIGS
from tte_scale.models.vit3d import ViTConfig


@dataclass(kw_only=True, slots=True)
class _ModelChoice:
    name: str = "vit3d_tiny"
    """Registered encoder name (``tte_scale.models.list_models()``): a ViT size (vit3d_base, ...)
    or one of the paper's MONAI backbones (swinunetr_encoder, densenet121_3d, resnet152_3d)."""
    init_encoder: str | None = None
    """Fine-tuning: start the encoder from this export (a folder written by `tte-scale train`
    or save_pretrained) instead of a random init; its architecture and HU window must match
    this config (checked before training). Null: random init."""
    init_weights: str | None = None
    """Start the encoder from the weights in this local file (safetensors, or a torch state dict
    read with weights_only=True), e.g. MONAI's self-supervised SwinUNETR weights. Keys are mapped
    (``module.``/``swinViT.``/``encoder.`` prefixes dropped) and every encoder tensor must be
    there with its shape: a partial load is refused, listing the keys. Null: random init."""
    init_weights_ignore: list[str] = field(default_factory=list)
    """Key prefixes of ``init_weights`` (after mapping) that are not part of the encoder and are
    dropped, e.g. [rotation_head., contrastive_head., conv.] for MONAI's SSL Swin checkpoint."""

    def __post_init__(self) -> None:
        check(
            not (self.init_encoder and self.init_weights),
            "model.init_weights",
            "set either model.init_encoder (an export) or model.init_weights (a weights file), not both",
        )
        check(
            all(isinstance(p, str) and p for p in self.init_weights_ignore),
            "model.init_weights_ignore",
            f"must be a list of non-empty key prefixes, got {self.init_weights_ignore!r}",
        )


ARCHITECTURE_CONFIGS = (ViTConfig, *MONAI_CONFIGS.values())


def _architecture_fields() -> list[tuple[str, Any, Any]]:
    """Every field of every registered architecture's config (ViTConfig first), optional, default
    null (= the registered model's value)."""
    out: dict[str, tuple[str, Any, Any]] = {}
    for cls in ARCHITECTURE_CONFIGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, (f.name, hints[f.name] | None, field(default=None)))
    return list(out.values())


ModelSection = dataclasses.make_dataclass(
    "ModelSection",
    _architecture_fields(),
    bases=(_ModelChoice,),
    kw_only=True,
    slots=True,
)
ModelSection.__module__ = __name__  # pickling finds it here (make_dataclass's module= is Python 3.12+)
ModelSection.__doc__ = """The encoder: ``name`` (a registered model), ``init_encoder``, ``init_weights``,
and every field of ``tte_scale.models.ViTConfig`` (documented there: depth, embed_dim, qk_norm,
stem, pool, ...) and of the MONAI backbones' configs (``tte_scale/models/monai3d.py``:
feature_size), each null by default = the registered model's value. Derived from the configs,
never copied: a new architecture field is settable here (``--set model.<field>=...``) as soon as
it exists. Fields the named model does not have (a ViT's depth for densenet121_3d) are not used
and are reported in the training log.
``img_size`` null (the default) takes the shards' canonical volume shape; a value that differs
from the shards is refused before training."""


@dataclass(kw_only=True, slots=True)
class HeadSection:
    rank: int = 512
    """Dimension r of the per-bin vectors and task embeddings."""
    bias_prefit: bool = True
    """Start the per-(bin, task) bias at the log empirical hazard of the train split."""
    feature_norm: str = "batch"
    """Standardize pooled features across the batch before the head ('batch') or not ('none');
    applies to the TTE and the supervised head. Without it a small cohort's features collapse
    (tte_scale/models/feature_norm.py). Statistics span every data-parallel rank's micro-batch
    (all-reduced inside the step, gradient-correct, as SyncBatchNorm), so W ranks x micro-batch
    1 standardize like one rank x micro-batch W; only a single process with a micro-batch of 1
    falls back to the running statistics (no standardization)."""
    task_init_std: float | None = None
    """Init std of the task embedding W_KR; null = 0.1/sqrt(rank), 0 = zeros."""
    bias_floor: float = 1e-6
    """Smallest hazard used in the prefit (avoids log 0 for tasks without events)."""
    num_tasks: int = 8192
    """Tasks K; only used by --estimate-memory when no labels folder is given (training reads K from the labels)."""
    bias_prefit_max_rows: int = 20000
    """Use at most this many train rows for the prefit (bounds memory for N x K labels)."""
    task_weights: Literal["uniform", "inverse_baseline", "learnability", "codes"] = "uniform"
    """Per-task weights of the TTE loss (tte_scale/train/task_weights.py): ``uniform`` (every
    task 1, the plain MOTOR loss); ``inverse_baseline`` (1 / each task's loss under the prefit
    bias alone on the train labels, fixed: relative improvement per task); ``learnability``
    (adaptive: at every periodic evaluation, each task's relative tuning-loss improvement over
    the prefit bias alone; uniform until the first one; needs eval.every_steps > 0); ``codes``
    (every task 1 except the codes named in ``task_weights_codes``: for codes known to depend on
    the image, and as the oracle of the data-driven schemes). Weights have mean 1, clipped to
    ``task_weights_range``; no gradient flows into them."""
    task_weights_codes: dict[str, float] = field(default_factory=dict)
    """``codes`` scheme: {code (as in the labels' vocab.parquet): weight before normalization}."""
    task_weights_range: tuple[float, float] = (0.1, 10.0)
    """[lo, hi] clip of the task weights (after dividing by their mean); lo may be 0."""

    def __post_init__(self) -> None:
        check(self.rank > 0, "head.rank", "must be positive")
        check(self.bias_floor > 0, "head.bias_floor", "must be positive")
        check(
            self.feature_norm in ("batch", "none"),
            "head.feature_norm",
            f"must be 'batch' or 'none', got {self.feature_norm!r}",
        )
        check(self.task_init_std is None or self.task_init_std >= 0, "head.task_init_std", "must be >= 0 or null")
        check(self.bias_prefit_max_rows > 0, "head.bias_prefit_max_rows", "must be positive")
        check(
            self.task_weights in ("uniform", "inverse_baseline", "learnability", "codes"),
            "head.task_weights",
            f"one of uniform, inverse_baseline, learnability, codes; got {self.task_weights!r}",
        )
        check(
            (self.task_weights == "codes") == bool(self.task_weights_codes),
            "head.task_weights_codes",
            "name the codes (with weights >= 0) exactly when head.task_weights is codes",
        )
        check(
            all(isinstance(v, (int, float)) and v >= 0 for v in self.task_weights_codes.values()),
            "head.task_weights_codes",
            f"weights must be numbers >= 0, got {self.task_weights_codes}",
        )
        check(
            self.task_weights != "learnability" or self.bias_prefit,
            "head.task_weights",
            "learnability measures each task's gain over the prefit bias: needs head.bias_prefit true",
        )
        lo_hi = tuple(self.task_weights_range)
        check(
            len(lo_hi) == 2 and 0 <= lo_hi[0] <= 1 <= lo_hi[1],
            "head.task_weights_range",
            f"expected [lo, hi] with 0 <= lo <= 1 <= hi, got {list(lo_hi)}",
        )


@dataclass(kw_only=True, slots=True)
class DataSection(LoaderSettings):
    """Shards, labels and the loader. The loader's own settings (format, num_workers,
    shuffle_window, max_bad_fraction, replacement_tries, verify_volume_sha256, prefetch_factor,
    cache_dir, cache_max_bytes, pin_memory, multiprocessing_context) are inherited from
    ``tte_scale.data.LoaderSettings``: declared and documented once, same defaults."""

    shards_dir: str | None = None
    """Shards folder written by `tte-scale shard` (required to train), or its fsspec URL
    (`s3://bucket/shards`: WebDataset tars are downloaded whole into the loader's cache
    (`cache_dir`), Zarr is read through zarr's fsspec store; README "Object storage")."""
    labels_dir: Path | None = None
    """Labels folder (bins.json, rows.parquet, tte.zarr) the shards were built from; checked
    against the labels fingerprint in the shards' manifest/build.json before training."""
    train_split: str = "train"
    """Split to train on."""
    eval_split: str = "tuning"
    """Split for the validation TTE loss and the benchmark C-index."""
    augmentation: bool = False
    """Random intensity jitter (and flips along `flip_axes`) on the train split."""
    flip_axes: list[int] = field(default_factory=list)
    """Axes (0=D, 1=H, 2=W) flipped at random when `augmentation` is on; none by default, since a
    left-right flip (W) destroys laterality in chest CT (tte_scale/data/config.py AugmentConfig)."""
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    """HU mapped to [0, 1] by ``tte_scale.data.hu_to_float``; stored in the exported encoder's
    config.json so that evaluation and other users normalize volumes the same way."""

    def __post_init__(self) -> None:
        LoaderSettings.__post_init__(self)  # zero-argument super() does not work in slots dataclasses
        check(
            len(self.hu_window) == 2 and self.hu_window[0] < self.hu_window[1],
            "data.hu_window",
            f"expected [min, max] with min < max, got {list(self.hu_window)}",
        )
        check(
            all(a in (0, 1, 2) for a in self.flip_axes) and len(set(self.flip_axes)) == len(self.flip_axes),
            "data.flip_axes",
            f"distinct axes among 0, 1, 2; got {list(self.flip_axes)}",
        )


@dataclass(kw_only=True, slots=True)
class OptimSection:
    global_batch_size: int = 8
    """Samples per optimizer step over all ranks = micro batch x world size x accumulation."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 1e-4
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine decay as a fraction of the peak."""
    warmup_steps: int = 100
    """Linear warmup from 0 to the peak, in optimizer steps."""
    weight_decay: float = 0.05
    """AdamW decoupled weight decay (not applied to biases, norms, embeddings)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""

    def __post_init__(self) -> None:
        check(self.global_batch_size > 0, "optim.global_batch_size", "must be positive")
        check(self.grad_accum_steps > 0, "optim.grad_accum_steps", "must be positive")
        check(self.lr > 0, "optim.lr", "must be positive")
        check(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio", "must be in [0, 1]")
        check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0")


@dataclass(kw_only=True, slots=True)
class ZeroSection:
    stage: Literal[0, 1, 2, 3] = 2
    """ZeRO stage: 0 plain data parallel, 1 optimizer states, 2 + gradients, 3 + parameters."""
    offload_optimizer: bool = False
    """Keep optimizer states on the CPU (stages 1-3; uses DeepSpeed's CPU Adam)."""
    offload_params: bool = False
    """Keep parameters on the CPU (stage 3 only)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Training precision: auto = bf16 on GPUs, fp32 on CPU."""
    reduce_bucket_size: int = 50_000_000
    """Elements per gradient reduce bucket."""
    stage3_prefetch_bucket_size: int = 50_000_000
    """Elements of parameters prefetched ahead of use (stage 3)."""

    def __post_init__(self) -> None:
        check(not self.offload_params or self.stage == 3, "zero.offload_params", "needs zero.stage: 3")
        check(not self.offload_optimizer or self.stage >= 1, "zero.offload_optimizer", "needs zero.stage >= 1")


@dataclass(kw_only=True, slots=True)
class CheckpointSection:
    every_steps: int = 100
    """Save every N optimizer steps (and always at the end); 0 saves only at the end."""
    keep_last: int = 3
    """Complete checkpoints kept; older ones are deleted."""
    resume: bool = False
    """Continue the run in out_dir from the checkpoint `latest` names (or the newest complete one
    before it when that one does not verify); an error if there is none."""
    overwrite: bool = False
    """Start a new run in an out_dir that holds one: first remove that run's own files
    (checkpoints/, metrics.jsonl, tb/, encoder/), only when out_dir carries the train owner
    marker; nothing else in out_dir is touched. Without it (or resume) such an out_dir is refused."""
    export_encoder: bool = True
    """At the end, write <out_dir>/encoder/ (model.safetensors + config.json) for load_pretrained."""

    def __post_init__(self) -> None:
        check(self.every_steps >= 0, "checkpoint.every_steps", "must be >= 0")
        check(self.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
        check(not (self.resume and self.overwrite), "checkpoint.overwrite", "cannot be combined with resume")


@dataclass(kw_only=True, slots=True)
class TelemetrySection:
    log_every: int = 1
    """Write a metrics line every N steps."""
    tensorboard: bool = True
    """Also write TensorBoard event files under <out_dir>/tb."""
    progress_bar: bool = True
    """tqdm progress bar on rank 0."""
    peak_tflops: float | None = None
    """Peak dense bf16 TFLOP/s per device for MFU; null looks it up (A100/H100/H200)."""

    def __post_init__(self) -> None:
        check(self.log_every >= 1, "telemetry.log_every", "must be >= 1")
        check(self.peak_tflops is None or self.peak_tflops > 0, "telemetry.peak_tflops", "must be positive")


@dataclass(kw_only=True, slots=True)
class EvalSection:
    every_steps: int = 0
    """Evaluate every N steps (and at the end); 0 only at the end."""
    max_batches: int = 50
    """Micro-batches per rank in one evaluation."""
    select: Literal["last", "val_loss", "cindex_mean"] = "last"
    """Which checkpoint becomes <out_dir>/encoder/: the last step, or the evaluated step with the
    lowest validation loss / highest mean tuning C-index (tte_scale/train/best.py). That step's
    checkpoint is kept besides checkpoint.keep_last; the choice is recorded in config.json.
    With head.task_weights=learnability, val_loss selection reads the unweighted tuning loss."""
    patience: int = 0
    """Stop early after this many evaluations in a row without improving `select` by more than
    `min_delta`; 0 never stops early."""
    min_delta: float = 0.0
    """Smallest change of the `select` metric that counts as an improvement."""

    def __post_init__(self) -> None:
        check(self.every_steps >= 0, "eval.every_steps", "must be >= 0")
        check(self.max_batches >= 1, "eval.max_batches", "must be >= 1")
        check(
            self.select in ("last", "val_loss", "cindex_mean"),
            "eval.select",
            f"one of last, val_loss, cindex_mean; got {self.select!r}",
        )
        check(self.patience >= 0, "eval.patience", "must be >= 0")
        check(self.min_delta >= 0, "eval.min_delta", "must be >= 0")
        check(
            self.select == "last" or self.every_steps > 0,
            "eval.select",
            f"{self.select!r} picks among periodic evaluations: set eval.every_steps > 0",
        )
        check(self.patience == 0 or self.select != "last", "eval.patience", "needs eval.select val_loss or cindex_mean")


@dataclass(kw_only=True, slots=True)
class GuardSection:
    max_consecutive_nonfinite: int = 5
    """Abort after this many optimizer steps in a row with a non-finite loss or grad norm."""
    inject_nonfinite_steps: list[int] = field(default_factory=list)
    """Fault injection for tests/drills: make the loss NaN at these optimizer steps (1-based)."""

    def __post_init__(self) -> None:
        check(self.max_consecutive_nonfinite >= 1, "guards.max_consecutive_nonfinite", "must be >= 1")


@dataclass(kw_only=True, slots=True)
class ClusterSection:
    nodes: int = 1
    """Nodes the run is meant for (memory estimate, launchers); the real world size comes from the environment."""
    gpus_per_node: int = 1
    """Devices per node the run is meant for."""

    def __post_init__(self) -> None:
        check(self.nodes >= 1, "cluster.nodes", "must be >= 1")
        check(self.gpus_per_node >= 1, "cluster.gpus_per_node", "must be >= 1")


@dataclass(kw_only=True, slots=True)
class DistSection:
    timeout_minutes: float = 30.0
    """Collectives (NCCL on GPUs, gloo on CPU) fail after waiting this long; DeepSpeed's own
    default is 10. Too short kills a healthy job whose ranks drift apart (a slow checkpoint
    write); too long leaves a hung job holding its nodes."""
    rank0_work_timeout_minutes: float = 240.0
    """How long the other ranks wait, on a separate gloo group, while rank 0 works alone: the
    universal checkpoint conversion on a resume with another world size, the encoder export at
    the end, the labels check and clearing a replaced run at the start. Both take minutes per
    billion parameters."""

    def __post_init__(self) -> None:
        check(self.timeout_minutes > 0, "dist.timeout_minutes", "must be positive")
        check(self.rank0_work_timeout_minutes > 0, "dist.rank0_work_timeout_minutes", "must be positive")


@dataclass(kw_only=True, slots=True)
class PretrainConfig:
    out_dir: Path = Path("runs/pretrain")
    """Run folder: checkpoints/, metrics.jsonl, tb/, encoder/ and the owner marker (tte_scale.outputs)."""
    max_steps: int = 1000
    """Optimizer steps to train."""
    objective: Literal["tte", "supervised"] = "tte"
    """What the encoder learns: ``tte`` = the MOTOR piecewise-exponential loss over the K
    pretraining tasks of the labels folder; ``supervised`` = the paper's baseline, binary
    cross-entropy on the benchmark tasks' horizon labels only (nulls masked)."""
    supervised_tasks: list[str] = field(default_factory=list)
    """Benchmark tasks the ``supervised`` objective trains on (names from the labels folder's
    bins.json ``bench_tasks``); empty = all of them, jointly. One name = per-task fine-tuning as
    in the paper: one run per task (``--set supervised_tasks=[pe]``), each export evaluated on
    its own task with ``tte-scale eval --per-task NAME=DIR``. The export records the list."""
    cpu_threads: int = 0
    """torch intra-op threads per rank when training on the CPU; 0 keeps torch's default. Small
    models run faster with 1: their ops are too short to split, and on shared cores extra
    threads spin waiting for each other (see configs/pretrain/demo.yaml)."""
    seed: int = 0
    """Seed for model init, data order and dropout (ranks derive their own)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: auto = CUDA when available."""
    model: ModelSection = field(default_factory=ModelSection)
    """Encoder."""
    head: HeadSection = field(default_factory=HeadSection)
    """TTE head."""
    data: DataSection = field(default_factory=DataSection)
    """Shards and loader."""
    optim: OptimSection = field(default_factory=OptimSection)
    """Batch, optimizer and schedule."""
    zero: ZeroSection = field(default_factory=ZeroSection)
    """DeepSpeed ZeRO and precision."""
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    """Checkpointing and export."""
    telemetry: TelemetrySection = field(default_factory=TelemetrySection)
    """Metrics and progress."""
    eval: EvalSection = field(default_factory=EvalSection)
    """Periodic evaluation."""
    guards: GuardSection = field(default_factory=GuardSection)
    """Non-finite step guard."""
    cluster: ClusterSection = field(default_factory=ClusterSection)
    """Intended cluster shape."""
    dist: DistSection = field(default_factory=DistSection)
    """Process-group timeouts."""

    def __post_init__(self) -> None:
        check(self.max_steps >= 1, "max_steps", "must be >= 1")
        check(self.cpu_threads >= 0, "cpu_threads", "must be >= 0")
        check(
            not self.supervised_tasks or self.objective == "supervised",
            "supervised_tasks",
            f"applies to objective=supervised only (objective is {self.objective!r})",
        )
        check(
            len(set(self.supervised_tasks)) == len(self.supervised_tasks) and all(self.supervised_tasks),
            "supervised_tasks",
            f"names must be non-empty and unique, got {self.supervised_tasks}",
        )
        check(
            self.head.task_weights != "learnability" or self.eval.every_steps > 0,
            "head.task_weights",
            "learnability is updated at the periodic evaluations: set eval.every_steps > 0",
        )
        check(
            self.head.task_weights == "uniform" or self.objective == "tte",
            "head.task_weights",
            f"weights the TTE loss; objective is {self.objective!r}",
        )


def resolve_batch(cfg: PretrainConfig, world_size: int) -> int:
    """Micro-batch per rank, or ConfigError when the global batch does not divide evenly."""
    gbs, accum = cfg.optim.global_batch_size, cfg.optim.grad_accum_steps
    if gbs % (world_size * accum):
        raise ConfigError(
            f"optim.global_batch_size: {gbs} is not divisible by world size ({world_size}) x "
            f"optim.grad_accum_steps ({accum}) = {world_size * accum}"
        )
    return gbs // (world_size * accum)
