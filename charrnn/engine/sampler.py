"""Sampling: the whole per-character loop runs in one jitted call per chunk of characters
(the kernels are in sample_kernels.py; this module packs the weights and holds the state).

Randomness comes in as uniforms ("coins") drawn up front from the caller's seeded generator, so a
seed gives the same text whatever the chunk sizes.

The products go through weights packed once per Sampler (gemm.py, padded to whole strips), not
through BLAS: a batch-1 step is bound by reading the weights, which packed strips stream in
order, and `charrnn sample` loads no BLAS library at all.

One row of a wide LSTM can also be split across cores: each step's units go in one chunk per
core, with the weights laid out by chunk (a batch-1 step of a 2 x 512 LSTM reads 12 MB of
weights; two cores each read half). That path meets its threads once per layer and character,
so it is fast only while every core is free: beside a training run it waited a hundred times
longer than the serial path. So by default, when the process may use more than one core, a
Switch (switch.py) chooses between the two paths as the sample runs, from the time each takes;
both give the same text.

With a reduced precision (precision.py: bf16 or int8, opt-in), the matrices the steps stream
are packed in 2 or 1 bytes a weight and multiplied by qgemm.py (float32 sums and state), on
either path.
"""

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from . import compiling, gemm, kernels, repetition, sample_kernels, threads
from .switch import SERIAL, SPLIT, Switch
from .precision import STORAGE, check as check_precision, pack as pack_narrow

# compile_elsewhere(group, model, precision) -> bool: compiles a warm.py group in a second
# process and returns when it is in the cache (False: it could not). Set by the package's
# warm.py; None (the engine alone): the loader thread compiles it itself.
compile_elsewhere = None
PARALLEL_MIN_HIDDEN = 128  # below this a step is too short for two threads to meet in
PLAIN = sample_kernels.Pick()  # temperature 1, nothing cut or penalised


def padded(dtype, N):
    """N rounded up to whole strips of gemm's packed matrices of this dtype."""
    return gemm.padded(np.zeros(1, dtype), N)


def pack_padded(W):
    """W (Kd, N) packed for gemm.matmul, padded to whole strips."""
    out = np.empty(W.shape[0] * padded(W.dtype, W.shape[1]), W.dtype)
    gemm.pack(W, out)
    return out


def pick_of(cfg, banned=-1):
    """The kernel's Pick of a SampleConfig (config.py), field by field under the names they
    share, typed as the compiled kernels take them: the one place where the command line's
    and a server request's settings become the kernel's. banned: an id never drawn (the
    model's unknown symbol), or -1."""
    kinds = sample_kernels.Pick.__annotations__
    given = {f: kinds[f](getattr(cfg, f)) for f in sample_kernels.Pick._fields if f != "banned"}
    return sample_kernels.Pick(banned=int(banned), **given)


def pick_rows(picks):
    """The PickRows (sample_kernels) of the Picks of a batch's rows, one array a setting, in
    the type the Pick field has."""
    kinds = {float: np.float64, int: np.int64}
    fields = sample_kernels.PickRows._fields
    types = sample_kernels.Pick.__annotations__
    return sample_kernels.PickRows(
        *(np.array([getattr(p, f) for p in picks], kinds[types[f]]) for f in fields)
    )


def unit_blocks(W, k):
    """(..., 4H) gate columns i f g o -> (k, ..., 4H/k): chunk j holds its H/k units' 4 gates."""
    lead, H = W.shape[:-1], W.shape[-1] // 4
    n = H // k
    b = W.reshape(*lead, 4, k, n)
    b = np.moveaxis(b, -2, 0)  # (k, ..., 4, n)
    return np.ascontiguousarray(b.reshape(k, *lead, 4 * n))


class Sampler:
    """Stateful generation from a Model for N rows at once (N independent samples)."""

    def __init__(self, model, num_samples=1, parallel=None, precision="fp32"):
        """parallel: split each step across the cores: True always, False never, None (the
        default) to let a Switch choose as it samples, for one row of a wide LSTM when the
        process may use more than one core (threads.num_threads). precision: the weights'
        format in the products (precision.py): fp32 (exact, the default), bf16 or int8 (a
        float32 model only)."""
        cfg = model.config
        self.precision = check_precision(precision)
        if precision != "fp32" and model.dtype != np.float32:
            raise ValueError(f"{precision} sampling needs a float32 model")
        self.model, self.N = model, num_samples
        H = cfg.hidden
        self.h, self.c = model.zero_state(num_samples)
        self.cur = np.zeros(num_samples, np.int64)
        self.pending = np.zeros((0, num_samples), np.int64)  # prime characters not yet fed
        self.chunks = math.gcd(H, threads.num_threads())  # of units: as many as cores, dividing H
        splittable = model.cell == kernels.LSTM and num_samples == 1 and self.chunks > 1
        if parallel and model.cell != kernels.LSTM:
            raise ValueError("only an LSTM's steps split across cores")
        self.switch = None
        if parallel is None and splittable and H >= PARALLEL_MIN_HIDDEN:
            self.switch = Switch(prepare=self._prepare_split, ready=self._split_ready)
        self.parallel = bool(parallel)
        self.work = self._split_work(self.chunks) if self.parallel else self._work()
        self.split = None  # the split path's SplitWork beside the serial one (_prepare_split)
        self._loader = None
        self._helpers, self._flags = None, None  # the split path's threads and flags (_run_split)
        self.rep = None  # repetition.Repeat, made at the first generate

    def _packed(self, Ws, Kd, N):
        """(packed, scales): the matrices Ws (each (Kd, N)) packed and padded in the Sampler's
        precision, stacked, and their per-column scales (empty for fp32)."""
        dt = self.model.dtype
        Np = padded(dt, N)
        if self.precision == "fp32":
            packs = [(pack_padded(W), np.zeros(0, dt)) for W in Ws]
            empty = np.zeros((0, Kd * Np), dt), np.zeros((0, 0), dt)
        else:
            packs = [pack_narrow(W, self.precision) for W in Ws]
            empty = (np.zeros((0, Kd * Np), STORAGE[self.precision]), np.zeros((0, Np), np.float32))
        if not packs:
            return empty
        return np.stack([w for w, _ in packs]), np.stack([s for _, s in packs])

    def _work(self):
        p, dt, N = self.model.params, self.model.dtype, self.N
        (L, H, Kg), V = p.Wh.shape, p.by.shape[0]
        Kp = padded(dt, Kg)
        Wxp, Sx = self._packed([p.Wx[l] for l in range(L - 1)], H, Kg)
        Whp, Sh = self._packed(list(p.Wh), H, Kg)
        Wyp, Sy = self._packed([p.Wy], H, V)
        return sample_kernels.SampleWork(
            Wxp=Wxp,
            Whp=Whp,
            Wyp=Wyp[0],
            Sx=Sx,
            Sh=Sh,
            Sy=Sy[0],
            h=self.h,
            c=self.c,
            cur=self.cur,
            G=np.zeros((N, Kg), dt),
            R=np.zeros((N, Kg), dt),
            aux=np.zeros((N, H), dt),
            scratch=np.zeros((N, Kp), dt),
            logits=np.zeros((N, padded(dt, V)), dt),
            prob=np.zeros(V, np.float64),
            **sample_kernels.norm_buffers(self.model.cell, N, H, dt),
        )

    def _split_work(self, k):
        """The weights once more, laid out by chunk of units, each chunk packed (in the
        Sampler's precision, with per-column scales for a narrow one)."""
        p, dt = self.model.params, self.model.dtype
        (L, H, Kg), V = p.Wh.shape, p.by.shape[0]
        n4 = Kg // k

        def chunks(Ws):  # (L', k, H*4np) weights and (L', k, 4np or 0) scales, by chunk
            stacks = [self._packed([unit_blocks(W, k)[j] for j in range(k)], H, n4) for W in Ws]
            if not stacks:
                w, sc = self._packed([], H, n4)
                return w.reshape(0, k, w.shape[1]), sc.reshape(0, k, sc.shape[1])
            return np.stack([w for w, _ in stacks]), np.stack([sc for _, sc in stacks])

        Wxb, Sxb = chunks([p.Wx[l] for l in range(L - 1)])
        Whb, Shb = chunks(list(p.Wh))
        Wyp, Sy = self._packed([p.Wy], H, V)
        return sample_kernels.SplitWork(
            Wxb=Wxb,
            Whb=Whb,
            Sxb=Sxb,
            Shb=Shb,
            Wyp=Wyp[0],
            Sy=Sy[0],
            Wx0b=unit_blocks(p.Wx0, k),
            bb=np.stack([unit_blocks(p.b[l], k) for l in range(L)]),
            by=p.by,
            h=self.h,
            c=self.c[:, 0].reshape(L, k, H // k),
            cur=self.cur,
            t=np.zeros((k, H // k), dt),
            tc=np.zeros((k, H // k), dt),
            xp=np.zeros((k, n4), dt),
            acc=np.zeros((k, n4), dt),
            scratch=np.zeros((k, padded(dt, n4)), dt),
            logits=np.zeros((1, padded(dt, V)), dt),
            prob=np.zeros(V, np.float64),
        )

    def prime(self, ids):
        """Warm the state on ids (a 1-d sequence); the last one is the next input."""
        ids = np.asarray(ids, np.int64)
        self.pending = np.ascontiguousarray(np.repeat(ids[:-1, None], self.N, axis=1))
        self.cur[:] = ids[-1]

    def generate(self, n, rng, pick=PLAIN):
        """The next n ids of each row, shape (n, N), drawn as pick (a Pick, pick_of a
        SampleConfig) says. Its penalties, window and no_repeat (repetition.py) stay the same
        for the whole sample: each row counts its own ids from its first one generated, so
        they are the same in every call."""
        coins = rng.random((n, self.N))
        out = np.zeros((n, self.N), np.int64)
        if self.rep is None:
            self.rep, self.rep_options = (
                repetition.empty(self.N, self.model.params.by.shape[0], pick),
                pick[4:],
            )
        elif pick[4:] != self.rep_options:
            raise ValueError("a Sampler's penalties and no-repeat cannot change mid-sample")
        self.rep = repetition.reserve(self.rep, n, pick)
        self._pick = pick
        if self.switch is not None:
            self.switch.run(n, lambda path, a, k: self._chunk(path, coins[a : a + k], pick, out[a : a + k]))
        else:
            self._chunk(SPLIT if self.parallel else SERIAL, coins, pick, out)
        return out

    def _run_split(self, split, coins, pick, out):
        """generate_split on this thread, its helpers on threads of their own; the share of
        the helpers' chunks of units that their threads ran (switch.py). The call does
        not wait for them: a helper the scheduler has not run yet (another process holds its
        core) would keep it waiting for a time slice, and the sampling thread runs any chunk
        a helper has not taken. A helper serves the calls that follow within LINGER spins
        then returns."""
        k = split.Whb.shape[1]
        if self._flags is None:
            self._flags = flags = sample_kernels.split_flags(k)
            self._helpers = ThreadPoolExecutor(max(1, k - 1), thread_name_prefix="charrnn-split")
            sample_kernels.split_helper(split, flags, 1, 0, -1)  # loaded (or compiled) here, so
            # that a failure is raised on this thread, not left to a helper on a thread of its own
        flags = self._flags
        call = int(flags[sample_kernels.CALL]) + 1
        need = np.zeros(k, np.int64)
        sample_kernels.split_begin(flags, call, need)
        seen = int(flags[sample_kernels.GO])
        for j in np.flatnonzero(need):
            args = (split, flags, int(j), seen, sample_kernels.LINGER)
            self._helpers.submit(sample_kernels.split_helper, *args)
        stolen = int(flags[sample_kernels.STOLEN])
        try:
            sample_kernels.generate_split(split, self.pending, coins, pick, self.rep, out, flags)
        finally:
            flags[sample_kernels.STOP] = call
        chunks = (self.pending.shape[0] + out.shape[0]) * split.h.shape[0] * (k - 1)
        return 1.0 - (int(flags[sample_kernels.STOLEN]) - stolen) / max(chunks, 1)

    def load_split(self):
        """Lay the weights out for the split path and load its kernels (from Numba's cache, or
        compiled here)."""
        split = self._split_work(self.chunks)
        coins, out = np.zeros((0, 1)), np.zeros((0, 1), np.int64)
        flags = sample_kernels.split_flags(self.chunks)
        args = (split, self.pending[:0], coins, self._pick, self.rep, out, flags)
        sample_kernels.generate_split.compile(tuple(numba.typeof(a) for a in args))
        sample_kernels.split_helper.compile(tuple(numba.typeof(a) for a in (split, flags, 1, 0, 0)))
        sample_kernels.split_begin.compile(tuple(numba.typeof(a) for a in (flags, 1, flags[:2])))
        self.split = split

    def _prepare_split(self):
        """Make the split path ready on a thread of its own while the serial path samples
        (nogil): load its kernels from Numba's cache, or, when they are not there, have a
        process of its own compile them on the other core (warm.py's second process, started
        by the hook `compile_elsewhere`) and load them when it is done. That process finishes
        even when this one ends first, so its work reaches the cache either way."""

        def load():
            try:
                with compiling.cache_only():
                    self.load_split()
                return
            except compiling.NotCached:
                pass
            if compile_elsewhere is not None:
                compile_elsewhere("split", self.model, self.precision)
            self.load_split()  # from the cache now (or compiled here, if that failed)

        self._loader = threading.Thread(target=load, name="charrnn-split-loader", daemon=True)
        self._loader.start()

    def _split_ready(self):
        """Whether the split path is loaded (a loader that failed leaves it never ready)."""
        return self._loader is not None and not self._loader.is_alive() and self.split is not None

    def _chunk(self, path, coins, pick, out):
        """out.shape[0] characters on one path (the pending prime first), into out; for the
        split path, the share of the helpers' chunks their threads ran (else None)."""
        if path == SPLIT:
            if self.parallel:
                split = self.work
            else:  # beside the serial work, sharing its state
                if self.split is None:  # asked for before _prepare_split (as tests do)
                    self.split = self._split_work(self.chunks)
                split = self.split
            helped = self._run_split(split, coins, pick, out)
        else:
            helped = None
            sample_kernels.generate(
                self.model.cell, self.model.params, self.work, self.pending, coins, pick, self.rep, out
            )
        self.pending = self.pending[:0]
        return helped
