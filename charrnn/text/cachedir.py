"""Housekeeping of the id cache (idcache.py): its entries, its size cap, and emptying it.

An entry is `<key>.npy` (the ids) and `<key>.json` (what was encoded). Its last use is the
.json's modification time: idcache touches it on every hit. When an entry is stored, the least
recently used others are removed until the cache is within its cap, CHARRNN_CACHE_MAX (default
DEFAULT_MAX; 0 for no cap). The entry just stored is always kept, even alone above the cap: it
is about to be trained from. Removing an entry another process has mapped is safe on POSIX: the
mapping keeps the data until it is closed.
"""

import json
import os
import re
import time
from pathlib import Path
from typing import NamedTuple, Optional

from ..errors import ConfigError

# The ids of a 1 GB corpus take 1 GB (up to 256 symbols) or 2 GB (up to 65,536): 4 GB keeps
# one such corpus, or a few of the tens-of-megabytes kind, encoded, and is small beside a disk.
# fmt: off
DEFAULT_MAX = 4 * 1000 ** 3
KEY = re.compile(r"^[0-9a-f]{40}$")   # idcache._key: a 20-byte blake2b in hex
STALE = 3600                          # as idcache.STALE: older temporary files are leftovers
# fmt: on
UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}


class Entry(NamedTuple):
    # fmt: off
    key: str
    source: Optional[str]     # the corpus as it was named when encoded; None if unknown
    size: int                 # bytes of its files
    vocab_size: Optional[int]
    length: Optional[int]     # ids (characters or bytes) it holds
    last_used: float          # a time.time() stamp
    files: tuple              # its paths
    mode: Optional[str] = None  # how it was encoded: "text", "bytes", "text, max-vocab 50", ...
    current: Optional[bool] = None  # the source file still has the size and time it was read at
    # fmt: on


def max_bytes():
    """The cap from CHARRNN_CACHE_MAX: bytes, or a number with k/M/G/T (powers of 1000) or
    Ki/Mi/Gi/Ti (of 1024), an optional B; 0 means no cap."""
    raw = os.environ.get("CHARRNN_CACHE_MAX", "").strip()
    if not raw:
        return DEFAULT_MAX
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?", raw.lower())
    if not m:
        raise ConfigError(f"CHARRNN_CACHE_MAX={raw!r} is not a size: use e.g. 500M, 2G or 0 (no cap)")
    return int(float(m.group(1)) * UNITS[m.group(2) or ""])


def entries(where):
    """The cache's entries, least recently used first (an entry missing one of its files is
    listed too, with what is known)."""
    where = Path(where)
    groups = {}
    try:
        names = list(where.iterdir())
    except OSError:
        return []
    for p in names:
        if p.suffix in (".npy", ".json") and KEY.match(p.stem):
            groups.setdefault(p.stem, []).append(p)
    out = [_entry(key, tuple(sorted(files))) for key, files in groups.items()]
    return sorted((e for e in out if e is not None), key=lambda e: (e.last_used, e.key))


def _entry(key, files):
    size, stamp, meta = 0, 0.0, {}
    for p in files:
        try:
            st = p.stat()
        except OSError:
            return None  # removed meanwhile
        size += st.st_size
        if p.suffix == ".json" or not stamp:
            stamp = st.st_mtime
        if p.suffix == ".json":
            try:
                meta = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
    v = meta.get("vocab") if isinstance(meta, dict) else None
    vocab = None
    if isinstance(v, dict):
        vocab = v.get("chars") if v.get("kind") != "bytes" else v.get("ids")
    meta = meta if isinstance(meta, dict) else {}
    return Entry(
        key,
        meta.get("source"),
        size,
        len(vocab) if isinstance(vocab, (str, list)) else None,
        meta.get("length"),
        stamp,
        files,
        meta.get("mode"),
        _current(meta),
    )


def _current(meta):
    """Whether the entry's source file is as it was read (None: not known)."""
    source, size, mtime = meta.get("source"), meta.get("size"), meta.get("mtime_ns")
    if not source or size is None or mtime is None:
        return None
    try:
        st = os.stat(source)
    except OSError:
        return False
    return st.st_size == size and st.st_mtime_ns == mtime


def mark_used(where, key):
    """Record a hit (a read-only cache simply keeps its old times)."""
    try:
        os.utime(Path(where) / f"{key}.json")
    except OSError:
        pass


def evict(where, keep=None, cap=None):
    """Remove least recently used entries (never `keep`) until the cache holds at most cap
    bytes (default max_bytes()); returns the entries removed."""
    cap = max_bytes() if cap is None else cap
    if not cap:
        return []
    found = entries(where)
    total = sum(e.size for e in found)
    removed = []
    for e in found:
        if total <= cap:
            break
        if e.key == keep:
            continue
        if _remove(e):
            total -= e.size
            removed.append(e)
    return removed


def clear(where):
    """Remove every entry and leftover temporary file; returns (entries removed, bytes freed).
    A temporary file younger than STALE may be an entry being written: it is left alone."""
    where = Path(where)
    count = freed = 0
    for e in entries(where):
        if _remove(e):
            count, freed = count + 1, freed + e.size
    for tmp in where.glob(".*.tmp") if where.is_dir() else ():
        try:
            st = tmp.stat()
            if time.time() - st.st_mtime > STALE:
                tmp.unlink()
                freed += st.st_size
        except OSError:
            pass
    return count, freed


def _remove(entry):
    """The .json first: a reader then misses the entry and rebuilds it, never trusts half."""
    ok = True
    for p in sorted(entry.files, key=lambda p: p.suffix != ".json"):
        try:
            p.unlink(missing_ok=True)
        except OSError:
            ok = False
    return ok
