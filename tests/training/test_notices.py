"""What a training says about its text before it starts (training/notices.py): how much of it a
capped vocabulary reads as its unknown symbol, and what a very large alphabet costs, with the
figures of the model the --max-vocab it suggests would build."""

import pytest

from conftest import TINY, TINY_API, invoke, markov_text, zipf_cjk


def test_training_says_when_its_text_is_mostly_unknown(tmp_path):
    from charrnn.training import run

    text, _ = markov_text("abcdefgh", 6000, seed=2)
    (tmp_path / "c.txt").write_text(text)
    prepared = run.prepare(tmp_path / "c.txt", tmp_path / "r", max_vocab=3, steps=1, **TINY_API)
    assert "validation text" in prepared.unknown_notice and "flatters" in prepared.unknown_notice
    r = invoke("train", tmp_path / "c.txt", "-o", tmp_path / "r2", "--max-vocab", "3", "--steps", "2", *TINY)
    assert r.exit_code == 0 and "outside the vocabulary" in r.stderr
    full = run.prepare(tmp_path / "c.txt", tmp_path / "r3", steps=1, **TINY_API)
    assert full.unknown_notice is None


def test_a_huge_alphabet_is_said_with_the_max_vocab_hint(tmp_path):
    text = zipf_cjk(20000, 1500, seed=0)  # a few hundred characters hold most of the text
    (tmp_path / "cjk.txt").write_text(text, encoding="utf-8")
    r = invoke("train", tmp_path / "cjk.txt", *TINY, "--steps", 1, "-o", tmp_path / "r")
    assert r.exit_code == 0, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if "distinct characters" in ln)
    assert f"{len(set(text)):,} distinct" in line and "--max-vocab 500" in line
    assert "% of the text" in line


def test_the_max_vocab_hint_gives_the_figures_of_the_model_the_flag_builds(tmp_path):
    """Issue 38, item 5: "--max-vocab 500 would make it 1,430,261 parameters" counted 501
    symbols; the flag keeps the 499 most frequent characters and one unknown symbol."""
    import re

    from charrnn.text import data
    from charrnn.training import run

    text = zipf_cjk(12000, 1200, seed=1)
    (tmp_path / "cjk.txt").write_text(text, encoding="utf-8")
    tiny = dict(layers=1, hidden=16, batch=8, seq=16, steps=1)
    notice = run.prepare(tmp_path / "cjk.txt", tmp_path / "a", **tiny).notice
    m = re.search(r"the ([\d,]+) most frequent cover ([\d.]+)% .*--max-vocab (\d+)\D+([\d,]{4,})", notice)
    kept, share, flag, params = int(m[1].replace(",", "")), float(m[2]), int(m[3]), m[4]
    capped = run.prepare(tmp_path / "cjk.txt", tmp_path / "b", max_vocab=flag, **tiny).trainer.model
    assert len(capped.vocab) == flag and kept == flag - 1
    assert params == f"{capped.flat.size:,}"
    known = set(capped.vocab.symbols) - {data.UNK}
    assert share == pytest.approx(100 * sum(c in known for c in text) / len(text), abs=0.05)
