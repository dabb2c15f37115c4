"""One process at a time adds a kernel to Numba's cache, and where the lock files live.

Numba saves a compiled kernel by reading the function's cache index, taking the first data file
name the index does not use, writing the index back, then the data file
(numba.core.caching.IndexDataCacheFile.save). Two processes that save two signatures of one
function at the same moment both take the same name: the index keeps one of the entries and
the data file the other's machine code, so a later process loads code compiled for other types
and runs it (a wrong result or a crash: the test suite's two workers did it within a cold run;
numba/numba#10128 is the same race in its gufunc cache). Importing this module makes that save
hold a lock file of the index's own, so saves of one function follow each other; loading is left
as it is (it reads an index and a file that are each replaced whole). Every module that defines
cached kernels imports gemm, which imports this."""

import os
import tempfile
import zlib

from numba.core import caching


def lock_dir():
    """The directory of charrnn's lock files (this user's, in the system's temporary directory)."""
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    path = os.path.join(tempfile.gettempdir(), f"charrnn-compiling-{uid}")
    os.makedirs(path, exist_ok=True)
    return path


_save = caching.IndexDataCacheFile.save


def _save_alone(self, key, data):
    try:
        import fcntl

        name = "index-%08x.lock" % zlib.crc32(os.path.abspath(self._index_path).encode())
        fd = os.open(os.path.join(lock_dir(), name), os.O_RDWR | os.O_CREAT, 0o600)
    except (ImportError, OSError):  # no file locks here: as Numba does
        return _save(self, key, data)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _save(self, key, data)
    finally:
        os.close(fd)  # closing the descriptor lets the lock go


caching.IndexDataCacheFile.save = _save_alone
