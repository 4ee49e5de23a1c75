"""Build what a run trains on from its config: model (+ prefit bias), loaders, bin edges.

Legend: N label rows, K tasks, J time bins, T benchmark tasks.

``cfg.objective`` picks the model: ``tte`` = encoder + ``TTEHead`` over the labels folder's K
tasks, ``supervised`` = encoder + ``SupervisedHead`` over its T benchmark tasks (the paper's
baseline, same encoder and budget). ``model_inputs`` is the one place that knows which batch
fields each objective's ``forward`` takes.

Everything here runs identically on every rank before ``deepspeed.initialize``: the model is
built from the same seed everywhere (ZeRO-3 partitions each rank's own copy), and the bias
prefit reads the same train rows everywhere, so no broadcast is needed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tte_scale.config import ConfigError
from tte_scale.errors import InputError
from tte_scale.loss import empirical_log_hazard
from tte_scale.train.config import PretrainConfig
from tte_scale.train.task_weights import code_weights, inverse_baseline_weights, task_weight_summary

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunParts:
    """The model and data of a run (``train`` builds them; tests may pass their own)."""

    model: torch.nn.Module
    """A ``TTEModel`` or ``SupervisedModel``: ``forward(*model_inputs(...)) -> loss``."""
    train_loader: Any
    """Resumable batch iterator of the train split (``TTELoader``)."""
    eval_loader: Any | None
    """Batch iterator of the evaluation split (``None`` skips evaluation)."""
    bin_starts: torch.Tensor
    """float32 [J] bin starts in days."""
    flops_per_sample: float
    """Analytic training FLOPs of one sample (for MFU)."""
    tokens_per_sample: int
    """Patch tokens of one volume."""
    bench_tasks: list[str] | None = None
    """Benchmark task names in column order (bins.json), for the C-index report; with
    ``supervised_tasks`` only those, in ``bench_columns`` order."""
    bench_columns: list[int] | None = None
    """Columns of the batches' benchmark fields the run uses (``supervised_tasks``); None: all."""


def _config_fields(name: str) -> set[str]:
    """Fields of the config class registered under ``name`` (ConfigError for an unknown name)."""
    from tte_scale.models import get_config, list_models

    if name not in list_models():
        raise ConfigError(f"model.name: unknown model {name!r}; known: {', '.join(list_models())}")
    return {f.name for f in dataclasses.fields(type(get_config(name)))}


def _set_architecture_fields(cfg: PretrainConfig) -> dict[str, Any]:
    from tte_scale.train.config import ARCHITECTURE_CONFIGS

    names = {f.name for cls in ARCHITECTURE_CONFIGS for f in dataclasses.fields(cls)}
    return {k: getattr(cfg.model, k) for k in sorted(names) if getattr(cfg.model, k) is not None}


def encoder_overrides(cfg: PretrainConfig) -> dict[str, Any]:
    """``create_model`` keyword overrides: the model section's fields that are set (null keeps the
    registered model's value) and that the named model's config has."""
    own = _config_fields(cfg.model.name)
    return {k: v for k, v in _set_architecture_fields(cfg).items() if k in own}


def unused_model_fields(cfg: PretrainConfig) -> dict[str, Any]:
    """Model-section fields that are set but that the named model does not have (a ViT's depth for
    densenet121_3d, e.g. from a config written for the ViT): reported, never applied."""
    own = _config_fields(cfg.model.name)
    return {k: v for k, v in _set_architecture_fields(cfg).items() if k not in own}


def with_volume_shape(cfg: PretrainConfig, shape: tuple[int, int, int], shards_dir) -> PretrainConfig:
    """``cfg`` with ``model.img_size`` = the shards' canonical volume shape.

    Null takes the shards' shape (the model is trained and exported for what it is fed); a value
    that differs is refused: a model configured for other volumes would train on these silently
    and its export would record a size it never saw.
    """
    shape = tuple(int(x) for x in shape)
    if cfg.model.img_size is not None and tuple(cfg.model.img_size) != shape:
        raise ConfigError(
            f"model.img_size: {list(cfg.model.img_size)} but the shards {shards_dir} hold volumes of shape "
            f"{list(shape)}; set model.img_size={list(shape)} or leave it null (it then follows the shards)"
        )
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, img_size=shape))


# Settings that may differ between a pretrained export and the run fine-tuning it: they change
# how training runs, not which weights exist or what they compute in eval.
_TRAINING_ONLY = ("grad_checkpointing", "drop_path_rate")


@torch.no_grad()
def init_encoder_from(encoder: torch.nn.Module, path: str | Path, hu_window: tuple[float, float]) -> None:
    """Copy an exported encoder's weights into ``encoder`` (fine-tuning a pretrained model).

    The export must be the same architecture (its config.json, apart from training-only
    settings) and must have been trained on volumes normalized with the same HU window: the
    weights are meaningless on differently scaled inputs. Raises InputError naming the export
    and the first difference.
    """
    from tte_scale.models import load_pretrained, read_export_config

    path = Path(path)
    meta = read_export_config(path)  # InputError when config.json is missing or broken
    src = load_pretrained(path)
    if type(src) is not type(encoder):
        raise InputError(
            f"model.init_encoder {path}: the export is a {type(src).__name__} (model {meta.get('model_name')!r}) "
            f"but this run's model is a {type(encoder).__name__}; set model.name to the export's model"
        )
    want = {k: v for k, v in encoder.cfg.to_json().items() if k not in _TRAINING_ONLY}
    have = {k: v for k, v in src.cfg.to_json().items() if k not in _TRAINING_ONLY}
    diff = [k for k in want if want[k] != have.get(k)]
    if diff:
        k = diff[0]
        raise InputError(
            f"model.init_encoder {path}: the export's {k} is {have.get(k)!r} but this run's model has "
            f"{want[k]!r} ({len(diff)} field(s) differ: {', '.join(diff)}); set the model section to "
            "the export's architecture"
        )
    window = (meta.get("preprocessing") or {}).get("hu_window")
    if window is not None and window != tuple(hu_window):  # read_export_config made it a float tuple
        raise InputError(
            f"model.init_encoder {path}: trained on HU window {list(window)}, this run normalizes with "
            f"data.hu_window={list(hu_window)}; set data.hu_window to the export's window"
        )
    encoder.load_state_dict(src.state_dict())


def check_model_config(cfg: PretrainConfig) -> dict:
    """Parameters, tokens and training FLOPs of the configured encoder, without building it.

    Raises ConfigError for an unknown name or a bad shape, before any work starts.
    """
    from tte_scale.models import get_config

    overrides = encoder_overrides(cfg)  # ConfigError for an unknown name
    try:
        enc = get_config(cfg.model.name, **overrides)
    except (ConfigError, ValueError, TypeError) as exc:
        raise ConfigError(f"model.{exc}") from None  # the config names the field: "model.patch_size: ..."
    return {
        "params": enc.params(),
        "largest_tensor": enc.largest_tensor(),
        "tokens": enc.tokens(),
        "flops_train": enc.flops(),
        "embed_dim": enc.num_features,
        "unused": unused_model_fields(cfg),
    }


def read_bins(labels_dir: Path) -> np.ndarray:
    """float32 [J] ``bin_starts_days`` of a labels folder's bins.json."""
    path = Path(labels_dir) / "bins.json"
    if not path.is_file():
        raise InputError(f"{path}: not found (data.labels_dir must be the labels folder the shards were built from)")
    bins = json.loads(path.read_text())
    starts = np.asarray(bins.get("bin_starts_days", []), dtype=np.float32)
    if starts.ndim != 1 or starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0):
        raise InputError(f"{path}: bin_starts_days must start at 0 and increase, got {starts.tolist()}")
    return starts


def train_label_sample(labels_dir: Path, split: str, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(time_NK, event_NK) of at most ``max_rows`` evenly spaced rows of ``split``."""
    import pyarrow.parquet as pq
    import zarr

    labels_dir = Path(labels_dir)
    rows = pq.read_table(labels_dir / "rows.parquet", columns=["split"]).column("split").to_pylist()
    idx = np.flatnonzero(np.asarray(rows) == split)
    if idx.size == 0:
        raise InputError(f"{labels_dir / 'rows.parquet'}: no rows in split {split!r} for the bias prefit")
    idx = idx[np.linspace(0, idx.size - 1, min(max_rows, idx.size)).round().astype(np.int64)]
    group = zarr.open_group(str(labels_dir / "tte.zarr"), mode="r")
    time_NK = np.asarray(group["time"].get_orthogonal_selection((idx, slice(None))), dtype=np.float32)
    event_NK = np.asarray(group["event"].get_orthogonal_selection((idx, slice(None))), dtype=bool)
    return time_NK, event_NK


def train_bench_labels(labels_dir: Path, split: str, tasks: list[str]) -> np.ndarray:
    """int8 [N, T] horizon labels of ``split`` from bench.parquet (-1 = null), columns in ``tasks`` order."""
    import pyarrow.parquet as pq

    path = Path(labels_dir) / "bench.parquet"
    if not path.is_file():
        raise InputError(f"{path}: not found (the supervised objective needs the benchmark labels)")
    t = pq.read_table(path, columns=["scan_id", "split", "task", "label"]).to_pydict()
    col = {name: i for i, name in enumerate(tasks)}
    rows: dict[str, int] = {}
    cells = []
    for scan, sp, task, label in zip(t["scan_id"], t["split"], t["task"], t["label"]):
        if sp == split and task in col:
            cells.append((rows.setdefault(scan, len(rows)), col[task], -1 if label is None else int(label)))
    if not rows:
        raise InputError(f"{path}: no benchmark labels in split {split!r}")
    out = np.full((len(rows), len(tasks)), -1, np.int8)
    for r, c, v in cells:
        out[r, c] = v
    return out


def _vocab_codes(path: Path, K: int) -> list[str]:
    """Task codes in task order from the labels' vocab.parquet (task_index, code)."""
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["task_index", "code"]).to_pydict()
    codes = [c for _, c in sorted(zip(t["task_index"], t["code"]))]
    if len(codes) != K:
        raise InputError(f"{path}: {len(codes)} codes, the labels have {K} tasks")
    return codes


def build_model(cfg: PretrainConfig, num_tasks: int, num_bins: int) -> torch.nn.Module:
    """Encoder + the objective's head (on CPU; DeepSpeed moves it). ``num_tasks`` is K for
    ``tte`` and the number of benchmark tasks T for ``supervised`` (``num_bins`` unused)."""
    from tte_scale.models import SupervisedHead, SupervisedModel, TTEHead, TTEModel, create_model

    encoder = create_model(cfg.model.name, **encoder_overrides(cfg))
    if cfg.objective == "supervised":
        return SupervisedModel(
            encoder, SupervisedHead(encoder.num_features, num_tasks, feature_norm=cfg.head.feature_norm)
        )
    head = TTEHead(
        encoder.num_features,
        num_bins=num_bins,
        num_tasks=num_tasks,
        rank=cfg.head.rank,
        task_init_std=cfg.head.task_init_std,
        feature_norm=cfg.head.feature_norm,
        task_weights=cfg.head.task_weights != "uniform",
    )
    return TTEModel(encoder, head)


def _supervised_columns(
    cfg: PretrainConfig, bench_tasks: list[str], source: Path
) -> tuple[list[str], list[int] | None]:
    """(task names, their columns) of ``supervised_tasks`` among bins.json's ``bench_tasks``;
    (all, None) when empty (joint training). InputError naming an unknown task."""
    if not cfg.supervised_tasks:
        return list(bench_tasks), None
    unknown = [t for t in cfg.supervised_tasks if t not in bench_tasks]
    if unknown:
        raise InputError(
            f"supervised_tasks: {unknown} not among the benchmark tasks of {source} ({', '.join(bench_tasks)})"
        )
    return list(cfg.supervised_tasks), [bench_tasks.index(t) for t in cfg.supervised_tasks]


def model_inputs(objective: str, batch: dict, bin_starts_J: torch.Tensor) -> tuple:
    """The positional arguments of the model's ``forward`` for one prepared batch."""
    if objective == "supervised":
        return batch["volume"], batch["bench_label"]
    return batch["volume"], batch["tte_time"], batch["tte_event"], bin_starts_J


def build_parts(cfg: PretrainConfig, micro_batch: int, rank: int, world_size: int) -> RunParts:
    """Loaders over ``data.shards_dir``, bins from ``data.labels_dir``, the model, the prefit."""
    from tte_scale.data import LoaderConfig, build_loader

    d = cfg.data
    if d.shards_dir is None or d.labels_dir is None:
        raise ConfigError("data.shards_dir and data.labels_dir: both are required to train")
    bin_starts = read_bins(d.labels_dir)
    bench_tasks = json.loads((Path(d.labels_dir) / "bins.json").read_text()).get("bench_tasks")
    common = dict(**d.loader_settings(), batch_size=micro_batch, seed=cfg.seed)
    train_loader = build_loader(
        str(d.shards_dir), LoaderConfig(split=d.train_split, shuffle=True, **common), rank, world_size
    )
    eval_loader = build_loader(
        str(d.shards_dir), LoaderConfig(split=d.eval_split, shuffle=False, **common), rank, world_size
    )
    if cfg.objective == "supervised":
        if not bench_tasks:
            raise InputError(
                f"{Path(d.labels_dir) / 'bins.json'}: lists no bench_tasks; the supervised "
                "objective trains on the benchmark labels (run `tte-scale labels --bench-tasks`)"
            )
        bench_tasks, bench_columns = _supervised_columns(cfg, bench_tasks, Path(d.labels_dir) / "bins.json")
        model = build_model(cfg, num_tasks=len(bench_tasks), num_bins=bin_starts.size)
        if cfg.head.bias_prefit:
            model.head.init_bias_from_labels(
                torch.from_numpy(train_bench_labels(d.labels_dir, d.train_split, bench_tasks))
            )
    else:
        bench_columns = None
        time_NK, event_NK = train_label_sample(d.labels_dir, d.train_split, cfg.head.bias_prefit_max_rows)
        model = build_model(cfg, num_tasks=time_NK.shape[1], num_bins=bin_starts.size)
        labels = (torch.from_numpy(time_NK), torch.from_numpy(event_NK), torch.from_numpy(bin_starts))
        hazard0 = model.head.init_bias_from_labels(*labels, floor=cfg.head.bias_floor) if cfg.head.bias_prefit else None
        if cfg.head.task_weights == "inverse_baseline":
            if hazard0 is None:  # no prefit in the head: the same baseline, computed for the weights alone
                hazard0 = empirical_log_hazard(*labels, floor=cfg.head.bias_floor)
            model.head.set_task_weights(inverse_baseline_weights(*labels, hazard0, *cfg.head.task_weights_range))
        elif cfg.head.task_weights == "codes":
            vocab_path = Path(d.labels_dir) / "vocab.parquet"
            model.head.set_task_weights(
                code_weights(
                    _vocab_codes(vocab_path, time_NK.shape[1]),
                    cfg.head.task_weights_codes,
                    *cfg.head.task_weights_range,
                    str(vocab_path),
                )
            )
        if model.head.task_loss_weight is not None:
            log.info("task weights (%s): %s", cfg.head.task_weights, task_weight_summary(model.head.task_loss_weight))
    if cfg.model.init_encoder:
        init_encoder_from(model.encoder, cfg.model.init_encoder, tuple(d.hu_window))
    if cfg.model.init_weights:
        from tte_scale.models.weights import load_init_weights

        load_init_weights(model.encoder, cfg.model.init_weights, cfg.model.init_weights_ignore)
    info = check_model_config(cfg)
    return RunParts(
        model=model,
        train_loader=train_loader,
        eval_loader=eval_loader,
        bin_starts=torch.from_numpy(bin_starts),
        tokens_per_sample=int(info["tokens"]),
        flops_per_sample=float(model.flops_per_sample(training=True)),
        bench_tasks=bench_tasks,
        bench_columns=bench_columns,
    )
