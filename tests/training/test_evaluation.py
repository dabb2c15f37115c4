"""How models are scored: `eval`'s readings against a naive per-character reference, the share
of a capped vocabulary's unknown symbol counted apart, the fixed validation sample that chooses
best.npz (and no validation loss where there is no validation text), the final larger
evaluation, a time budget that holds with its evaluations included, the unigram baseline beside
every loss, and the training-loss rows that feed `charrnn plot`."""

import json
import math
import time

import numpy as np
import pytest

import charrnn
from charrnn import api, checkpoint
from charrnn.text import data
from charrnn.training import run, runs
from charrnn.api import CharModel
from charrnn.engine.model import Model, ModelConfig
from charrnn.engine.sample_kernels import step
from charrnn.engine.sampler import Sampler
from conftest import TINY, TINY_API, error_line, invoke, markov_text, zipf_cjk
from reference import reference_forward


def train(corpus, out, callback=None, **options):
    trainer = run.prepare(corpus, out, **options).trainer
    with run.run_directory(trainer.run_dir):
        trainer.status = trainer.run(callback)
    return trainer


# ------------------------------------------------------------------------------ reading a text


def random_model(cell, V=5, H=8, L=2, seed=1):
    cfg = ModelConfig(cell=cell, layers=L, hidden=H, vocab_size=V)
    return CharModel(cfg, "abcde"[:V], dtype=np.float64).init_weights(np.random.default_rng(seed))


def naive_loss(model, ids):
    """Mean loss of ids[1:] given ids[:-1], one character at a time through the sampler's step
    kernel from a zero state, with the log-softmax in NumPy."""
    h, c = model.zero_state(1)
    s = Sampler(model, 1)  # for the step kernel's buffers and packed weights
    p, total = model.params, 0.0
    for t in range(len(ids) - 1):
        step(model.cell, p, s.work, np.array([ids[t]], np.int64), h, c)
        logits = h[-1, 0] @ p.Wy + p.by
        top = logits.max()
        total += top + math.log(np.exp(logits - top).sum()) - logits[ids[t + 1]]
    return total / (len(ids) - 1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_exact_scoring_is_one_stream_read_a_character_at_a_time(cell):
    m = random_model(cell)
    ids = np.random.default_rng(2).integers(0, 5, 2345)  # more than one window of 1000
    score = m.score_ids(ids, exact=True)
    assert (score.chars, score.streams) == (len(ids) - 1, 1)
    assert abs(score.nats - naive_loss(m, ids)) < 1e-10


def test_default_scoring_reads_streams_from_zero_and_counts_what_it_scored():
    """The default reading: B equal streams, each from a zero state; the count is B x per,
    the characters left over at the end are not scored, and the score is the mean of the
    streams' exact scores."""
    m = random_model("lstm")
    ids = np.random.default_rng(3).integers(0, 5, 1039)
    score = m.score_ids(ids, batch=4, seq=50)
    per = (len(ids) - 1) // 4
    assert (score.chars, score.streams) == (4 * per, 4) and score.chars < len(ids) - 1
    streams = [naive_loss(m, ids[k * per : (k + 1) * per + 1]) for k in range(4)]
    assert abs(score.nats - np.mean(streams)) < 1e-10
    assert abs(m.score_ids(ids, exact=True).nats - naive_loss(m, ids)) < 1e-10


# ---------------------------------------------------------------------- the unknown symbol's share


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A model whose vocabulary was capped at 4 of the corpus's 8 symbols (3 + unknown)."""
    tmp = tmp_path_factory.mktemp("capped")
    text, _ = markov_text("abcdefgh", 8000, seed=5)
    path = tmp / "c.txt"
    path.write_text(text)
    out = tmp / "run"
    charrnn.train(path, out, steps=6, eval_every=3, max_vocab=4, **TINY_API)
    return out, text


def test_score_counts_unknown_targets_and_gives_the_known_loss_apart(capped):
    out, text = capped
    model = charrnn.load(out, dtype=np.float64)
    assert model.vocab.unk_id >= 0
    probe = text[:600]
    score = model.score(probe, exact=True)
    ids = model.encode(probe, unknown="unk")
    # the naive reference: every position's loss from a per-gate NumPy forward
    x = np.asarray(ids[:-1], np.int64)[:, None]
    logits, _, _ = reference_forward("lstm", model.params, x, *model.zero_state(1))
    m = logits.max(axis=1)
    per = m + np.log(np.exp(logits - m[:, None]).sum(axis=1)) - logits[np.arange(len(x)), ids[1:]]
    unk = np.asarray(ids[1:]) == model.vocab.unk_id
    assert score.chars == len(per) and score.unknown == int(unk.sum()) > 0
    assert score.nats == pytest.approx(per.mean(), abs=1e-9)
    assert score.nats_known == pytest.approx(per[~unk].mean(), abs=1e-9)


def test_eval_refuses_a_mostly_unknown_text_and_reports_the_known_loss(capped, tmp_path):
    out, _ = capped
    other = tmp_path / "other.txt"
    other.write_text("wxyz" * 300)  # characters it never saw: all its unknown symbol
    line = error_line(invoke("eval", "-c", out, other), 1)
    assert "100.0% of the scored characters" in line and "--max-unknown" in line
    r = invoke("eval", "-c", out, other, "--max-unknown", "1", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["unknown_chars"] == d["chars"] and d["nats_per_char_known"] is None
    mixed = tmp_path / "mixed.txt"
    known = "".join(c for c in charrnn.load(out).vocab.symbols if c != data.UNK)
    mixed.write_text((known * 7)[:21] * 60 + "w" * 60)  # 60 of 1,320 unknown: under 5%
    r = invoke("eval", "-c", out, mixed)
    assert r.exit_code == 0, r.stderr
    assert "unknown to the model" in r.stdout and "over the known ones" in r.stdout


def test_the_refusal_says_which_way_the_unknown_characters_move_the_loss():
    """Issue 38, item 3: "it predicts its unknown symbol cheaply: the loss would be 4.2293, but
    3.6648 nats/char over the known ones" said cheap where they made the loss higher."""
    from charrnn.api import unknown_refusal
    from charrnn.engine.model import Score

    higher = unknown_refusal(Score(4.2293, 1000, 1, 200, 3.6648))
    assert "make the loss higher" in higher and "4.2293" in higher and "3.6648" in higher
    assert "cheap" not in higher and f"{(4229.3 - 800 * 3.6648) / 200:.4f} nats each" in higher
    lower = unknown_refusal(Score(2.0, 1000, 1, 200, 2.5))
    assert "make the loss lower" in lower and "cheap" not in lower


def test_the_command_lines_refusal_agrees_with_the_figures_it_prints(capped, tmp_path):
    out, text = capped
    (tmp_path / "t.txt").write_text(text[:3000])
    line = error_line(invoke("eval", "-c", out, tmp_path / "t.txt"), 1)
    d = json.loads(invoke("eval", "-c", out, tmp_path / "t.txt", "--max-unknown", "1", "--json").stdout)
    way = "lower" if d["nats_per_char"] < d["nats_per_char_known"] else "higher"
    assert f"make the loss {way}, {d['nats_per_char']:.4f}" in line, line


# ---------------------------------------------------------------------- the validation sample


@pytest.mark.parametrize(
    "n, chars, streams, seq",
    [
        (10_001, 1000, 20, 25),
        (10_001, 0, 20, 25),
        (10_001, 20_000, 20, 25),
        (5_000, 1000, 64, 100),
        (1_000_000, 120_000, 64, 100),
        (50, 120_000, 4, 10),
        (3, 10, 4, 10),
    ],
)
def test_the_sample_is_spread_over_the_whole_validation_text(n, chars, streams, seq):
    from charrnn.training.evaluation import segments

    starts, length = segments(n, chars, streams, seq)
    total = n - 1  # predictions
    S = len(starts)
    assert 1 <= S <= streams and length >= 1
    assert S * length <= (chars if chars and chars < total else total)
    if not chars or chars >= total:  # all of it, in S equal blocks
        assert length == total // S and total - S * length < S
    else:
        assert S * length > chars - S
    block = total // S
    np.testing.assert_array_equal(starts, np.arange(S) * block)  # evenly spaced, from 0 ...
    assert total - (starts[-1] + block) < S  # ... to the end
    assert starts[-1] + length <= total
    bigger = segments(n, 10 * chars, streams, seq)
    if len(bigger[0]) == S and chars and 10 * chars < total:  # the same segments, further
        np.testing.assert_array_equal(bigger[0], starts)
        assert bigger[1] == 10 * length


def easy_then_hard(tmp_path):
    """Training text: runs of 'abc' between stretches of a Markov source; validation text (the
    last 20%): 2,000 characters of 'abc' run, then 8,000 of the Markov source. A model learns
    the runs almost perfectly, so the validation text's first fifth is far easier than the
    rest."""
    run_, hard = "abc" * 700, markov_text("abcdef", 48_000, seed=4)[0]
    train_text = "".join(run_[:1000] + hard[i * 4000 : (i + 1) * 4000] for i in range(8))
    text = train_text + run_[:2000] + hard[40_000:48_000]
    path = tmp_path / "easy_then_hard.txt"
    path.write_text(text)
    return path, text[40_000:]


FAIR = dict(
    layers=1,
    hidden=32,
    batch=20,
    seq=25,
    lr=1e-2,
    val_frac=0.2,
    eval_every=25,
    eval_chars=2000,
    keep=100,
    seed=1,
    dtype=np.float32,
)


@pytest.fixture(scope="module")
def fair_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fair")
    path, val_text = easy_then_hard(tmp)
    t = train(path, tmp / "run", steps=160, **FAIR)
    return t, path, val_text


def test_best_is_chosen_on_characters_spread_over_the_whole_validation_text(fair_run):
    """Scoring the first eval_chars of the validation text (its easy part) made every
    periodic evaluation look far better than the model was on the whole of it, and
    best.npz was chosen among numbers measured on different text."""
    t, _, val_text = fair_run
    assert len(t.history) >= 6
    run_dir = t.run_dir
    best = api.load(run_dir / checkpoint.BEST)
    recorded = checkpoint.load(run_dir / checkpoint.BEST)[0]["val_loss"]
    assert recorded == t.best_val == min(h["val_loss"] for h in t.history)
    whole = best.loss(val_text, batch=20, seq=25)  # all of the validation text
    assert abs(recorded - whole) < 0.2, (recorded, whole)
    # every evaluation, the last included, scored the same characters: each stamped
    # checkpoint's recorded loss is its score on the run's sample
    stamped = sorted(run_dir.glob("step*_val*.npz"))
    assert len(stamped) == len(t.history)
    for path, h in zip(stamped, t.history):
        assert t.validate(api.load(path)) == pytest.approx(h["val_loss"], rel=1e-6), path.name
    # and of these checkpoints best.npz is the best on the whole validation text too, within
    # the sampling error of the 2,000 characters read
    wholes = [api.load(p).loss(val_text, batch=20, seq=25) for p in stamped]
    assert whole <= min(wholes) + 0.05, (whole, wholes)


def test_the_final_larger_evaluation_scores_best_npz_and_is_kept_apart(fair_run):
    """Ten times eval_chars is all 10,000 validation characters here: the best model scored
    on all of it, recorded as val_loss_full in best.npz and metrics.jsonl, never as a
    competing val_loss."""
    t, _, val_text = fair_run
    meta = checkpoint.load(t.run_dir / checkpoint.BEST)[0]
    best = api.load(t.run_dir / checkpoint.BEST)
    ids = best.encode(val_text)
    expected = best.score_ids(ids, batch=20, seq=25)
    assert meta["val_loss_full"] == pytest.approx(expected.nats, rel=1e-9)
    assert meta["val_chars_full"] == expected.chars > 9_900
    rows = [json.loads(ln) for ln in (t.run_dir / "metrics.jsonl").read_text().splitlines()]
    full = [r for r in rows if r["kind"] == "full"]
    assert len(full) == 1 and full[0]["step"] == t.best_step and full[0]["all"]
    assert full[0]["val_loss_full"] == meta["val_loss_full"]
    assert all("val_loss" not in r for r in rows if r["kind"] != "eval")
    info = api.describe(meta)
    assert info["val_loss_full"] == meta["val_loss_full"]


def test_a_resumed_run_scores_the_same_sample_or_rescores_best(fair_run, tmp_path):
    t, path, _ = fair_run
    same = run.prepare(resume=t.run_dir, steps=170).trainer
    np.testing.assert_array_equal(same.sample.starts, t.sample.starts)
    assert same.sample.length == t.sample.length and same.best_val == t.best_val
    # a new --eval-chars moves the sample: best.npz is scored again on the new one
    prepared = run.prepare(resume=t.run_dir, steps=170, eval_chars=1000)
    other = prepared.trainer
    assert other.sample.length != t.sample.length
    assert other.best_val == other.validate(api.load(t.run_dir / checkpoint.BEST))
    assert other.best_val != t.best_val and "validation sample changed" in prepared.notice


def test_a_run_without_validation_text_has_no_validation_loss_anywhere(tmp_path, corpus_file):
    out = tmp_path / "noval"
    r = invoke(
        "train",
        corpus_file,
        "-o",
        out,
        "--val-frac",
        "0",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--keep",
        "2",
        *TINY,
    )
    assert r.exit_code == 0, r.stderr
    assert "no validation text" in r.stderr and "best val" not in r.stderr
    meta = checkpoint.load_meta(out / checkpoint.BEST)
    assert meta.progress.step == 6 and not math.isfinite(meta.progress.best_val)
    assert runs.describe(out)["best_val_loss"] is None
    listed = json.loads(invoke("runs", tmp_path, "--json").stdout)
    assert [row["best_val_loss"] for row in listed] == [None]
    assert charrnn.api.describe(meta)["best_val_loss"] is None
    assert sorted(p.name for p in out.glob("step*.npz")) == ["step0000003.npz", "step0000006.npz"]
    line = error_line(
        invoke(
            "train",
            corpus_file,
            "-o",
            tmp_path / "p",
            "--val-frac",
            "0",
            "--patience",
            "2",
            "--steps",
            "4",
            *TINY,
        ),
        1,
    )
    assert "--patience" in line


# ----------------------------------------------------------------------------- the time budget


@pytest.mark.parametrize("eval_every", [20, 10**6])
def test_minutes_hold_with_the_final_evaluation_included(tmp_path, monkeypatch, eval_every):
    """Evaluation made slow (each window 20 ms longer), as on a large validation text: the run
    must still end within a few seconds of --minutes, whether evaluations were measured during
    the run (every 20 steps) or not (none before the last). It used to stop training at the
    budget and then read ten times eval_chars (13 s in all, without evaluations before)."""
    real = Model.window_loss

    def slow(self, *args):
        time.sleep(0.02)
        return real(self, *args)

    monkeypatch.setattr(Model, "window_loss", slow)
    text = markov_text("abcdef", 100_000, seed=7)[0]
    path = tmp_path / "c.txt"
    path.write_text(text)
    t = run.prepare(
        path,
        tmp_path / "r",
        layers=1,
        hidden=16,
        batch=8,
        seq=16,
        minutes=0.1,
        eval_every=eval_every,
        eval_chars=4000,
        val_frac=0.5,
    ).trainer
    t0 = time.perf_counter()
    with run.run_directory(t.run_dir):
        assert t.run() == "done"
    wall = time.perf_counter() - t0
    assert wall < 6 + 3, wall  # generous: the machine is shared
    assert t.step > 20 and t.history[-1]["step"] == t.step


def test_evaluations_fit_their_share_of_minutes_at_any_vocabulary_size(tmp_path, monkeypatch):
    """Issue 38, item 4: on a 26,653-character alphabet `--minutes 2` trained 2 steps and
    then scored 120,000 validation characters for 79 s. What an evaluated character costs
    grows with V x H; here it is set so (2e-8 s x V x H, in place of the measurement): the
    sample of a large alphabet shrinks until evaluating it fits EVAL_SHARE of the budget, the
    final larger evaluation FULL_SHARE, and most of the budget is left for training; a small
    alphabet's sample stays as asked. The sample chosen is kept by the checkpoint."""
    from charrnn.training.evaluation import EVAL_SHARE, FULL_SHARE, MARGIN
    from charrnn.training.record import Record

    cost = lambda t: 2e-8 * t.model.config.vocab_size * t.model.config.hidden  # noqa: E731
    monkeypatch.setattr(Record, "measure_evaluation", cost)
    minutes, seconds = 0.5, 30.0
    opts = dict(layers=1, hidden=16, batch=8, seq=16, minutes=minutes, eval_every=1000, val_frac=0.5)
    opts.update(eval_chars=8000)
    (tmp_path / "cjk.txt").write_text(zipf_cjk(40_000, 3000), encoding="utf-8")
    (tmp_path / "abc.txt").write_text(markov_text("abcdef", 40_000, seed=2)[0])
    big = run.prepare(tmp_path / "cjk.txt", tmp_path / "big", **opts)
    t = big.trainer
    assert t.model.config.vocab_size > 2500
    per = cost(t)
    assert t.sample.chars * per * MARGIN <= EVAL_SHARE * seconds  # was 8,000 x 1 ms: 8 s
    full = len(t.sample.full_starts) * t.budget.full_length()
    assert full * per * MARGIN <= FULL_SHARE * seconds
    assert t.budget.train_seconds() > (1 - EVAL_SHARE - FULL_SHARE) * seconds - 4 * t.budget.save_seconds()
    assert f"evaluations read {t.sample.chars:,} validation characters, not 8,000" in big.notice
    assert t.cfg.eval_chars == t.sample.chars
    with run.run_directory(t.run_dir):
        t.save(checkpoint.LATEST)
    again = run.prepare(resume=t.run_dir, minutes=minutes).trainer
    assert again.sample.spec() == t.sample.spec()
    small = run.prepare(tmp_path / "abc.txt", tmp_path / "small", **opts)
    assert small.trainer.sample.chars == 8000 and "evaluations read" not in (small.notice or "")


def test_a_bf16_run_fits_its_sample_at_its_first_evaluation(tmp_path, monkeypatch):
    """Issue 37: with bf16 products a first step needs none of the float32 evaluation's
    kernels, which compile beside the first steps; the sample is fitted to the budget at the
    first evaluation, after evaluations() made them ready (once), and the fitted sample is what
    every evaluation then reads, the notice on the first evaluation's event. Without the hook
    (the library's callers) it is fitted before the first step, as in fp32."""
    from charrnn.engine import bgemm
    from charrnn.training.evaluation import EVAL_SHARE, MARGIN
    from charrnn.training.record import Record

    if not bgemm.available():
        pytest.skip("this CPU has no AVX512-BF16: no bf16 training")
    measured = []

    def cost(t):
        measured.append(t.step)
        return 2e-8 * t.model.config.vocab_size * t.model.config.hidden

    monkeypatch.setattr(Record, "measure_evaluation", cost)
    (tmp_path / "cjk.txt").write_text(zipf_cjk(40_000, 3000), encoding="utf-8")
    opts = dict(layers=1, hidden=32, batch=8, seq=16, minutes=0.5, eval_every=2, val_frac=0.5)
    opts.update(eval_chars=8000, precision="bf16")
    calls = []
    p = run.prepare(tmp_path / "cjk.txt", tmp_path / "r", evaluations=lambda *a: calls.append(a), **opts)
    t = p.trainer
    assert (calls, measured, t.sample.chars) == ([], [], 8000)
    assert "evaluations read" not in (p.notice or "")
    b = t.budget  # until the fit, the end is planned for the sample the fit will likely leave
    b.timing.step = 1e-3 * b.window_chars / b.eval_per_step  # an evaluated character guessed at 1 ms
    assert b.per_char() == pytest.approx(1e-3)
    assert b.final_cost() < MARGIN * 1e-3 * 8000 / 4 and b.train_seconds() > 20
    events = []
    with run.run_directory(t.run_dir):
        t.run(events.append, should_stop=lambda: t.step >= 4)
    evals = [e for e in events if e["kind"] == "eval"]
    assert calls == [("lstm", np.dtype(np.float32))] and measured == [2]
    assert evals[0]["step"] == 2 and t.sample.chars < 8000
    assert t.sample.chars * cost(t) * MARGIN <= EVAL_SHARE * 30.0
    assert f"evaluations read {t.sample.chars:,} validation characters, not 8,000" in evals[0]["notice"]
    assert all("notice" not in e for e in evals[1:]) and len(evals) >= 2
    assert t.cfg.eval_chars == t.sample.chars  # what checkpoints keep
    again = run.prepare(tmp_path / "cjk.txt", tmp_path / "r2", **opts)  # no hook: before step 1
    assert "evaluations read" in again.notice and again.trainer.sample.chars == t.sample.chars
    hook = lambda *a: None  # noqa: E731
    early = run.prepare(tmp_path / "cjk.txt", tmp_path / "r3", evaluations=hook, **opts).trainer
    with run.run_directory(early.run_dir):  # stopped before its first evaluation
        assert early.run(should_stop=lambda: early.step >= 1) == "interrupted"
    resumed = run.prepare(resume=early.run_dir, minutes=0.5, evaluations=hook).trainer
    assert resumed.fit_later and resumed.sample.chars == 8000  # fitted at its first evaluation
    resumed = run.prepare(resume=t.run_dir, minutes=0.5, evaluations=hook).trainer
    assert not resumed.fit_later and resumed.sample.spec() == t.sample.spec()  # kept as read


def test_the_unigram_baseline_is_the_training_frequencies_on_the_sample(tmp_path):
    """Every validation loss is reported beside the unigram baseline: the cross-entropy of the
    training text's character frequencies, add-one smoothed over the V symbols, on the very
    characters the sample scores. Against a count in plain Python."""
    from collections import Counter

    text = zipf_cjk(6000, 300, seed=3)
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    t = run.prepare(tmp_path / "c.txt", tmp_path / "r", steps=1, batch=4, seq=10, eval_chars=500).trainer
    V, cut = len(t.model.vocab), len(text) - len(t.val_ids)
    counts, val = Counter(text[:cut]), text[cut:]
    targets = "".join(val[s + 1 : s + t.sample.length + 1] for s in t.sample.starts)
    assert len(targets) == t.sample.chars == 500
    expected = -sum(math.log((counts[c] + 1) / (cut + V)) for c in targets) / len(targets)
    assert t.unigram() == pytest.approx(expected, rel=1e-12)
    assert expected < math.log(V) - 0.5  # far from uniform: a baseline worth beating


def test_a_model_no_better_than_the_unigram_baseline_is_said_plainly(tmp_path):
    """Issue 38, item 4: "best val 8.9749", worse than the text's own character frequencies
    (3.70), and nothing said. Every training reports the unigram baseline beside its best
    validation loss, and warns (also with --quiet; it still exits 0: the run did what it was
    asked, and --resume can go on) when the model is no better."""
    (tmp_path / "cjk.txt").write_text(zipf_cjk(6000, 300, seed=4), encoding="utf-8")
    r = invoke("train", tmp_path / "cjk.txt", "-o", tmp_path / "r", "--steps", "2", *TINY, "-q")
    assert r.exit_code == 0, r.stderr
    d = json.loads(invoke("info", tmp_path / "r", "--json").stdout)
    assert d["best_val_loss"] >= d["unigram_val_loss"] > 0
    warning = [ln for ln in r.stderr.splitlines() if "unigram baseline" in ln]
    assert len(warning) == 1 and warning[0].startswith("charrnn: warning: the best model scores")
    assert f"{d['unigram_val_loss']:.4f}" in warning[0] and "add-one" in warning[0]
    rows = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {r["unigram"] for r in rows if r["kind"] == "eval"} == {d["unigram_val_loss"]}
    # a model that learned something: the baseline beside its loss, and no warning
    (tmp_path / "abc.txt").write_text("abc" * 2000)
    r = invoke(
        "train", tmp_path / "abc.txt", "-o", tmp_path / "a", "--steps", "60", *TINY[:-2], "--lr", "1e-2"
    )
    assert r.exit_code == 0, r.stderr
    summary = r.stderr.strip().splitlines()[-1]
    assert "(unigram baseline 1.0986)" in summary and "warning" not in r.stderr
    assert "unigram baseline" in invoke("info", tmp_path / "a").stdout


# ------------------------------------------------------------------------ rows for the plots


def test_training_loss_rows_are_written_and_plotted(tmp_path, corpus_file):
    from charrnn.training import plot

    t = train(corpus_file, tmp_path / "r", layers=1, hidden=16, batch=8, seq=16, steps=12, eval_every=4)
    rows = plot.read_metrics(t.run_dir)
    kinds = [r["kind"] for r in rows]
    assert kinds[0] == "train" and rows[0]["step"] == 1  # a row after the first step
    assert kinds.count("eval") == 3 and kinds.count("train") >= 4
    curves = plot.curves(rows)
    assert len(curves["train"]) == kinds.count("train") and len(curves["val"]) == 3
    chart = "\n".join(plot.text_chart(rows))
    assert "·" in chart and "*" in chart
    # a metrics file from before training rows: evaluations only, without a kind
    old = [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == "eval"]
    curves = plot.curves(old)
    assert len(curves["train"]) == len(curves["val"]) == 3 and not curves["full"]
    pytest.importorskip("matplotlib")
    for name, some in (("new.png", rows), ("old.png", old)):
        plot.png(some, tmp_path / name)
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
