"""The model: a config and weights living in one flat buffer (the vocabulary is the caller's).

`Model` owns parameter layout and initialisation and runs the kernels over windows of ids; it knows
nothing of files, command lines or training schedules.
"""

from typing import NamedTuple

import numpy as np

from . import kernels, threads
from .buffers import alloc_packed, alloc_packed16, alloc_work, part_slices
from ..config import ModelConfig  # noqa: F401  (its home is config.py)
from .precision import bf16_engine, check_train_precision, train_precision  # noqa: F401 (their home)
from .kernels import GATES, Params


EMBED_INIT = 2.0  # first-layer input rows start uniform in +-EMBED_INIT (see init_weights)


def param_shapes(cfg):
    V, H, L = cfg.vocab_size, cfg.hidden, cfg.layers
    G = GATES[kernels.CELLS[cfg.cell]] * H
    return Params(
        Wx0=(V, G),
        Wx=(L - 1, H, G),
        Wh=(L, H, G),
        b=(L, G),
        bh=(L, H if cfg.cell == "gru" else 0),
        Wy=(H, V),
        by=(V,),
    )


def views(flat, shapes):
    """Params whose arrays are consecutive views into the 1-d array `flat`."""
    out, at = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[at : at + n].reshape(shape))
        at += n
    assert at == flat.size
    return Params(*out)


def num_params(cfg):
    return int(sum(np.prod(s) for s in param_shapes(cfg)))


class Model:
    """A character-level recurrent language model over ids 0..vocab_size-1 (what the ids mean
    is the caller's: charmodel.CharModel adds the vocabulary)."""

    def __init__(self, config, flat=None, dtype=np.float32):
        self.config = config
        self.dtype = np.dtype(dtype)
        self.cell = int(kernels.CELLS[config.cell])  # sampling's kernels take any cell (cells.py)
        # the default cell's float32 window kernels compile for it alone, the first run's wait;
        # the others' (and float64's, for the exactness tests) take any cell: one compile for the
        # three where the test suite would otherwise wait for three
        lone = config.cell == "lstm" and self.dtype == np.float32
        self.window_cell = kernels.CELLS[config.cell] if lone else self.cell
        self.shapes = param_shapes(config)
        n = num_params(config)
        self.flat = np.zeros(n, self.dtype) if flat is None else np.ascontiguousarray(flat, self.dtype)
        if self.flat.shape != (n,):
            raise ValueError(f"expected {n} parameters, got {self.flat.size}")
        self.params = views(self.flat, self.shapes)
        self._work = {}
        self._grads = {}
        self._packed = None
        self._packed16 = None

    # -- weights ----------------------------------------------------------------------------

    def init_weights(self, rng):
        """Uniform(-1/sqrt(H), 1/sqrt(H)) as PyTorch does, except the gated cells' first-layer
        input rows, which are uniform(-2, 2); orthogonal recurrent blocks; every bias 0, the
        LSTM's forget gate's too.

        The first layer reads a one-hot character, so its input weights are an embedding: row
        c is all character c adds to the gates. At +-1/sqrt(H) (0.04 at H = 512) characters
        barely move the gates and a 2 x 512 LSTM sat at the unigram loss (3.3 nats/char) for
        its first half million characters; at +-2 it leaves it within a few dozen steps (README,
        "Choosing the defaults"); a 2 x 256 gru after 3 minutes, 1.52 instead of 1.62. Not
        the vanilla rnn: its tanh units would start saturated.

        The forget gate's bias starts at 0, as PyTorch's nn.LSTM has it on average, not at the
        1 often advised: a 2 x 384 after 3M characters of Tiny Shakespeare scored 1.4347 and
        1.4436 (seeds 1, 2) against 1.4572 and 1.4625 with 1 (docs/choosing-defaults.md)."""
        H = self.config.hidden
        k = 1.0 / np.sqrt(H)
        self.flat[:] = rng.uniform(-k, k, self.flat.size)
        p = self.params
        if self.cell != kernels.RNN:
            p.Wx0[:] = rng.uniform(-EMBED_INIT, EMBED_INIT, p.Wx0.shape)
        p.b[:] = 0
        p.bh[:] = 0
        p.by[:] = 0
        for l in range(self.config.layers):
            for g in range(p.Wh.shape[2] // H):
                q, _ = np.linalg.qr(rng.standard_normal((H, H)))
                p.Wh[l, :, g * H : (g + 1) * H] = q
        return self

    def zeros_like_params(self):
        flat = np.zeros_like(self.flat)
        return flat, views(flat, self.shapes)

    def zero_state(self, B):
        shape = (self.config.layers, B, self.config.hidden)
        return np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)

    # -- windows ----------------------------------------------------------------------------
    # A window's streams are split into one part per thread (see threads.py); each part has its
    # own buffers, and all but the first their own gradient accumulator.

    def work(self, T, B, dropout=False, part=0, norms=False, precision="fp32"):
        """The buffers of one part's window; norms: with room for |d loss / d h_t| (Work.gn);
        precision: of its products, fp32 or bf16 (check_train_precision)."""
        key = (T, B, dropout, part, norms, precision)  # each part (thread) has buffers of its
        if key not in self._work:  # own, but for the packed weights, which all read
            packed16 = None
            if precision == "bf16":
                if self._packed16 is None:
                    self._packed16 = alloc_packed16(self.config)
                packed16 = self._packed16
            elif self._packed is None:
                self._packed = alloc_packed(self.config, self.dtype)
            self._work[key] = alloc_work(
                self.config, T, B, self.dtype, dropout, self._packed, norms, packed16
            )
        return self._work[key]

    def parts(self, B):
        # Always single-threaded BLAS: the parts are the parallelism. A multi-threaded OpenBLAS
        # spins while it waits and, with other busy processes on the machine, collapses
        # (measured here: tens of times slower with three trainings side by side).
        threads.single_threaded_blas()
        return part_slices(B)

    def _part_grads(self, i):
        if i not in self._grads:
            self._grads[i] = self.zeros_like_params()
        return self._grads[i]

    def _map(self, fn, parts):
        """[fn(i, part) for each part], the first on this thread, the others on the pool's."""
        return threads.side_by_side(lambda i: fn(i, parts[i]), len(parts))

    def _pack(self, w, backward, n):
        """Pack the weights a window's n parts share into w's buffers (kernels.pack_weights),
        each of n threads a share of every matrix: at 2 x 640 packing on one thread took 3%
        of a batch-16 step."""
        threads.side_by_side(lambda i: kernels.pack_weights(self.params, w, backward, i, n), n)

    def _merge(self, grads, n):
        """grads += the gradients of parts 1..n-1, which are zeroed: each of n threads adds a
        share of every array (grads' arrays contiguous, as views of a flat buffer are)."""
        pairs = []
        for i in range(1, n):
            for g, d in zip(grads, self._part_grads(i)[1]):
                if not g.flags.c_contiguous:  # reshape(-1) would be a copy
                    raise ValueError("the gradient arrays must be C-contiguous")
                pairs.append((g.reshape(-1), d.reshape(-1)))

        def share(k):
            for g, d in pairs:
                lo, hi = kernels.share(g.size, k, n)
                kernels.merge_into(g[lo:hi], d[lo:hi])

        threads.side_by_side(share, n)

    def forward(self, x, h0, c0, masks=None, norms=False):
        """Logits for x (T, B) in one part; returns the Work whose P holds them (T*B, V)
        (norms: buffers in which a backward pass records |d loss / d h_t|, Work.gn)."""
        T, B = x.shape
        w = self.work(T, B, masks is not None, norms=norms)
        if masks is not None:
            w.M[:] = masks
        kernels.forward(self.window_cell, self.params, x, h0, c0, w, False)
        return w

    def window_loss(self, x, y, h0, c0, tally=None):
        """Mean loss over a window and the final state (h, c). tally: an Unknowns to which
        the loss and count of the targets that are its symbol are added."""
        T, B = x.shape

        def part(i, s):
            w = self.work(T, s.stop - s.start, False, i)
            ys = _c(y[:, s])
            loss = kernels.window_loss(
                self.window_cell, self.params, _c(x[:, s]), ys, _c(h0[:, s]), _c(c0[:, s]), w, True
            )
            return loss, w, tally.of(w.P, ys) if tally is not None else None

        parts = self.parts(B)
        self._pack(self.work(T, parts[0].stop, False), False, len(parts))
        res = self._map(part, parts)
        if tally is not None:
            for r in res:
                tally.add(*r[2])
        return sum(r[0] for r in res) / x.size, _join_state([r[1] for r in res])

    def loss_and_grad(
        self, x, y, h0, c0, grads, masks=None, dstate=None, n_total=None, grad_norms=None, precision="fp32"
    ):
        """Mean loss of one window; accumulates d loss / d params into grads (a Params).
        Returns (loss, (hT, cT)); writes d loss / d (h0, c0) into dstate when given.
        n_total: the characters the gradient is averaged over (default x.size; more when x is
        one process's share of a larger batch); the loss returned is always x's own mean.
        grad_norms: an (L, T) array to receive |d loss / d h_t| over all the streams, as the
        backward pass reaches each step, or None not to measure it (1% of a 2 x 128 window).
        precision: of the window's products, fp32 (exact) or bf16 (check_train_precision
        first); the weights are rounded to bf16 as they are packed, once a window."""
        T, B = x.shape
        n_total = x.size if n_total is None else n_total
        parts = self.parts(B)
        dh0, dc0 = dstate if dstate is not None else self.zero_state(B)

        def part(i, s):
            w = self.work(T, s.stop - s.start, masks is not None, i, grad_norms is not None, precision)
            if masks is not None:
                w.M[:] = masks[:, :, s]
            dp = grads if i == 0 else self._part_grads(i)[1]
            dh, dc = _c(dh0[:, s]), _c(dc0[:, s])
            loss = kernels.window_grad(
                self.window_cell,
                self.params,
                _c(x[:, s]),
                _c(y[:, s]),
                _c(h0[:, s]),
                _c(c0[:, s]),
                w,
                dp,
                dh,
                dc,
                n_total,
                True,
            )
            dh0[:, s], dc0[:, s] = dh, dc
            return loss, w

        first = self.work(T, parts[0].stop, masks is not None, 0, grad_norms is not None, precision)
        self._pack(first, True, len(parts))
        res = self._map(part, parts)
        if grad_norms is not None:
            grad_norms[:] = np.sqrt(sum(r[1].gn ** 2 for r in res))  # (L, T), all streams
        self._merge(grads, len(parts))
        return sum(r[0] for r in res) / x.size, _join_state([r[1] for r in res])

    def evaluate(self, ids, batch=50, seq=100, exact=False):
        """Mean loss in nats/char of predicting ids[1:] from ids[:-1] (see score_ids)."""
        return self.score_ids(ids, batch, seq, exact).nats

    def score_ids(self, ids, batch=50, seq=100, exact=False, unk=-1):
        """Score(mean loss in nats/char, characters scored, streams) of predicting ids[1:] from
        ids[:-1].

        By default the n predictions are cut into up to `batch` equal contiguous streams,
        read side by side, each from a zero state: fast, but each stream's first characters are
        predicted without the text before them, and the last n mod B are not scored (0.002-0.007
        nats/char apart from the exact reading on Tiny Shakespeare). exact: one continuous
        stream from a zero state, every prediction scored (batch 1, through the same window
        kernel in windows of EXACT_WINDOW characters). unk: the id of the vocabulary's unknown
        symbol (-1: none), whose targets the Score counts apart."""
        ids = np.asarray(ids)
        n = len(ids) - 1
        if n < 1:
            raise ValueError("need at least two characters to measure a loss")
        if exact:
            return self.score_segments(ids, [0], n, max(seq, EXACT_WINDOW), unk)
        B = max(1, min(batch, n // seq))
        per = n // B
        return self.score_segments(ids, np.arange(B) * per, per, seq, unk)

    def score_segments(self, ids, starts, length, seq=100, unk=-1):
        """Score of the segments that predict ids[s + 1 : s + length + 1] from ids[s : s + length]
        for each s in starts, each read as one stream from a zero state, side by side in windows
        of seq. ids may be a memory map: only one window of it is read at a time."""
        ids, starts = np.asarray(ids), np.asarray(starts, np.int64)
        B = len(starts)
        h, c = self.zero_state(B)
        total, tally = 0.0, Unknowns(unk) if unk >= 0 else None
        for at in range(0, length, seq):
            where = starts[None, :] + np.arange(at, min(at + seq, length))[:, None]  # (T, B)
            x = np.asarray(ids[where], dtype=np.int32)
            y = np.asarray(ids[where + 1], dtype=np.int32)
            loss, (h, c) = self.window_loss(x, y, h, c, tally)
            total += loss * x.size
        n = B * length
        if tally is None or tally.count == 0:
            return Score(total / n, n, B, 0, total / n)
        known = (total - tally.loss) / (n - tally.count) if n > tally.count else float("nan")
        return Score(total / n, n, B, tally.count, known)


class Score(NamedTuple):
    # fmt: off
    nats: float        # mean loss, nats per character
    chars: int         # characters scored (predictions made)
    streams: int       # streams the text was read as, each from a zero state
    # fmt: on
    unknown: int = 0  # of them, targets that are the unknown symbol (a --max-vocab model's
    # stand-in for every character it lacks)
    nats_known: float = float("nan")  # mean loss over the other targets (nan: none)
    dropped: int = 0  # characters left out of the text before scoring (unknown="drop")

    @property
    def unknown_share(self):
        return self.unknown / self.chars if self.chars else 0.0

    @property
    def nats_unknown(self):
        """Mean loss over the targets that are the unknown symbol (nan: none)."""
        if not self.unknown:
            return float("nan")
        known = self.chars - self.unknown
        return (self.nats * self.chars - (self.nats_known * known if known else 0.0)) / self.unknown


class Unknowns:
    """The summed loss and count of the targets that are the unknown symbol (unk_id), from the
    logits a window's forward pass leaves (kernels.window_loss keeps them in Work.P)."""

    def __init__(self, unk_id):
        self.id, self.loss, self.count = unk_id, 0.0, 0

    def of(self, P, y):
        """(summed loss, count) of the rows of logits P (N, V) whose target y (N,) is unk."""
        rows = np.flatnonzero(y.reshape(-1) == self.id)
        if rows.size == 0:
            return 0.0, 0
        z = P[rows].astype(np.float64)
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        return float((lse - z[:, self.id]).sum()), int(rows.size)

    def add(self, loss, count):
        self.loss += loss
        self.count += count


EXACT_WINDOW = 1000  # characters per kernel call when reading one stream (exact scoring)


def dropout_masks(rng, shape, p, dtype):
    """Inverted-dropout masks (each element 1 / (1 - p) with probability 1 - p, else 0) from
    rng.random(shape, float32) >= p, drawn as that call would draw them, so a run's random
    stream is the same either way. With NumPy's default generator (PCG64, which makes a 32-bit
    draw as one half of a 64-bit output, low half first) the float32 uniforms are made here
    from its raw output, in about half the time of rng.random's float32 path."""
    n = int(np.prod(shape))
    scale = np.dtype(dtype).type(1 / (1 - p))
    state = rng.bit_generator.state
    if n % 2 or state["bit_generator"] not in ("PCG64", "PCG64DXSM") or state["has_uint32"]:
        keep = rng.random(shape, dtype=np.float32) >= p  # the general case
        return keep.astype(dtype) * scale
    out = np.empty(n, dtype)
    bits = rng.bit_generator.random_raw(n // 2)
    kernels.masks_from_bits(bits, p, scale, out)
    state = rng.bit_generator.state  # as rng.random leaves it: the last high half kept, used
    state["uinteger"] = int(bits[-1] >> np.uint64(32))
    rng.bit_generator.state = state
    return out.reshape(shape)


def _c(a):
    return np.ascontiguousarray(a)


def _join_state(works):
    """Final (h, c), each (L, B, H), of the parts' windows, side by side."""
    return (
        np.concatenate([w.Hs[:, -1] for w in works], axis=1),
        np.concatenate([w.Cs[:, -1] for w in works], axis=1),
    )
