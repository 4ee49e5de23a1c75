"""User-facing errors: the CLI prints these as one clear line instead of a traceback."""

from __future__ import annotations


class TteScaleError(Exception):
    """Base class for errors a user can act on (bad input, missing files, bad config)."""


class InputError(TteScaleError):
    """Bad input data. The message names the file and the offending rows/values."""
