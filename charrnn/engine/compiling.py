"""Knowing whether a kernel is in Numba's cache without compiling it, and one process at a time
compiling a group of kernels.

Numba compiles a kernel at its first call in a process, or loads it from its cache on disk. A
call inside cache_only() loads or fails: a kernel that would have to be compiled raises
NotCached instead (on this thread only; other threads compile as usual). exclusive(name) holds
a lock file while a group of kernels compiles, so that a second charrnn process that needs the
same group waits for the first one's work to reach the cache and loads it, instead of compiling
it a second time beside it."""

import contextlib
import os
import threading

import numba.core.event as numba_event

from .sharedcache import lock_dir


class NotCached(Exception):
    """A kernel that cache_only() found missing from Numba's cache."""


_local = threading.local()


class _Refuse(numba_event.Listener):
    def on_start(self, event):
        if getattr(_local, "refuse", False):
            raise NotCached(event.data["dispatcher"].py_func.__qualname__)

    def on_end(self, event):
        pass


class _Count(numba_event.Listener):
    """Counts the compiles that started on each thread (compiled() reads this thread's)."""

    def on_start(self, event):
        _local.compiled = getattr(_local, "compiled", 0) + 1

    def on_end(self, event):
        pass


numba_event.register("numba:compile", _Refuse())
numba_event.register("numba:compile", _Count())


def compiled():
    """How many kernels this thread has compiled (not loaded from the cache) so far."""
    return getattr(_local, "compiled", 0)


@contextlib.contextmanager
def cache_only():
    """Kernels called inside load from Numba's cache or raise NotCached."""
    before = getattr(_local, "refuse", False)
    _local.refuse = True
    try:
        yield
    finally:
        _local.refuse = before


def cached(fn, *args):
    """Whether fn(*args) runs on kernels all in Numba's cache (they are loaded if so)."""
    try:
        with cache_only():
            fn(*args)
        return True
    except NotCached:
        return False


@contextlib.contextmanager
def exclusive(name, wait=True):
    """Hold the lock of a group of kernels named name while compiling (or loading) it: a
    process that asks for the same name waits here until the other has finished. Yields True
    when the lock is held; with wait=False, False at once where another process holds it.
    Where file locks cannot be taken, nothing is held (and True is yielded)."""
    try:
        import fcntl

        fd = os.open(os.path.join(lock_dir(), name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except (ImportError, OSError):
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor lets the lock go
