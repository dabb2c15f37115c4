"""Sampling that does not loop: what each row of a Sampler has generated so far, and the two
ways it changes the next draw (kernels; NumPy and Numba only, called from sample_kernels).

- Presence and frequency penalties, as OpenAI defines them: before temperature, top-k and
  top-p, logit[c] -= frequency * count[c] + presence * (count[c] > 0), count[c] the times row
  k generated c: in the whole sample so far, or (window W > 0) in its last W characters. The
  prime is not counted.
- No-repeat n-grams: an id that would complete an n-character sequence the row has already
  generated is not drawn. When every id would, the step takes the one whose n-gram was
  generated longest ago (that n-gram repeats, whatever the temperature; the sample goes on,
  round the followers rather than staying in the likeliest one's loop).

The n-gram memory is exact, not a Bloom filter: an open-addressing table of the (n-1)-grams
generated (each slot: where the context first occurred, verified against the history), each
with a linked list of the distinct ids that followed it. A step reads one context and walks
its followers (at most V), whatever the sample's length.

Shapes: N rows, V vocabulary, C history capacity (ids a row can hold), S table slots (a power
of two, at least 2 C). Everything is 0-wide when its option is off.
"""

from typing import NamedTuple

import numpy as np

from .kernels import kernel

FNV_OFFSET = np.uint64(14695981039346656037)
FNV_PRIME = np.uint64(1099511628211)


class Repeat(NamedTuple):
    """Each row's memory of its sample, for penalties and no-repeat (see the module doc)."""

    # fmt: off
    t: np.ndarray       # (1,) int64    ids generated so far by every row
    counts: np.ndarray  # (N, V) int64  of each id, in the window (or the whole sample)
    ban: np.ndarray     # (N, V) bool   ids the next draw of the row may not take
    hist: np.ndarray    # (N, C) int64  the ids generated (kept with a window or no-repeat)
    ctab: np.ndarray    # (N, S) int64  contexts: 1 + start in hist of a first occurrence; 0 empty
    chead: np.ndarray   # (N, S) int64  1 + the context's first follower entry; 0 none
    fol: np.ndarray     # (N, C) int64  entry e: an id that followed the context
    nxt: np.ndarray     # (N, C) int64  1 + the next entry of the same context; 0 the last
    last: np.ndarray    # (N, C) int64  entry e: where its n-gram last ended in hist
    nent: np.ndarray    # (N,) int64    entries used
    slot: np.ndarray    # (N,) int64    the slot of the current context (from the ban to the record)
    # fmt: on


def empty(N, V, pick):
    """The Repeat of N rows before their first id, sized for `pick` (a Pick) and no ids yet."""
    z = lambda *s: np.zeros(s, np.int64)  # noqa: E731
    counting = pick.presence_penalty != 0 or pick.frequency_penalty != 0
    return Repeat(
        z(1),
        z(N, V if counting else 0),
        np.zeros((N, V), np.bool_),
        z(N, 0),
        z(N, 0),
        z(N, 0),
        z(N, 0),
        z(N, 0),
        z(N, 0),
        z(N),
        z(N),
    )


@kernel
def active(pick):
    """Any of the options on (else sampling draws exactly as without them)."""
    counting = pick.presence_penalty != 0 or pick.frequency_penalty != 0
    return counting or pick.no_repeat > 0 or pick.penalty_window > 0


def keeps_history(pick):
    return pick.no_repeat > 0 or pick.penalty_window > 0


def reserve(rep, n, pick):
    """rep, or a larger copy, with room for n more ids per row."""
    if not keeps_history(pick):
        return rep
    need = int(rep.t[0]) + n
    C = rep.hist.shape[1]
    if need <= C:
        return rep
    C = max(2 * C, need, 256)
    N = rep.hist.shape[0]
    grow = lambda a: np.concatenate([a, np.zeros((N, C - a.shape[1]), a.dtype)], 1)  # noqa: E731
    S = 1 << (2 * C - 1).bit_length() if pick.no_repeat > 0 else 0
    new = rep._replace(
        hist=grow(rep.hist),
        fol=grow(rep.fol),
        nxt=grow(rep.nxt),
        last=grow(rep.last),
        ctab=np.zeros((N, S), np.int64),
        chead=np.zeros((N, S), np.int64),
    )
    if pick.no_repeat > 0:
        rehash(rep.ctab, rep.chead, new, pick.no_repeat - 1)
    return new


@kernel
def context_hash(row, start, m):
    """FNV-1a of the m ids row[start:start + m]."""
    h = FNV_OFFSET
    for i in range(start, start + m):
        h = (h ^ np.uint64(row[i])) * FNV_PRIME
    return h


@kernel
def find(rep, k, start, m):
    """The slot of row k's table holding the context hist[k, start:start + m], or the empty
    slot where it belongs."""
    mask = rep.ctab.shape[1] - 1
    i = np.int64(context_hash(rep.hist[k], start, m) & np.uint64(mask))
    while True:
        e = rep.ctab[k, i]
        if e == 0:
            return i
        same = True
        for j in range(m):
            if rep.hist[k, e - 1 + j] != rep.hist[k, start + j]:
                same = False
                break
        if same:
            return i
        i = (i + 1) & mask


@kernel
def rehash(ctab, chead, new, m):
    """Move every context of the tables ctab, chead (N, S) into new's larger ones."""
    for k in range(ctab.shape[0]):
        for i in range(ctab.shape[1]):
            if ctab[k, i]:
                j = find(new, k, ctab[k, i] - 1, m)
                new.ctab[k, j] = ctab[k, i]
                new.chead[k, j] = chead[k, i]


@kernel
def prepare(row, k, pick, rep):
    """Before row k's draw: penalise its logits row (V,) in place and set its ban (see the
    module doc). Nothing happens for an option that is off."""
    V = row.shape[0]
    if pick.presence_penalty != 0 or pick.frequency_penalty != 0:
        for v in range(V):
            n = rep.counts[k, v]
            if n > 0:
                row[v] -= pick.frequency_penalty * n + pick.presence_penalty
    if pick.no_repeat > 0:
        ban = rep.ban[k]
        ban[:] = False
        t, m = rep.t[0], pick.no_repeat - 1
        if t < m:
            return
        s = find(rep, k, t - m, m)
        rep.slot[k] = s
        if rep.ctab[k, s] == 0:
            return
        e = rep.chead[k, s]
        while e:
            ban[rep.fol[k, e - 1]] = True
            e = rep.nxt[k, e - 1]
        for v in range(V):
            if v != pick.banned and not ban[v]:
                return
        oldest, e = -1, rep.chead[k, s]  # every id would repeat: the least recent n-gram's
        while e:
            if oldest < 0 or rep.last[k, e - 1] < rep.last[k, oldest]:
                oldest = e - 1
            e = rep.nxt[k, e - 1]
        ban[:] = True
        ban[rep.fol[k, oldest]] = False


@kernel
def record(k, x, pick, rep):
    """After row k drew x (rep.t is not yet advanced: see advance)."""
    t = rep.t[0]
    if pick.presence_penalty != 0 or pick.frequency_penalty != 0:
        rep.counts[k, x] += 1
        if pick.penalty_window > 0 and t >= pick.penalty_window:
            rep.counts[k, rep.hist[k, t - pick.penalty_window]] -= 1
    if pick.no_repeat > 0 or pick.penalty_window > 0:
        rep.hist[k, t] = x
    m = pick.no_repeat - 1
    if pick.no_repeat > 0 and t >= m:
        s = rep.slot[k]
        if rep.ctab[k, s] == 0:
            rep.ctab[k, s] = t - m + 1
        e = rep.chead[k, s]
        while e:
            if rep.fol[k, e - 1] == x:
                rep.last[k, e - 1] = t  # a repeat the fallback chose
                return
            e = rep.nxt[k, e - 1]
        e = rep.nent[k]
        rep.fol[k, e] = x
        rep.last[k, e] = t
        rep.nxt[k, e] = rep.chead[k, s]
        rep.chead[k, s] = e + 1
        rep.nent[k] = e + 1
