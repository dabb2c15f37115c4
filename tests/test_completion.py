"""Samples as text (completion.py), checked and said the same way in the library and on the
command line: endless generation, stop strings the vocabulary cannot spell, the prime read as
the corpus was (newlines folded, unknown characters dropped and counted), and samples cut at
the length told apart from those that met their stop string."""

import pytest

import charrnn
from charrnn.text import data
from charrnn.config import SampleConfig
from charrnn.errors import CorpusError, UsageError
from conftest import TINY_API, error_line, invoke, markov_text


def test_endless_generation_is_a_stream_not_a_string(cli_run):
    model = charrnn.load(cli_run)
    gen = model.generate(0, seed=1)
    assert sum(len(next(gen)) for _ in range(3)) > 32  # goes on
    with pytest.raises(UsageError):
        model.complete(length=0)
    with pytest.raises(UsageError, match="--num-samples above 1 needs a --length"):
        SampleConfig(length=0, num_samples=2).validate()


def test_a_stop_string_the_model_cannot_write_is_refused(cli_run):
    line = error_line(invoke("sample", "-c", cli_run, "-n", "0", "--stop", "Z"), 2)
    assert "can never appear" in line and "'Z'" in line
    with pytest.raises(UsageError, match="can never appear"):
        charrnn.load(cli_run).sample(10, stop="xyz")


def test_crlf_in_the_stop_string_and_the_prime_is_read_as_the_corpus_was(tmp_path):
    text, _ = markov_text("ab \n", 5000, seed=4)
    (tmp_path / "crlf.txt").write_bytes(text.replace("\n", "\r\n").encode())
    out = tmp_path / "run"
    charrnn.train(tmp_path / "crlf.txt", out, steps=3, **TINY_API)
    r = invoke("sample", "-c", out, "-n", "400", "--stop", "\\r\\n", "--seed", "1", "--prime", "ab\r\nba\r")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("ab\nba\n") and "\r" not in r.stdout
    assert r.stdout[len("ab\nba\n") :].endswith("\n")  # the folded stop string fired
    model = charrnn.load(out)
    assert model.sample(20, prime="a\r\nb", seed=2) == model.sample(20, prime="a\nb", seed=2)


def test_dropped_prime_characters_are_counted_and_not_echoed(cli_run):
    r = invoke("sample", "-c", cli_run, "-n", "5", "--prime", "abXYc", "--drop-unknown", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("abc") and "X" not in r.stdout
    assert "left 2 characters" in r.stderr
    p = charrnn.load(cli_run)
    from charrnn.completion import prepare_prime

    assert prepare_prime(p, "abXYc", "drop").dropped == 2
    with pytest.raises(CorpusError, match="'X', 'Y'"):
        prepare_prime(p, "abXYc")


def test_samples_cut_at_the_length_are_told_apart(cli_run):
    model = charrnn.load(cli_run)
    done = model.complete(length=6, num_samples=16, stop="\n", seed=3, temp=1.0)
    reasons = {c.finish_reason for c in done}
    assert reasons == {"stop", "length"}, reasons  # this seed gives both
    for c in done:
        if c.finish_reason == "stop":
            assert c.text.endswith("\n") and c.text.count("\n") == 1 and len(c.text) <= 6
        else:
            assert len(c.text) == 6 and "\n" not in c.text
    cut = sum(c.finish_reason == "length" for c in done)
    r = invoke("sample", "-c", cli_run, "-n", "6", "--num-samples", "16", "--stop", "\\n", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    assert f"{cut} of 16 samples ended at --length 6, not at the stop string" in r.stderr
    stream = model.stream(length=3, stop="\n\n\n\n", seed=1)
    assert len("".join(stream)) == 3 and stream.finish_reason == "length"


def test_the_library_stream_and_complete_match_the_command_line(cli_run):
    model = charrnn.load(cli_run)
    r = invoke("sample", "-c", cli_run, "-n", "60", "--stop", " ", "--seed", "5")
    text = "".join(model.stream(length=60, stop=" ", seed=5))
    assert r.stdout == text == model.complete(length=60, stop=" ", seed=5)[0].text
    assert model.sample(60, stop=" ", seed=5) == text
    assert data.fold_newlines("a\r\nb\rc") == "a\nb\nc"
