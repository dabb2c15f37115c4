"""One model's batched step for the server: the weights packed once, a step of every active row
in one kernel call (sample_kernels.step, the kernel `charrnn sample` runs), the logits of the
last layer, a prompt read in chunks for one row, and each row's draw.

The draw is the sampler's own code: rows without penalties go through one jitted loop that
calls sample_kernels.draw with each row's Pick (temperature, top-k, top-p may differ per row);
rows with penalties or no-repeat call sample_kernels.choose with their request's
repetition.Repeat. So a seeded request gives the text `charrnn sample` gives with the same
options and seed.

Shapes: L layers, N active rows, H hidden units, V vocabulary, Vp and Kp padded to whole strips.
"""

import numpy as np

from ..engine import gemm, repetition, sample_kernels
from ..engine.kernels import kernel
from ..config import SampleConfig
from ..engine.sampler import pack_padded, padded, pick_of, pick_rows


@kernel
def draw_rows(z, coins, rows, banned, prob, ban, out):
    """out[k] = sample_kernels.draw of row k of z (N, V) with its own settings (rows, a
    PickRows), coin (N,), and no penalties; prob (V,) float64 and ban (V,) scratch."""
    for k in range(z.shape[0]):
        pick = sample_kernels.row_pick(rows, k, banned)
        out[k] = sample_kernels.draw(z[k], coins[k], pick, prob, ban)


@kernel
def step_pick(cell, p, w, ids, h, c, coins, rows, plain, banned, prob, ban, z, out):
    """One tick in one call: advance the rows' state h, c (L, N, H) by ids (N,) (w a
    SampleWork of N rows), write their logits into z (N, V) as the sampler computes them, and
    for each row k with plain[k] draw out[k] as draw_rows does."""
    sample_kernels.step(cell, p, w, ids, h, c)
    L, V = h.shape[0], p.by.shape[0]
    gemm.matmul(h[L - 1], w.Wyp, w.logits)
    for k in range(ids.shape[0]):
        row = z[k]
        row[:] = w.logits[k, :V]
        row += p.by
        if plain[k]:
            pick = sample_kernels.row_pick(rows, k, banned)
            out[k] = sample_kernels.draw(row, coins[k], pick, prob, ban)


@kernel
def read_logits(cell, p, w, ids, h, c, z):
    """Feed ids (T,) into one row's state h, c (L, 1, H), in place, as generate() reads a
    prime (the same steps, so the same state), writing the logits after each id into z (T, V)
    as the sampler computes them."""
    L, V = h.shape[0], p.by.shape[0]
    for s in range(ids.shape[0]):
        sample_kernels.step(cell, p, w, ids[s : s + 1], h, c)
        gemm.matmul(h[L - 1], w.Wyp, w.logits)
        z[s] = w.logits[0, :V]
        z[s] += p.by


class Stepper:
    """The packed weights of one model and the buffers of each batch size."""

    def __init__(self, model):
        p, dt = model.params, model.dtype
        (L, H, Kg), V = p.Wh.shape, p.by.shape[0]
        self.model, self.L, self.H, self.V = model, L, H, V
        self.Wxp = (
            np.stack([pack_padded(p.Wx[l]) for l in range(L - 1)])
            if L > 1
            else np.zeros((0, H * padded(dt, Kg)), dt)
        )
        self.Whp = np.stack([pack_padded(p.Wh[l]) for l in range(L)])
        self.Wyp = pack_padded(p.Wy)
        self.banned = int(model.vocab.unk_id)
        self._works = {}
        self.prob = np.zeros(V, np.float64)
        self.ban = np.zeros(V, np.bool_)
        self.plain = pick_of(SampleConfig(), self.banned)
        self.no_rep = repetition.empty(1, V, self.plain)

    def zero_state(self, n=1):
        return self.model.zero_state(n)

    def work(self, N):
        """The SampleWork buffers of a batch of N rows (its h, c are placeholders: the rows'
        state is passed to each step)."""
        if N not in self._works:
            if len(self._works) > 64:
                self._works.clear()
            dt, Kg = self.model.dtype, self.Whp.shape[1] // self.H
            h, c = self.model.zero_state(N)
            self._works[N] = sample_kernels.SampleWork(
                Wxp=self.Wxp,
                Whp=self.Whp,
                Wyp=self.Wyp,
                h=h,
                c=c,
                cur=np.zeros(N, np.int64),
                G=np.zeros((N, self.model.params.Wh.shape[2]), dt),
                R=np.zeros((N, self.model.params.Wh.shape[2]), dt),
                aux=np.zeros((N, self.H), dt),
                scratch=np.zeros((N, Kg), dt),
                logits=np.zeros((N, padded(dt, self.V)), dt),
                prob=np.zeros(self.V, np.float64),
            )
        return self._works[N]

    def step(self, ids, h, c):
        """Advance the rows' state h, c (L, N, H), in place, by ids (N,); their logits (N, V)
        (a fresh array in the model's dtype, as the sampler computes them)."""
        N = ids.shape[0]
        w = self.work(N)
        sample_kernels.step(self.model.cell, self.model.params, w, ids, h, c)
        gemm.matmul(h[self.L - 1], self.Wyp, w.logits)
        return w.logits[:, : self.V] + self.model.params.by

    def step_pick(self, ids, h, c, coins, rows, plain):
        """step() and, for the rows where plain (N,) bool is set, pick() in one kernel call:
        (logits (N, V), draws (N,), 0 where not plain)."""
        N = ids.shape[0]
        w = self.work(N)
        z = np.empty((N, self.V), self.model.dtype)
        out = np.zeros(N, np.int64)
        step_pick(
            self.model.cell,
            self.model.params,
            w,
            ids,
            h,
            c,
            coins,
            rows,
            plain,
            self.banned,
            self.prob,
            self.ban,
            z,
            out,
        )
        return z, out

    def read(self, ids, h, c):
        """Feed ids (1-d) into one row's state h, c (L, 1, H), in place, in one kernel call."""
        if len(ids) == 0:
            return
        w = self.work(1)._replace(h=h, c=c)
        pending = np.ascontiguousarray(np.asarray(ids, np.int64).reshape(-1, 1))
        none = np.zeros((0, 1), np.int64)
        sample_kernels.generate(
            self.model.cell, self.model.params, w, pending, np.zeros((0, 1)), self.plain, self.no_rep, none
        )

    def read_scored(self, ids, h, c):
        """read() that also returns the logits (len(ids), V) after each id, in the model's
        dtype (the state after it is read()'s, step for step)."""
        w = self.work(1)._replace(h=h, c=c)
        ids = np.ascontiguousarray(ids, np.int64)
        z = np.empty((len(ids), self.V), self.model.dtype)
        if len(ids):
            read_logits(self.model.cell, self.model.params, w, ids, h, c, z)
        return z

    def pick(self, z, coins, rows):
        """The draws of the rows of z (N, V) without penalties, each with its settings in rows
        (a PickRows; see draw_rows)."""
        out = np.zeros(z.shape[0], np.int64)
        draw_rows(
            np.ascontiguousarray(z),
            np.asarray(coins, np.float64),
            rows,
            self.banned,
            self.prob,
            self.ban,
            out,
        )
        return out

    def choose(self, row, k, coin, pick, rep):
        """Row k of a request with penalties: sample_kernels.choose (row (V,) is changed)."""
        return int(sample_kernels.choose(row, k, float(coin), pick, self.prob, rep))


def log_softmax(z):
    """log p of each row of logits z (N, V), in float64."""
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def warm(cell, dtype):
    """Compile (or load from Numba's cache) what a Stepper runs, on a tiny model of this cell
    and dtype: the compiled code depends on types, not sizes."""
    from ..charmodel import CharModel
    from ..config import ModelConfig

    m = CharModel(ModelConfig(cell=cell, layers=2, hidden=2, vocab_size=2), "ab", dtype=dtype)
    s = Stepper(m)
    h, c = s.zero_state(1)
    s.read(np.array([0, 1]), h, c)
    s.read_scored(np.array([0, 1]), h, c)
    z = s.step(np.array([1]), h, c)
    rows = pick_rows([s.plain])
    s.pick(z, [0.5], rows)
    s.step_pick(np.array([1]), h, c, np.full(1, 0.5), rows, np.full(1, True))
    pick = pick_of(SampleConfig(presence_penalty=0.5, frequency_penalty=0.5, penalty_window=4, no_repeat=3))
    rep = repetition.reserve(repetition.empty(1, 2, pick), 1, pick)
    s.choose(z[0], 0, 0.5, pick, rep)
