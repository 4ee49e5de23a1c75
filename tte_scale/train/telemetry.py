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
from dataclasses import dataclass

import torch


# Dense bf16 tensor-core peak per device, TFLOP/s (vendor datasheets, without sparsity), and the
# SM count of the full chip that figure is for: a device reporting fewer SMs is a MIG slice (or
# another partition), whose peak is the chip's scaled by its share of the SMs.
@dataclass(frozen=True, slots=True)
class PeakEntry:
    key: str
    tflops: float
    sms: int


PEAK_TABLE: tuple[PeakEntry, ...] = (
    PeakEntry("A100", 312.0, 108),
    PeakEntry("A800", 312.0, 108),
    PeakEntry("H100 SXM", 989.0, 132),
    PeakEntry("H100 PCIe", 756.0, 114),
    PeakEntry("H100 NVL", 835.0, 132),
    PeakEntry("H800 SXM", 989.0, 132),
    PeakEntry("H800 PCIe", 756.0, 114),
    PeakEntry("H200 SXM", 989.0, 132),
    PeakEntry("H200 NVL", 835.0, 132),
    PeakEntry("GH200", 989.0, 132),
    PeakEntry("B200", 2250.0, 148),
    PeakEntry("L40S", 362.0, 142),
)
PEAK_TFLOPS_BF16 = {e.key: e.tflops for e in PEAK_TABLE}
_BY_KEY = {e.key: e for e in PEAK_TABLE}


@dataclass(frozen=True, slots=True)
class PeakSpec:
    """The peak MFU is measured against, and where it came from (written into the metrics)."""

    tflops: float | None
    entry: str
    """Table key ('H200 NVL'), 'override' (telemetry.peak_tflops) or 'unknown'."""
    note: str = ""


def _table_entry(name: str) -> PeakEntry | None:
    """The datasheet entry of a CUDA device name such as 'NVIDIA H100 80GB HBM3' or 'NVIDIA H200 NVL'.

    Order matters: GH200 before H200, the NVL and PCIe variants before the SXM default (device
    names of SXM parts say 'HBM3'/'HBM3e' or nothing, never 'SXM').
    """
    n = name.upper().replace("-", " ")
    if "GH200" in n:
        return _BY_KEY["GH200"]
    for chip in ("H100", "H800", "H200"):
        if chip in n:
            if "NVL" in n:
                return _BY_KEY.get(f"{chip} NVL")
            if "PCIE" in n:
                return _BY_KEY.get(f"{chip} PCIe")
            return _BY_KEY[f"{chip} SXM"]
    for key in ("B200", "L40S", "A100", "A800"):
        if key in n:
            return _BY_KEY[key]
    return None


def lookup_peak(name: str, sm_count: int | None = None, override: float | None = None) -> PeakSpec:
    """Peak dense bf16 TFLOP/s of a device by name and SM count.

    A device with fewer SMs than its chip's entry (a MIG slice such as 'NVIDIA H100 80GB HBM3 MIG
    3g.40gb', reporting its own SMs) gets the chip's peak scaled by its SM share; a MIG name without
    an SM count cannot be scaled, so it gets no peak (no MFU) rather than the full chip's.
    """
    if override is not None:
        return PeakSpec(float(override), "override", "telemetry.peak_tflops")
    entry = _table_entry(name)
    if entry is None:
        return PeakSpec(None, "unknown", f"no datasheet peak for {name!r}: set telemetry.peak_tflops for MFU")
    if sm_count is None:
        if "MIG" in name.upper():
            return PeakSpec(None, entry.key, f"MIG slice of {entry.key} with unknown SM count: no MFU")
        return PeakSpec(entry.tflops, entry.key, f"{entry.key} datasheet, dense bf16")
    if sm_count < entry.sms:
        tf = entry.tflops * sm_count / entry.sms
        return PeakSpec(tf, entry.key, f"{entry.key} datasheet x {sm_count}/{entry.sms} SMs (MIG slice or partition)")
    return PeakSpec(entry.tflops, entry.key, f"{entry.key} datasheet, dense bf16")


def peak_tflops(device_name: str, override: float | None = None) -> float | None:
    """Peak TFLOP/s of a device by its name alone (e.g. 'NVIDIA H100 80GB HBM3'); None if unknown
    or a MIG slice (its SM count is needed: ``device_peak``)."""
    return lookup_peak(device_name, None, override).tflops


def device_peak(device: torch.device, override: float | None = None) -> PeakSpec:
    """The peak of a live device: its name and its SM count (so MIG slices are scaled)."""
    if override is not None:
        return lookup_peak("", None, override)
    if device.type != "cuda":
        return PeakSpec(None, "unknown", f"no datasheet peak for {device.type}: set telemetry.peak_tflops for MFU")
    props = torch.cuda.get_device_properties(device)
    return lookup_peak(props.name, int(props.multi_processor_count))


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
    peak: float | PeakSpec | None,
) -> dict[str, float | str]:
    """Derived rates of one step over all ranks (``samples`` is the global batch).

    With a ``PeakSpec`` the record also names the peak used (``peak_tflops``, ``peak_entry``), so
    an MFU can be traced to its datasheet row (or the override, or a MIG scaling).
    """
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
    spec = peak if isinstance(peak, PeakSpec) else PeakSpec(peak, "given" if peak else "unknown")
    if isinstance(peak, PeakSpec):
        out["peak_entry"] = spec.entry
        if spec.tflops:
            out["peak_tflops"] = spec.tflops
    if spec.tflops:
        out["mfu"] = tflops / (world_size * spec.tflops)
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
