"""What a training says about its text before it starts (training/notices.py): how much of it a
capped vocabulary reads as its unknown symbol."""

from conftest import TINY, TINY_API, invoke, markov_text


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
