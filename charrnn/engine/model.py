"""The model: a config and weights living in one flat buffer (the vocabulary is the caller's).

`Model` owns parameter layout and initialisation and runs the kernels over windows of ids; it knows
nothing of files, command lines or training schedules.
"""

import numpy as np

from . import kernels, threads
from .buffers import alloc_packed, alloc_packed16, alloc_work, part_slices
from ..config import ModelConfig  # noqa: F401  (its home is config.py)
from .precision import bf16_engine, check_train_precision, train_precision  # noqa: F401 (their home)
from .kernels import GATES, Params
from .masks import dropout_masks  # noqa: F401 (its home is masks.py)
from .scores import Score, Unknowns


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
        ln=(L, 3 * G + 2 * H if cfg.cell == "lnlstm" else 0),
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
        # sampling's kernels take any cell (cells.py), but the lnlstm's: its kernels are typed
        # for it alone, so that the others' (and a first run's) compile none of its code
        ln = config.cell == "lnlstm"
        self.cell = kernels.CELLS[config.cell] if ln else int(kernels.CELLS[config.cell])
        # the default cell's float32 window kernels compile for it alone, the first run's wait;
        # the others' (and float64's, for the exactness tests) take any cell: one compile for the
        # three where the test suite would otherwise wait for three
        lone = ln or (config.cell == "lstm" and self.dtype == np.float32)
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
        self._weight_mask = None
        self._dropped = None  # Wh times the weight-drop mask, a bf16 window's (Work.Wm)

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
        if p.ln.size:  # the normalisations' gains 1 and biases 0 (gx bx gh gc bc, Params.ln)
            K = p.Wh.shape[2]
            p.ln[:] = 0
            p.ln[:, :K] = p.ln[:, 2 * K : 3 * K] = p.ln[:, 3 * K : 3 * K + H] = 1
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

    def work(self, T, B, dropout=False, part=0, norms=False, precision="fp32", weight_drop=False):
        """The buffers of one part's window; norms: with room for |d loss / d h_t| (Work.gn);
        precision: of its products, fp32 or bf16 (check_train_precision); weight_drop: a bf16
        window's, packing the recurrent weights times their weight-drop mask (Work.Wm) in place
        of them."""
        weight_drop = weight_drop and precision == "bf16"
        key = (T, B, dropout, part, norms, precision, weight_drop)  # each part (thread) has
        if key not in self._work:  # buffers of its own, but for the packed weights, which all read
            packed16 = None
            if precision == "bf16":
                if self._packed16 is None:
                    self._packed16 = alloc_packed16(self.config)
                packed16 = self._packed16
            elif self._packed is None:
                self._packed = alloc_packed(self.config, self.dtype)
            if weight_drop and self._dropped is None:
                self._dropped = np.zeros(self.params.Wh.shape, self.dtype)
            mask = self._dropped if weight_drop else None
            self._work[key] = alloc_work(
                self.config, T, B, self.dtype, dropout, self._packed, norms, packed16, mask
            )
        return self._work[key]

    def weight_mask(self):
        """A buffer (L, H, K) to draw loss_and_grad's weight_mask into, the same each window
        (13 MB at 2 x 640: a new one each window costs its pages' first writes)."""
        if self._weight_mask is None:
            self._weight_mask = np.zeros(self.params.Wh.shape, self.dtype)
        return self._weight_mask

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

    def _mask_weights(self, mask, n):
        """Work.Wm = Wh * mask, each of n threads a share of the rows."""
        W, M, out = (a.reshape(-1, a.shape[-1]) for a in (self.params.Wh, mask, self._dropped))

        def share(k):
            lo, hi = _share(W.shape[0], k, n)
            np.multiply(W[lo:hi], M[lo:hi], out=out[lo:hi])

        threads.side_by_side(share, n)

    def _merge(self, grads, n, weight_mask=None):
        """grads += the gradients of parts 1..n-1, which are zeroed: each of n threads adds a
        share of every array (grads' arrays contiguous, as views of a flat buffer are), and
        multiplies its share of grads.Wh by weight_mask's, if given."""
        pairs = []
        for i in range(1, n):
            for g, d in zip(grads, self._part_grads(i)[1]):
                if not g.flags.c_contiguous:  # reshape(-1) would be a copy
                    raise ValueError("the gradient arrays must be C-contiguous")
                pairs.append((g.reshape(-1), d.reshape(-1)))

        if weight_mask is not None:
            dW, M = grads.Wh.reshape(-1), weight_mask.reshape(-1)

        def share(k):
            for g, d in pairs:
                lo, hi = kernels.share(g.size, k, n)
                kernels.merge_into(g[lo:hi], d[lo:hi])
            if weight_mask is not None:
                lo, hi = _share(dW.size, k, n)
                np.multiply(dW[lo:hi], M[lo:hi], out=dW[lo:hi])

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
        self,
        x,
        y,
        h0,
        c0,
        grads,
        masks=None,
        dstate=None,
        n_total=None,
        grad_norms=None,
        precision="fp32",
        weight_mask=None,
    ):
        """Mean loss of one window; accumulates d loss / d params into grads (a Params).
        Returns (loss, (hT, cT)); writes d loss / d (h0, c0) into dstate when given.
        n_total: the characters the gradient is averaged over (default x.size; more when x is
        one process's share of a larger batch); the loss returned is always x's own mean.
        grad_norms: an (L, T) array to receive |d loss / d h_t| over all the streams, as the
        backward pass reaches each step, or None not to measure it (1% of a 2 x 128 window).
        precision: of the window's products, fp32 (exact) or bf16 (check_train_precision
        first); the weights are rounded to bf16 as they are packed, once a window.
        weight_mask: weight drop's mask of Wh (L, H, K): the window runs with Wh * weight_mask
        (with bf16 products made beside Wh and packed in its place; in float32 multiplied into
        Wh and restored after, bit for bit), and its gradient accumulated into grads.Wh, which
        must hold no other, becomes the raw weights' (times the mask, the chain rule of
        Wh * mask)."""
        T, B = x.shape
        n_total = x.size if n_total is None else n_total
        parts = self.parts(B)
        dh0, dc0 = dstate if dstate is not None else self.zero_state(B)

        dropped = weight_mask is not None
        raw = self.params.Wh.copy() if dropped and precision != "bf16" else None

        def part(i, s):
            w = self.work(
                T, s.stop - s.start, masks is not None, i, grad_norms is not None, precision, dropped
            )
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

        first = self.work(T, parts[0].stop, masks is not None, 0, grad_norms is not None, precision, dropped)
        try:
            if raw is not None:
                self.params.Wh[...] *= weight_mask
            elif dropped:  # the weights bf16 products are packed from, as Wh * mask would be
                self._mask_weights(weight_mask, len(parts))
            self._pack(first, True, len(parts))
            res = self._map(part, parts)
        finally:
            if raw is not None:
                self.params.Wh[...] = raw
        if grad_norms is not None:
            grad_norms[:] = np.sqrt(sum(r[1].gn ** 2 for r in res))  # (L, T), all streams
        self._merge(grads, len(parts), weight_mask)
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


EXACT_WINDOW = 1000  # characters per kernel call when reading one stream (exact scoring)


def _share(size, k, n):
    """kernels.share, in Python: called from Python with its own types, the jitted one is a
    signature no command's compile plan holds."""
    return size * k // n, size * (k + 1) // n


def _c(a):
    return np.ascontiguousarray(a)


def _join_state(works):
    """Final (h, c), each (L, B, H), of the parts' windows, side by side."""
    return (
        np.concatenate([w.Hs[:, -1] for w in works], axis=1),
        np.concatenate([w.Cs[:, -1] for w in works], axis=1),
    )
