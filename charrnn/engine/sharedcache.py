"""Numba's cache shared by several processes at once, and where charrnn's lock files live.

Two things in Numba's cache assume one process (a command and its second compiling process, or
the test suite's workers, break them), and importing this module fixes both. Every module that
defines cached kernels imports gemm, which imports this.

- Names. Numba names each compiled function by its qualified name, a counter of this process
  and its types, and writes the callees' code into each caller's cached object code under those
  names. Two closures of one function (Numba's sort for np.sort and for np.argsort, say) are
  told apart by the counter alone; compiled in two processes, each can get the number the other
  gave the other closure. A process that loads kernels cached by both then binds both to one
  definition: a kernel calls the other's closure (top-k sampling drew other ids, then crashed).
  Here each process counts from a random start of its own.
- Saves. Numba adds a kernel to the cache by reading the function's index, taking the first
  data file name it does not use, writing the index back, then the data
  (numba.core.caching.IndexDataCacheFile.save). Two processes that save two signatures of one
  function at once take the same name, and the index keeps only one of them. Here the save
  holds a lock file of that index's own, so saves of one function follow each other.
(numba/numba#10128 is the second race in Numba's gufunc cache.)"""

import itertools
import os
import secrets
import tempfile
import zlib

from numba.core import bytecode, caching


def lock_dir():
    """The directory of charrnn's lock files (this user's, in the system's temporary directory)."""
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    path = os.path.join(tempfile.gettempdir(), f"charrnn-compiling-{uid}")
    os.makedirs(path, exist_ok=True)
    return path


# 2**48 starts, a process uses a few thousand numbers: two processes' ranges meet with odds
# of about 1e-11
bytecode.FunctionIdentity._unique_ids = itertools.count(secrets.randbits(48) << 16)


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
