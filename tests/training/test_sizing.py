"""Sizing from the budget (training/sizing.py): the choice, from injected rates, reproduces the
presets at the rates they were measured at and grows the regularisation where the budget buys
many passes; --auto-size applies it and says why."""

import numpy as np
import pytest

from charrnn import config
from charrnn.training import run, sizing
from test_train import small_corpus  # noqa: F401  (a fixture)

TS_TRAIN = 1_003_854  # Tiny Shakespeare's training characters (90%)
# batch-16 rates on the Zen 4 kind, docs/choosing-defaults.md (384's from the work per character)
MEASURED = {256: 28.7e3, 384: 14.5e3, 512: 8.0e3, 640: 5.6e3}
SLOW = {H: 0.6 * r for H, r in MEASURED.items()}  # about the Zen 3 kind's


@pytest.mark.parametrize(
    "minutes, rates, expect",
    [
        (15, MEASURED, (640, 0.3, 0.1, 0.1)),  # the preset, measured best
        (10, MEASURED, (512, 0.2, 0.0, 0.0)),
        (5, MEASURED, (384, 0.1, 0.0, 0.0)),
        (3, MEASURED, (256, 0.0, 0.0, 0.0)),  # the 2 x 384 lost at equal time (1.4769 against 1.4699)
        (15, SLOW, (512, 0.2, 0.0, 0.0)),  # a slower machine: the earlier 15-minute preset
        (1, MEASURED, (256, 0.0, 0.0, 0.0)),  # the smallest size whatever the budget buys
    ],
)
def test_the_choice_reproduces_the_measured_presets(minutes, rates, expect):
    c = sizing.choose(minutes, TS_TRAIN, rates.get)
    assert (c.hidden, c.dropout, c.weight_drop, c.weight_decay) == expect
    assert expect == config.budget_preset(minutes) or rates is SLOW or minutes < 3  # the presets agree
    assert c.chars == pytest.approx(rates[c.hidden] * 60 * minutes * sizing.TRAIN_SHARE)


STDLIB_TRAIN = 3_596_864  # the default corpus's training characters here (python-stdlib, 102 symbols)


def test_a_larger_corpus_gets_a_smaller_model_and_no_regularisers():
    """Read fewer than MANY_PASSES times, a size needs CHARS_PER_PARAM[0] per parameter: on the
    standard-library corpus at 15 minutes' work the 2 x 512 (2.2 per parameter, 2.1 passes,
    1.1574) beat the 2 x 640 (0.9, 1.1736) and the 2 x 384 (6.7, 1.1793), unregularised."""
    std = sizing.choose(15, STDLIB_TRAIN, MEASURED.get, vocab_size=102)
    assert (std.hidden, std.dropout, std.weight_drop) == (512, 0.0, 0.0) and std.passes < sizing.MANY_PASSES
    big = sizing.choose(15, 100 * TS_TRAIN, MEASURED.get)
    assert (big.hidden, big.dropout, big.weight_drop) == (512, 0.0, 0.0) and big.passes < 0.1
    assert sizing.choose(60, 100 * TS_TRAIN, MEASURED.get)[:4] == (640, 0.0, 0.0, 0.0)
    small = sizing.choose(10, TS_TRAIN // 4, MEASURED.get)
    assert small[:4] == (512, 0.3, 0.1, 0.1) and small.exposure > 20


@pytest.mark.parametrize("scale", [0.9, 1.1])
def test_the_tiny_shakespeare_choices_hold_within_ten_percent_of_the_rate(scale):
    """A measured rate 10% off either way (five quiet measurements spread 7%) changes none."""
    rates = {H: scale * r for H, r in MEASURED.items()}
    for minutes, expect in ((3, 256), (5, 384), (10, 512), (15, 640)):
        assert sizing.choose(minutes, TS_TRAIN, rates.get).hidden == expect


def test_rates_scale_by_the_work_per_character():
    rate_of = sizing.scaled_rates(15e3, 384, "lstm", 2, 65)
    assert rate_of(384) == 15e3
    work = {H: sizing.work_per_char("lstm", 2, H, 65) for H in (256, 384, 512)}
    for H in (256, 512):
        assert rate_of(H) == pytest.approx(15e3 * work[384] / work[H])
    assert rate_of(256) > 2 * rate_of(384) > 3 * rate_of(512)
    w = sizing.work_per_char("lstm", 2, 256, 65)
    assert w == 2 * 256 * 1024 + 256 * 1024 + 2 * 1024 + 256 * 65 + 65  # Wh, Wx, b, Wy, by


def test_measure_counts_characters_per_second():
    rate = sizing.measure("lstm", 1, 16, 7, 4, 8, np.float64, seconds=0.05)
    assert rate.chars_per_sec > 0 and rate.busy in (True, False) and rate.weight_drop_seconds > 0


def test_the_weight_drop_masks_slow_the_rate_said_only_where_they_are_drawn():
    """The choice is made on the rate without the masks (as calibrated); what it says of a size
    that takes weight drop is the slower rate: a step of 1,600 characters at 12.4k chars/s that
    draws 6 ms of masks trains 11.85k, and the characters, passes and exposure follow."""
    rate_of = MEASURED.get
    dropped = sizing.weight_dropped_rates(rate_of, 0.006, 640, 1600, "lstm", 2, 65)
    assert dropped(640) == pytest.approx(1600 / (1600 / MEASURED[640] + 0.006))
    wh = {H: 2 * H * 4 * H for H in (512, 640)}  # the masks scale with the recurrent weights
    assert dropped(512) == pytest.approx(1600 / (1600 / MEASURED[512] + 0.006 * wh[512] / wh[640]))
    plain = sizing.choose(15, TS_TRAIN, rate_of)
    told = sizing.choose(15, TS_TRAIN, rate_of, weight_dropped=dropped)
    assert told[:5] == plain[:5] and told.weight_drop > 0  # the same model and regularisers
    assert told.chars_per_sec == pytest.approx(dropped(640)) and told.chars_per_sec < plain.chars_per_sec
    assert told.chars / plain.chars == pytest.approx(told.exposure / plain.exposure)
    assert told.passes == pytest.approx(told.chars / TS_TRAIN)
    small = sizing.choose(3, TS_TRAIN, rate_of, weight_dropped=dropped)  # no weight drop: as it was
    assert small.weight_drop == 0 and small == sizing.choose(3, TS_TRAIN, rate_of)


def test_measure_times_the_whole_step_the_trainer_takes(monkeypatch):
    """Each measured window draws its dropout masks and takes Adam's step, and leaves the weights
    as they were (a rate of 0): the rate sizes the run by the steps it will take. At 2 x 384 with
    bf16 products the window alone measured 38.6-38.7k chars/s, the whole step 31.3-33.6k, and
    the trainer's steps ran at 31.0-33.5k."""
    from charrnn.engine.model import Model
    from charrnn.engine.optim import Adam

    calls = {"window": [], "adam": [], "flat": []}
    window, step = Model.loss_and_grad, Adam.step
    monkeypatch.setattr(
        Model, "loss_and_grad", lambda self, *a, **k: calls["window"].append(a[5]) or window(self, *a, **k)
    )

    def adam_step(self, w, g, lr=None):
        calls["adam"].append(lr)
        calls["flat"].append(w.copy())
        return step(self, w, g, lr)

    monkeypatch.setattr(Adam, "step", adam_step)
    sizing.measure("lstm", 2, 16, 7, 4, 8, np.float64, seconds=0.05, tries=1)
    masks = calls["window"]
    assert len(masks) == len(calls["adam"]) >= 3 and set(calls["adam"]) == {0.0}
    assert all(m.shape == (2, 8, 4, 16) for m in masks)  # (L, T, B, H), a fresh draw each
    assert not np.array_equal(masks[0], masks[1])
    kept = np.concatenate([m.ravel() for m in masks])
    assert set(np.unique(kept)) == {0.0, 1 / (1 - sizing.MEASURE_DROPOUT)}
    assert abs((kept == 0).mean() - sizing.MEASURE_DROPOUT) < 0.05  # 3 x 1,024 draws
    assert all(np.array_equal(f, calls["flat"][0]) for f in calls["flat"])


@pytest.mark.parametrize(
    "shares, calls, expect",
    [
        ([(6.1e3, 0.97)], 1, (6.1e3, False)),  # quiet: one measurement
        ([(5.6e3, 0.6), (6.1e3, 0.95)], 2, (6.1e3, False)),  # a passing load: measured again
        ([(5.0e3, 0.5), (5.4e3, 0.7), (5.2e3, 0.6)], 3, (5.4e3, True)),  # a lasting one: as it is
        ([(6.0e3, 0.7), (5.0e3, 0.9)], 2, (6.0e3, False)),  # the fastest, though busy
    ],
)
def test_best_of_measures_again_only_while_the_cores_are_busy(shares, calls, expect):
    made = iter(shares)
    seen = []
    rate = sizing.best_of(lambda: seen.append(1) or next(made), tries=3, enough=0.8)
    assert (len(seen), tuple(rate)[:2]) == (calls, expect)


def test_a_busy_measurement_is_said(tmp_path, small_corpus, monkeypatch):  # noqa: F811
    monkeypatch.setattr(sizing, "measure", lambda *a, **k: sizing.Rate(9e3, True))
    p = run.prepare(small_corpus, tmp_path / "r", batch=4, seq=10, minutes=10)
    assert "scaled from a measured 384 units, beside other work)" in p.notice


def test_auto_size_applies_the_choice_and_says_why(tmp_path, small_corpus, monkeypatch):  # noqa: F811
    monkeypatch.setattr(sizing, "measure", lambda *a, **k: sizing.Rate(9e3, False))  # no timing in tests
    p = run.prepare(small_corpus, tmp_path / "r", batch=4, seq=10, minutes=10, auto_size=True)
    cfg = p.trainer.model.config
    assert (cfg.hidden, cfg.dropout, p.trainer.cfg.weight_drop) == (512, 0.3, 0.1)  # 450 characters
    assert p.trainer.cfg.lr == 3e-3 and p.trainer.cfg.weight_decay == 0.1  # larger than 384
    assert (
        "sized from the budget: 2 x 512, dropout 0.3, weight drop 0.1, weight decay 0.1, lr 0.003" in p.notice
    )
    p = run.prepare(
        small_corpus,
        tmp_path / "s",
        batch=4,
        seq=10,
        minutes=10,
        dropout=0.1,
        weight_drop=0.0,
        weight_decay=0.01,
        auto_size=True,
    )
    assert p.trainer.model.config.dropout == 0.1 and p.trainer.cfg.weight_drop == 0.0  # given, they stay
    assert p.trainer.cfg.weight_decay == 0.01
    p = run.prepare(small_corpus, tmp_path / "t", batch=4, seq=10, minutes=15, auto_size=False)
    assert (p.trainer.model.config.hidden, p.trainer.model.config.dropout) == (640, 0.3)  # the preset
    assert not p.notice


def test_auto_size_is_the_default_and_the_rate_follows_the_chosen_size(tmp_path, small_corpus, monkeypatch):  # noqa: F811
    """`charrnn train --minutes M` without --hidden measures and sizes (--no-auto-size takes
    the preset); the chosen 2 x 256 gets the small model's rate, unless --lr is given."""
    from typer.testing import CliRunner
    from charrnn.cli import app

    calls = []
    slow = sizing.Rate(50.0, False)  # a slow machine
    monkeypatch.setattr(sizing, "measure", lambda *a, **k: calls.append(a) or slow)
    p = run.prepare(small_corpus, tmp_path / "r", batch=4, seq=10, minutes=10)
    assert len(calls) == 1 and p.trainer.model.config.hidden == 256 and p.trainer.cfg.lr == 4e-3
    assert (
        "sized from the budget: 2 x 256, dropout 0.3, weight drop 0.1, weight decay 0.1, lr 0.004" in p.notice
    )
    p = run.prepare(small_corpus, tmp_path / "s", batch=4, seq=10, minutes=10, lr=2e-3)
    assert p.trainer.model.config.hidden == 256 and p.trainer.cfg.lr == 2e-3
    args = ["train", str(small_corpus), "--force", "--minutes", "0.02", "--batch", "4", "--seq", "10"]
    for flag, said in (("--auto-size", True), ("--no-auto-size", False)):
        r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / flag), flag])
        assert r.exit_code == 0, r.stderr
        assert ("sized from the budget" in r.stderr) == said
    r = CliRunner().invoke(app, [*args[:3], "--steps", "1", *args[5:], "-o", str(tmp_path / "n")])
    assert r.exit_code == 0 and "sized from the budget" not in r.stderr  # no --minutes, no measuring


@pytest.mark.parametrize(
    "given, every",
    [
        ({}, 800),  # the default 16 x 100
        ({"batch": 64}, 200),  # the old default's spacing, in characters
        ({"batch": 64, "seq": 50}, 400),
        ({"batch": 5, "seq": 7}, round(config.EVAL_EVERY_CHARS / 35)),
        ({"batch": 64, "eval_every": 7}, 7),  # given in steps, it stays
    ],
)
def test_evaluations_come_every_so_many_characters_unless_given_in_steps(given, every):
    _, cfg = config.resolve(dict(given, minutes=15))
    assert cfg.eval_every == every
    if "eval_every" not in given:
        assert abs(cfg.eval_every * cfg.batch * cfg.seq - config.EVAL_EVERY_CHARS) <= cfg.batch * cfg.seq / 2


def test_the_default_batch_is_sixteen_streams():
    _, cfg = config.resolve({"minutes": 15})
    assert (cfg.batch, cfg.seq, cfg.eval_every) == (16, 100, 800)
    assert config.TrainConfig().eval_every == 800  # the dataclass agrees with resolve
