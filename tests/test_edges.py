"""Issue 19's edges: numeric options that got past the checks (NaN, infinities, a negative
seed) are one-line usage errors (exit 2) in every command, in the library too; results are
written with the usual file mode, not mkstemp's private 0600."""

import os
import stat

import pytest
from typer.testing import CliRunner

import charrnn
from charrnn.cli import app
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import UsageError
from charrnn.fsutil import atomic_write
from conftest import TINY


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_usage_line(r):
    assert r.exit_code == 2, (r.exit_code, r.stderr, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("charrnn: compiling")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize(
    "option, value",
    [
        ("--minutes", "inf"),
        ("--minutes", "nan"),
        ("--epochs", "nan"),
        ("--epochs", "inf"),
        ("--lr", "nan"),
        ("--grad-clip", "inf"),
        ("--dropout", "nan"),
        ("--seed", "-1"),
        ("--batch", "0"),
        ("--seq", "0"),
        ("--minutes", "-1"),
        ("--val-frac", "nan"),
    ],
)
def test_train_refuses_nonfinite_and_out_of_range(corpus_file, tmp_path, option, value):
    r = invoke("train", corpus_file, *TINY, "--steps", 1, "-o", tmp_path / "r", option, value)
    line = one_usage_line(r)
    assert option in line or option.lstrip("-").replace("-", " ") in line or "negative" in line
    assert not (tmp_path / "r" / "best.npz").exists()


@pytest.mark.parametrize(
    "field, value",
    [("minutes", float("inf")), ("epochs", float("nan")), ("lr", float("nan")), ("seed", -1), ("batch", 0)],
)
def test_the_library_refuses_the_same(field, value):
    with pytest.raises(UsageError):
        TrainConfig(**{field: value}).validate()


def test_model_config_refuses_nan_dropout():
    with pytest.raises(UsageError):
        ModelConfig(dropout=float("nan"), vocab_size=3).validate()


def test_sample_refuses_a_negative_seed_in_one_line(corpus_file, tmp_path):
    run = tmp_path / "r"
    assert invoke("train", corpus_file, *TINY, "--steps", 2, "-o", run).exit_code == 0
    line = one_usage_line(invoke("sample", "-c", run, "-n", 5, "--seed", -1))
    assert "--seed" in line
    assert (os.stat(run / "best.npz").st_mode & 0o777) == 0o666 & ~current_umask()


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_uses_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f") as f:
            f.write(b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o644
    finally:
        os.umask(old)


def test_charrnn_train_refuses_infinite_minutes(corpus_file, tmp_path):
    with pytest.raises(UsageError):
        charrnn.train(
            corpus_file, out=tmp_path / "r", minutes=float("inf"), layers=1, hidden=8, batch=4, seq=8
        )


def test_a_closed_progress_pipe_does_not_stop_the_training(corpus_file, tmp_path):
    """`charrnn train ... 2>&1 | head -1`: the reader leaves after one line; the training goes
    on to its end and writes its checkpoints."""
    import subprocess
    import sys

    run = tmp_path / "r"
    cmd = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(corpus_file),
        *TINY,
        "--steps",
        "30",
        "--eval-every",
        "10",
        "-o",
        str(run),
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p.stderr.readline()
    p.stderr.close()  # the reader goes away
    assert p.wait(timeout=300) == 0
    assert (run / "best.npz").exists() and (run / "latest.npz").exists()
    assert '"step": 30' in (run / "metrics.jsonl").read_text().splitlines()[-1]


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


def test_a_killed_writers_temporaries_are_swept_when_the_run_is_opened(corpus_file, tmp_path):
    run = tmp_path / "r"
    assert invoke("train", corpus_file, *TINY, "--steps", 2, "-o", run, "-q").exit_code == 0
    stale = [run / ".best.npz.k2j3h4.tmp", run / ".probe12345"]
    for f in stale:
        f.write_bytes(b"\0" * 1000)
    assert invoke("train", "--resume", run, "--steps", 3, "-q").exit_code == 0
    assert not any(f.exists() for f in stale)
    assert (run / "best.npz").exists()


def test_a_huge_alphabet_is_said_with_the_max_vocab_hint(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    symbols = [chr(0x4E00 + k) for k in range(1500)]
    weights = 1.0 / np.arange(1, 1501)  # Zipf: a few hundred characters hold most of the text
    text = "".join(rng.choice(symbols, 20000, p=weights / weights.sum()))
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

    import numpy as np

    from charrnn.text import data
    from charrnn.training import run

    rng = np.random.default_rng(1)
    symbols = [chr(0x4E00 + k) for k in range(1200)]
    weights = 1.0 / np.arange(1, 1201)
    text = "".join(rng.choice(symbols, 12000, p=weights / weights.sum()))
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


def test_inspect_shows_the_texts_control_characters_as_pictures():
    from charrnn.inspect.view import visible

    assert visible("a\x1b[31mb\tc\n\x7f") == "a\u241b[31mb\tc\n\u2421"
    assert "\x1b" not in visible("".join(map(chr, range(32))))


@pytest.mark.parametrize(
    "command, hint, absent", [("sample", "--num-samples", "--hidden"), ("eval", "more memory", "--batch")]
)
def test_out_of_memory_hints_name_only_the_commands_options(
    monkeypatch, corpus_file, tmp_path, command, hint, absent
):
    from charrnn.cli import evaluate, sample

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(sample, "load", no_memory)
    monkeypatch.setattr(evaluate, "load", no_memory)
    args = ["sample", "-c", tmp_path] if command == "sample" else ["eval", "-c", tmp_path, corpus_file]
    r = invoke(*args)
    assert r.exit_code == 1 and "out of memory" in r.stderr and hint in r.stderr, r.stderr
    assert absent not in r.stderr
