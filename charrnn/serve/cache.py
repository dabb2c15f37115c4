"""The prefix state cache: the recurrent state after each prompt the server has read, keyed by
the prompt's ids, so that a prompt extending a cached one reads only the new characters.

An editor sends its whole document with every keystroke; reading 10,000 characters at 2 x 512
one after another costs seconds, the state after them is a few kilobytes (L x H numbers, twice
for an LSTM). Entries are also kept at every `every` characters of a long prompt, so a prompt
that shares only a beginning with an earlier one starts from there. Bounded by bytes, least
recently used first out. One cache per loaded model (a state belongs to its weights); used
from the batcher's thread only.
"""

from collections import OrderedDict

import numpy as np

EVERY = 256  # also keep the state at every EVERY characters of a prompt
MAX_BYTES = 64 << 20  # keys (4 bytes a character) and states together


def key_of(ids):
    return np.asarray(ids, np.int32).tobytes()


class PrefixCache:
    """{prompt ids: (h, c)} with the longest-cached-prefix lookup (see the module doc)."""

    def __init__(self, max_bytes=MAX_BYTES, every=EVERY):
        self.max_bytes, self.every = max_bytes, every
        self.entries = OrderedDict()  # key bytes -> (h, c), each (L, 1, H)
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self):
        return len(self.entries)

    def longest(self, ids):
        """(n, h, c): the longest cached prefix ids[:n] and copies of its state, or (0, None,
        None)."""
        key = key_of(ids)
        best, found = 0, None
        hit = self.entries.get(key)
        if hit is not None:
            best, found = len(key), key
        else:
            for k in self.entries:
                if best < len(k) <= len(key) and key.startswith(k):
                    best, found = len(k), k
        if found is None:
            self.misses += 1
            return 0, None, None
        self.hits += 1
        self.entries.move_to_end(found)
        h, c = self.entries[found]
        return best // 4, h.copy(), c.copy()

    def put(self, ids, h, c):
        """Keep copies of the state after reading ids."""
        if self.max_bytes <= 0 or len(ids) == 0:
            return
        key = key_of(ids)
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        size = len(key) + h.nbytes + c.nbytes
        if size > self.max_bytes:
            return
        self.entries[key] = (h.copy(), c.copy())
        self.bytes += size
        while self.bytes > self.max_bytes:
            k, (oh, oc) = self.entries.popitem(last=False)
            self.bytes -= len(k) + oh.nbytes + oc.nbytes
