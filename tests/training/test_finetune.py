"""Fine-tuning onto a text with characters the model lacks grows its vocabulary: the old
characters' weights carry over exactly, the new ones start as a fresh model's, and characters
the new text lacks are kept."""

import json

import numpy as np
from typer.testing import CliRunner

import charrnn
from charrnn import checkpoint
from charrnn.training import run
from charrnn.cli import app
from charrnn.text.vocab import Vocab
from conftest import TINY, TINY_API, markov_text


def test_vocab_grown_is_the_union_with_ids_remapped():
    union, added, remap = Vocab("acd").grown(Vocab("abd"))
    assert union == "abcd" and added == "b"
    assert list(remap) == [0, 1, 3]  # a b d of "abd" in "abcd"
    union, added, remap = Vocab(b"\x00\x02").grown(Vocab(b"\x01\x02"))
    assert union == b"\x00\x01\x02" and added == b"\x01" and list(remap) == [1, 2]


def test_init_from_grows_the_vocabulary_and_keeps_the_old_weights(tmp_path):
    a_text, _ = markov_text("abcd \n", 5000, seed=1)
    b_text, _ = markov_text("cdxyz \n", 5000, seed=2)  # adds x y z; lacks a b
    (tmp_path / "a.txt").write_text(a_text)
    (tmp_path / "b.txt").write_text(b_text)
    charrnn.train(tmp_path / "a.txt", tmp_path / "A", steps=4, **TINY_API)
    base = charrnn.load(tmp_path / "A" / checkpoint.LATEST)
    prepared = run.prepare(
        tmp_path / "b.txt", tmp_path / "B", init_from=tmp_path / "A", steps=1, batch=8, seq=16
    )
    assert "3 characters the --init-from model lacks" in prepared.notice
    assert "'xyz'" in prepared.notice
    model = prepared.trainer.model
    assert model.vocab == "\n abcdxyz" and model.config.vocab_size == 9
    old = [model.vocab.index(s) for s in base.vocab.symbols]
    new = [model.vocab.index(s) for s in "xyz"]
    p, q = model.params, base.params
    assert np.array_equal(p.Wx0[old], q.Wx0) and np.array_equal(p.Wy[:, old], q.Wy)
    assert np.array_equal(p.by[old], q.by)
    for name in ("Wx", "Wh", "b", "bh"):
        assert np.array_equal(getattr(p, name), getattr(q, name)), name
    assert np.abs(p.Wx0[new]).max() > 0.1  # drawn as a fresh model's first-layer rows (+-2)
    # the training text is encoded in the grown vocabulary
    ids = np.asarray(prepared.trainer.xs).reshape(-1)[:200]
    assert set(model.vocab.decode(ids)) <= set(b_text)
    r = CliRunner().invoke(
        app,
        [
            "train",
            str(tmp_path / "b.txt"),
            "-o",
            str(tmp_path / "B2"),
            "--init-from",
            str(tmp_path / "A"),
            "--steps",
            "2",
            "--batch",
            "8",
            "--seq",
            "16",
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert "added to its vocabulary (now 9)" in r.stderr
    r = CliRunner().invoke(app, ["info", str(tmp_path / "B2")])  # issue 38: info names the base
    assert r.exit_code == 0 and f"starting from {tmp_path / 'A'}:" in r.stdout, r.stdout
    r = CliRunner().invoke(app, ["info", str(tmp_path / "B2"), "--json"])
    assert json.loads(r.stdout)["init_from"] == str(tmp_path / "A")
    grown = charrnn.load(tmp_path / "B2")
    assert grown.vocab == "\n abcdxyz"
    assert set(grown.sample(300, seed=1, temp=1.5)) <= set(grown.vocab.symbols)


def test_a_capped_vocabulary_still_reads_new_characters_as_unknown(tmp_path):
    a_text, _ = markov_text("abcdef", 5000, seed=1)
    (tmp_path / "a.txt").write_text(a_text)
    (tmp_path / "b.txt").write_text(markov_text("abxy", 5000, seed=2)[0])
    charrnn.train(tmp_path / "a.txt", tmp_path / "A", steps=2, max_vocab=4, **TINY_API)
    prepared = run.prepare(
        tmp_path / "b.txt", tmp_path / "B", init_from=tmp_path / "A", steps=1, batch=8, seq=16
    )
    assert prepared.trainer.model.vocab == charrnn.load(tmp_path / "A").vocab
    assert prepared.unknown_notice is not None


def test_cli_tiny_shapes_still_refused_on_init_from(tmp_path, corpus_file):
    """The model's shape comes from --init-from; growing the vocabulary changes only V."""
    charrnn.train(corpus_file, tmp_path / "A", steps=2, **TINY_API)
    r = CliRunner().invoke(
        app,
        [
            "train",
            str(corpus_file),
            "-o",
            str(tmp_path / "B"),
            "--init-from",
            str(tmp_path / "A"),
            "--steps",
            "1",
            *TINY[:2],
            "--hidden",
            "32",
        ],
    )
    assert r.exit_code != 0 and "hidden" in r.stderr
