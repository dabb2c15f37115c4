"""Continuous batching: the rows of one model's requests write together, many characters per
kernel call, while their prompts are read beside them, as vLLM and llama.cpp's server batch
their sequences.

A request becomes a Job (one prompt, n rows). Two threads serve one model, each on a core of
its own where there are two (the kernels release the GIL):

- The reader feeds the prompts of the jobs waiting into their state, from the longest cached
  prefix on (cache.PrefixCache). Each round reads every waiting prompt together, the same
  number of characters each, in one batched call, about READ_ROUND seconds of work: a short
  prompt that arrives while a long one is read is done within a round or two, and the long
  one goes on beside it (vLLM's chunked prefill shares a step's budget the same way). A job
  that scores its prompt (echo with logprobs) reads it from the start, logits and all: the
  cache keeps states, not the per-character scores that would be 100 times their size.
- The writer advances every active row by K characters a tick, in one kernel call for the
  rows that draw plainly (each with its own temperature, top-k and top-p) and one for each
  request with penalties or no-repeat. K is set from the measured time of a step so that a
  tick takes about TICK seconds: a prompt read joins the batch, and a stream gets its next
  characters, within a few milliseconds. The host then cuts each row's K characters where its
  max_tokens or a stop string ends it and delivers what is ready, several characters an
  event; a row that ended mid-tick wasted at most the rest of that tick's steps.

A row leaves when it reaches its max_tokens or a stop string; a cancelled job (a dropped
connection) leaves at the next tick or round. At most max_batch rows are active; at most
max_queue more wait; beyond that submit raises Busy. Each job's `deliver` callback is called
from the batcher's threads.
"""

import logging
import threading
import time
from collections import deque

import numpy as np

from ..engine import repetition
from ..engine.sampler import pick_of, pick_rows
from .cache import EVERY, PrefixCache
from .jobs import Row, advance_chunk, score_of
from .stepper import Stepper

log = logging.getLogger("charrnn.serve")

# fmt: off
TICK = 0.004        # seconds of writing between two chances for a row to join
MAX_K = 256         # characters a row writes in one call at most (`charrnn sample`'s chunk)
READ_ROUND = 0.004  # seconds of reading in one round
READ_MAX = 64       # prompts read together in one call at most
# fmt: on


class Busy(Exception):
    """The batch and its queue are full (HTTP 429), or the batcher is closing (503)."""

    def __init__(self, message, status=429):
        super().__init__(message)
        self.status = status


class Batcher:
    """One model's rows, written in one thread while prompts are read in another (see the
    module doc)."""

    def __init__(self, model, max_batch=64, max_queue=256, cache=None):
        self.model, self.stepper = model, Stepper(model)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.cache = PrefixCache() if cache is None else cache
        self.cv = threading.Condition(threading.RLock())  # the writer waits on it
        self.to_read = threading.Condition(self.cv._lock)  # ... the reader on this, one lock
        self.intake = deque()  # jobs submitted, not yet taken by the reader
        self.reading = []  # jobs whose prompt is being read (the reader's)
        self.in_reader = 0  # jobs taken by the reader and not yet handed over or dropped
        self.ready = deque()  # jobs read, waiting to join the batch
        self.rows = []
        self.h, self.c = self.stepper.zero_state(0)
        self.cur = np.zeros(0, np.int64)
        self.queued = 0  # rows submitted and not yet in the batch
        self.closing = False
        self.steps = 0  # characters written per row, over all ticks
        self.k = 8  # characters per row in the next tick (see _chunk)
        self.step_time = None  # seconds a step of the batch took in the last tick
        self.read_time = None  # ... and a step of the reader's last round
        # a character model's symbols by id (None: bytes, decoded incrementally per row)
        self.symbol = None if model.byte_level else model.vocab.symbols
        # every symbol one character: a row's text offsets are its ids' (the quick cut)
        self.single = self.symbol is not None and all(len(s) == 1 for s in self.symbol)
        self._regroup()
        self.failed = False
        self.reader = threading.Thread(
            target=self._guard, args=(self._read_loop,), name="charrnn-reader", daemon=True
        )
        self.thread = threading.Thread(
            target=self._guard, args=(self._write_loop,), name="charrnn-batcher", daemon=True
        )
        self.reader.start()
        self.thread.start()

    # -- from the request side --------------------------------------------------------------

    def submit(self, job):
        with self.cv:
            if self.closing:
                raise Busy("the server is shutting down or reloading this model", 503)
            if job.n > self.max_batch:
                raise Busy(f"n={job.n} is more than the batch holds ({self.max_batch})", 400)
            if len(self.rows) + self.queued + job.n > self.max_batch + self.max_queue:
                raise Busy(
                    f"the server is full ({self.max_batch} rows writing and "
                    f"{self.queued} waiting); retry later"
                )
            self.queued += job.n
            self.intake.append(job)
            self.to_read.notify()  # the writer has nothing to do until the prompt is read
        return job

    def load(self):
        with self.cv:
            return {
                "active": len(self.rows),
                "queued": self.queued,
                "steps": self.steps,
                "cache_entries": len(self.cache),
                "cache_hits": self.cache.hits,
            }

    def close(self, wait=True):
        """Take no more jobs; the threads end when the prompts waiting are read and the rows
        writing are done."""
        with self.cv:
            self.closing = True
            self.cv.notify_all()
            self.to_read.notify_all()
        if wait:
            self.reader.join()
            self.thread.join()

    def _guard(self, loop):
        """Run a thread's loop; if it fails (a bug), say so on stderr and end every job held
        with finish_reason "error", rather than leave its clients waiting for ever."""
        try:
            loop()
        except Exception:
            log.exception("charrnn: a batcher failed; its requests end with an error")
            with self.cv:
                self.closing = self.failed = True
                waiting = list(self.intake) + list(self.reading) + list(self.ready)
                ends = [(j, range(j.n)) for j in waiting]
                for j, _, ks in self.groups:
                    ends.append((j, ks.tolist()))
                self.intake.clear()
                self.ready.clear()
                self.cv.notify_all()
                self.to_read.notify_all()
            for j, ks in ends:
                j.deliver([(k, "", "error", None, 0) for k in ks])

    # -- the reader -------------------------------------------------------------------------

    def _read_loop(self):
        while True:
            with self.cv:
                while not (self.intake or self.reading or self.closing):
                    self.to_read.wait()
                if self.failed or not (self.intake or self.reading):
                    return  # closing, and nothing left to read
                taken = list(self.intake)
                self.intake.clear()
                self.in_reader += len(taken)
            self.reading += [self._start(j) for j in taken]
            gone = [j for j in self.reading if j.cancelled]
            if gone:
                self.reading = [j for j in self.reading if not j.cancelled]
                with self.cv:
                    self.queued -= sum(j.n for j in gone)
                    self.in_reader -= len(gone)
                    self.cv.notify_all()
            self._read_round()
            done = [j for j in self.reading if j.read >= len(j.ids) - 1]
            if done:
                self.reading = [j for j in self.reading if j.read < len(j.ids) - 1]
                self._hand_over(done)

    def _start(self, job):
        job.rng = np.random.default_rng(job.sample.seed)
        job.left = job.n
        job.pick = pick_of(job.sample, self.stepper.banned)
        if repetition.active(job.pick):
            job.rep = repetition.empty(job.n, self.stepper.V, job.pick)
        want = job.ids[:-1]
        n, h, c = (0, None, None) if job.score else self.cache.longest(want)
        if job.score:
            job.scores = []
        if h is None:
            h, c = self.stepper.zero_state(1)
        job.read, job.h, job.c, job.cached = n, h, c, n
        return job

    def _read_round(self):
        """One round: the prompts waiting (the first READ_MAX) read on by the same number of
        characters, about READ_ROUND seconds of work, together in one call; a scored prompt
        alone, as far. The state at every EVERY characters goes into the cache."""
        jobs = [j for j in self.reading[:READ_MAX] if j.read < len(j.ids) - 1]
        if not jobs:
            return
        plain = [j for j in jobs if not j.score]
        per_step = self.read_time or 1e-4
        budget = max(1, min(4096, int(READ_ROUND / per_step)))
        t0 = time.perf_counter()
        steps = 0
        if plain:
            # as far as the nearest end or cache point of any of them, so that each lands on
            # its own: a prompt of 50 characters beside one of 200,000 is done in one round
            m = min(budget, *(min(len(j.ids) - 1, (j.read // EVERY + 1) * EVERY) - j.read for j in plain))
            ids = np.stack([j.ids[j.read : j.read + m] for j in plain], axis=1)
            h = np.concatenate([j.h for j in plain], axis=1)
            c = np.concatenate([j.c for j in plain], axis=1)
            self.stepper.read(ids, h, c)
            steps += m
            for i, j in enumerate(plain):
                j.h, j.c = h[:, i : i + 1].copy(), c[:, i : i + 1].copy()
                j.read += m
                if j.read % EVERY == 0 or j.read == len(j.ids) - 1:
                    self.cache.put(j.ids[: j.read], j.h, j.c)
        for j in jobs:
            if j.score:
                upto = min(len(j.ids) - 1, j.read + budget)
                z = self.stepper.read_scored(j.ids[j.read : upto], j.h, j.c)
                j.scores.append(score_of(z, j.ids[j.read + 1 : upto + 1], j.logprobs))
                steps += upto - j.read
                j.read = upto
        if steps:
            self.read_time = (time.perf_counter() - t0) / steps

    def _hand_over(self, done):
        """Jobs whose prompts are read: those that asked for the prompt only end here, the
        others wait for room in the batch."""
        for j in done:
            if j.max_tokens == 0:  # only the prompt (its scores) was asked for
                with self.cv:
                    self.queued -= j.n
                j.deliver([(k, "", "length", None, 0) for k in range(j.n)])
        with self.cv:
            self.ready.extend(j for j in done if j.max_tokens > 0)
            self.in_reader -= len(done)
            self.cv.notify_all()

    # -- the writer -------------------------------------------------------------------------

    def _write_loop(self):
        while True:
            with self.cv:
                while not (self.ready or self.rows or (self.closing and not self.busy_reading())):
                    self.cv.wait()
                if self.failed or self.closing and not (self.ready or self.rows or self.busy_reading()):
                    return
                gone = [j for j in self.ready if j.cancelled]
                if gone:
                    self.queued -= sum(j.n for j in gone)
                    self.ready = deque(j for j in self.ready if not j.cancelled)
                joining = []
                room = self.max_batch - len(self.rows)
                while self.ready and self.ready[0].n <= room:
                    room -= self.ready[0].n
                    joining.append(self.ready.popleft())
            if any(r.job.cancelled for r in self.rows):
                self._keep([not r.job.cancelled for r in self.rows])
            if joining:
                self._join(joining)
            if self.rows:
                self._tick()

    def busy_reading(self):
        """Prompts submitted that the reader has not handed over yet (under self.cv)."""
        return bool(self.intake or self.in_reader)

    def _join(self, jobs):
        dec = self.model.vocab.text_decoder
        for job in jobs:
            self.rows += [Row(job, k, dec()) for k in range(job.n)]
        self.h = np.concatenate([self.h] + [np.repeat(j.h, j.n, axis=1) for j in jobs], axis=1)
        self.c = np.concatenate([self.c] + [np.repeat(j.c, j.n, axis=1) for j in jobs], axis=1)
        self.cur = np.concatenate([self.cur] + [np.full(j.n, j.ids[-1], np.int64) for j in jobs])
        for j in jobs:
            j.h = j.c = None
        self._regroup()
        with self.cv:
            self.queued -= sum(j.n for j in jobs)

    def _keep(self, mask):
        mask = np.asarray(mask, bool)
        self.rows = [r for r, m in zip(self.rows, mask) if m]
        self.h = np.ascontiguousarray(self.h[:, mask])
        self.c = np.ascontiguousarray(self.c[:, mask])
        self.cur = self.cur[mask]
        self._regroup()

    def _regroup(self):
        """The rows by job, the rows that draw plainly and their settings as arrays, after
        rows joined or left."""
        rows = self.rows
        groups = {}
        for i, r in enumerate(rows):
            groups.setdefault(id(r.job), (r.job, [], []))
            groups[id(r.job)][1].append(i)
            groups[id(r.job)][2].append(r.k)
        self.groups = [(j, np.array(idx), np.array(ks)) for j, idx, ks in groups.values()]
        plain = np.array([r.job.rep is None for r in rows], np.bool_)
        self.plain = np.flatnonzero(plain)
        self.every_plain = bool(plain.all())
        self.picks = pick_rows([rows[i].job.pick for i in self.plain])
        self.keep_logits = any(rows[i].job.logprobs is not None for i in self.plain)

    def _chunk(self):
        """K for this tick: about TICK seconds of steps at the last tick's pace (at most twice
        the last K, so that a batch grown since does not run one long tick), and no more than
        the most any row still has to write."""
        if self.step_time:
            self.k = max(1, min(2 * self.k, MAX_K, int(TICK / self.step_time)))
        most = max(r.job.max_tokens - r.count for r in self.rows)
        return max(1, min(self.k, most))

    def _tick(self):
        N, K = len(self.rows), self._chunk()
        coins = np.empty((K, N))
        for job, idx, ks in self.groups:
            coins[:, idx] = job.rng.random((K, job.n))[:, ks]  # all n, as the sampler draws them
        t0 = time.perf_counter()
        out = np.empty((K, N), np.int64)
        zs = None
        P = self.plain
        if self.every_plain:
            out, zs = self.stepper.write(self.cur, self.h, self.c, coins, self.picks, self.keep_logits)
        elif len(P):
            h, c = np.ascontiguousarray(self.h[:, P]), np.ascontiguousarray(self.c[:, P])
            cur, coins_p = self.cur[P], np.ascontiguousarray(coins[:, P])
            out[:, P], z = self.stepper.write(cur, h, c, coins_p, self.picks, self.keep_logits)
            self.h[:, P], self.c[:, P], self.cur[P] = h, c, cur
            zs = _placed(zs, P, z, N)
        for job, idx, ks in self.groups:
            if job.rep is not None:
                zs = _placed(zs, idx, self._write_penalised(job, idx, ks, coins[:, idx], out), N)
        self.step_time = (time.perf_counter() - t0) / K
        self.steps += K
        self._emit(out, zs)

    def _write_penalised(self, job, idx, ks, coins, out):
        """K characters of a request's rows with penalties or no-repeat, its rows idx of the
        batch (its rows ks), into out[:, idx]: in one call of the sampler's kernel, or step by
        step when it wants log probabilities (their logits (K, n, V) then)."""
        K = coins.shape[0]
        job.rep = repetition.reserve(job.rep, K, job.pick)
        whole = len(ks) == job.n
        rep = job.rep if whole else repetition.Repeat(job.rep.t, *(a[ks] for a in job.rep[1:]))
        h, c = np.ascontiguousarray(self.h[:, idx]), np.ascontiguousarray(self.c[:, idx])
        cur, zs = self.cur[idx], None
        if job.logprobs is None:
            out[:, idx] = self.stepper.generate(cur, h, c, np.ascontiguousarray(coins), job.pick, rep)
        else:
            zs = np.empty((K, len(idx), self.stepper.V), self.model.dtype)
            for s in range(K):
                z = self.stepper.step(cur, h, c)
                zs[s] = z
                for i in range(len(idx)):
                    cur[i] = self.stepper.choose(z[i], i, coins[s, i], job.pick, rep)
                rep.t[0] += 1
                out[s, idx] = cur
        if not whole:
            for a, b in zip(job.rep[1:], rep[1:]):
                a[ks] = b
        self.h[:, idx], self.c[:, idx], self.cur[idx] = h, c, cur
        return zs

    def _emit(self, out, zs):
        keep = None
        for job, idx, _ in self.groups:
            events = []
            for i in idx.tolist():
                z = None if job.logprobs is None else zs[:, i]
                ev = advance_chunk(self.rows[i], out[:, i], z, self.symbol, self.single)
                if ev is not None:
                    events.append(ev)
                    if ev[2] is not None:
                        if keep is None:
                            keep = np.ones(len(self.rows), bool)
                        keep[i] = False
                        job.left -= 1
            if events:
                job.deliver(events)
        if keep is not None:
            self._keep(keep)


def _placed(zs, idx, z, N):
    """zs (K, N, V), made on first use, with rows idx's logits z (K, len(idx), V) put in."""
    if z is not None and zs is None:
        zs = np.zeros((z.shape[0], N, z.shape[2]), z.dtype)
    if z is not None:
        zs[:, idx] = z
    return zs
