"""Two processes that add kernels of one function to Numba's cache at the same moment each keep
their own entry (engine/cachelock.py): without the lock, both took the first free data file
name, and one signature's entry pointed at the other's machine code."""

import threading
import time

from numba.core import caching

from charrnn.engine import cachelock


def test_two_saves_at_once_keep_their_own_entries(tmp_path, monkeypatch):
    assert caching.IndexDataCacheFile.save is cachelock._save_alone  # the engine's import did it
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
