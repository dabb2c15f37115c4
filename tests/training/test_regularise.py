"""The regularisers of training/regularise.py: variational dropout masks, DropConnect on the
recurrent weights and embedding-row dropout against the naive reference and finite differences
in float64, their reduction to today's step at rate 0, and the averaged weights (--ema) through
evaluation, checkpoints and exact resume."""

import json

import numpy as np
import pytest

from charrnn import checkpoint
from charrnn.config import TrainConfig
from charrnn.errors import UsageError
from charrnn.engine import bgemm, kernels
from charrnn.engine.model import Model, ModelConfig
from charrnn.training import run
from charrnn.training.regularise import Average, masked, weight_masks, window_masks
from reference import (
    CELLS,
    assert_grad,
    numeric_grad,
    numeric_grad_at,
    reference_forward,
    reference_loss,
    tiny,
    window,
)
from test_train import RESUME_OPTS, small_corpus, train  # noqa: F401  (a fixture)


def loss_of(m, x, y, h0, c0, masks=None):
    w = m.forward(x, h0, c0, masks)
    return kernels.xent(w.P, y.reshape(-1), False, 0) / y.size


# ------------------------------------------------------------------------- variational dropout


def test_variational_masks_are_one_draw_for_all_steps():
    rng = np.random.default_rng(3)
    M = window_masks(rng, "variational", 0.4, 2, 6, 3, 5, np.float64)
    assert M.shape == (2, 6, 3, 5)
    for t in range(6):
        np.testing.assert_array_equal(M[:, t], M[:, 0])
    assert set(np.unique(M)) == {0.0, 1 / 0.6}
    S = window_masks(rng, "standard", 0.4, 2, 6, 3, 5, np.float64)
    assert not all(np.array_equal(S[:, t], S[:, 0]) for t in range(6))
    assert window_masks(rng, "variational", 0.0, 2, 6, 3, 5, np.float64) is None


@pytest.mark.parametrize("cell", CELLS)
def test_variational_dropout_matches_the_reference_and_finite_differences(cell):
    m, rng = tiny(cell, dropout=0.4)
    x, y, h0, c0 = window(rng)
    masks = window_masks(rng, "variational", 0.4, 2, 6, 3, 5, np.float64)
    logits, _, _ = reference_forward(cell, m.params, x, h0, c0, masks)
    assert abs(loss_of(m, x, y, h0, c0, masks) - reference_loss(logits, y.reshape(-1))) < 1e-10
    _, grads = m.zeros_like_params()
    m.loss_and_grad(x, y, h0, c0, grads, masks)
    for name, g in zip(grads._fields, grads):
        if g.size:
            num = numeric_grad(lambda: loss_of(m, x, y, h0, c0, masks), getattr(m.params, name))
            assert_grad(g, num, name)


# --------------------------------------------------------------- weight drop and embed drop


def reference_masked_loss(cell, params, masks, x, y, h0, c0):
    """The naive reference's loss with the weights named in masks multiplied by their masks."""
    p = params._replace(**{k: getattr(params, k) * v for k, v in masks.items()})
    logits, _, _ = reference_forward(cell, p, x, h0, c0)
    return reference_loss(logits, y.reshape(-1))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("weight_drop, embed_drop, H", [(0.4, 0.0, 5), (0.0, 0.4, 5), (0.3, 0.3, 16)])
def test_masked_weights_match_the_reference_and_finite_differences(cell, weight_drop, embed_drop, H):
    """As the trainer applies them (Wh's mask through Model.loss_and_grad, Wx0's inside
    masked()) the kernels see w * mask; the gradient left in grads is the raw weights' (finite
    differences of the reference's loss at fixed masks), and the raw weights come back bit for
    bit. H = 16 takes the packed recurrent product, which must be packed from the masked
    weights."""
    m, rng = tiny(cell, H=H)
    x, y, h0, c0 = window(rng, H=H)
    masks = weight_masks(rng, m.params, weight_drop, embed_drop, np.float64)
    assert set(masks) == {k for k, p in (("Wh", weight_drop), ("Wx0", embed_drop)) if p}
    if "Wx0" in masks:  # whole rows: a character is dropped or kept, all its gates alike
        assert masks["Wx0"].shape == (7, 1)
    raw = m.flat.copy()
    _, grads = m.zeros_like_params()
    with masked(m.params, grads, {k: v for k, v in masks.items() if k != "Wh"}):
        loss, _ = m.loss_and_grad(x, y, h0, c0, grads, weight_mask=masks.get("Wh"))
    np.testing.assert_array_equal(m.flat, raw)
    assert abs(loss - reference_masked_loss(cell, m.params, masks, x, y, h0, c0)) < 1e-10

    def f():
        return reference_masked_loss(cell, m.params, masks, x, y, h0, c0)

    for name, g in zip(grads._fields, grads):
        if g.size and H < 16:
            assert_grad(g, numeric_grad(f, getattr(m.params, name)), name)
        elif g.size:  # at 16, 150 elements of each: quicker
            at = rng.choice(g.size, min(g.size, 150), replace=False)
            assert_grad(g.reshape(-1)[at], numeric_grad_at(f, getattr(m.params, name), at), name)
    if "Wx0" in masks:  # a dropped character's row gets no gradient
        dropped = masks["Wx0"][:, 0] == 0
        assert np.all(grads.Wx0[dropped] == 0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("drawn_into", ["the model's buffer", "an array of its own"])
def test_the_model_drops_weights_as_masked_does_bit_for_bit(precision, drawn_into):
    """Model.loss_and_grad's weight_mask (with bf16 products Wh packed times the mask, the
    weights left alone; in float32 multiplied in and restored) gives what masked() around the
    window gives: the same loss, gradient and state, bit for bit, the weights unchanged."""
    if precision == "bf16" and not bgemm.available():
        pytest.skip("this CPU has no AVX512-BF16")
    got = []
    for route in ("masked", "model"):
        m = Model(ModelConfig("lstm", 2, 64, 11)).init_weights(np.random.default_rng(0))
        raw = m.flat.copy()
        rng = np.random.default_rng(1)
        x = rng.integers(0, 11, (12, 16)).astype(np.int32)
        h, c = m.zero_state(16)
        out = m.weight_mask() if route == "model" and drawn_into == "the model's buffer" else None
        masks = weight_masks(rng, m.params, 0.3, 0.0, m.dtype, out)
        flat, grads = m.zeros_like_params()
        if route == "masked":
            with masked(m.params, grads, masks):
                loss, (hT, _) = m.loss_and_grad(x, x, h, c, grads, precision=precision)
        else:
            loss, (hT, _) = m.loss_and_grad(x, x, h, c, grads, precision=precision, weight_mask=masks["Wh"])
        np.testing.assert_array_equal(m.flat, raw)
        got.append((loss, flat, hT))
    assert got[0][0] == got[1][0]
    np.testing.assert_array_equal(got[0][1], got[1][1])
    np.testing.assert_array_equal(got[0][2], got[1][2])
    assert np.count_nonzero(grads.Wh) > 0.5 * grads.Wh.size  # 70% kept: a gradient for each


@pytest.mark.parametrize("cell", CELLS)
def test_rate_zero_draws_nothing_and_a_mask_of_ones_is_todays_step(cell):
    m, rng = tiny(cell, H=16)
    x, y, h0, c0 = window(rng, H=16)
    state = rng.bit_generator.state
    assert weight_masks(rng, m.params, 0.0, 0.0, np.float64) == {}
    assert rng.bit_generator.state == state  # the dropout masks after it are unchanged too
    _, plain = m.zeros_like_params()
    l0, (h_a, _) = m.loss_and_grad(x, y, h0, c0, plain)
    ones = {"Wh": np.ones_like(m.params.Wh), "Wx0": np.ones((7, 1))}
    _, through = m.zeros_like_params()
    with masked(m.params, through, ones):
        l1, (h_b, _) = m.loss_and_grad(x, y, h0, c0, through)
    assert l0 == l1
    np.testing.assert_array_equal(h_a, h_b)
    for a, b in zip(plain, through):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------ averages


def test_the_average_follows_its_formula_and_swaps_back_exactly():
    m, rng = tiny("lstm")
    avg = Average(m.flat, 0.9)
    ref = m.flat.copy()
    for step in range(1, 30):
        m.flat[:] = rng.standard_normal(m.flat.size)
        avg.update(m.flat, step)
        d = min(0.9, (1 + step) / (10 + step))
        ref = d * ref + (1 - d) * m.flat
    np.testing.assert_allclose(avg.flat, ref, rtol=1e-12)
    own = m.flat.copy()
    with avg.swapped_into(m) as inside:
        np.testing.assert_array_equal(inside.flat, avg.flat)
    np.testing.assert_array_equal(m.flat, own)


REG_OPTS = dict(RESUME_OPTS, dropout_mode="variational", weight_drop=0.3, embed_drop=0.2, ema=0.9)


def test_averaged_weights_are_evaluated_and_saved(tmp_path, small_corpus):  # noqa: F811
    events = []
    t = train(small_corpus, tmp_path / "r", callback=events.append, steps=10, **REG_OPTS)
    evals = [e for e in events if e["kind"] == "eval"]
    assert evals and all(e["weights"] == "averaged" for e in evals)
    assert not np.array_equal(t.average.flat, t.model.flat)
    meta, params, tr = checkpoint.load(tmp_path / "r" / checkpoint.LATEST)
    flat = np.concatenate([params[k].reshape(-1) for k in checkpoint.PARAM_NAMES])
    np.testing.assert_array_equal(flat, t.average.flat)  # the file holds the average ...
    np.testing.assert_array_equal(tr["weights"], t.model.flat)  # ... and the trained weights
    with t.average.swapped_into(t.model):  # the reported number is the average's
        expect = t.sample.score(t.model, t.val_ids).nats
    assert t.history[-1].val_loss == expect
    assert t.validate() == expect and t.validate() != t.sample.score(t.model, t.val_ids).nats
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").open()]
    assert any(r.get("weights") == "averaged" for r in metrics)


@pytest.mark.parametrize("stop_at", [10, 7])
def test_a_regularised_run_resumes_exactly(tmp_path, small_corpus, stop_at):  # noqa: F811
    """As test_train's resume test, with every regulariser on: the masks come from the saved
    generator and the average from the checkpoint, so the run goes on as if it never stopped."""
    N = 20
    whole = train(small_corpus, tmp_path / "whole", steps=N, **REG_OPTS)
    t1 = run.prepare(small_corpus, tmp_path / "split", steps=N, **REG_OPTS).trainer
    with run.run_directory(t1.run_dir):
        assert t1.run(should_stop=lambda: t1.step >= stop_at) == "interrupted"
    t2 = run.prepare(resume=tmp_path / "split", steps=N).trainer
    assert t2.cfg.weight_drop == 0.3 and t2.cfg.ema == 0.9
    with run.run_directory(t2.run_dir):
        assert t2.run() == "done"
    assert np.array_equal(t2.model.flat, whole.model.flat)
    assert np.array_equal(t2.average.flat, whole.average.flat)
    assert np.array_equal(t2.opt.m, whole.opt.m)
    assert t2.rng.bit_generator.state == whole.rng.bit_generator.state
    assert [h["val_loss"] for h in t2.history] == [h["val_loss"] for h in whole.history]
    _, p_whole, _ = checkpoint.load(tmp_path / "whole" / checkpoint.BEST)
    _, p_split, _ = checkpoint.load(tmp_path / "split" / checkpoint.BEST)
    for k in p_whole:
        assert np.array_equal(p_whole[k], p_split[k]), k


def test_rates_zero_train_as_before(tmp_path, small_corpus):  # noqa: F811
    """Every regulariser given at its off value: the same run, bit for bit, as without them."""
    a = train(small_corpus, tmp_path / "a", steps=6, **RESUME_OPTS)
    b = train(
        small_corpus,
        tmp_path / "b",
        steps=6,
        dropout_mode="standard",
        weight_drop=0.0,
        embed_drop=0.0,
        ema=0.0,
        **RESUME_OPTS,
    )
    assert np.array_equal(a.model.flat, b.model.flat)
    assert b.average is None


# ------------------------------------------------------------------- configuration, old files


@pytest.mark.parametrize(
    "field, value", [("weight_drop", 1.0), ("embed_drop", -0.1), ("ema", 1.0), ("dropout_mode", "locked")]
)
def test_out_of_range_values_are_usage_errors(field, value):
    with pytest.raises(UsageError, match=field.replace("_", "-")):
        TrainConfig(**{field: value}).validate()


def test_a_checkpoint_from_before_the_regularisers_loads_with_them_off(tmp_path, small_corpus):  # noqa: F811
    train(small_corpus, tmp_path / "r", steps=5, **RESUME_OPTS)
    meta, params, tr = checkpoint.load(tmp_path / "r" / checkpoint.LATEST)
    d = meta.to_json()
    for k in ("dropout_mode", "weight_drop", "embed_drop", "ema"):
        del d["train"][k]
    old = checkpoint.Meta.from_json(d)
    assert old.train == TrainConfig(**{**old.train.to_dict()})
    assert (old.train.dropout_mode, old.train.weight_drop, old.train.embed_drop, old.train.ema) == (
        "standard",
        0.0,
        0.0,
        0.0,
    )
    checkpoint.save(tmp_path / "r" / checkpoint.LATEST, old, params.values(), tr)
    t = run.prepare(resume=tmp_path / "r", steps=8).trainer
    assert t.average is None and t.step == 5


# --------------------------------------------------------------------------------- command line


def test_the_train_command_takes_the_regularisers_and_says_which_weights_it_scores(tmp_path, corpus_file):
    from conftest import TINY
    from typer.testing import CliRunner
    from charrnn.cli import app

    def invoke(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    r = invoke(
        "train",
        corpus_file,
        "-o",
        tmp_path / "r",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--dropout",
        "0.2",
        "--dropout-mode",
        "variational",
        "--weight-drop",
        "0.2",
        "--embed-drop",
        "0.1",
        "--ema",
        "0.99",
        *TINY,
    )
    assert r.exit_code == 0, r.stderr
    evals = [ln for ln in r.stderr.splitlines() if ln.startswith("step") and " val " in ln]
    assert len(evals) == 2 and all("(averaged weights)" in ln for ln in evals)
    meta = checkpoint.load_meta(tmp_path / "r" / checkpoint.BEST)
    assert (meta.train.dropout_mode, meta.train.weight_drop, meta.train.embed_drop, meta.train.ema) == (
        "variational",
        0.2,
        0.1,
        0.99,
    )
    r = invoke("info", tmp_path / "r")
    assert r.exit_code == 0 and "averaged weights (--ema 0.99)" in r.stdout
    for flag, value in (("--weight-drop", "1.5"), ("--ema", "1"), ("--dropout-mode", "x")):
        r = invoke("train", corpus_file, "-o", tmp_path / "bad", "--steps", "1", flag, value, *TINY)
        assert r.exit_code == 2 and flag in r.stderr, (flag, r.stderr)
