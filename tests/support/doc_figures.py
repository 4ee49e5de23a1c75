"""Figures quoted in README.md and docs/ tied to the result files they come from.

A quoted figure carries its source as an HTML comment right after it (invisible when rendered)::

    TTE AUROC **0.771**<!--fig demo.json:mean_over_8_tasks.tte.auroc-->
    CI [0.716, 0.819]<!--fig demo.json:mean_over_8_tasks.tte.auroc_ci-->
    5.67M<!--fig labels.json:results[method=ours].events_per_cpu_s--> events/CPU-s
    91%<!--fig loader.json:summary.frac scale=100-->

The file is relative to ``benchmarks/results/`` unless it contains a ``/`` (then relative to the
repository root). The key is a dotted path; ``name[3]`` indexes a list, ``name["a key, with spaces"]``
reads a key that is not a plain word, and ``rows[k=v]`` / ``rows[k=v&k2="a b"]`` picks the one
element of a list of records whose fields equal those values (compared as text). Options:
``scale=S`` multiplies the file's value (a fraction quoted as a percentage), ``tol=T`` is the
absolute tolerance on the quoted figure; without it the quoted figure must be the file's value
rounded to the digits shown (half a unit in the last place; a suffix ``k``/``M``/``G`` scales
the shown number and its last place alike).

The figure is the number (or bracketed list of numbers) immediately before the comment (a unit
separated by a space goes after the comment: ``0.494<!--fig ...--> vol/s``),
ignoring Markdown emphasis (``**``, ``*``, `` ` ``), and may carry a sign (``+``, ``-``, ``−``),
thousands commas and a unit suffix (``x``, ``%``, ``s``, ``MB`` ... anything not a digit).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

MARKER = re.compile(r"<!--\s*fig\s+(?P<body>.*?)\s*-->")
_BODY = re.compile(r'^(?P<file>[^:\s]+):(?P<key>(?:"[^"]*"|[^\s"])+)(?P<opts>(?:\s+\w+=\S+)*)$')
_KEY_PART = re.compile(r'\[(?:"[^"]*"|[^\]"])*\]|[^.\[\]]+')
_NUMBER = r"[+\-−]?\d[\d,]*(?:\.\d+)?"
# The figure right before a marker: a bracketed list of numbers, or one number, each optionally
# followed by a unit suffix, then optional closing emphasis.
_TAIL = re.compile(
    r"(?P<fig>\[\s*" + _NUMBER + r"(?:\s*,\s*" + _NUMBER + r")*\s*\]|" + _NUMBER + r"(?P<suffix>[A-Za-z%/µ]*))"
    r"[*`]*\s*$"
)
_MULT = {"k": 1e3, "M": 1e6, "G": 1e9}


@dataclass(frozen=True)
class Figure:
    doc: Path
    line: int
    shown: str
    source: str
    file: Path
    key: str
    scale: float
    tol: float | None

    def where(self) -> str:
        return f"{self.doc.name}:{self.line}: {self.shown!r} <- {self.source}"


def _parse_number(text: str, suffix: str = "") -> tuple[float, float]:
    """(value, half a unit in the last place shown) of a quoted number."""
    t = text.replace(",", "").replace("−", "-").lstrip("+")
    decimals = len(t.split(".")[1]) if "." in t else 0
    mult = _MULT.get(suffix[:1], 1.0) if suffix[:1] in _MULT and suffix[1:2] not in ("B",) else 1.0
    return float(t) * mult, 0.5 * 10.0 ** (-decimals) * mult


def find_figures(doc: Path, results_dir: Path, repo: Path) -> list[Figure]:
    figures = []
    for lineno, line in enumerate(doc.read_text().splitlines(), start=1):
        for m in MARKER.finditer(line):
            body = _BODY.match(m.group("body"))
            if body is None:
                raise ValueError(
                    f"{doc.name}:{lineno}: fig marker needs FILE:KEY [scale=S] [tol=T], got {m.group(0)!r}"
                )
            fname, key = body.group("file"), body.group("key")
            opts = dict(p.split("=", 1) for p in body.group("opts").split())
            unknown = set(opts) - {"scale", "tol"}
            if unknown:
                raise ValueError(f"{doc.name}:{lineno}: unknown fig option(s) {sorted(unknown)}")
            tail = _TAIL.search(line[: m.start()])
            if tail is None:
                raise ValueError(f"{doc.name}:{lineno}: no number right before {m.group(0)!r}")
            path = (repo / fname) if "/" in fname else (results_dir / fname)
            figures.append(
                Figure(
                    doc=doc,
                    line=lineno,
                    shown=tail.group("fig"),
                    source=m.group("body"),
                    file=path,
                    key=key,
                    scale=float(opts.get("scale", 1.0)),
                    tol=float(opts["tol"]) if "tol" in opts else None,
                )
            )
    return figures


def lookup(data, key: str):
    """The value at a dotted key with ``[i]`` indices and ``[field=value]`` selections."""
    value = data
    for part in _KEY_PART.findall(key):
        if part.startswith("["):
            sel = part[1:-1]
            if sel.startswith('"'):
                part = sel.strip('"')  # a quoted dict key, read below
            elif "=" in sel:
                want = dict(c.split("=", 1) for c in sel.split("&"))
                want = {k: v.strip('"') for k, v in want.items()}
                hits = [r for r in value if isinstance(r, dict) and all(str(r.get(k)) == v for k, v in want.items())]
                if len(hits) != 1:
                    raise KeyError(f"{key}: {len(hits)} records with {sel}")
                value = hits[0]
                continue
            else:
                value = value[int(sel)]
                continue
        part = part.strip('"')
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{key}: no key {part!r}")
        value = value[part]
    return value


def check(fig: Figure) -> str | None:
    """None when the quoted figure matches its source, else what is wrong."""
    if not fig.file.exists():
        return f"{fig.where()}: {fig.file} does not exist"
    try:
        value = lookup(json.loads(fig.file.read_text()), fig.key)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        return f"{fig.where()}: {e}"
    if fig.shown.startswith("["):
        shown = [_parse_number(x) for x in re.findall(_NUMBER, fig.shown)]
        values = list(value) if isinstance(value, (list, tuple)) else None
        if values is None or len(values) != len(shown):
            return f"{fig.where()}: file has {value!r}, not a list of {len(shown)}"
    else:
        suffix = _TAIL.search(fig.shown + " ").group("suffix") or ""
        number = fig.shown[: len(fig.shown) - len(suffix)] if suffix else fig.shown
        shown, values = [_parse_number(number, suffix)], [value]
    for (q, half_ulp), v in zip(shown, values):
        if not isinstance(v, (int, float)):
            return f"{fig.where()}: file has {v!r}, not a number"
        tol = fig.tol if fig.tol is not None else half_ulp * (1 + 1e-9)
        if abs(q - v * fig.scale) > tol:
            return f"{fig.where()}: file says {v * fig.scale:.6g} (tolerance {tol:g})"
    return None
