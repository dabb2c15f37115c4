"""Numba kernels of sampling: one character at a time for N rows, the whole loop in one call.

Beside the training kernels (kernels.py) and written the same way: pure functions over arrays,
the same decorator, buffers passed as one NamedTuple (`SampleWork`, or `SplitWork` for the
batch-1 path split across cores) and the drawing settings as another (`Pick`). The products go
through weights packed once per Sampler (gemm.py, padded to whole strips), not through BLAS.
Shapes use the legend of kernels.py; N is the number of rows sampled side by side, Kp and Vp
are K and V padded to whole packed strips.
"""

from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from . import gemm, kernels, qgemm, repetition, sync
from .kernels import kernel


class SampleWork(NamedTuple):
    """Packed weights, state and buffers of one Sampler (see sampler.Sampler)."""

    # fmt: off
    Wxp: np.ndarray      # (L-1, H*Kp)  input weights of layers 1..L-1, packed and padded
    Whp: np.ndarray      # (L, H*Kp)    recurrent weights, packed and padded
    Wyp: np.ndarray      # (H*Vp,)      decoder, packed and padded
    h: np.ndarray        # (L, N, H)    state
    c: np.ndarray        # (L, N, H)    lstm cell state (unused by gru and rnn)
    cur: np.ndarray      # (N,) int64   the last character of each row, the next input
    G: np.ndarray        # (N, K)       a step's gates
    R: np.ndarray        # (N, K)       a step's recurrent product
    aux: np.ndarray      # (N, H)       lstm: tanh(c); gru: Wh h + bh of the n gate
    scratch: np.ndarray  # (N, Kp)      a padded product before it is cut to K
    logits: np.ndarray   # (N, Vp)
    prob: np.ndarray     # (V,) float64 one row's probabilities while drawing
    xn: np.ndarray       # (N, K)       lnlstm: a step's normalised input product (see
    rn: np.ndarray       # (N, K)       ... kernels.Work, whose Xn, Rn, Cn, S these are for
    cn: np.ndarray       # (N, H)       ... one step); (N, 0) each for the other cells
    st: np.ndarray       # (N, 3)
    # fmt: on
    # per-column scales of Wxp, Whp and Wyp when they are in a narrow format (precision.py:
    # uint16 bf16 or int8); empty, as by default, for float weights
    Sx: np.ndarray = np.zeros((0, 0), np.float32)  # (L-1, Kp)
    Sh: np.ndarray = np.zeros((0, 0), np.float32)  # (L, Kp)
    Sy: np.ndarray = np.zeros(0, np.float32)  # (Vp,)


def norm_buffers(cell, N, H, dtype):
    """SampleWork's xn, rn, cn, st for N rows of a cell (a cells.Cell or its int)."""
    ln = int(cell) == int(kernels.LNLSTM)
    return dict(
        xn=np.zeros((N, 4 * H * ln), dtype),
        rn=np.zeros((N, 4 * H * ln), dtype),
        cn=np.zeros((N, H * ln), dtype),
        st=np.zeros((N, 3 * ln), dtype),
    )


class SplitWork(NamedTuple):
    """SampleWork of one row of a wide LSTM whose steps are split into k chunks of n units,
    one per core; weights laid out by chunk (sampler.unit_blocks), each chunk packed (in
    the Sampler's precision: float, or a narrow format with per-column scales)."""

    # fmt: off
    Wx0b: np.ndarray     # (k, V, 4n)        first layer's input weights
    Wxb: np.ndarray      # (L-1, k, H*4np)   input weights of layers 1..L-1, packed by chunk
    Whb: np.ndarray      # (L, k, H*4np)     recurrent weights, packed by chunk
    bb: np.ndarray       # (L, k, 4n)        biases
    Wyp: np.ndarray      # (H*Vp,)           decoder, packed and padded
    by: np.ndarray       # (V,)
    h: np.ndarray        # (L, 1, H)         state
    c: np.ndarray        # (L, k, n)         cell state, by chunk (a view of the Sampler's)
    cur: np.ndarray      # (1,) int64
    t: np.ndarray        # (k, n)            the new h of a layer, by chunk
    tc: np.ndarray       # (k, n)            tanh(c)
    xp: np.ndarray       # (k, 4n)           input projection plus bias
    acc: np.ndarray      # (k, 4n)           gates
    scratch: np.ndarray  # (k, 4np)          padded products
    logits: np.ndarray   # (1, Vp)
    prob: np.ndarray     # (V,) float64
    Sxb: np.ndarray      # (L-1, k, 4np)     per-column scales of Wxb in a narrow format, else
    Shb: np.ndarray      # (L, k, 4np)       ... (L-1, k, 0) and (L, k, 0) for float weights
    Sy: np.ndarray       # (Vp,)             ... of Wyp, or (0,)
    # fmt: on


class Pick(NamedTuple):
    """How each character is drawn from its logits (see draw, and choose for the last four).
    The fields carry SampleConfig's names (config.py), and sampler.pick_of builds a Pick from
    one by those names; the defaults draw plainly (temperature 1, nothing cut or penalised)."""

    # fmt: off
    temp: float = 1.0   # temperature; 0 is greedy
    top_k: int = 0      # keep the k most likely (0: all)
    top_p: float = 1.0  # keep the smallest set with this much probability (1: all)
    banned: int = -1    # an id never drawn, or -1
    presence_penalty: float = 0.0   # logit -= presence_penalty * (count > 0) ...
    frequency_penalty: float = 0.0  # ... + frequency_penalty * count, over the row's generated ids
    penalty_window: int = 0  # count over the last `penalty_window` generated ids only (0: all)
    no_repeat: int = 0       # never complete an n-gram of this length already generated (0: off)
    # fmt: on


class PickRows(NamedTuple):
    """The Picks of a batch's rows that draw without penalties, each setting an array over the
    rows (the server's batch, where each request draws as it asked: sampler.pick_rows builds
    it from the rows' Picks, row_pick gives row k's back inside a kernel)."""

    # fmt: off
    temp: np.ndarray   # (N,) float64
    top_k: np.ndarray  # (N,) int64
    top_p: np.ndarray  # (N,) float64
    # fmt: on


@kernel
def row_pick(rows, k, banned):
    """Row k's Pick of rows (a PickRows): its own settings, no penalties."""
    return Pick(rows.temp[k], rows.top_k[k], rows.top_p[k], banned, 0.0, 0.0, 0, 0)


@kernel
def product(A, Wp, out, scratch):
    """out (N, M) = A (N, Kd) @ W through Wp = W packed and padded to scratch's width."""
    if scratch.shape[1] == out.shape[1]:
        gemm.matmul(A, Wp, out)
    else:
        gemm.matmul(A, Wp, scratch)
        kernels.put(out, scratch[:, : out.shape[1]])


def weights_product(A, Wp, S, out, scratch):
    """out (N, M) = A @ W through Wp packed and padded to scratch's width: float weights
    (product), or a narrow format with per-column scales S (qgemm.matmul)."""


@overload(weights_product, inline="always")
def _weights_product(A, Wp, S, out, scratch):
    if isinstance(Wp.dtype, types.Float):
        return lambda A, Wp, S, out, scratch: product(A, Wp, out, scratch)

    def narrow(A, Wp, S, out, scratch):
        if scratch.shape[1] == out.shape[1]:
            qgemm.matmul(A, Wp, S, out)
        else:
            qgemm.matmul(A, Wp, S, scratch)
            kernels.put(out, scratch[:, : out.shape[1]])

    return narrow


@kernel
def step(cell, p, w, ids, h, c):
    """Advance every layer of state (h, c) (L, N, H) by one character per row: ids (N,);
    w a SampleWork for its packed weights and buffers (h, c may be its own state or others')."""
    G = w.G
    for l in range(h.shape[0]):
        if l == 0:
            kernels.embed(p, ids, G)
        else:
            weights_product(h[l - 1], w.Wxp[l - 1], w.Sx[l - 1], G, w.scratch)
            G += p.b[l]
        weights_product(h[l], w.Whp[l], w.Sh[l], w.R, w.scratch)
        kernels.input_norm(cell, p, l, G, w.xn, w.st)
        kernels.cell_update(cell, p, l, G, (w.R, h[l], c[l], h[l], c[l], w.aux, w.rn, w.cn, w.st))


@kernel
def draw(row, coin, pick, prob, ban):
    """Draw one id from logits row (V,) with a uniform coin in [0, 1) as pick (a Pick) says,
    never pick.banned nor (with pick.no_repeat) an id whose ban (V,) bool is set.
    prob (V,) float64 scratch."""
    V = row.shape[0]
    best, bv = 0, -np.inf
    if pick.no_repeat > 0:  # two loops, so that the usual draw stays the loop it was
        for v in range(V):
            if v != pick.banned and not ban[v] and row[v] > bv:
                best, bv = v, row[v]
    else:
        for v in range(V):
            if v != pick.banned and row[v] > bv:
                best, bv = v, row[v]
    if pick.temp <= 0:
        return best
    for v in range(V):
        prob[v] = 0.0 if v == pick.banned else np.exp((float(row[v]) - float(bv)) / pick.temp)
    if pick.no_repeat > 0:
        for v in range(V):
            if ban[v]:
                prob[v] = 0.0
    if 0 < pick.top_k < V:
        thr = np.sort(prob)[V - pick.top_k]
        for v in range(V):
            if prob[v] < thr:
                prob[v] = 0.0
    if pick.top_p < 1.0:
        order = np.argsort(-prob)
        target = pick.top_p * prob.sum()
        acc = 0.0
        thr = 0.0
        for v in order:
            acc += prob[v]
            if acc >= target:
                thr = prob[v]
                break
        for v in range(V):
            if prob[v] < thr:
                prob[v] = 0.0
    u = coin * prob.sum()
    acc = 0.0
    for v in range(V):
        acc += prob[v]
        if acc > u and prob[v] > 0:
            return v
    return best


@kernel
def choose(row, k, coin, pick, prob, rep):
    """Row k's next id from its logits row (V,): penalties and no-repeat (repetition.py,
    with rep a repetition.Repeat) and then draw; recorded in rep (rep.t advances after the
    step's last row)."""
    if not repetition.active(pick):
        return draw(row, coin, pick, prob, rep.ban[0])
    repetition.prepare(row, k, pick, rep)
    nxt = draw(row, coin, pick, prob, rep.ban[k])
    repetition.record(k, nxt, pick, rep)
    return nxt


@kernel
def generate(cell, p, w, pending, coins, pick, rep, out):
    """Feed the characters pending (m, N) (a prime not yet seen; m may be 0), then draw
    out.shape[0] characters for each of N rows into out (n, N): w.cur holds the last character
    seen (updated), coins (n, N) uniforms in [0, 1), pick a Pick, rep each row's memory of its
    sample (repetition.Repeat, updated). One kernel for both, so a command loads one function
    from Numba's cache."""
    for s in range(pending.shape[0]):
        step(cell, p, w, pending[s], w.h, w.c)
    L, V = w.h.shape[0], p.by.shape[0]
    for s in range(out.shape[0]):
        step(cell, p, w, w.cur, w.h, w.c)
        weights_product(w.h[L - 1], w.Wyp, w.Sy, w.logits, w.logits)
        for k in range(w.cur.shape[0]):
            row = w.logits[k, :V]
            row += p.by
            nxt = choose(row, k, coins[s, k], pick, w.prob, rep)
            out[s, k] = nxt
            w.cur[k] = nxt
        rep.t[0] += 1


@njit(inline="always")
def _add(a, b):
    """a += b (1-d), by a loop: `w.x[k] += b` is a slice assignment, whose shape-mismatch
    message costs ~2 s of compile (kernels.put)."""
    for j in range(a.shape[0]):
        a[j] += b[j]


@kernel
def layer_chunk(w, l, k):
    """Chunk k of layer l's batch-1 step through w (a SplitWork): its units' gates from the
    whole h of the layer below (for the first layer, xp[k] already holds the input row) and
    of the layer itself, its share of c updated in place and of the new h written to t[k]:
    the usual lstm_step on a (1, 4n) row, the sums in the serial path's order."""
    if l > 0:
        weights_product(w.h[l - 1], w.Wxb[l - 1, k], w.Sxb[l - 1, k], w.xp[k : k + 1], w.scratch[k : k + 1])
        _add(w.xp[k], w.bb[l, k])
    weights_product(w.h[l], w.Whb[l, k], w.Shb[l, k], w.acc[k : k + 1], w.scratch[k : k + 1])
    _add(w.acc[k], w.xp[k])
    c = w.c[l, k : k + 1]
    kernels.lstm_step(w.acc[k : k + 1], c, c, w.tc[k : k + 1], w.t[k : k + 1])


# The flags the threads of the split path meet on (sync.py). The sampling thread writes GO
# (and beside it the layer to run) on one cache line, and CALL and STOP on the next: the
# generate call under way or last begun, and the last one ended, and STOLEN, how many
# helpers' chunks the sampling thread has run itself. For each helper's chunk j
# (1 <= j < k) there is CLAIM, the last step whose chunk j a thread took, at (2j) * LINE, with
# ACTIVE beside it (1 while a helper for j runs or has been sent for), and DONE, the last
# step whose chunk j the helper finished, at (2j + 1) * LINE.
GO, LAYER, CALL, STOP, STOLEN = 0, 1, sync.LINE, sync.LINE + 1, sync.LINE + 2
LINGER = 40000  # idle spins (about 1-2 ms) a helper waits for the next call before it returns


@njit(inline="always")
def claim_at(j):
    """The index of helper chunk j's CLAIM in the flags (ACTIVE is the next one)."""
    return 2 * j * sync.LINE


@njit(inline="always")
def done_at(j):
    """The index of helper chunk j's DONE in the flags."""
    return (2 * j + 1) * sync.LINE


def split_flags(k):
    """The flags of a split path of k chunks (k - 1 helpers)."""
    return np.zeros(2 * k * sync.LINE, np.int64)


@kernel
def split_begin(flags, call, need):
    """Start call number `call`: need[j] = 1 for each helper j to send for (none of j's is
    running), 0 for those still running from the last calls, which serve this one."""
    sync.swap_if(flags, CALL, flags[CALL], call)  # a store ordered before the swaps below
    for j in range(1, need.shape[0]):
        need[j] = sync.swap_if(flags, claim_at(j) + 1, 0, 1)


@kernel
def step_split(w, x, flags):
    """Advance w's (a SplitWork) state by the character x: at each layer this thread runs
    chunk 0 while the helpers (split_helper) run the others.

    A helper that is running takes its chunk within a fraction of a microsecond of GO, well
    before this thread is done with chunk 0. So a chunk that nobody has claimed by then
    belongs to a helper the scheduler has set aside (another process has its core): this
    thread claims the chunk and runs it itself, instead of waiting milliseconds for that
    helper's turn. A step then costs about what the serial path's does. Either thread runs
    the same code on the chunk's own buffers, so the numbers do not depend on which did."""
    h = w.h
    k = w.Whb.shape[1]
    for j in range(k):
        xp, row, b = w.xp[j], w.Wx0b[j, x], w.bb[0, j]
        for i in range(xp.shape[0]):
            xp[i] = row[i] + b[i]
    for l in range(h.shape[0]):
        seq = flags[GO] + 1
        flags[LAYER] = l
        sync.store_release(flags, GO, seq)  # publishes the layer, the state and xp
        layer_chunk(w, l, 0)
        for j in range(1, k):
            claimed = sync.load_acquire(flags, claim_at(j))
            if claimed < seq and sync.swap_if(flags, claim_at(j), claimed, seq):
                layer_chunk(w, l, j)  # its helper had not started: run it here
                flags[STOLEN] += 1
                continue
            while sync.load_acquire(flags, done_at(j)) < seq:
                sync.pause()
        kernels.put(h[l, 0], w.t.reshape(h.shape[2]))


@kernel
def split_helper(w, flags, j, seen, linger):
    """Run chunk j of every layer step the sampling thread starts (step_split) and has not
    run itself, from the step after GO = seen. Between generate calls it waits for the next
    up to linger spins (so that the calls of a long sample, `charrnn sample`'s 256 characters
    each, do not each wait for a thread to wake), then clears ACTIVE and returns."""
    idle = 0
    active = claim_at(j) + 1
    while True:
        go = sync.load_acquire(flags, GO)
        if go != seen:
            seen, idle = go, 0
            claimed = sync.load_acquire(flags, claim_at(j))
            # won only while the sampling thread waits in step go: then flags[LAYER] is go's
            if claimed < go and sync.swap_if(flags, claim_at(j), claimed, go):
                layer_chunk(w, flags[LAYER], j)
                sync.store_release(flags, done_at(j), go)
            continue
        if sync.load_acquire(flags, STOP) < sync.load_acquire(flags, CALL):
            idle = 0  # a call is under way
        else:
            idle += 1
            if idle > linger:
                sync.swap_if(flags, active, 1, 0)
                # a call that began meanwhile either saw ACTIVE = 1 and sent for nobody (then
                # this helper serves it), or set it again and sent for a new helper
                if sync.load_acquire(flags, STOP) >= sync.load_acquire(flags, CALL):
                    return
                if not sync.swap_if(flags, active, 0, 1):
                    return
                idle = 0
        sync.pause()


@kernel
def generate_split(w, pending, coins, pick, rep, out, flags):
    """generate() for one row of a wide LSTM through w, a SplitWork, each step's units split
    among this thread and the helpers running split_helper on flags (the caller sets STOP)."""
    for s in range(pending.shape[0]):
        step_split(w, pending[s, 0], flags)
    L, V = w.h.shape[0], w.by.shape[0]
    for s in range(out.shape[0]):
        step_split(w, w.cur[0], flags)
        weights_product(w.h[L - 1], w.Wyp, w.Sy, w.logits, w.logits)
        row = w.logits[0, :V]
        row += w.by
        nxt = choose(row, 0, coins[s, 0], pick, w.prob, rep)
        out[s, 0] = nxt
        w.cur[0] = nxt
        rep.t[0] += 1
