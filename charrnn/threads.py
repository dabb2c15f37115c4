"""Threads: how many cores the kernels use, and the BLAS library's own thread count.

A window's B streams are independent through the whole recurrence, so the model splits them
into one part per core and runs the parts in Python threads (the kernels release the GIL), each
with single-threaded BLAS. On small matrices that beats a multi-threaded BLAS call per time step,
whose threads spend more time waking and spinning than multiplying.

Numba's np.dot calls the OpenBLAS bundled with SciPy; its thread count is set through ctypes.
`CHARRNN_THREADS` overrides the number of parts (default: the cores this process may use).
"""
import ctypes
import glob
import os
from concurrent.futures import ThreadPoolExecutor

_pool = None


def num_threads():
    env = os.environ.get("CHARRNN_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def pool():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=num_threads(), thread_name_prefix="charrnn")
    return _pool


def _scipy_blas():
    try:
        import scipy
    except ImportError:
        return None
    base = os.path.dirname(os.path.dirname(scipy.__file__))
    for path in sorted(glob.glob(os.path.join(base, "scipy.libs", "libscipy_openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
            return lib.scipy_openblas_set_num_threads
        except (OSError, AttributeError):
            continue
    return None


_setter = None


def set_blas_threads(n):
    """Set the thread count of the BLAS that Numba calls; False if it cannot be set."""
    global _setter
    if _setter is None:
        _setter = _scipy_blas() or False
    if not _setter:
        return False
    _setter(int(n))
    return True
