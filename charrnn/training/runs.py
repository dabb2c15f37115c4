"""Run directories: their names, their lock (run_directory: created, proved writable and locked
for the run), and listing them.

A run directory is named after its corpus, `<corpus>-<date>-<time>`, under the run root
(discovery.runs_root: $CHARRNN_RUNS, else ./runs). Names keep any script (a corpus
"Война_и_мир.txt" trains into `Война_и_мир-<date>-<time>`); only characters that no common file
system, or no shell without quoting, takes in a file name are replaced.

The lock is an exclusive flock(2) on `<run dir>/.lock`, held for the whole training. The kernel
drops it when the process ends, however it ends (kill -9 included), so a lock is never stale and
no pid is guessed at: a held lock means a live holder. The file carries the holder's pid, for
messages only. It is removed, while still locked, when the training ends; a process that was
waiting on the removed file sees that and locks the new one instead.
"""

import fcntl
import math
import os
import re
import time
import unicodedata
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .. import checkpoint
from ..errors import CheckpointError, ConfigError
from ..text import data
from .discovery import runs_root

LOCK = ".lock"
NAME_BYTES = 120  # of a run name's corpus part: a file name has 255 on most file systems
UNSAFE = set('/\\:*?"<>|')  # "/" and NUL anywhere; the rest on Windows, FAT and exFAT


def safe_name(name):
    """name with path-unsafe characters (separators, NUL and other controls, the characters
    Windows file systems refuse) and white space made '-'; no leading dot (hidden) or dash
    (read as an option). Cut to NAME_BYTES of UTF-8; 'run' if nothing is left."""
    out = []
    for ch in name:
        kind = unicodedata.category(ch)
        bad = ch in UNSAFE or kind in ("Cc", "Cs", "Zl", "Zp") or ch.isspace()
        out.append("-" if bad else ch)
    name = re.sub("-{2,}", "-", "".join(out)).strip("-. ")
    name = name.encode("utf-8")[:NAME_BYTES].decode("utf-8", "ignore").strip("-. ")
    return name or "run"


def new_run_dir(corpus_name, root=None):
    root = runs_root() if root is None else Path(root)
    return root / f"{safe_name(corpus_name)}-{time.strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------------------------------- lock


class RunLock:
    """The exclusive lock of a run directory (see the module docstring)."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK
        self.fd = None

    def acquire(self, wait=1.0):
        """Take the lock, or raise ConfigError naming the live holder. A moment's wait lets a
        `charrnn runs` that is looking at the lock let go of it."""
        deadline = time.monotonic() + wait
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise ConfigError(in_use(self.dir, holder(self.dir))) from None
                time.sleep(0.05)
                continue
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as it finished: lock the file there now
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # still locked: a waiter sees it gone and retries
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def in_use(run_dir, pid):
    who = f" (pid {pid})" if pid else ""
    return (
        f"{run_dir} is in use by a training that is still running{who}; wait for it to end or stop it first"
    )


def _same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def holder(run_dir):
    """The pid of the live training that holds run_dir's lock (0 if its pid is not known yet),
    or None when no training holds it."""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(os.pread(fd, 32, 0).decode().strip() or 0)
            except (OSError, ValueError):
                return 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def checkpoint_stamp(run_dir):
    """What identifies the run's latest checkpoint as it is now (None if there is none): every
    save replaces the file, so a save in between changes it."""
    try:
        st = os.stat(Path(run_dir) / checkpoint.LATEST)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


# ------------------------------------------------------------------------------------- listing


def listing(where=None):
    """One dict per run directory under `where` (default: the run root), or for `where` alone
    when it is a run directory itself; oldest first by last write. A directory that holds no
    readable checkpoint is listed with a short note instead of its model."""
    where = runs_root() if where is None else Path(where)
    dirs = [where] if _looks_like_run(where) else _subdirs(where)
    rows = []
    for d in dirs:
        inner = [] if _looks_like_run(d) else [r for r in _subdirs(d) if _looks_like_run(r)]
        for run in inner or [d]:  # a folder of runs is listed by its runs, not as a run
            try:
                rows.append(describe(run))
            except OSError as e:  # e.g. a directory this user may not read
                rows.append(dict(_blank(run), note=f"unreadable ({e.strerror or e})"))
            if inner:
                rows[-1]["name"] = f"{d.name}/{run.name}"  # as -c NAME finds it under the root
    return sorted(rows, key=lambda r: (r["modified"], r["name"]))


def _subdirs(d):
    try:
        return [s for s in d.iterdir() if s.is_dir() and not s.name.startswith(".")]
    except OSError:
        return []


def _looks_like_run(d):
    try:
        return any((d / n).is_file() for n in (checkpoint.LATEST, checkpoint.BEST, "metrics.jsonl"))
    except OSError:
        return False


def describe(d):
    """A run directory's corpus, model, steps, best validation loss and last write."""
    row = dict(_blank(d), modified=_last_write(d), training=holder(d) is not None)
    row["date"] = datetime.fromtimestamp(row["modified"]).astimezone().isoformat("T", "seconds")
    notes = []
    for name in (checkpoint.LATEST, checkpoint.BEST):
        if not (d / name).is_file():
            continue
        try:
            meta = checkpoint.load_meta(d / name)
        except CheckpointError as e:
            notes.append(str(e).replace(str(d / name), name))
            continue
        _fill(row, meta)
        break
    else:
        if not notes:
            notes.append("no checkpoint yet" if row["training"] else "no checkpoint")
    if row["training"]:
        notes.insert(0, "training now")
    row["note"] = "; ".join(notes) or None
    return row


def _blank(d):
    return {
        "name": d.name,
        "dir": str(d),
        "corpus": None,
        "cell": None,
        "layers": None,
        "hidden": None,
        "params": None,
        "steps": None,
        "best_val_loss": None,
        "modified": 0.0,
        "date": None,
        "training": False,
        "note": None,
    }


def _fill(row, meta):
    model, progress = meta.model, meta.progress
    row.update(
        corpus=meta.info.corpus,
        cell=model.cell,
        layers=model.layers,
        hidden=model.hidden,
        params=meta.num_params,
        steps=progress and progress.step,
    )
    best = progress and progress.best_val
    if isinstance(best, (int, float)) and math.isfinite(best):
        row["best_val_loss"] = best


def _last_write(d):
    """The newest modification time of the files in d (the directory's own if it has none)."""
    times = []
    for p in d.iterdir():
        try:
            if p.is_file() and p.name != LOCK:
                times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times) if times else d.stat().st_mtime


def sweep_temporaries(path):
    """Remove what a killed writer left in a run directory whose lock is now held: the
    atomic writes' `.<name>.<random>.tmp` files (fsutil.atomic_write) and the write probes'
    `.probe<pid>`. Holding the lock means no live training of ours writes there. Returns
    the names removed."""
    removed = []
    for f in list(Path(path).glob(".*.tmp")) + list(Path(path).glob(".probe[0-9]*")):
        try:
            f.unlink()
            removed.append(f.name)
        except OSError:
            pass
    return sorted(removed)


def default_run_dir(source, runs_dir=None):
    """<run root>/<corpus>-<date>-<time>; the run root is $CHARRNN_RUNS, else ./"""
    name = (
        data.DEFAULT_CORPUS
        if source is None
        else "stdin"
        if source == "-"
        else Path(source).stem or Path(source).name
    )
    return new_run_dir(name, runs_dir)


ANY = object()  # run_directory(seen=ANY): whatever the directory holds


@contextmanager
def run_directory(path, seen=ANY):
    """Create path, prove it writable, and hold its lock for the run's duration (RunLock:
    a live training's lock is never taken over, a dead one's never stands in the way).

    seen: what prepare() found there, checkpoint_stamp(path), checked again once the lock
    is held: a training that saved there in between is not silently overwritten or resumed
    from a stale checkpoint."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)  # a full disk shows itself now, not at the first save
            f.flush()
            os.fsync(f.fileno())
        probe.unlink(missing_ok=True)  # a concurrent opener's sweep may have taken it
    except OSError as e:
        raise ConfigError(f"cannot write to the run directory {path}: {e.strerror or e}") from None
    lock = RunLock(path)
    try:
        lock.acquire()
    except OSError as e:
        raise ConfigError(f"cannot lock the run directory {path}: {e.strerror or e}") from None
    try:
        if seen is not ANY and checkpoint_stamp(path) != seen:
            raise ConfigError(
                f"{path} already holds a run, saved while this one was being prepared; continue "
                f"it with --resume {path}, or pass --force to start over there"
                if seen is None
                else f"{path} was saved to by another training while this one was being "
                "prepared; resume it again"
            )
        sweep_temporaries(path)
        yield path
    finally:
        lock.release()
