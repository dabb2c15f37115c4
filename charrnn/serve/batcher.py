"""Continuous batching: every active row of one model advances by one character per tick, in
one batched kernel step (stepper.Stepper), as vLLM batches its sequences.

A request becomes a Job (one prompt, n rows). A job's prompt is read first, for its one row,
from the longest cached prefix on (cache.PrefixCache), a bounded number of characters per tick
so that a long prompt does not stall the rows already writing; then its n rows join the batch
at the next step (a job with max_tokens 0 ends there). A job that scores its prompt (echo with
logprobs) reads it from the start, logits and all: the cache keeps states, not the per-character
scores that would be 100 times their size. A row leaves when it reaches its max_tokens or a
stop string; a cancelled job (a dropped connection) leaves at the next tick. At most
max_batch rows are active; at most max_queue more wait; beyond that submit raises Busy.

The batcher runs in a thread of its own (the kernels release the GIL) and hands each tick's
text to the job's `deliver` callback, from that thread.
"""

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..config import SampleConfig
from ..engine import repetition
from ..engine.sampler import pick_of, pick_rows
from .cache import EVERY, PrefixCache
from .stepper import Stepper, log_softmax

# fmt: off
READ_PER_TICK = 256    # prompt characters read between two steps while rows are writing
READ_IDLE = 4096       # ... and while none is
# fmt: on


class Busy(Exception):
    """The batch and its queue are full (HTTP 429), or the batcher is closing (503)."""

    def __init__(self, message, status=429):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    """One prompt of a request and how to continue it (n rows)."""

    # fmt: off
    ids: np.ndarray                 # the prompt's ids, at least one (the last is the next input)
    n: int                          # rows (samples)
    max_tokens: int                 # characters per row
    # fmt: on
    deliver: Callable  # deliver(events): [(k, text, finish_reason|None, lps,
    #                    characters generated)]
    # fmt: off
    sample: SampleConfig = SampleConfig()  # how to draw: temp, top-k, top-p, penalties,
                                    # no-repeat and seed (its length, num_samples and stop
                                    # are the request's max_tokens, n and stops)
    stops: tuple = ()               # stop strings, as the model writes text
    logprobs: Optional[int] = None  # top-k log probabilities at each position
    score: bool = False             # score the prompt too (echo with logprobs): see scores
    cancelled: bool = False
    # fmt: on
    # set by the batcher
    # fmt: off
    rng: object = None
    pick: object = None             # the kernel's Pick of `sample` (sampler.pick_of)
    rep: object = None              # the rows' repetition.Repeat when penalties or no-repeat
                                    # are on, else None: the rows draw in the batch's kernel
    read: int = 0                   # prompt ids read into h, c
    h: object = None
    c: object = None
    left: int = 0                   # rows still writing
    cached: int = field(default=0)  # prompt characters found in the cache
    scores: list = None             # with score: (logprobs (m,), top ids (m, k), top
                                    # logprobs (m, k)) chunks of ids[1:] given those before,
                                    # complete before the job's first delivery
    # fmt: on

    def cancel(self):
        self.cancelled = True


class Row:
    __slots__ = ("job", "k", "decode", "text", "emitted", "count", "lps", "searched")

    def __init__(self, job, k, decode):
        self.job, self.k, self.decode = job, k, decode
        self.text, self.emitted, self.count, self.searched = "", 0, 0, 0
        self.lps = []  # (offset in text, token, logprob, top)


class Batcher:
    """One model's rows, stepped together in a thread (see the module doc)."""

    def __init__(self, model, max_batch=64, max_queue=256, cache=None):
        self.model, self.stepper = model, Stepper(model)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.cache = PrefixCache() if cache is None else cache
        self.cv = threading.Condition()
        self.intake = deque()
        self.reading = deque()  # jobs whose prompt is being read
        self.rows = []
        self.h, self.c = self.stepper.zero_state(0)
        self.cur = np.zeros(0, np.int64)
        self.queued = 0  # rows submitted and not yet in the batch
        self.closing = False
        self.steps = 0
        # a character model's symbols by id (None: bytes, decoded incrementally per row)
        self.symbol = None if model.byte_level else model.vocab.symbols
        self._regroup()
        self.thread = threading.Thread(target=self._run, name="charrnn-batcher", daemon=True)
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
            self.cv.notify()
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
        """Take no more jobs; the thread ends when the rows writing are done."""
        with self.cv:
            self.closing = True
            self.cv.notify()
        if wait:
            self.thread.join()

    # -- the thread -------------------------------------------------------------------------

    def _run(self):
        while True:
            with self.cv:
                while not (self.intake or self.reading or self.rows or self.closing):
                    self.cv.wait()
                if self.closing and not (self.intake or self.reading or self.rows):
                    return
                while self.intake:
                    self.reading.append(self._start(self.intake.popleft()))
            self._drop_cancelled()
            self._read_prompts()
            if self.rows:
                self._step()

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

    def _drop_cancelled(self):
        gone = [j for j in self.reading if j.cancelled]
        for j in gone:
            self.reading.remove(j)
            with self.cv:
                self.queued -= j.n
        if any(r.job.cancelled for r in self.rows):
            self._keep([not r.job.cancelled for r in self.rows])

    def _read_prompts(self):
        budget = READ_PER_TICK if self.rows else READ_IDLE
        while self.reading and budget > 0:
            job = self.reading[0]
            target = len(job.ids) - 1
            if job.read < target:
                upto = min(target, job.read + budget, (job.read // EVERY + 1) * EVERY)
                if job.score:
                    z = self.stepper.read_scored(job.ids[job.read : upto], job.h, job.c)
                    job.scores.append(score_of(z, job.ids[job.read + 1 : upto + 1], job.logprobs))
                else:
                    self.stepper.read(job.ids[job.read : upto], job.h, job.c)
                budget -= upto - job.read
                job.read = upto
                self.cache.put(job.ids[:upto], job.h, job.c)
                if job.read < target:
                    continue
            if job.max_tokens == 0:  # only the prompt (its scores) was asked for
                self.reading.popleft()
                with self.cv:
                    self.queued -= job.n
                job.deliver([(k, "", "length", None, 0) for k in range(job.n)])
                continue
            if len(self.rows) + job.n > self.max_batch:
                return  # the batch is full: the job joins when rows leave
            self.reading.popleft()
            self._join(job)

    def _join(self, job):
        dec = self.model.vocab.text_decoder
        self.rows += [Row(job, k, dec()) for k in range(job.n)]
        self.h = np.concatenate([self.h, np.repeat(job.h, job.n, axis=1)], axis=1)
        self.c = np.concatenate([self.c, np.repeat(job.c, job.n, axis=1)], axis=1)
        self.cur = np.concatenate([self.cur, np.full(job.n, job.ids[-1], np.int64)])
        job.h = job.c = None
        self._regroup()
        with self.cv:
            self.queued -= job.n

    def _keep(self, mask):
        mask = np.asarray(mask, bool)
        self.rows = [r for r, m in zip(self.rows, mask) if m]
        self.h = np.ascontiguousarray(self.h[:, mask])
        self.c = np.ascontiguousarray(self.c[:, mask])
        self.cur = self.cur[mask]
        self._regroup()

    def _regroup(self):
        """The per-row settings of the batch as arrays, after rows joined or left."""
        rows = self.rows
        self.groups = {}
        for i, r in enumerate(rows):
            self.groups.setdefault(id(r.job), (r.job, [], []))
            self.groups[id(r.job)][1].append(i)
            self.groups[id(r.job)][2].append(r.k)
        self.groups = [(j, np.array(idx), np.array(ks)) for j, idx, ks in self.groups.values()]
        self.picks = pick_rows([r.job.pick for r in rows])
        self.plain = np.array([r.job.rep is None for r in rows], np.bool_)

    def _step(self):
        N = len(self.rows)
        coins = np.zeros(N)
        for job, idx, ks in self.groups:
            coins[idx] = job.rng.random(job.n)[ks]  # all n, as the sampler draws them
        z, nxt = self.stepper.step_pick(self.cur, self.h, self.c, coins, self.picks, self.plain)
        self.steps += 1
        lps = {}
        for job, idx, ks in self.groups:
            if job.logprobs is not None:
                lps.update(zip(idx.tolist(), log_softmax(z[idx])))
            if job.rep is not None:
                job.rep = repetition.reserve(job.rep, 1, job.pick)
                for i, k in zip(idx.tolist(), ks.tolist()):
                    nxt[i] = self.stepper.choose(z[i], k, coins[i], job.pick, job.rep)
                job.rep.t[0] += 1
        self.cur = nxt
        self._emit(nxt, lps)

    def _emit(self, nxt, lps):
        keep = None
        ids = nxt.tolist()
        for job, idx, _ in self.groups:
            events = []
            for i in idx.tolist():
                ev = advance(self.rows[i], ids[i], lps.get(i), self.symbol)
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


def advance(r, x, lp, symbol):
    """Row r drew id x (lp: the log probabilities of that step, or None): its text grows; the
    event to deliver (k, new text, finish_reason or None, logprob entries, ids drawn), or
    None."""
    job = r.job
    piece = symbol[x] if symbol is not None else r.decode(np.array([x]))
    at = len(r.text)
    r.text += piece
    r.count += 1
    if lp is not None:
        r.lps.append((at, piece, float(lp[x]), top_of(lp, job.logprobs, symbol)))
    finish, end = None, len(r.text)
    if job.stops:
        longest = max(len(s) for s in job.stops)
        start = max(0, r.searched - longest + 1)
        cuts = [r.text.find(s, start) for s in job.stops]
        cuts = [p for p in cuts if p >= 0]
        r.searched = len(r.text)
        if cuts:
            finish, end = "stop", min(cuts)
        else:
            end = max(r.emitted, len(r.text) - longest + 1)
    if finish is None and r.count >= job.max_tokens:
        finish, end = "length", len(r.text)
    if end <= r.emitted and finish is None:
        return None
    text = r.text[r.emitted : end]
    entries = [e for e in r.lps if r.emitted <= e[0] < end] if lp is not None or r.lps else None
    if entries is not None:
        r.lps = [e for e in r.lps if e[0] >= end]
    r.emitted = end
    return r.k, text, finish, entries, r.count


def score_of(z, targets, k):
    """(log p of each target (m,), the k likeliest ids (m, k) and their log p (m, k)) of
    logits z (m, V), each row scoring its target; float64, as the sampled positions'."""
    lp = log_softmax(z)
    m = np.arange(len(targets))
    tok = lp[m, targets]
    k = min(k, lp.shape[1])
    if k <= 0:
        return tok, np.zeros((len(m), 0), np.int64), np.zeros((len(m), 0))
    top = np.argpartition(-lp, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(lp, top, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return tok, np.take_along_axis(top, order, 1), np.take_along_axis(vals, order, 1)


def top_dict(ids, vals, symbol):
    """{character: log p} of ids (k,) with log p vals (k,), as top_of shows them."""
    if symbol is None:
        return {bytes([t]).decode("utf-8", "replace"): v for t, v in zip(ids.tolist(), vals.tolist())}
    return {symbol[t]: v for t, v in zip(ids.tolist(), vals.tolist())}


def top_of(lp, k, symbol):
    """{character: log p} of the k likeliest at one step."""
    if k <= 0:
        return {}
    k = min(k, lp.shape[0])
    top = np.argpartition(-lp, k - 1)[:k]
    top = top[np.argsort(-lp[top])]
    if symbol is None:  # bytes: each shown as the text it is alone
        return {bytes([int(t)]).decode("utf-8", "replace"): float(lp[t]) for t in top}
    return {symbol[t]: float(lp[t]) for t in top}
