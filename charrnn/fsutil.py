"""Writing files so that a reader never sees half of one: the one atomic-write helper."""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path, mode="wb", fsync=True, encoding=None):
    """An open temporary file beside path (named .<name>.<random>.tmp, which cache sweeps
    recognise); on leaving the block it is flushed, fsynced (unless fsync=False: a cache that
    can be rebuilt) and renamed over path. On any failure or interruption, inside the block or
    at the rename, the temporary file is removed, an existing file at path is left as it was,
    and the exception propagates."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make every result private
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
