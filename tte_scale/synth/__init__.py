"""Synthetic INSPECT-like cohort: MEDS events, chest-CT volumes, scans table and ground truth.

The embedded default for the demo and the tests, and a stand-in for INSPECT (which cannot be
downloaded). See README.md in this folder for the generative model. Example::

    from tte_scale.synth import SynthConfig, generate
    summary = generate(SynthConfig(subjects=50, seed=1), "/tmp/cohort")
"""

from tte_scale.synth.config import PROFILES, ScannerConfig, SynthConfig
from tte_scale.synth.generate import SynthSummary, generate

__all__ = ["SynthConfig", "ScannerConfig", "PROFILES", "SynthSummary", "generate"]
