"""`charrnn export --format onnx`, checked with ONNX Runtime (a runtime nobody here wrote): the
step graph's and the sequence graph's logits equal charrnn's at every step of a 500-character
text, the greedy text of the step graph driven in a Python loop is `charrnn sample --temp 0`'s,
and bad input fails in one line without leaving a file behind."""

import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from charrnn.export import onnxgraph  # noqa: E402
from conftest import markov_text  # noqa: E402
from export_helpers import (
    VOCAB,
    as_near_exact_as_charrnn,
    exact,
    charrnn_logits,
    charrnn_sample,
    cli,
    onnx_greedy,  # noqa: E402
    onnx_meta,
    onnx_session,
    onnx_steps,
    save,
    tiny_model,
)

TEXT, _ = markov_text(VOCAB, 500, seed=5)
CASES = [(cell, layers) for cell in ("lstm", "gru", "rnn", "lnlstm") for layers in (1, 3)]
WITH_C = ("lstm", "lnlstm")


@pytest.mark.parametrize("cell, layers", CASES)
def test_step_graph_logits_match_at_every_step(cell, layers):
    m = tiny_model(cell, layers)
    ids = m.encode(TEXT)
    ref = charrnn_logits(m, ids)
    got, state = onnx_steps(onnx_session(onnxgraph.to_bytes(m)), ids)
    assert got.shape == ref.shape == (500, len(VOCAB))
    assert np.abs(ref).max() > 1.0  # logits big enough for 1e-5 to mean something
    # and the final state is the one charrnn's window leaves
    h0, c0 = m.zero_state(1)
    w = m.forward(np.asarray(ids, np.int32)[:, None], h0, c0)
    if cell == "lnlstm":  # against float64, as near as charrnn's own float32 (see the helper)
        logits, h, c = exact(m, ids)
        as_near_exact_as_charrnn(got, ref, logits[:, 0])
        as_near_exact_as_charrnn(state["h"], w.Hs[:, -1], h)
        as_near_exact_as_charrnn(state["c"], w.Cs[:, -1], c)
        return
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(state["h"], w.Hs[:, -1], rtol=0, atol=1e-5)
    if cell == "lstm":
        np.testing.assert_allclose(state["c"], w.Cs[:, -1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell, layers", CASES)
def test_sequence_graph_with_onnx_recurrent_operators(cell, layers):
    """The scoring graph uses ONNX's own LSTM/GRU/RNN (their gate orders differ from charrnn's),
    and for the lnlstm a Scan over its step; two streams side by side, the second from a
    carried nonzero state."""
    m = tiny_model(cell, layers)
    ids = np.asarray(m.encode(TEXT), np.int64)
    s = onnx_session(onnxgraph.to_bytes(m, sequence=True))
    L, H = layers, m.config.hidden
    rng = np.random.default_rng(3)
    h0 = np.zeros((L, 2, H), np.float32)
    c0 = np.zeros((L, 2, H), np.float32)
    h0[:, 1] = rng.uniform(-0.5, 0.5, (L, H))
    c0[:, 1] = rng.uniform(-0.5, 0.5, (L, H))
    feed = {"ids": np.stack([ids, ids[::-1]], axis=1), "h": h0}
    if cell in WITH_C:
        feed["c"] = c0
    logits, h_out, *rest = s.run(None, feed)
    first = charrnn_logits(m, ids)
    w = m.forward(np.ascontiguousarray(ids[::-1, None], np.int32), h0[:, 1:].copy(), c0[:, 1:].copy())
    if cell == "lnlstm":  # against float64, as near as charrnn's own float32 (see the helper)
        want, h, c = exact(m, np.stack([ids, ids[::-1]], axis=1), h0, c0)
        as_near_exact_as_charrnn(logits[:, 0], first, want[:, 0])
        as_near_exact_as_charrnn(logits[:, 1], w.P, want[:, 1])
        as_near_exact_as_charrnn(h_out[:, 1], w.Hs[:, -1, 0], h[:, 1])
        as_near_exact_as_charrnn(rest[0][:, 1], w.Cs[:, -1, 0], c[:, 1])
        return
    np.testing.assert_allclose(logits[:, 0], first, rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits[:, 1], w.P, rtol=0, atol=1e-5)
    np.testing.assert_allclose(h_out[:, 1], w.Hs[:, -1, 0], rtol=0, atol=1e-5)
    if cell == "lstm":
        np.testing.assert_allclose(rest[0][:, 1], w.Cs[:, -1, 0], rtol=0, atol=1e-5)


def test_step_graph_steps_several_rows_at_once():
    m = tiny_model("lstm", 2, 16)
    s = onnx_session(onnxgraph.to_bytes(m))
    rows = [m.encode("the cat"), m.encode("a dog i")]
    h = c = np.zeros((2, 2, 16), np.float32)
    for t in range(7):
        logits, h, c = s.run(None, {"id": np.array([r[t] for r in rows], np.int64), "h": h, "c": c})
    for k, r in enumerate(rows):
        np.testing.assert_allclose(logits[k], charrnn_logits(m, r)[-1], rtol=0, atol=1e-5)


def test_metadata_describes_the_model():
    m = tiny_model("gru", 2, 16)
    meta = onnx_meta(onnx_session(onnxgraph.to_bytes(m)))
    assert meta["vocab"] == list(VOCAB) and meta["vocab_size"] == len(VOCAB)
    assert (meta["cell"], meta["layers"], meta["hidden"]) == ("gru", 2, 16)
    assert meta["byte_level"] is False and meta["start_id"] == VOCAB.index("\n")
    assert meta["inputs"] == ["id", "h"] and meta["outputs"] == ["logits", "h_out"]
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", meta["charrnn_version"])


@pytest.mark.parametrize("cell, layers", [("lstm", 2), ("gru", 1), ("rnn", 3), ("lnlstm", 2)])
def test_greedy_text_equals_charrnn_sample(tmp_path, cell, layers):
    m = tiny_model(cell, layers, seed=7)
    ckpt = save(m, tmp_path / "m.npz")
    out = tmp_path / "m.onnx"
    assert cli("export", "-c", ckpt, "--format", "onnx", "-o", out).returncode == 0
    prime = "the cat "
    ids = onnx_greedy(onnx_session(out.read_bytes()), m.encode(prime), 300)
    mine = prime + "".join(VOCAB[i] for i in ids)
    assert charrnn_sample(ckpt, prime, 300).decode() == mine
    assert len(set(mine[len(prime) :])) > 3  # not one character over and over


def test_byte_level_model_exports_its_256_bytes(tmp_path):
    vocab = bytes(range(256))
    m = tiny_model("lstm", 2, 16, vocab=vocab, seed=2)
    ckpt = save(m, tmp_path / "b.npz")
    out = tmp_path / "b.onnx"
    assert cli("export", "-c", ckpt, "-o", out).returncode == 0
    s = onnx_session(out.read_bytes())
    meta = onnx_meta(s)
    assert meta["byte_level"] is True and meta["vocab"] == list(range(256))
    prime = "héllo "
    ids = onnx_greedy(s, m.encode(prime), 120)
    assert charrnn_sample(ckpt, prime, 120) == prime.encode() + bytes(vocab[i] for i in ids)


@pytest.mark.parametrize("doc", ["docs/export.md", "README.md"])
def test_docs_example_samples_as_charrnn_does(tmp_path, capsys, doc):
    """The ONNX Runtime example of the docs, run as written on an exported model."""
    text = (Path(__file__).resolve().parents[2] / doc).read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "onnxruntime" in c)
    m = tiny_model("lstm", 2, seed=11)
    ckpt = save(m, tmp_path / "m.npz")
    assert cli("export", "-c", ckpt, "-o", tmp_path / "model.onnx").returncode == 0
    assert 'session = ort.InferenceSession("model.onnx")' in code and '"ROMEO:"' in code
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code.replace('"ROMEO:"', '"the "'), doc, "exec"), {})
    finally:
        os.chdir(here)
    n = int(re.search(r"range\((\d+)\)", code).group(1))
    assert capsys.readouterr().out == charrnn_sample(ckpt, "the ", n).decode() + "\n"


def test_sequence_option_writes_the_scoring_graph(tmp_path):
    ckpt = save(tiny_model("gru", 2, 8), tmp_path / "m.npz")
    out = tmp_path / "score.onnx"
    assert cli("export", "-c", ckpt, "--sequence", "-o", out).returncode == 0
    s = onnx_session(out.read_bytes())
    assert [i.name for i in s.get_inputs()] == ["ids", "h"] and onnx_meta(s)["graph"] == "sequence"


# -- bad input ---------------------------------------------------------------------------------


def _one_line_error(done, code):
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), done.stderr
    return lines[0]


def test_bad_input_fails_in_one_line(tmp_path):
    ckpt = save(tiny_model("rnn", 1, 8), tmp_path / "m.npz")
    assert "unknown export format 'pdf'" in _one_line_error(
        cli("export", "-c", ckpt, "--format", "pdf", "-o", tmp_path / "x"), 2
    )
    assert "no such checkpoint" in _one_line_error(
        cli("export", "-c", tmp_path / "none.npz", "-o", tmp_path / "x.onnx"), 1
    )
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(ckpt.read_bytes()[:500])
    assert "corrupt" in _one_line_error(cli("export", "-c", corrupt, "-o", tmp_path / "x.onnx"), 1)
    assert "is a directory" in _one_line_error(cli("export", "-c", ckpt, "-o", tmp_path), 1)
    assert "no directory" in _one_line_error(cli("export", "-c", ckpt, "-o", tmp_path / "no" / "x.onnx"), 1)
    assert "fp16 is for --format html" in _one_line_error(
        cli("export", "-c", ckpt, "--precision", "fp16", "-o", tmp_path / "x.onnx"), 2
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.npz", "m.npz"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from charrnn import export
    from charrnn.errors import CharrnnError

    m = tiny_model("lstm", 1, 8)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(CharrnnError, match="cannot write .*No space left on device"):
        export.write(m, "onnx", out)
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    monkeypatch.undo()
    export.write(m, "onnx", out)
    assert onnx_meta(onnx_session(out.read_bytes()))["vocab"] == list(VOCAB)


def test_metadata_keeps_any_symbol():
    vocab = "".join(sorted("\n <>/&\"'\\abc\u00e9\U0001d11e\u2028\udc80"))  # a lone surrogate too
    m = tiny_model("rnn", 1, 8, vocab=vocab)
    assert "".join(onnx_meta(onnx_session(onnxgraph.to_bytes(m)))["vocab"]) == vocab
