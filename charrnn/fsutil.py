"""Writing files so that a reader never sees half of one: the one atomic-write helper."""
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path, mode="wb"):
    """An open temporary file beside path; on leaving the block it is flushed, fsynced and
    renamed over path. On any failure (or interruption) inside or at the rename, the temporary
    file is removed, an existing file at path is left as it was, and the exception propagates."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
