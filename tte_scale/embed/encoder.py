"""An exported encoder (``tte-scale train`` -> ``runs/x/encoder``) and the HU window to feed it.

The window is the one stored in the export's ``config.json`` (the one its training used); a
window given by the user only fills in for exports written before the window was stored, and
one that differs from the stored window is refused rather than silently preferred.
"""

from __future__ import annotations

from pathlib import Path

from tte_scale.errors import InputError

__all__ = ["DEFAULT_HU_WINDOW", "export_hu_window", "load_export"]

DEFAULT_HU_WINDOW = (-1000.0, 1000.0)


def export_hu_window(path: str | Path, flag) -> tuple[float, float]:
    """The export's stored HU window; ``flag`` only fills in for exports without one."""
    from tte_scale.models import read_export_config

    path = Path(path)
    stored = read_export_config(path).get("preprocessing", {}).get("hu_window")
    if stored is None:
        return tuple(flag) if flag is not None else DEFAULT_HU_WINDOW
    if flag is not None and tuple(flag) != tuple(stored):
        raise InputError(
            f"--hu-window {flag[0]:g} {flag[1]:g} differs from the window {stored[0]:g} {stored[1]:g} "
            f"stored in {path}/config.json (the one its training used); drop --hu-window"
        )
    return tuple(stored)


def load_export(path: str | Path, hu_window=None):
    """(encoder, HU window) of an export; damaged weights are one clear line, not a traceback."""
    from safetensors import SafetensorError

    from tte_scale.models import load_pretrained

    ckpt = Path(path)
    window = export_hu_window(ckpt, hu_window)
    weights = ckpt if ckpt.suffix == ".safetensors" else ckpt / "model.safetensors"
    try:
        return load_pretrained(ckpt), window
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise InputError(
            f"{weights}: cannot load the encoder weights ({type(exc).__name__}: {exc}); the file is damaged, "
            "incomplete or of another model (export it again)"
        ) from None
