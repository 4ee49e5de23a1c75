"""An output folder written whole or not at all, and replaced only when it is this command's own.

The converters write into ``.<name>.partial`` beside the output folder and rename it at the end, so
a failed or killed run leaves no half-written output under the final name. The partial folder
carries the command's owner marker from the moment it exists, so a later run may clear one left
by a killed run (and nothing else). ``--overwrite`` replaces the old output only after the new one
is complete, and only when ``tte_scale.outputs`` says the old one is this command's own.

Example::

    stage = StagedOutput(out, "convert meds", inputs=[src], overwrite=False)   # refuses up front
    with stage as tmp:
        ...write files under tmp...
        stage.publish(files=3)           # marker, then tmp -> out (the old out removed last)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tte_scale.errors import InputError
from tte_scale.outputs import check_not_input, check_replaceable, mark

__all__ = ["StagedOutput", "replace_file"]


class StagedOutput:
    """See the module docstring. Every check that can refuse runs in ``__init__``, before any work."""

    def __init__(self, out: str | Path, command: str, *, inputs=(), overwrite: bool = False, flag: str = "--out"):
        self.out = Path(out)
        self.command = command
        self.inputs = [i for i in inputs if i is not None]
        self.flag = flag
        self.tmp = self.out.parent / f".{self.out.name}.partial"
        self.published = False
        check_not_input(self.out, self.inputs, flag)
        if self.out.exists() and not overwrite and (not self.out.is_dir() or any(self.out.iterdir())):
            raise InputError(f"{flag} {self.out}: exists; pass --overwrite to replace it")
        if overwrite:
            check_replaceable(self.out, command, self.inputs, flag)
        check_replaceable(self.tmp, command, self.inputs, flag="partial folder")

    def __enter__(self) -> Path:
        if self.tmp.exists():  # left by a killed run of this command (checked in __init__)
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        mark(self.tmp, self.command, partial=True)
        return self.tmp

    def publish(self, **info) -> Path:
        """Mark the finished folder as ours and move it into place (the old output goes last)."""
        mark(self.tmp, self.command, **info)
        if self.out.exists():
            check_replaceable(self.out, self.command, self.inputs, self.flag)
            old = self.out.parent / f".{self.out.name}.old"
            if old.exists():
                check_replaceable(old, self.command, self.inputs, flag="old output")
                shutil.rmtree(old)
            self.out.rename(old)
            self.tmp.rename(self.out)
            shutil.rmtree(old)
        else:
            self.tmp.rename(self.out)
        self.published = True
        return self.out

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.published:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def replace_file(path: Path, write) -> None:
    """Write ``path`` through ``write(tmp_path)`` and move it into place in one rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
