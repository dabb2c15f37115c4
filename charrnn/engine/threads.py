"""Threads: how many cores a run uses, and the BLAS library's own thread count.

How many cores is one setting, read where it is needed and never guessed from the machine's
load: `--threads N` on the command line (cli/common.py calls `configure`), else the environment
variable CHARRNN_THREADS, else the cores this process may use (os.sched_getaffinity).

Training splits a window's B streams into one part per thread (model.Model.parts) and runs the
parts side by side in a thread pool (the kernels release the GIL); the parts meet once per
window. Every product a part makes runs on its own thread, so the BLAS library is limited to one
thread, once per process, through threadpoolctl: on small matrices a multi-threaded BLAS call
spends more time waking and spinning its threads than multiplying, and beside other busy
processes it collapses. Sampling calls no BLAS (its products are gemm.py's).
"""

import os
from concurrent.futures import ThreadPoolExecutor

_configured = None  # set by configure() (the command line's --threads)
_pool, _pool_size = None, 0
_blas_limited = False


def configure(n):
    """Use n threads from now on (None: back to CHARRNN_THREADS or the available cores)."""
    global _configured
    if n is not None and int(n) < 1:
        raise ValueError("threads must be at least 1")
    _configured = None if n is None else int(n)


def explicit():
    """The thread count the user asked for (--threads or CHARRNN_THREADS), or None."""
    if _configured is not None:
        return _configured
    env = os.environ.get("CHARRNN_THREADS", "").strip()
    try:
        return max(1, int(env)) if env else None
    except ValueError:
        return None


def available():
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def num_threads():
    """How many threads a run uses: the explicit setting, else the available cores."""
    return explicit() or available()


def pool():
    """The thread pool that runs a window's parts (as many workers as threads)."""
    global _pool, _pool_size
    n = num_threads()
    if _pool_size < n:  # first use, or the setting grew since
        _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="charrnn"), n
    return _pool


def side_by_side(fn, n):
    """[fn(i) for i in range(n)]: fn(0) on this thread, the others on the pool's threads, at
    the same time (fn releases the GIL, as the kernels do)."""
    futures = [pool().submit(fn, i) for i in range(1, n)]
    first = fn(0)
    return [first] + [f.result() for f in futures]


def single_threaded_blas():
    """Limit the BLAS libraries loaded in this process to one thread each (once; NumPy's own
    included: a process that trains has no other use for them).

    Numba's np.dot calls the OpenBLAS bundled with SciPy, which Numba loads by importing
    scipy.linalg.cython_blas at the first product; importing it here first makes sure it is
    among the libraries threadpoolctl limits."""
    global _blas_limited
    if not _blas_limited:
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
        _blas_limited = True


def preload_blas():
    """Load SciPy's BLAS wrapper module without running scipy.linalg's package import.

    Numba imports scipy.linalg.cython_blas when its CPU target first initialises (the first
    time a process loads a kernel, even one that multiplies nothing), and that imports all of
    scipy.linalg, a large share of `charrnn sample`'s start-up (docs/benchmarks.md, "Figures
    behind the code"). The extension module itself needs none of it; registering it under its
    full name first makes Numba's import a dictionary lookup. A later `import scipy.linalg`
    still works.

    Only the command line calls it, first thing in every command: the library's import has no
    such side effect, and a program that imports charrnn pays that import once."""
    import glob
    import importlib.machinery
    import importlib.util
    import sys

    name = "scipy.linalg.cython_blas"
    if name in sys.modules or "scipy.linalg" in sys.modules:
        return
    try:
        import scipy

        paths = glob.glob(os.path.join(os.path.dirname(scipy.__file__), "linalg", "cython_blas*.so"))
        if not paths:
            return
        loader = importlib.machinery.ExtensionFileLoader(name, paths[0])
        spec = importlib.util.spec_from_file_location(name, paths[0], loader=loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
    except Exception:  # anything unexpected: let Numba import it the ordinary way
        sys.modules.pop(name, None)
