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


def preload_blas():
    """Load SciPy's BLAS wrapper module without running scipy.linalg's package import.

    Numba finds BLAS by importing scipy.linalg.cython_blas the first time it loads a kernel,
    which imports all of scipy.linalg (a fifth of a second, most of `charrnn sample`'s start-up
    budget). The extension module itself needs none of that; registering it under its full name
    first makes Numba's import a dictionary lookup. A later `import scipy.linalg` still works.
    """
    import importlib.machinery
    import importlib.util
    import sys
    name = "scipy.linalg.cython_blas"
    if name in sys.modules or "scipy.linalg" in sys.modules:
        return
    try:
        import scipy
        paths = glob.glob(os.path.join(os.path.dirname(scipy.__file__), "linalg",
                                       "cython_blas*.so"))
        if not paths:
            return
        loader = importlib.machinery.ExtensionFileLoader(name, paths[0])
        spec = importlib.util.spec_from_file_location(name, paths[0], loader=loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
    except Exception:  # anything unexpected: let Numba import it the ordinary way
        sys.modules.pop(name, None)
