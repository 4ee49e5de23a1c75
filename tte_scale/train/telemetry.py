"""Step metrics: throughput, achieved TFLOP/s and MFU, data-wait fraction, peak memory.

Rank 0 writes what all ranks measured (the loop all-reduces the per-rank figures first) as
one JSON line per logged step in ``metrics.jsonl`` and as TensorBoard scalars
(``tte_scale.train.metrics_log``). MFU is the
analytic model FLOPs of the step (``flops_per_sample(training=True)`` x samples) over the
time and the devices' peak dense bf16 throughput.
"""

from __future__ import annotations

import resource
import sys

import torch

# Dense bf16 tensor-core peak per device, TFLOP/s (vendor datasheets, without sparsity).
PEAK_TFLOPS_BF16 = {
    "A100": 312.0,
    "H100 SXM": 989.0,
    "H100 PCIE": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.0,
}


def peak_tflops(device_name: str, override: float | None = None) -> float | None:
    """Peak TFLOP/s of a device by its name (e.g. 'NVIDIA H100 80GB HBM3'); None if unknown."""
    if override is not None:
        return override
    name = device_name.upper()
    if "H100" in name:
        if "PCIE" in name:
            return PEAK_TFLOPS_BF16["H100 PCIE"]
        return PEAK_TFLOPS_BF16["H100 NVL"] if "NVL" in name else PEAK_TFLOPS_BF16["H100 SXM"]
    for key in ("H200", "A100"):
        if key in name:
            return PEAK_TFLOPS_BF16[key]
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process: CUDA allocator peak on GPUs, max RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def throughput(
    *,
    samples: int,
    step_seconds: float,
    data_seconds: float,
    flops_per_sample: float,
    tokens_per_sample: int,
    world_size: int,
    peak: float | None,
) -> dict[str, float]:
    """Derived rates of one step over all ranks (``samples`` is the global batch)."""
    seconds = max(step_seconds, 1e-12)
    tflops = flops_per_sample * samples / seconds / 1e12
    out = {
        "samples_per_s": samples / seconds,
        "volumes_per_s": samples / seconds,
        "tokens_per_s": samples * tokens_per_sample / seconds,
        "tflops": tflops,
        "tflops_per_device": tflops / world_size,
        "data_wait_frac": min(1.0, data_seconds / seconds),
    }
    if peak:
        out["mfu"] = tflops / (world_size * peak)
    return out


def model_state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this rank holds for parameters and for optimizer state (fp32 master copies + moments).

    Under ZeRO-3 a parameter's local storage is its partition (``ds_tensor``); under ZeRO-1/2/3
    the base optimizer's parameters are this rank's flat fp32 partitions.
    """
    module_ids = set()
    param_bytes = 0
    for p in module.parameters():
        module_ids.add(id(p))
        local = getattr(p, "ds_tensor", None)
        local = p.data if local is None else local
        param_bytes += local.numel() * local.element_size()
    # ZeRO-3 empties the base optimizer's param_groups between steps, so walk its state too.
    owned = {id(p): p for g in optimizer.param_groups for p in g["params"]}
    owned.update({id(p): p for p in optimizer.state})
    optim_bytes = 0
    for pid, p in owned.items():
        if pid not in module_ids:
            optim_bytes += p.numel() * p.element_size()
        for v in optimizer.state.get(p, {}).values():
            if isinstance(v, torch.Tensor):
                optim_bytes += v.numel() * v.element_size()
    return {"param_bytes": param_bytes, "optim_bytes": optim_bytes}
