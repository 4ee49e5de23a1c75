"""Which folders a command may replace: its own outputs, never its inputs or anyone else's files.

The rule (docs/contributing.md): *a command never deletes what it did not write*. A command that
can replace an output folder (``--overwrite``, ``--fresh``) writes an owner marker into the folder
when it creates it, and before it deletes anything it checks, with :func:`check_replaceable`:

1. the folder is not an input of the run and does not contain one (it may lie inside one:
   ``--out cohort/labels`` next to ``cohort/data``);
2. the folder is absent, empty, or carries this command's marker.

Anything else is refused with one line naming the folder and what was found, before any work.
Folders written before markers existed are refused too: the message says to delete them by hand.

Example::

    check_replaceable(out, "labels", inputs=[meds, scans])   # raises InputError if not ours
    remove_own(out, "labels", inputs=[meds, scans])          # the same check, then rmtree
    ...write the new output...
    mark(out, "labels")
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from tte_scale.errors import InputError

__all__ = ["MARKER", "mark", "read_marker", "check_replaceable", "check_not_input", "remove_own"]

MARKER = ".tte_scale_output.json"
"""File name of the owner marker written into every replaceable output folder."""


def mark(out: str | Path, command: str, **info) -> Path:
    """Write (atomically) the marker saying that ``tte-scale <command>`` wrote ``out``."""
    from tte_scale import __version__

    out = Path(out)
    path = out / MARKER
    tmp = path.with_name(f"{MARKER}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"command": command, "version": __version__, **info}, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_marker(out: str | Path) -> dict | None:
    """The marker of ``out`` (None when absent or unreadable)."""
    try:
        data = json.loads((Path(out) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_not_input(
    out: str | Path,
    inputs: Iterable[str | Path | None],
    flag: str = "--out",
    *,
    inside_too: bool = False,
    noun: str = "output folder",
) -> None:
    """Refuse an output folder that is, or contains, an input of the run; with ``inside_too`` also
    one that lies inside an input (a training run, whose folder grows for days, must not fill an
    input folder; a shard build under an ``--image-root`` is a common, harmless layout)."""
    o = Path(out).resolve()
    for given in inputs:
        if given is None or "://" in str(given):
            continue
        p = Path(given).resolve()
        if inside_too and (p == o or p in o.parents):
            raise InputError(f"{flag} {out}: is or lies inside the input {given}; choose another {noun}")
        if p == o or o in p.parents:
            raise InputError(f"{flag} {out}: holds the input {given}; choose another {noun}")


def check_replaceable(out: str | Path, command: str, inputs: Iterable[str | Path | None] = (), flag: str = "--out"):
    """Raise :class:`InputError` unless ``tte-scale <command>`` may delete ``out`` (see the module doc)."""
    check_not_input(out, inputs, flag)
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{flag} {out}: exists and is not a folder; refusing to replace it")
    if not any(out.iterdir()):
        return
    owner = read_marker(out)
    if owner is None:
        raise InputError(
            f"{flag} {out}: not empty and not written by `tte-scale {command}` (no {MARKER}); refusing to delete it "
            "(choose another folder, or delete it yourself if it is an old output)"
        )
    if owner.get("command") != command:
        raise InputError(
            f"{flag} {out}: written by `tte-scale {owner.get('command')}`, not `tte-scale {command}`; "
            "refusing to delete it"
        )


def remove_own(out: str | Path, command: str, inputs: Iterable[str | Path | None] = (), flag: str = "--out") -> None:
    """:func:`check_replaceable`, then delete ``out`` (nothing happens when it is absent)."""
    check_replaceable(out, command, inputs, flag)
    if Path(out).exists():
        shutil.rmtree(out)
