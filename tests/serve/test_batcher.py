"""The batcher itself, below HTTP: rows written many characters a call are cut where the
per-character rules cut them, prompts submitted together write together, and a short prompt
is not held behind a long one."""

import threading

import numpy as np
import pytest

from serve_util import VOCAB, tiny_model


class Collect:
    """A job's deliveries: each row's text, finish reason and count."""

    def __init__(self, n=1):
        self.text, self.why, self.count = [""] * n, [None] * n, [0] * n
        self.done = threading.Event()

    def __call__(self, events):
        for k, text, why, _, count in events:
            self.text[k] += text
            if why is not None:
                self.why[k], self.count[k] = why, count
        if all(w is not None for w in self.why):
            self.done.set()


def job_of(model, prompt, max_tokens, deliver, **kw):
    from charrnn.config import SampleConfig
    from charrnn.serve.jobs import Job

    sample = SampleConfig(**{k: kw.pop(k) for k in list(kw) if k in ("temp", "seed", "top_k", "top_p")})
    return Job(model.vocab.encode(prompt), kw.pop("n", 1), max_tokens, deliver, sample=sample, **kw)


@pytest.mark.parametrize("seed", range(40))
def test_a_chunk_is_cut_where_characters_one_by_one_cut_it(seed):
    """advance_chunk's one search over K characters against advance, character by character:
    the same text, finish reason and count, for random stops and lengths."""
    from charrnn.serve.jobs import Job, Row, advance, advance_chunk

    rng = np.random.default_rng(seed)
    symbol = list("abc\n")
    stops = tuple("".join(rng.choice(symbol, rng.integers(1, 4))) for _ in range(rng.integers(0, 3)))
    ids = rng.integers(0, len(symbol), 300)
    job = Job(np.zeros(1, np.int64), 1, int(rng.integers(1, 300)), None, stops=stops)
    one, many = Row(job, 0, None), Row(job, 0, None)
    want = [None, "", None]  # count, text, finish
    for x in ids.tolist():
        ev = advance(one, x, None, symbol)
        if ev is not None:
            want = [ev[4], want[1] + ev[1], ev[2]]
            if ev[2] is not None:
                break
    got, at = [None, "", None], 0
    while got[2] is None:
        k = int(rng.integers(1, 40))
        ev = advance_chunk(many, ids[at : at + k], None, symbol, True)
        at += k
        if ev is not None:
            got = [ev[4], got[1] + ev[1], ev[2]]
    assert got == want, (stops, job.max_tokens)


def test_prompts_submitted_together_write_together():
    """Eight jobs in the intake at once: read in one round, written side by side, in about
    one job's steps (not eight jobs' 8 x 200), each with the text the model gives alone."""
    from charrnn.serve.batcher import Batcher

    model = tiny_model(0)
    b = Batcher(model)
    prompts = [VOCAB[i : i + 6] for i in range(8)]
    got = [Collect() for _ in prompts]
    with b.cv:  # the threads wait until all eight are in
        for p, g in zip(prompts, got):
            b.submit(job_of(model, p, 200, g, temp=0.0))
    for g in got:
        assert g.done.wait(30)
    assert b.load()["steps"] <= 2 * 200
    for p, g in zip(prompts, got):
        assert g.text[0] == model.complete(p, length=200, temp=0)[0].text and g.count == [200]
    b.close()


def test_a_short_prompt_is_not_held_behind_a_long_one():
    """A 100,000-character prompt, then a short one: the short one's job has ended (read and
    written) while the long prompt is still being read, whatever the machine's speed (the
    long one takes at least 100,000 / 256 rounds)."""
    from charrnn.serve.batcher import Batcher

    model = tiny_model(1, hidden=32)
    b = Batcher(model)
    rng = np.random.default_rng(0)
    long = "".join(rng.choice(list(VOCAB), 100_000))
    slow, quick = Collect(), Collect()
    long_job = b.submit(job_of(model, long, 1, slow, temp=0.0))
    seen = {}

    def quick_deliver(events):
        quick(events)
        if quick.done.is_set():
            seen["read"] = long_job.read

    b.submit(job_of(model, "abc", 20, quick_deliver, temp=0.0))
    assert quick.done.wait(60) and slow.done.wait(120)
    assert seen["read"] < len(long) - 1
    assert quick.text[0] == model.complete("abc", length=20, temp=0)[0].text
    assert slow.text[0] == model.complete(long, length=1, temp=0)[0].text
    b.close()


def test_a_failing_batcher_ends_its_jobs_with_an_error(caplog):
    """A bug in the writing thread: its jobs end with finish_reason "error" and the failure is
    on stderr, instead of clients waiting for ever; new jobs are refused."""
    from charrnn.serve.batcher import Batcher, Busy

    model = tiny_model(0)
    b = Batcher(model)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    b.stepper.write = broken
    got = Collect(2)
    b.submit(job_of(model, "abc", 50, got, n=2, temp=0.0))
    assert got.done.wait(30) and got.why == ["error", "error"]
    with pytest.raises(Busy):
        b.submit(job_of(model, "abc", 5, Collect()))
    b.close()
    (rec,) = [r for r in caplog.records if r.name == "charrnn.serve"]
    assert "batcher failed" in rec.getMessage() and "a bug" in str(rec.exc_info[1])
