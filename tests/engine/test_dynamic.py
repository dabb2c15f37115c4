"""Dynamic evaluation: with no step it is the static exact reading; with steps it adapts to a
text unlike the training text (and leaves the model itself unchanged)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import charrnn
from charrnn.cli import app
from charrnn.engine.dynamic import dynamic_score
from conftest import markov_text


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dyn")
    (tmp / "a.txt").write_text(markov_text("abcde", 20000, seed=1)[0])
    charrnn.train(tmp / "a.txt", tmp / "run", steps=40, layers=1, hidden=16, batch=8, seq=32, lr=1e-2)
    return tmp / "run"


def test_no_step_is_the_static_exact_reading(trained):
    model = charrnn.load(trained, dtype=np.float64)
    text = markov_text("abcde", 1500, seed=9)[0]
    ids = model.encode(text)
    static = model.score(text, exact=True)
    assert dynamic_score(model, ids, lr=0).nats == pytest.approx(static.nats, abs=1e-10)


def test_steps_adapt_to_another_source_and_leave_the_model_as_it_was(trained):
    model = charrnn.load(trained, dtype=np.float64)
    before = model.flat.copy()
    other = markov_text("abcde", 6000, seed=77)[0]  # another chain over the same symbols
    ids = model.encode(other)
    static = dynamic_score(model, ids, lr=0).nats
    adapted = dynamic_score(model, ids, lr=0.05).nats
    assert adapted < static - 0.02, (adapted, static)
    assert np.array_equal(model.flat, before)


def test_eval_reports_the_dynamic_loss_apart(trained, tmp_path):
    (tmp_path / "b.txt").write_text(markov_text("abcde", 3000, seed=5)[0])
    r = CliRunner().invoke(app, ["eval", "-c", str(trained), str(tmp_path / "b.txt"), "--dynamic"])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and "dynamic evaluation" in lines[1] and "not the static" in lines[1]
    r = CliRunner().invoke(
        app, ["eval", "-c", str(trained), str(tmp_path / "b.txt"), "--dynamic", "--json", "--dynamic-lr", "0"]
    )
    d = json.loads(r.stdout)
    assert d["dynamic_lr"] == 0 and abs(d["dynamic_nats_per_char"] - d["nats_per_char"]) < 0.05
