"""A request's unit of work in the batcher and what becomes of its rows' characters: a Job
(one prompt, n rows), a Row (one sample's text so far), and the host's side of each step: the
characters a row drew cut where its max_tokens or the first stop string ends it, with their
log probabilities when asked for (batcher.py runs the kernels; this module is plain Python)."""

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..config import SampleConfig
from .stepper import log_softmax


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


def advance_chunk(r, ids, z, symbol, single):
    """Row r drew ids (K,) (z: the logits of those steps (K, V) when it wants log
    probabilities, else None): the one event to deliver for all of them (see advance), or None.
    Only the ids up to the row's end count: its max_tokens, or the first stop string it
    completes."""
    ids = ids[: max(0, r.job.max_tokens - r.count)]
    if not single or z is not None:
        got = None
        lps = None if z is None else log_softmax(z[: len(ids)])
        for s, x in enumerate(ids.tolist()):
            ev = advance(r, x, None if lps is None else lps[s], symbol)
            if ev is not None:
                got = ev if got is None else merge(got, ev)
                if ev[2] is not None:
                    break
        return got
    # every symbol is one character: the text's offsets are the ids', so the chunk's stop is
    # found in one search, as advance would find it character by character
    job = r.job
    at = len(r.text)
    r.text += "".join([symbol[x] for x in ids.tolist()])
    finish, end = None, len(r.text)
    if job.stops:
        longest = max(len(s) for s in job.stops)
        start = max(0, r.searched - longest + 1)
        found = [(r.text.find(s, start), len(s)) for s in job.stops]
        found = [(p, n) for p, n in found if p >= 0]
        if found:
            done = min(p + n for p, n in found)  # the character that completes the first stop
            finish, end = "stop", min(p for p, n in found if p + n <= done)
            r.text = r.text[:done]
        else:
            end = max(r.emitted, len(r.text) - longest + 1)
        r.searched = len(r.text)
    r.count += len(r.text) - at
    if finish is None and r.count >= job.max_tokens:
        finish, end = "length", len(r.text)
    if end <= r.emitted and finish is None:
        return None
    text = r.text[r.emitted : end]
    r.emitted = end
    return r.k, text, finish, None, r.count


def merge(a, b):
    """One event of a row's two, in order."""
    entries = None if a[3] is None and b[3] is None else (a[3] or []) + (b[3] or [])
    return a[0], a[1] + b[1], b[2], entries, b[4]


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
