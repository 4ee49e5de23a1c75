"""Code registry and ontology closure (MEDS ``metadata/codes.parquet`` ``parent_codes``).

With the ontology on, an occurrence of a code also counts as an occurrence of each of its
ancestors, so broad concepts can become tasks (as in the paper's code). The closure is
computed once per distinct code (never per event) and memoized; cycles in a malformed
hierarchy are tolerated (each ancestor is listed once).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CodeRegistry", "Ontology"]


class Ontology:
    """``closure(code)`` = the code itself followed by all its ancestors (sorted, unique)."""

    def __init__(self, parents: dict[str, list[str]] | None, enabled: bool = True):
        self.parents = parents or {}
        self.enabled = enabled
        self._memo: dict[str, tuple[str, ...]] = {}

    def has_ancestors(self, codes: list[str]) -> bool:
        """Whether any of ``codes`` has a parent (else every closure is the code alone)."""
        return self.enabled and bool(self.parents) and not self.parents.keys().isdisjoint(codes)

    def closure(self, code: str) -> tuple[str, ...]:
        if not self.enabled or code not in self.parents:
            return (code,)
        hit = self._memo.get(code)
        if hit is not None:
            return hit
        seen, stack = set(), list(self.parents[code])
        while stack:
            p = stack.pop()
            if p in seen or p == code:
                continue
            seen.add(p)
            stack.extend(self.parents.get(p, ()))
        out = (code, *sorted(seen))
        self._memo[code] = out
        return out


class CodeRegistry:
    """Global code ids (first-seen order) with a growing int64 count per code."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.codes: list[str] = []
        self.counts = np.zeros(1024, np.int64)

    def id(self, code: str) -> int:
        i = self.ids.get(code)
        if i is None:
            i = self.ids[code] = len(self.codes)
            self.codes.append(code)
            if i >= len(self.counts):
                self.counts = np.concatenate([self.counts, np.zeros(len(self.counts), np.int64)])
        return i

    def ids_of(self, codes: list[str]) -> np.ndarray:
        """Global ids (int32) of a shard's code dictionary (new codes are registered)."""
        get = self.ids.get
        out = [get(c) for c in codes]
        if None in out:
            out = [self.id(c) if i is None else i for c, i in zip(codes, out)]
        return np.asarray(out, np.int32)

    def csr(
        self, local_codes: list[str], ontology: Ontology, gids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a shard's code dictionary: CSR (offsets, column targets) into a compact column
        space, plus the global id of each column. Without ancestors to add, column = local code.
        ``gids``: ``ids_of(local_codes)`` when the caller has it already."""
        gids = self.ids_of(local_codes) if gids is None else gids
        if not ontology.has_ancestors(local_codes):
            ar = np.arange(len(local_codes), dtype=np.int64)
            return np.arange(len(local_codes) + 1, dtype=np.int64), ar, gids
        lists = [[self.id(a) for a in ontology.closure(c)] for c in local_codes]
        deg = np.array([len(x) for x in lists], np.int64)
        offsets = np.zeros(len(lists) + 1, np.int64)
        np.cumsum(deg, out=offsets[1:])
        flat = np.fromiter((g for x in lists for g in x), np.int64, count=int(deg.sum()))
        cols_gid, targets = np.unique(flat, return_inverse=True)
        return offsets, targets.astype(np.int64), cols_gid

    def all_counts(self) -> np.ndarray:
        return self.counts[: len(self.codes)]
