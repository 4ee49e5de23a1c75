"""`tte-scale train --estimate-memory`: DeepSpeed's model-state memory estimate for a config.

Uses DeepSpeed's own estimators (``estimate_zero3_model_states_mem_needs_all_cold`` and the
stage 1/2 equivalent) from the analytic parameter count, so a 1B model on 64 GPUs can be
checked on a laptop without building it. Model states only: activations come on top
(``model.grad_checkpointing`` bounds them).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from tte_scale.data.build_info import labels_num_tasks, read_shards_info
from tte_scale.train.config import PretrainConfig
from tte_scale.train.parts import check_model_config, read_bins, with_volume_shape


def head_params(in_features: int, num_bins: int, num_tasks: int, rank: int) -> tuple[int, int]:
    """(total, largest single tensor) parameters of the TTE head."""
    proj = in_features * num_bins * rank + num_bins * rank
    tensors = [proj, 2 * rank, num_tasks * rank, num_bins * num_tasks]
    return sum(tensors), max(in_features * num_bins * rank, num_tasks * rank, num_bins * num_tasks)


def estimate_memory(cfg: PretrainConfig) -> dict[str, Any]:
    """Per-device and per-node bytes of params + grads + optimizer states for ``cfg``."""
    from deepspeed.runtime.zero.stage3 import (
        estimate_zero3_model_states_mem_needs,
        estimate_zero3_model_states_mem_needs_all_cold,
    )
    from deepspeed.runtime.zero.stage_1_and_2 import (
        estimate_zero2_model_states_mem_needs,
        estimate_zero2_model_states_mem_needs_all_cold,
    )

    if cfg.data.shards_dir:  # model.img_size follows the shards, as in training
        cfg = with_volume_shape(cfg, read_shards_info(cfg.data.shards_dir).volume_shape, cfg.data.shards_dir)
    info = check_model_config(cfg)
    num_bins = read_bins(cfg.data.labels_dir).size if cfg.data.labels_dir else 8
    num_tasks = labels_num_tasks(cfg.data.labels_dir) if cfg.data.labels_dir else cfg.head.num_tasks
    E = info["embed_dim"]
    h_total, h_largest = head_params(E, num_bins, num_tasks, cfg.head.rank)
    total = info["params"] + h_total
    largest = max(h_largest, info["largest_tensor"])
    nodes, gpn = cfg.cluster.nodes, cfg.cluster.gpus_per_node
    z = cfg.zero
    if z.stage == 3:
        cpu, dev, _ = estimate_zero3_model_states_mem_needs(
            total,
            largest,
            gpn,
            nodes,
            cpu_offload=z.offload_optimizer,
            cpu_offload_params=z.offload_params,
            zero_init=False,
        )
        estimator = estimate_zero3_model_states_mem_needs_all_cold
        args = (total, largest, gpn, nodes)
    elif z.stage in (1, 2):
        cpu, dev = estimate_zero2_model_states_mem_needs(total, gpn, nodes, cpu_offload=z.offload_optimizer)
        estimator = estimate_zero2_model_states_mem_needs_all_cold
        args = (total, gpn, nodes)
    else:  # plain data parallel: 16-bit params + fp32 master, grads and Adam moments everywhere
        cpu, dev = total * 4 * gpn, 2 * total + 18 * total
        estimator, args = estimate_zero2_model_states_mem_needs_all_cold, (total, gpn, nodes)
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        estimator(*args)
    return {
        "model": cfg.model.name,
        "params": total,
        "encoder_params": info["params"],
        "head_params": h_total,
        "largest_layer_params": largest,
        "num_tasks": num_tasks,
        "num_bins": num_bins,
        "nodes": nodes,
        "gpus_per_node": gpn,
        "zero_stage": z.stage,
        "offload_optimizer": z.offload_optimizer,
        "offload_params": z.offload_params,
        "per_device_gib": dev / 2**30,
        "per_node_cpu_gib": cpu / 2**30,
        "deepspeed_table": table.getvalue(),
    }
