"""One model's batched steps for the server: the weights packed once, and three kernels, each
running many characters in one call (sample_kernels.step, the step `charrnn sample` runs):

- write_rows: K characters for each of N rows, each row drawing with its own temperature,
  top-k and top-p (a PickRows), the logits kept for the rows that asked for log probabilities;
- read: prompts of several requests fed together, m characters each, in one call;
- read_logits: one prompt fed with the logits after each character (a prompt scored).

Rows with penalties or no-repeat draw through sample_kernels.generate with their request's
repetition.Repeat (the sampler's own kernel). So a seeded request gives the text `charrnn
sample` gives with the same options and seed.

The batcher writes from one thread and reads prompts from another: each has its own buffers
(a lane), the packed weights are shared.

Shapes: L layers, N active rows, H hidden units, V vocabulary, Vp and Kp padded to whole strips.
"""

import numpy as np

from ..engine import gemm, kernels, repetition, sample_kernels
from ..engine.kernels import kernel
from ..config import SampleConfig
from ..engine.sampler import pack_padded, padded, pick_of, pick_rows

WRITE, READ = 0, 1  # the lanes: the batcher's writing thread and its reading thread


@kernel
def write_rows(cell, p, w, cur, h, c, coins, rows, banned, prob, ban, zs, out):
    """out.shape[0] characters for each of N rows in one call: advance the rows' state h, c
    (L, N, H) from their last characters cur (N,) (updated), drawing row k's character s with
    coins[s, k] as row k's settings in rows (a PickRows) say, into out (K, N); w a SampleWork
    of N rows. With zs (K, N, V) (not (K, 0, V)), the logits of each step are kept there, as
    the sampler computes them."""
    L, V = h.shape[0], p.by.shape[0]
    keep = zs.shape[1] > 0
    for s in range(out.shape[0]):
        sample_kernels.step(cell, p, w, cur, h, c)
        gemm.matmul(h[L - 1], w.Wyp, w.logits)
        for k in range(cur.shape[0]):
            row = w.logits[k, :V]
            row += p.by
            if keep:
                kernels.put(zs[s, k], row)
            pick = sample_kernels.row_pick(rows, k, banned)
            nxt = sample_kernels.draw(row, coins[s, k], pick, prob, ban)
            out[s, k] = nxt
            cur[k] = nxt


@kernel
def read_logits(cell, p, w, ids, h, c, z):
    """Feed ids (T,) into one row's state h, c (L, 1, H), in place, as generate() reads a
    prime (the same steps, so the same state), writing the logits after each id into z (T, V)
    as the sampler computes them."""
    L, V = h.shape[0], p.by.shape[0]
    for s in range(ids.shape[0]):
        sample_kernels.step(cell, p, w, ids[s : s + 1], h, c)
        gemm.matmul(h[L - 1], w.Wyp, w.logits)
        zs = z[s]  # kernels.put, and a local view: no slice assignment's compile
        kernels.put(zs, w.logits[0, :V])
        zs += p.by


class Stepper:
    """The packed weights of one model and the buffers of each lane and batch size."""

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
        self.prob = np.zeros(V, np.float64)  # the writing lane's scratch while drawing
        self.ban = np.zeros(V, np.bool_)
        self.plain = pick_of(SampleConfig(), self.banned)
        self.no_rep = repetition.empty(1, V, self.plain)

    def zero_state(self, n=1):
        return self.model.zero_state(n)

    def work(self, N, lane=WRITE):
        """The SampleWork buffers of a batch of N rows in a lane (its h, c and cur are
        placeholders: the rows' own are passed to each call)."""
        if (N, lane) not in self._works:
            if len(self._works) > 128:
                self._works = {k: w for k, w in self._works.items() if k[1] != lane}
            dt, Kg = self.model.dtype, self.Whp.shape[1] // self.H
            h, c = self.model.zero_state(N)
            self._works[N, lane] = sample_kernels.SampleWork(
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
                **sample_kernels.norm_buffers(self.model.cell, N, self.H, dt),
            )
        return self._works[N, lane]

    def step(self, ids, h, c):
        """Advance the rows' state h, c (L, N, H), in place, by ids (N,); their logits (N, V)
        (a fresh array in the model's dtype, as the sampler computes them)."""
        N = ids.shape[0]
        w = self.work(N)
        sample_kernels.step(self.model.cell, self.model.params, w, ids, h, c)
        gemm.matmul(h[self.L - 1], self.Wyp, w.logits)
        return w.logits[:, : self.V] + self.model.params.by

    def write(self, cur, h, c, coins, rows, logits=False):
        """K = coins.shape[0] characters for each row of h, c (L, N, H) from cur (N,), drawn
        without penalties, each row as rows (a PickRows) says: (ids (K, N), logits (K, N, V)
        in the model's dtype, or None). h, c and cur are advanced in place."""
        K, N = coins.shape
        out = np.empty((K, N), np.int64)
        zs = np.empty((K, N if logits else 0, self.V), self.model.dtype)
        write_rows(
            self.model.cell,
            self.model.params,
            self.work(N),
            cur,
            h,
            c,
            coins,
            rows,
            self.banned,
            self.prob,
            self.ban,
            zs,
            out,
        )
        return out, (zs if logits else None)

    def generate(self, cur, h, c, coins, pick, rep):
        """K = coins.shape[0] characters for each of the N rows of one request with penalties
        or no-repeat (pick, rep: its Pick and repetition.Repeat, with room for K more ids), as
        the sampler draws them: ids (K, N); h, c, cur are advanced in place."""
        K, N = coins.shape
        w = self.work(N)._replace(h=h, c=c, cur=cur)
        out = np.empty((K, N), np.int64)
        none = np.zeros((0, N), np.int64)
        sample_kernels.generate(self.model.cell, self.model.params, w, none, coins, pick, rep, out)
        return out

    def choose(self, row, k, coin, pick, rep):
        """Row k's next id from its logits row (V,) with its request's penalties or no-repeat
        (sample_kernels.choose: row is changed): the per-character way, for a request that
        asks for log probabilities too."""
        return int(sample_kernels.choose(row, k, float(coin), pick, self.prob, rep))

    def read(self, ids, h, c):
        """Feed ids (m, P) into the state h, c (L, P, H) of P prompts, in place, in one kernel
        call (ids 1-d: one prompt's)."""
        ids = np.asarray(ids, np.int64)
        if ids.ndim == 1:
            ids = ids.reshape(-1, 1)
        if len(ids) == 0:
            return
        P = ids.shape[1]
        w = self.work(P, READ)._replace(h=h, c=c)
        none = np.zeros((0, P), np.int64)
        sample_kernels.generate(
            self.model.cell,
            self.model.params,
            w,
            np.ascontiguousarray(ids),
            np.zeros((0, P)),
            self.plain,
            self.no_rep,
            none,
        )

    def read_scored(self, ids, h, c):
        """read() of one prompt that also returns the logits (len(ids), V) after each id, in
        the model's dtype (the state after it is read()'s, step for step)."""
        w = self.work(1, READ)._replace(h=h, c=c)
        ids = np.ascontiguousarray(ids, np.int64)
        z = np.empty((len(ids), self.V), self.model.dtype)
        if len(ids):
            read_logits(self.model.cell, self.model.params, w, ids, h, c, z)
        return z


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
    rows = pick_rows([s.plain])
    cur = np.array([1])
    s.write(cur, h, c, np.full((2, 1), 0.5), rows, logits=True)
    s.write(cur, h, c, np.full((2, 1), 0.5), rows)
    pick = pick_of(SampleConfig(presence_penalty=0.5, frequency_penalty=0.5, penalty_window=4, no_repeat=3))
    rep = repetition.reserve(repetition.empty(1, 2, pick), 2, pick)
    s.generate(cur, h, c, np.full((2, 1), 0.5), pick, rep)
    z = s.step(cur, h, c)
    s.choose(z[0], 0, 0.5, pick, repetition.reserve(rep, 1, pick))
