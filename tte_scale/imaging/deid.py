"""De-identification by whitelist: the only DICOM header values that may leave a reader.

Nothing else from a header (standard tags, private tags, nested sequences) is copied into a
volume's metadata, a shard, a manifest or a log line. Geometry (spacing, shape, orientation) is
recomputed from positions, never copied as text. Free-text fields on the whitelist are reduced
to a short printable-ASCII string so that a header cannot smuggle arbitrary bytes through.
"""

from __future__ import annotations

import re
from typing import Any

# output key -> DICOM keyword
SCANNER_WHITELIST: dict[str, str] = {
    "manufacturer": "Manufacturer",
    "kvp": "KVP",
    "slice_thickness_mm": "SliceThickness",
}

_PRINTABLE = re.compile(r"[^A-Za-z0-9 ._-]")
_MAX_TEXT = 32


def _text(value: Any) -> str | None:
    text = _PRINTABLE.sub("", str(value)).strip()[:_MAX_TEXT]
    return text or None


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and abs(out) < 1e6 else None


def scanner_fields(ds: Any) -> dict[str, Any]:
    """The whitelisted scanner fields of a pydicom dataset (None where absent or malformed)."""
    out: dict[str, Any] = {}
    for key, keyword in SCANNER_WHITELIST.items():
        try:
            raw = ds.get(keyword, None)
        except Exception:  # a malformed element must not stop the read, nor leak its value
            raw = None
        if raw is None or raw == "":
            out[key] = None
        elif key == "manufacturer":
            out[key] = _text(raw)
        else:
            out[key] = _number(raw)
    return out
