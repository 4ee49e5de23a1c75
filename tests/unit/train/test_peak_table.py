"""The datasheet peak behind MFU (issue 15, defect 2.7): variants, new chips, MIG slices, provenance."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tte_scale.train import telemetry
from tte_scale.train.telemetry import PeakSpec, device_peak, lookup_peak, peak_tflops, throughput


@pytest.mark.parametrize(
    "name, tflops, entry",
    [
        ("NVIDIA H100 80GB HBM3", 989.0, "H100 SXM"),
        ("NVIDIA H100 PCIe", 756.0, "H100 PCIe"),
        ("NVIDIA H100 NVL", 835.0, "H100 NVL"),
        ("NVIDIA H200", 989.0, "H200 SXM"),
        ("NVIDIA H200 NVL", 835.0, "H200 NVL"),  # was 989 (matched the SXM entry)
        ("NVIDIA H800", 989.0, "H800 SXM"),
        ("NVIDIA H800 PCIe", 756.0, "H800 PCIe"),
        ("NVIDIA GH200 480GB", 989.0, "GH200"),
        ("NVIDIA B200", 2250.0, "B200"),
        ("NVIDIA L40S", 362.0, "L40S"),
        ("NVIDIA A100-SXM4-80GB", 312.0, "A100"),
    ],
)
def test_table_entry_by_device_name(name, tflops, entry):
    spec = lookup_peak(name)
    assert (spec.tflops, spec.entry) == (tflops, entry)
    assert peak_tflops(name) == tflops


def test_unknown_device_and_override():
    assert lookup_peak("NVIDIA GeForce RTX 4090") == PeakSpec(
        None, "unknown", lookup_peak("NVIDIA GeForce RTX 4090").note
    )
    assert "telemetry.peak_tflops" in lookup_peak("cpu").note
    assert lookup_peak("NVIDIA H100 80GB HBM3", 16, override=123.0) == PeakSpec(
        123.0, "override", "telemetry.peak_tflops"
    )


def test_mig_slice_scaled_by_sm_share():
    spec = lookup_peak("NVIDIA H100 80GB HBM3 MIG 3g.40gb", sm_count=60)
    assert spec.entry == "H100 SXM" and spec.tflops == pytest.approx(989.0 * 60 / 132)
    assert "60/132 SMs" in spec.note
    # The full chip's SM count (or more): the datasheet figure unchanged.
    assert lookup_peak("NVIDIA H100 80GB HBM3", sm_count=132).tflops == 989.0


def test_mig_slice_without_sm_count_gets_no_peak():
    spec = lookup_peak("NVIDIA A100-SXM4-40GB MIG 1g.5gb")
    assert spec.tflops is None and spec.entry == "A100" and "MIG" in spec.note
    assert peak_tflops("NVIDIA A100-SXM4-40GB MIG 1g.5gb") is None


def test_device_peak_reads_name_and_sm_count(monkeypatch):
    props = SimpleNamespace(name="NVIDIA H200 NVL MIG 2g.35gb", multi_processor_count=33)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda dev: props)
    spec = device_peak(torch.device("cuda", 0))
    assert spec.entry == "H200 NVL" and spec.tflops == pytest.approx(835.0 * 33 / 132)
    assert device_peak(torch.device("cpu")).tflops is None
    assert device_peak(torch.device("cpu"), override=2.0).tflops == 2.0


def test_metrics_name_the_peak_used():
    kw = dict(
        samples=64, step_seconds=2.0, data_seconds=0.5, flops_per_sample=1e12, tokens_per_sample=100, world_size=8
    )
    r = throughput(**kw, peak=lookup_peak("NVIDIA H200 NVL"))
    assert r["peak_entry"] == "H200 NVL" and r["peak_tflops"] == 835.0
    assert r["mfu"] == pytest.approx(32 / (8 * 835.0))
    r = throughput(**kw, peak=lookup_peak("NVIDIA A100-SXM4-40GB MIG 1g.5gb"))
    assert r["peak_entry"] == "A100" and "mfu" not in r and "peak_tflops" not in r
    # A bare float (the older call) still gives MFU, without provenance keys.
    r = throughput(**kw, peak=100.0)
    assert r["mfu"] == pytest.approx(0.04) and "peak_entry" not in r


def test_every_table_entry_is_reachable_by_its_own_name():
    for e in telemetry.PEAK_TABLE:
        name = "NVIDIA " + e.key.replace(" SXM", "")
        assert lookup_peak(name).entry == e.key, name
