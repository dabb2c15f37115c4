"""Numbers that look right must be right (issue 19, items 1-6): scores that count a capped
vocabulary's unknown symbol apart, no validation loss where there is no validation text, the
checkpoint an implicit choice used named, and sampling options, stop strings and cut samples
checked and said the same way in the library and on the command line."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import charrnn
from charrnn import checkpoint
from charrnn.text import data
from charrnn.training import discovery, runs
from charrnn.cli import app
from charrnn.config import SampleConfig
from charrnn.errors import CorpusError, UsageError
from conftest import TINY, markov_text, zipf_cjk
from reference import reference_forward

TINY_API = dict(layers=1, hidden=16, batch=8, seq=16)


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def error_line(r, code):
    assert r.exit_code == code, (r.exit_code, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("charrnn: compiling")]
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A model whose vocabulary was capped at 4 of the corpus's 8 symbols (3 + unknown)."""
    tmp = tmp_path_factory.mktemp("capped")
    text, _ = markov_text("abcdefgh", 8000, seed=5)
    path = tmp / "c.txt"
    path.write_text(text)
    out = tmp / "run"
    charrnn.train(path, out, steps=6, eval_every=3, max_vocab=4, **TINY_API)
    return out, text


# ---------------------------------------------------------------- 1. the unknown symbol's share


def test_score_counts_unknown_targets_and_gives_the_known_loss_apart(capped):
    out, text = capped
    model = charrnn.load(out, dtype=np.float64)
    assert model.vocab.unk_id >= 0
    probe = text[:600]
    score = model.score(probe, exact=True)
    ids = model.encode(probe, unknown="unk")
    # the naive reference: every position's loss from a per-gate NumPy forward
    x = np.asarray(ids[:-1], np.int64)[:, None]
    logits, _, _ = reference_forward("lstm", model.params, x, *model.zero_state(1))
    m = logits.max(axis=1)
    per = m + np.log(np.exp(logits - m[:, None]).sum(axis=1)) - logits[np.arange(len(x)), ids[1:]]
    unk = np.asarray(ids[1:]) == model.vocab.unk_id
    assert score.chars == len(per) and score.unknown == int(unk.sum()) > 0
    assert score.nats == pytest.approx(per.mean(), abs=1e-9)
    assert score.nats_known == pytest.approx(per[~unk].mean(), abs=1e-9)


def test_eval_refuses_a_mostly_unknown_text_and_reports_the_known_loss(capped, tmp_path):
    out, _ = capped
    other = tmp_path / "other.txt"
    other.write_text("wxyz" * 300)  # characters it never saw: all its unknown symbol
    line = error_line(invoke("eval", "-c", out, other), 1)
    assert "100.0% of the scored characters" in line and "--max-unknown" in line
    r = invoke("eval", "-c", out, other, "--max-unknown", "1", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["unknown_chars"] == d["chars"] and d["nats_per_char_known"] is None
    mixed = tmp_path / "mixed.txt"
    known = "".join(c for c in charrnn.load(out).vocab.symbols if c != data.UNK)
    mixed.write_text((known * 7)[:21] * 60 + "w" * 60)  # 60 of 1,320 unknown: under 5%
    r = invoke("eval", "-c", out, mixed)
    assert r.exit_code == 0, r.stderr
    assert "unknown to the model" in r.stdout and "over the known ones" in r.stdout


def test_the_refusal_says_which_way_the_unknown_characters_move_the_loss():
    """Issue 38, item 3: "it predicts its unknown symbol cheaply: the loss would be 4.2293, but
    3.6648 nats/char over the known ones" said cheap where they made the loss higher."""
    from charrnn.api import unknown_refusal
    from charrnn.engine.model import Score

    higher = unknown_refusal(Score(4.2293, 1000, 1, 200, 3.6648))
    assert "make the loss higher" in higher and "4.2293" in higher and "3.6648" in higher
    assert "cheap" not in higher and f"{(4229.3 - 800 * 3.6648) / 200:.4f} nats each" in higher
    lower = unknown_refusal(Score(2.0, 1000, 1, 200, 2.5))
    assert "make the loss lower" in lower and "cheap" not in lower


def test_the_command_lines_refusal_agrees_with_the_figures_it_prints(capped, tmp_path):
    out, text = capped
    (tmp_path / "t.txt").write_text(text[:3000])
    line = error_line(invoke("eval", "-c", out, tmp_path / "t.txt"), 1)
    d = json.loads(invoke("eval", "-c", out, tmp_path / "t.txt", "--max-unknown", "1", "--json").stdout)
    way = "lower" if d["nats_per_char"] < d["nats_per_char_known"] else "higher"
    assert f"make the loss {way}, {d['nats_per_char']:.4f}" in line, line


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


def test_a_model_no_better_than_the_unigram_baseline_is_said_plainly(tmp_path):
    """Issue 38, item 4: "best val 8.9749", worse than the text's own character frequencies
    (3.70), and nothing said. Every training reports the unigram baseline beside its best
    validation loss, and warns (also with --quiet; it still exits 0: the run did what it was
    asked, and --resume can go on) when the model is no better."""
    (tmp_path / "cjk.txt").write_text(zipf_cjk(6000, 300, seed=4), encoding="utf-8")
    r = invoke("train", tmp_path / "cjk.txt", "-o", tmp_path / "r", "--steps", "2", *TINY, "-q")
    assert r.exit_code == 0, r.stderr
    d = json.loads(invoke("info", tmp_path / "r", "--json").stdout)
    assert d["best_val_loss"] >= d["unigram_val_loss"] > 0
    warning = [ln for ln in r.stderr.splitlines() if "unigram baseline" in ln]
    assert len(warning) == 1 and warning[0].startswith("charrnn: warning: the best model scores")
    assert f"{d['unigram_val_loss']:.4f}" in warning[0] and "add-one" in warning[0]
    rows = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {r["unigram"] for r in rows if r["kind"] == "eval"} == {d["unigram_val_loss"]}
    # a model that learned something: the baseline beside its loss, and no warning
    (tmp_path / "abc.txt").write_text("abc" * 2000)
    r = invoke(
        "train", tmp_path / "abc.txt", "-o", tmp_path / "a", "--steps", "60", *TINY[:-2], "--lr", "1e-2"
    )
    assert r.exit_code == 0, r.stderr
    summary = r.stderr.strip().splitlines()[-1]
    assert "(unigram baseline 1.0986)" in summary and "warning" not in r.stderr
    assert "unigram baseline" in invoke("info", tmp_path / "a").stdout


# ------------------------------------------------------------ 2. no validation text, no val loss


def test_a_run_without_validation_text_has_no_validation_loss_anywhere(tmp_path, corpus_file):
    out = tmp_path / "noval"
    r = invoke(
        "train",
        corpus_file,
        "-o",
        out,
        "--val-frac",
        "0",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--keep",
        "2",
        *TINY,
    )
    assert r.exit_code == 0, r.stderr
    assert "no validation text" in r.stderr and "best val" not in r.stderr
    meta = checkpoint.load_meta(out / checkpoint.BEST)
    assert meta.progress.step == 6 and not math.isfinite(meta.progress.best_val)
    assert runs.describe(out)["best_val_loss"] is None
    listed = json.loads(invoke("runs", tmp_path, "--json").stdout)
    assert [row["best_val_loss"] for row in listed] == [None]
    assert charrnn.api.describe(meta)["best_val_loss"] is None
    assert sorted(p.name for p in out.glob("step*.npz")) == ["step0000003.npz", "step0000006.npz"]
    line = error_line(
        invoke(
            "train",
            corpus_file,
            "-o",
            tmp_path / "p",
            "--val-frac",
            "0",
            "--patience",
            "2",
            "--steps",
            "4",
            *TINY,
        ),
        1,
    )
    assert "--patience" in line


# ------------------------------------------------------------- 3. an implicit choice is named


def test_implicit_checkpoint_choices_are_said_on_stderr(tmp_path, monkeypatch, cli_run):
    import shutil
    import time

    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(cli_run, root / "old")
    time.sleep(0.05)
    (root / "new").mkdir()
    (root / "new" / "metrics.jsonl").write_text("")
    monkeypatch.setenv("CHARRNN_RUNS", str(root))
    r = invoke("sample", "-n", "5", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    assert str(root / "old" / checkpoint.BEST) in r.stderr and "new: no checkpoint yet" in r.stderr
    # an explicit file: nothing said
    r = invoke("sample", "-c", root / "old" / checkpoint.BEST, "-n", "5", "--seed", "1")
    assert "using" not in r.stderr


def test_a_directory_of_runs_samples_its_best_run(tmp_path, cli_run):
    import shutil

    sweep = tmp_path / "sweep"
    for name, best in (("trial-0000", 2.0), ("trial-0001", 1.5), ("trial-0002", 3.0)):
        shutil.copytree(cli_run, sweep / name)
        meta, params, train = checkpoint.load(sweep / name / checkpoint.BEST)
        from dataclasses import replace

        meta = replace(meta, progress=replace(meta.progress, best_val=best))
        checkpoint.save(
            sweep / name / checkpoint.BEST, meta, [params[k] for k in checkpoint.PARAM_NAMES], train
        )
    path, note = discovery.resolve_explained(sweep)
    assert path == sweep / "trial-0001" / checkpoint.BEST and "1.5000" in note
    r = invoke("sample", "-c", sweep, "-n", "5", "--seed", "1")
    assert r.exit_code == 0 and "trial-0001" in r.stderr
    (tmp_path / "empty").mkdir()
    assert "holds no checkpoint" in error_line(invoke("sample", "-c", tmp_path / "empty"), 1)


# --------------------------------------------------- 4. the library validates as the CLI does


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(length=0), "--length must be at least 1"),
        (dict(length=-5), "--length must be a whole number"),
        (dict(temp=-1), "--temp must be 0 (greedy) or a positive number"),
        (dict(temp=float("nan")), "--temp"),
        (dict(temp=float("inf")), "--temp"),
        (dict(top_p=2), "--top-p must be in (0, 1]"),
        (dict(top_p=0), "--top-p"),
        (dict(top_k=-1), "--top-k"),
        (dict(seed=-1), "--seed"),
    ],
)
def test_library_sampling_refuses_what_the_command_line_refuses(cli_run, options, words):
    model = charrnn.load(cli_run)
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
        model.sample(**options)
    flag, value = next(iter(options.items()))
    if options == dict(length=0):
        return  # without end: the command line streams it
    flag = {"length": "-n"}.get(flag, "--" + flag.replace("_", "-"))
    r = invoke("sample", "-c", cli_run, flag, value)
    assert words.split(" must")[0] in error_line(r, 2)


def test_endless_generation_is_a_stream_not_a_string(cli_run):
    model = charrnn.load(cli_run)
    gen = model.generate(0, seed=1)
    assert sum(len(next(gen)) for _ in range(3)) > 32  # goes on
    with pytest.raises(UsageError):
        model.complete(length=0)
    with pytest.raises(UsageError, match="--num-samples above 1 needs a --length"):
        SampleConfig(length=0, num_samples=2).validate()


# ------------------------------------------------------------- 5. stop strings and the prime


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


@pytest.mark.parametrize("command", ["eval", "inspect"])
def test_characters_dropped_from_a_text_are_counted(cli_run, tmp_path, command):
    """Issue 38, item 6: `eval --drop-unknown --json` said "unknown_chars": 0 and nothing on
    stderr after dropping 5 characters, and inspect was silent (sample said it)."""
    text = "abcd ab\nXcd aYb\nZZ ba dc\nQ" * 4  # 20 of the characters are not the model's
    (tmp_path / "t.txt").write_text(text)
    args = ["--gates"] if command == "inspect" else []
    r = invoke(command, "-c", cli_run, tmp_path / "t.txt", "--drop-unknown", "--json", *args)
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["dropped_chars"] == 20
    assert "left 20 characters the model does not know out of the text" in r.stderr
    if command == "inspect":
        assert d["chars"] == len(text) - 20
    r = invoke(command, "-c", cli_run, tmp_path / "t.txt", "--drop-unknown", *args)
    assert r.exit_code == 0 and "left 20 characters" in r.stderr
    kept = "".join(c for c in text if c in "abcd \n")
    (tmp_path / "k.txt").write_text(kept)
    r = invoke(command, "-c", cli_run, tmp_path / "k.txt", "--drop-unknown", "--json", *args)
    assert json.loads(r.stdout)["dropped_chars"] == 0 and "left" not in r.stderr


# ------------------------------------------------------------------- 6. a cut sample is named


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
