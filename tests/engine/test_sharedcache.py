"""Numba's cache shared by processes at once (engine/sharedcache.py): two processes that add
kernels of one function at the same moment each keep their own entry, and kernels cached by two
processes that call two closures of one function each call their own when loaded together."""

import subprocess
import sys
import textwrap
import threading
import time

from numba.core import caching

from charrnn.engine import sharedcache


def test_two_saves_at_once_keep_their_own_entries(tmp_path, monkeypatch):
    """Without the lock both took the first free data file name; the index kept one entry."""
    assert caching.IndexDataCacheFile.save is sharedcache._save_alone  # the engine's import did it
    real = caching.IndexDataCacheFile._save_index

    def slow(self, overloads):  # widen the moment between reading the index and writing it
        time.sleep(0.2)
        real(self, overloads)

    monkeypatch.setattr(caching.IndexDataCacheFile, "_save_index", slow)
    stamp = ("source", 1)
    # each saver a file object of its own, as two processes would have (the lock is a file
    # descriptor of each call's own, so two threads contend as two processes do)
    savers = [
        threading.Thread(target=caching.IndexDataCacheFile(str(tmp_path), "f", stamp).save, args=(k, k * 3))
        for k in ("float32 kernel", "float64 kernel")
    ]
    for t in savers:
        t.start()
    for t in savers:
        t.join()
    cache = caching.IndexDataCacheFile(str(tmp_path), "f", stamp)
    assert cache.load("float32 kernel") == "float32 kernel" * 3
    assert cache.load("float64 kernel") == "float64 kernel" * 3


CLOSURES = textwrap.dedent(
    """
    import sys
    from numba import njit
    import charrnn.engine.gemm  # as every module of cached kernels does

    def make(k):
        @njit
        def add(n):  # recursive: called, not inlined
            return 0 if n == 0 else k + add(n - 1)
        return add

    plus1, plus2 = make(1), make(2)

    @njit(cache=True)
    def one(n):
        return plus1(n)

    @njit(cache=True)
    def two(n):
        return plus2(n)

    print(*[{"one": one, "two": two}[w](10) for w in sys.argv[1:]])
    """
)


def test_closures_compiled_in_two_processes_stay_apart_when_loaded_together(tmp_path):
    """Each process compiles one closure first, so Numba's counter gave both the same name;
    a third process loading both kernels bound them to one closure (two(10) gave 10)."""
    (tmp_path / "closures.py").write_text(CLOSURES)
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run(*which):
        r = subprocess.run(
            [sys.executable, "closures.py", *which], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert run("one") == ["10"] and run("two") == ["20"]  # each compiles and caches its kernel
    assert run("one", "two") == ["10", "20"]  # both loaded from the cache
