"""Training through the library: the model learns a source whose entropy rate is known, a resumed
run is bit-for-bit the run that never stopped, and the run directory holds what it promises."""

import json
import math

import numpy as np
import pytest

from charrnn import checkpoint
from charrnn.training import run
from charrnn.errors import ConfigError, CorpusError
from conftest import TINY, invoke, markov_chain, markov_text


def train(corpus, out, callback=None, should_stop=lambda: False, **options):
    """prepare + run inside the locked run directory, returning the trainer."""
    trainer = run.prepare(corpus, out, **options).trainer
    with run.run_directory(trainer.run_dir):
        trainer.status = trainer.run(callback, should_stop)
    return trainer


# ------------------------------------------------------------------------------------- learning


def test_lstm_reaches_the_entropy_rate_of_a_markov_source(tmp_path):
    """A first-order Markov source over six symbols (three rows nearly deterministic): a small
    LSTM must come within 0.05 nats/char of its entropy rate on held-out text."""
    symbols, peaked = "abcdef", (0, 2, 4)
    text, rate = markov_text(symbols, 100_000, seed=1, peaked_rows=peaked)
    _, pi, rate_again = markov_chain(len(symbols), 1, peaked)
    assert rate == rate_again
    unigram = float(-(pi * np.log(pi)).sum())
    assert unigram > rate + 0.2  # the bound cannot be met without learning the transitions
    path = tmp_path / "markov.txt"
    path.write_text(text)
    # 40% held out: 40,000 validation characters keep the sampling noise of the loss ~0.005
    t = train(
        path,
        tmp_path / "run",
        layers=1,
        hidden=32,
        batch=32,
        seq=25,
        lr=1e-2,
        steps=300,
        eval_every=100,
        val_frac=0.4,
        seed=1,
    )
    assert t.model.dtype == np.float32
    first, final = t.history[0]["val_loss"], t.history[-1]["val_loss"]
    assert t.step == 300 and final < first
    assert rate - 0.02 <= final <= rate + 0.05, (final, rate)


# ---------------------------------------------------------------------------------- exact resume

RESUME_OPTS = dict(
    layers=2, hidden=8, dropout=0.3, batch=4, seq=10, eval_every=5, val_frac=0.1, seed=7, dtype=np.float64
)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    # 450 training characters: 11 windows of 4 x 10 per epoch, so 20 steps cross an epoch
    text, _ = markov_text("abcdef", 500, seed=5, peaked_rows=(1,))
    path = tmp_path_factory.mktemp("small") / "small.txt"
    path.write_text(text)
    return path


def history_without_times(history):
    return [{k: v for k, v in h.items() if k != "elapsed"} for h in history]


@pytest.mark.parametrize("stop_at", [10, 7])
def test_resumed_run_equals_uninterrupted_run(tmp_path, small_corpus, stop_at):
    """20 steps in one go == stop_at steps, stop, resume from the files, the rest. float64 and
    dropout, so the random generator's state and the carried hidden state both matter."""
    N = 20
    whole = train(small_corpus, tmp_path / "whole", steps=N, **RESUME_OPTS)
    assert whole.epoch == 1  # the epoch boundary (state reset) happened inside the run

    # stop through should_stop, as Ctrl-C does
    t1 = run.prepare(small_corpus, tmp_path / "split", steps=N, **RESUME_OPTS).trainer
    with run.run_directory(t1.run_dir):
        assert t1.run(should_stop=lambda: t1.step >= stop_at) == "interrupted"
    assert t1.step == stop_at

    t2 = run.prepare(resume=tmp_path / "split", steps=N).trainer
    assert t2.model.dtype == np.float64 and t2.step == stop_at
    with run.run_directory(t2.run_dir):
        assert t2.run() == "done"

    assert t2.step == N
    assert np.array_equal(t2.model.flat, whole.model.flat)
    assert np.array_equal(t2.opt.m, whole.opt.m)
    assert np.array_equal(t2.opt.v, whole.opt.v)
    assert np.array_equal(t2.h, whole.h) and np.array_equal(t2.c, whole.c)
    assert t2.rng.bit_generator.state == whole.rng.bit_generator.state

    # and the files say the same
    m_whole, p_whole, tr_whole = checkpoint.load(tmp_path / "whole" / checkpoint.LATEST)
    m_split, p_split, tr_split = checkpoint.load(tmp_path / "split" / checkpoint.LATEST)
    for k in p_whole:
        assert p_whole[k].dtype == np.float64
        assert np.array_equal(p_whole[k], p_split[k]), k
    for k in ("adam_m", "adam_v", "h", "c"):
        assert np.array_equal(tr_whole[k], tr_split[k]), k
    # the training losses too, also when the run stopped between evaluations: the "train"
    # figure is the mean of the last steps, and a checkpoint keeps them
    assert history_without_times(t2.history) == history_without_times(whole.history)
    assert history_without_times(m_split["history"]) == history_without_times(m_whole["history"])


def test_resume_refuses_a_changed_model_or_text(tmp_path, small_corpus):
    train(small_corpus, tmp_path / "r", steps=5, **RESUME_OPTS)
    with pytest.raises(ConfigError, match="hidden"):
        run.prepare(resume=tmp_path / "r", hidden=16)
    other = tmp_path / "other.txt"
    other.write_text(markov_text("abcdef", 500, seed=6)[0])
    with pytest.raises(ConfigError, match="different text"):
        run.prepare(other, resume=tmp_path / "r")
    with pytest.raises(ConfigError, match="nothing to resume"):
        run.prepare(resume=tmp_path / "empty")


def test_extending_a_finished_cosine_says_the_rate_rises_or_holds_it_with_constant(tmp_path, small_corpus):
    """Issue 38: --resume with a larger budget stretches the cosine, and the rate jumps back up;
    it says so in one line, and --schedule constant goes on at the rate where the run ended."""
    done = train(small_corpus, tmp_path / "r", steps=10, **RESUME_OPTS)
    end = done.lr_now()
    assert end == pytest.approx(done.cfg.lr * done.cfg.min_lr_frac)
    again = run.prepare(resume=tmp_path / "r", steps=20)
    assert again.trainer.lr_now() > 5 * end
    assert f"the rate goes from {end:.3g} to {again.trainer.lr_now():.3g}" in again.notice
    assert "--schedule constant" in again.notice
    assert run.prepare(resume=tmp_path / "r", steps=10).notice is None  # the same budget: no jump
    held = run.prepare(resume=tmp_path / "r", steps=20, schedule="constant")
    assert held.trainer.lr_now() == pytest.approx(end) and "stays at" in held.notice
    with run.run_directory(held.trainer.run_dir):
        held.trainer.run()
    rows = [r for r in checkpoint.load(tmp_path / "r" / checkpoint.LATEST)[0].history if r.step > 10]
    assert rows and all(r.lr == pytest.approx(end) for r in rows)
    with pytest.raises(ConfigError, match="schedule"):
        run.prepare(resume=tmp_path / "r", schedule="cosine")  # now a constant run


def test_resume_on_a_corpus_with_new_characters_says_it_changed_and_names_init_from(tmp_path):
    """Issue 38: not only which characters are missing, but why, and what grows the vocabulary."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(markov_text("abcdef", 500, seed=5)[0])
    train(corpus, tmp_path / "r", steps=2, **RESUME_OPTS)
    corpus.write_text(corpus.read_text() + "xyz")
    with pytest.raises(CorpusError) as e:
        run.prepare(corpus, resume=tmp_path / "r")
    message = str(e.value)
    assert message.startswith("the text has characters not in the vocabulary: 'x', 'y', 'z'")
    assert "the corpus changed since the run" in message and f"--init-from {tmp_path / 'r'}" in message


def test_resume_from_another_directory_and_options_it_cannot_change(tmp_path, monkeypatch):
    """The run stores its corpus path absolute, so --resume works from anywhere; --bytes and
    --max-vocab, which a resumed run cannot change, are refused rather than ignored."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "c.txt").write_text("the cat sat on the mat. " * 300)
    monkeypatch.chdir(tmp_path / "a")
    run = tmp_path / "run"
    assert invoke("train", "c.txt", *TINY, "--steps", 2, "-o", run, "-q").exit_code == 0
    monkeypatch.chdir(tmp_path / "b")
    r = invoke("train", "--resume", run, "--steps", 4, "-q")
    assert r.exit_code == 0, r.stderr
    for extra in (["--bytes"], ["--max-vocab", "50"]):
        r = invoke("train", "--resume", run, "--steps", 6, "-q", *extra)
        assert r.exit_code == 1 and extra[0] in r.stderr and "Traceback" not in r.stderr, r.stderr
    (tmp_path / "a" / "c.txt").rename(tmp_path / "a" / "moved.txt")
    r = invoke("train", "--resume", run, "--steps", 6, "-q")
    assert r.exit_code == 1 and "pass the file again" in r.stderr, r.stderr


def test_training_is_reproducible_when_streams_are_split_across_threads(tmp_path, monkeypatch):
    """Same seed, same weights, also when a window's streams run as parts on two threads
    (parts of equal size once shared one work buffer and raced)."""
    monkeypatch.setenv("CHARRNN_THREADS", "2")
    text, _ = markov_text("abcdef", 20_000, seed=2)
    path = tmp_path / "c.txt"
    path.write_text(text)
    opts = dict(layers=1, hidden=32, batch=32, seq=20, steps=20, eval_every=10, seed=3, dtype=np.float64)
    a = train(path, tmp_path / "a", **opts)
    b = train(path, tmp_path / "b", **opts)
    assert len(a.model.parts(32)) == 2
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    assert np.array_equal(a.model.flat, b.model.flat)
    losses = [a.validate() for _ in range(3)]
    assert losses[0] == losses[1] == losses[2]


# --------------------------------------------------------------------------------- run directory


def test_run_directory_holds_checkpoints_and_metrics(tmp_path, small_corpus):
    events = []
    t = train(
        small_corpus,
        tmp_path / "r",
        callback=events.append,
        steps=23,
        keep=2,
        **dict(RESUME_OPTS, dtype=np.float32),
    )
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    stamped = [n for n in names if n.startswith("step")]
    assert {"latest.npz", "best.npz", "metrics.jsonl"} <= set(names)
    assert ".lock" not in names and not [n for n in names if ".tmp" in n]
    assert len(stamped) == 2 and stamped[-1].startswith("step0000023_")
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0]["kind"] == "train" and records[0]["step"] == 1  # after the first step
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [5, 10, 15, 20, 23]
    assert evals == [
        {k: (None if v != v else v) for k, v in e.items()} for e in events if e["kind"] == "eval"
    ]
    # training rows, every few seconds and before each evaluation, cover every step
    rows = [r["step"] for r in records if r["kind"] == "train"]
    assert rows == sorted(set(rows)) and {5, 10, 15, 20, 23} <= set(rows)
    assert all(math.isfinite(r["val_loss"]) and math.isfinite(r["train_loss"]) for r in evals)
    best = checkpoint.load(tmp_path / "r" / "best.npz")[0]
    assert best["progress"]["step"] == t.best_step
    assert best["val_loss"] == min(r["val_loss"] for r in evals)
    assert checkpoint.load(tmp_path / "r" / "latest.npz")[0]["progress"]["step"] == 23


def test_every_train_figure_is_the_mean_of_the_last_steps(tmp_path, small_corpus, monkeypatch):
    """Issue 38, item 1: an evaluation line's "train" was the mean since the previous
    evaluation (for the first, since step 1), a training row's the mean since the previous row:
    two numbers under one name. Now every one, in metrics.jsonl, the callback's events (which
    the progress lines print), the history and `charrnn info`, is the mean loss of the last
    TRAIN_MEAN_STEPS steps, here 3, with evaluations every 5 steps and a row after every step."""
    from charrnn.api import describe
    from charrnn.cli.progress import _progress_line
    from charrnn.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "TRAIN_MEAN_STEPS", 3)
    t = run.prepare(small_corpus, tmp_path / "r", steps=12, **RESUME_OPTS).trainer
    t.report_seconds = 0.0
    losses, real = [], t.train_step
    t.train_step = lambda: losses.append(real()) or losses[-1]
    events = []
    with run.run_directory(t.run_dir):
        t.run(events.append)
    assert len(losses) == 12

    def last3(step):
        return float(np.mean(losses[max(0, step - 3) : step]))

    rows = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    figures = [(r["step"], r["train_loss"]) for r in rows if r["kind"] in ("train", "eval")]
    figures += [(e["step"], e["train_loss"]) for e in events if e["kind"] != "full"]
    figures += [(h["step"], h["train_loss"]) for h in t.history]
    info = describe(checkpoint.load(tmp_path / "r" / checkpoint.LATEST)[0])
    figures += [(h["step"], h["train_loss"]) for h in info["history"]]
    assert {s for s, _ in figures} >= {1, 5, 10, 12}
    for step, figure in figures:
        assert figure == pytest.approx(last3(step), rel=1e-12), step
    for e in events:
        if e["kind"] != "full":
            assert f"train {last3(e['step']):.4f}" in _progress_line(e)


def test_a_held_run_directory_is_refused(tmp_path, small_corpus):
    train(small_corpus, tmp_path / "r", steps=5, **RESUME_OPTS)
    with pytest.raises(ConfigError, match="already holds a run"):
        run.prepare(small_corpus, tmp_path / "r", steps=5, **RESUME_OPTS)
    run.prepare(small_corpus, tmp_path / "r", steps=5, force=True, **RESUME_OPTS)


def test_corpus_shorter_than_one_window(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcabcabcabc" * 3)
    with pytest.raises(CorpusError, match="--batch .* --seq"):
        run.prepare(path, tmp_path / "r", batch=50, seq=50, steps=1)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------- never lose work, stop well


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, small_corpus):
    from charrnn.errors import TrainingDiverged

    trainer = run.prepare(small_corpus, tmp_path / "r", steps=30, **RESUME_OPTS).trainer
    real, calls = trainer.model.loss_and_grad, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss, state = real(*args, **kwargs)
        return (math.nan if len(calls) == 8 else loss), state

    trainer.model.loss_and_grad = poisoned
    with run.run_directory(trainer.run_dir):
        with pytest.raises(TrainingDiverged, match="--lr"):
            trainer.run()
    saved = checkpoint.load(tmp_path / "r" / "latest.npz")
    assert saved[0]["progress"]["step"] == 5  # the evaluation before the NaN, untouched
    assert np.isfinite(saved[1]["Wh"]).all()


def test_patience_stops_when_validation_stops_improving(tmp_path, small_corpus):
    # a large model on 450 characters overfits fast: validation turns up, patience ends the run
    opts = dict(RESUME_OPTS, hidden=48, lr=2e-2, dropout=0.0)
    t = train(small_corpus, tmp_path / "r", steps=400, patience=3, **opts)
    vals = [h["val_loss"] for h in t.history]
    assert t.status == "patience"
    assert t.step < 400 and t.stale == 3
    assert min(vals[-3:]) >= t.best_val == min(vals)


def test_init_from_continues_from_trained_weights_and_checks_the_vocabulary(tmp_path, small_corpus):
    base = train(small_corpus, tmp_path / "base", steps=10, **RESUME_OPTS)
    tuned = run.prepare(
        small_corpus, tmp_path / "tuned", steps=1, init_from=tmp_path / "base", **RESUME_OPTS
    ).trainer
    np.testing.assert_array_equal(tuned.model.flat, base.model.flat)
    assert tuned.step == 0 and tuned.model.vocab == base.model.vocab
    other = tmp_path / "other.txt"
    other.write_text("xyz" * 400)
    # new characters grow the vocabulary (tests/training/test_finetune.py), named in the notice
    grown = run.prepare(other, tmp_path / "grown", steps=1, init_from=tmp_path / "base", **RESUME_OPTS)
    assert "'xyz'" in grown.notice and set("xyz") <= set(grown.trainer.model.vocab.symbols)


def test_state_reset_restarts_streams_from_zero(tmp_path, small_corpus):
    """With state_reset equal to the window length every stream restarts from the zero state at
    every step, so a step's loss is the loss from zero whatever state was carried in."""
    opts = dict(RESUME_OPTS, dropout=0.0)
    t = run.prepare(small_corpus, tmp_path / "r", steps=3, state_reset=opts["seq"], **opts).trainer
    t.h[:] = 0.7
    t.c[:] = -0.4
    x = np.ascontiguousarray(t.xs[:, :10].T, dtype=np.int32)
    y = np.ascontiguousarray(t.ys[:, :10].T, dtype=np.int32)
    expected, _ = t.model.window_loss(x, y, *t.model.zero_state(4))
    assert abs(t.train_step() - expected) < 1e-12
    never = run.prepare(small_corpus, tmp_path / "q", steps=3, state_reset=0, **opts).trainer
    never.h[:] = 0.7
    never.c[:] = -0.4
    assert abs(never.train_step() - expected) > 1e-3


# ------------------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    "budget, size, lr",
    [
        (dict(minutes=15), (640, 0.3, 0.1, 0.1), 3e-3),
        (dict(minutes=14), (512, 0.2, 0.0, 0.0), 3e-3),
        (dict(minutes=10), (512, 0.2, 0.0, 0.0), 3e-3),
        (dict(minutes=5), (384, 0.1, 0.0, 0.0), 4e-3),
        (dict(minutes=3), (256, 0.0, 0.0, 0.0), 4e-3),
        (dict(steps=5), (256, 0.0, 0.0, 0.0), 4e-3),
        ({}, (256, 0.0, 0.0, 0.0), 4e-3),
        (dict(minutes=15, hidden=16), (16, 0.0, 0.0, 0.0), 4e-3),
        (dict(minutes=15, hidden=385), (385, 0.0, 0.0, 0.0), 3e-3),
        (dict(minutes=3, dropout=0.3), (256, 0.3, 0.0, 0.0), 4e-3),
        (dict(minutes=3, lr=1e-3), (256, 0.0, 0.0, 0.0), 1e-3),
        (dict(minutes=15, weight_drop=0.0), (640, 0.3, 0.0, 0.1), 3e-3),
        (dict(minutes=15, weight_drop=0.2), (640, 0.3, 0.2, 0.1), 3e-3),
        (dict(minutes=15, weight_decay=0.0), (640, 0.3, 0.1, 0.0), 3e-3),
        (dict(minutes=3, weight_decay=0.05), (256, 0.0, 0.0, 0.05), 4e-3),
    ],
)
def test_without_auto_size_the_model_is_sized_to_the_time_budget(tmp_path, small_corpus, budget, size, lr):
    """--no-auto-size and no --hidden: the size (and its dropout, weight drop and weight decay)
    follow --minutes; a given size keeps them 0, and a given weight drop or decay stays. The
    rate follows the size unless given."""
    t = run.prepare(small_corpus, tmp_path / "r", batch=4, seq=10, auto_size=False, **budget).trainer
    cfg = t.model.config
    assert (cfg.hidden, cfg.dropout, t.cfg.weight_drop, t.cfg.weight_decay) == size and cfg.layers == 2
    assert t.cfg.schedule == "cosine" and t.cfg.lr == lr


def test_gated_first_layer_input_rows_start_wide_and_the_rest_as_pytorch(tmp_path, small_corpus):
    """Wx0 ~ U(-2, 2) (a one-hot input's embedding) for the gated cells; other weights within
    1/sqrt(H); every bias 0, the LSTM's forget gate's too; recurrent blocks orthogonal."""
    from charrnn.engine.model import EMBED_INIT

    H = 64
    p = run.prepare(small_corpus, tmp_path / "r", hidden=H, batch=4, seq=10, steps=1).trainer.model.params
    assert np.abs(p.Wx0).max() <= EMBED_INIT
    assert abs(p.Wx0.std() - EMBED_INIT / math.sqrt(3)) < 0.05  # std of U(-a, a): a / sqrt(3)
    k = 1 / math.sqrt(H)
    assert np.abs(p.Wx).max() <= k and np.abs(p.Wy).max() <= k
    assert abs(p.Wx.std() - k / math.sqrt(3)) < 0.1 * k
    np.testing.assert_array_equal(p.b, 0.0)
    np.testing.assert_array_equal(p.by, 0.0)
    for l in range(2):
        for g in range(4):
            q = p.Wh[l, :, g * H : (g + 1) * H].astype(np.float64)
            np.testing.assert_allclose(q.T @ q, np.eye(H), atol=1e-5)
    gru = run.prepare(
        small_corpus, tmp_path / "g", hidden=H, batch=4, seq=10, steps=1, cell="gru"
    ).trainer.model.params
    rnn = run.prepare(
        small_corpus, tmp_path / "v", hidden=H, batch=4, seq=10, steps=1, cell="rnn"
    ).trainer.model.params
    assert abs(gru.Wx0.std() - EMBED_INIT / math.sqrt(3)) < 0.05
    assert np.abs(rnn.Wx0).max() <= k  # wide rows would saturate a vanilla RNN's tanh


def test_the_events_are_typed_and_read_as_the_rows_they_write():
    """A callback hears TrainEvent, EvalEvent and FullEvent objects; each reads as a mapping
    with the keys metrics.jsonl writes for it (grad_norms only when asked for)."""
    from charrnn.training.events import EvalEvent, FullEvent, TrainEvent

    row = TrainEvent(
        step=3, epoch=0.5, elapsed=1.0, chars=300, train_loss=2.0, lr=1e-3, chars_per_sec=10.0, eta=None
    )
    assert list(row)[:2] == ["kind", "step"] and row["kind"] == "train" and row["eta"] is None
    ev = EvalEvent(**{k: v for k, v in row.items() if k != "kind"}, val_loss=1.5, best=True)
    assert ev["kind"] == "eval" and ev.get("best") and "grad_norms" not in ev
    assert "val_loss" in ev and "val_loss" not in row  # how the progress line tells them apart
    assert "grad_norms" in EvalEvent(**dict(ev.items(), kind="eval", grad_norms=[1.0]))
    full = FullEvent(
        step=3,
        elapsed=None,
        chars=None,
        val_loss_full=1.4,
        val_chars_full=10,
        val_chars=5,
        best_val=1.5,
        all=True,
        eval_seconds=0.1,
    )
    assert dict(full)["kind"] == "full" and len(full) == len(dict(full))
