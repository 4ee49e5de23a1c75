"""Member index of a WebDataset tar: where each sample's members lie, found from the headers only.

Python's `tarfile` (and so stock webdataset) silently stops at the first corrupted header in
the middle of a file; this walker checks every header's checksum, records the damage, and
re-synchronizes on the next valid ustar header so the samples after it stay readable. A member
whose data runs past the end of the file (truncated shard) is dropped and recorded. Handles
ustar names with prefix, pax `x` records (path, size) and GNU `L` long names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TarIndex", "index_tar"]

BLOCK = 512
_RESYNC_CHUNK = 2**20


@dataclass(slots=True)
class TarIndex:
    """members[key][suffix] = (data offset, size); issues = human-readable damage reports."""

    members: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)


class _BadHeader(Exception):
    pass


def _octal(field_bytes: bytes) -> int:
    if field_bytes and field_bytes[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field_bytes[1:], "big")
    text = field_bytes.replace(b"\0", b" ").strip()
    return int(text, 8) if text else 0


def _parse(block: bytes) -> tuple[str, int, bytes]:
    """(name, size, typeflag) of a header block; raises _BadHeader on a checksum mismatch."""
    try:
        stored = _octal(block[148:156])
    except ValueError:
        raise _BadHeader("unreadable checksum field") from None
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b > 127)
    if stored not in (unsigned, signed):
        raise _BadHeader(f"checksum {stored} != {unsigned}")
    try:
        size = _octal(block[124:136])
    except ValueError:
        raise _BadHeader("unreadable size field") from None
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace"), size, block[156:157]


def _pax(data: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "replace")
        pos += length
    return out


def _resync(f, start: int, file_size: int) -> int | None:
    """Offset of the next block at or after `start` that parses as a valid ustar header."""
    pos = start
    while pos < file_size:
        f.seek(pos)
        chunk = f.read(_RESYNC_CHUNK)
        for off in range(0, len(chunk) - BLOCK + 1, BLOCK):
            block = chunk[off : off + BLOCK]
            if block[257:262] != b"ustar":
                continue
            try:
                _parse(block)
            except _BadHeader:
                continue
            return pos + off
        pos += max(BLOCK, len(chunk) - len(chunk) % BLOCK)
    return None


def index_tar(path: str) -> TarIndex:
    """Walk the headers of the tar at local `path` (data is skipped, not read)."""
    idx = TarIndex()
    with open(path, "rb") as f:
        f.seek(0, 2)
        file_size = f.tell()
        pos, pending = 0, {}
        while pos + BLOCK <= file_size:
            f.seek(pos)
            block = f.read(BLOCK)
            if block == bytes(BLOCK):
                break  # end-of-archive marker
            try:
                name, size, flag = _parse(block)
            except _BadHeader as exc:
                nxt = _resync(f, pos + BLOCK, file_size)
                idx.issues.append(
                    f"corrupt tar header at byte {pos} ({exc}); "
                    + (f"resumed at byte {nxt}" if nxt is not None else "nothing readable after it")
                )
                pending = {}
                if nxt is None:
                    break
                pos = nxt
                continue
            data_at = pos + BLOCK
            size = int(pending.get("size", size))
            name = pending.pop("path", name)
            pending = {}
            end = data_at + size
            if end > file_size:
                idx.issues.append(f"member {name!r} truncated: needs bytes up to {end}, file has {file_size}")
                break
            if flag in (b"x", b"L"):
                f.seek(data_at)
                data = f.read(size)
                if flag == b"x":
                    pending = _pax(data)
                else:
                    pending = {"path": data.rstrip(b"\0").decode("utf-8", "replace")}
            elif flag in (b"0", b"\0", b"7"):
                base = name.rsplit("/", 1)[-1]
                key, dot, suffix = base.partition(".")
                if dot:
                    idx.members.setdefault(key, {})[suffix] = (data_at, size)
            pos = data_at + (size + BLOCK - 1) // BLOCK * BLOCK
        else:
            if pos < file_size:
                idx.issues.append(f"file ends inside a header at byte {pos}")
    return idx
