"""Time units shared by every stage (docs/formats.md, DESIGN "Stage contracts").

Timestamps are timezone-naive at microsecond precision (``timestamp[us]``); durations are float32
days, computed as ``(t - prediction_time) / US_PER_DAY``.
"""

from __future__ import annotations

__all__ = ["US_PER_DAY"]

US_PER_DAY = 86_400_000_000
"""Microseconds in a day: the divisor from a ``timestamp[us]`` difference to days."""
