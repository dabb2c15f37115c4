"""The command-line contract: stdout carries only the product (text, a number, JSON), logs and
errors go to stderr, a user mistake is one line 'charrnn: error: ...' and exit 1 (2 for a bad
option value), never a traceback; and the commands behave in a pipe and under Ctrl-C."""

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import charrnn
from charrnn import api, checkpoint
from charrnn.cli import app
from conftest import TINY, invoke

COMPILING = "charrnn: compiling kernels"
# what may come before a one-line error: a training's first line, said before the text is read,
# and the compile progress
PREAMBLE = (COMPILING, "charrnn: training on ", "charrnn: resuming ")


def ok(result):
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 0, result.stderr
    return result


def user_error(result, *fragments, code=1):
    """The one-line error contract; returns the message."""
    assert isinstance(result.exception, SystemExit), result.exc_info  # no uncaught exception
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith(PREAMBLE)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("charrnn: error: ")
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def corpus_text(corpus_file):
    return corpus_file.read_text()


# ----------------------------------------------------------------------------- version and help


def test_version():
    r = ok(invoke("--version"))
    assert r.stdout == f"charrnn {charrnn.__version__}\n"


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["eval"], ["info"]])
def test_help(command):
    r = ok(invoke(*command, "--help"))
    assert "Usage:" in r.stdout
    assert r.stderr == ""


def option(command, name):
    """The click parameter behind `charrnn COMMAND --NAME`."""
    import typer

    (found,) = [p for p in typer.main.get_command(app).commands[command].params if p.name == name]
    return found


def test_sample_threads_help_says_what_the_default_does():
    """Without --threads a sample may use every core this process may (threads.py), not one."""
    from charrnn.engine import threads

    assert threads.num_threads() == threads.available()  # the default the help describes
    text = option("sample", "threads").help
    assert "Default: one" not in text
    assert "Default: all the cores" in text and "--threads 1" in text


def test_precision_help_speaks_of_its_own_command():
    """sample's --precision says what sampling does with it, eval's what scoring does; export's
    shows its default, the library's."""
    from charrnn import export

    assert "eval" not in option("sample", "precision").help
    assert "sampl" in option("sample", "precision").help
    assert "score" in option("eval", "precision").help.lower()
    p = option("export", "precision")
    assert p.show_default is not False and p.default == export.DEFAULT_PRECISION
    assert "[default: fp32]" in " ".join(ok(invoke("export", "--help")).stdout.split())


# ------------------------------------------------------------------------------------ run output


def test_quiet_training_writes_the_run_directory(cli_run):
    names = sorted(os.listdir(cli_run))
    assert {"latest.npz", "best.npz", "metrics.jsonl"} <= set(names)
    assert ".lock" not in names
    stamped = [n for n in names if n.startswith("step")]
    assert len(stamped) == 2  # --keep 2 of the four evaluations
    records = [json.loads(ln) for ln in (cli_run / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if r["kind"] == "eval"]  # not the training-loss rows
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert all(math.isfinite(r["val_loss"]) for r in records)
    assert records[-1]["val_loss"] < math.log(6)  # better than uniform over the six symbols


def test_progress_goes_to_stderr_in_whole_lines(tmp_path, corpus_file):
    r = ok(invoke("train", corpus_file, "-o", tmp_path / "r", "--steps", "6", "--eval-every", "3", *TINY))
    assert r.stdout == ""
    steps = [ln for ln in r.stderr.splitlines() if ln.startswith("step")]
    evals = [ln for ln in steps if " val " in ln]
    assert len(evals) == 2
    for line in evals:  # a log line is not wrapped at the width of an imagined terminal
        assert re.fullmatch(r"step +\d+ +epoch .* val \S+ .* chars/s +left \S+", line), line
    # a first line after the first step, without waiting for an evaluation
    assert re.fullmatch(r"step +1 +epoch +[\d.]+ +train \d+\.\d+ +[\d,]+ chars/s +left \S+", steps[0]), steps[
        0
    ]
    assert "finished at step 6" in r.stderr


def test_the_end_of_a_training_says_which_loss_to_quote_and_why_there_are_two(tmp_path, corpus_file):
    """best.npz has two losses: every evaluation's, on the validation sample that chose it, and
    the final, larger evaluation's, on all the validation text; the summary says which is the
    headline and why they differ."""
    args = ["--steps", "6", "--eval-every", "3", "--eval-chars", "64", *TINY]
    r = ok(invoke("train", corpus_file, "-o", tmp_path / "r", *args))
    full = re.search(
        r"best.npz \(step (\d+)\) on all ([\d,]+) validation characters: (\S+) nats/char", r.stderr
    )
    assert full, r.stderr
    step, chars, loss = full.groups()
    (val,) = re.findall(rf"step +{step} .* val (\S+) \*", r.stderr)  # its evaluation: a new best
    lines = r.stderr.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("charrnn: finished"))
    end = lines[at : at + 2]  # (a warning about the unigram baseline may follow)
    assert end[0].startswith("charrnn: finished at step 6 after ") and "best val" not in end[0], end
    assert end[1].startswith(
        f"charrnn: the loss to quote is {loss} nats/char: best.npz (step {step}) on all {chars} "
        f"validation characters. The val {val} at step {step} is the same model on the "
    ), end
    assert "validation sample" in end[1] and "chosen" in end[1], end


def test_training_in_process_leaves_the_signal_handlers_as_it_found_them(tmp_path, corpus_file):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ok(invoke("train", corpus_file, "-o", tmp_path / "r", "--steps", "2", "-q", *TINY))
    assert {s: signal.getsignal(s) for s in before} == before


# ----------------------------------------------------------------------------------------- sample


def test_same_seed_same_text_and_nothing_else_on_stdout(cli_run, corpus_text):
    a = ok(invoke("sample", "-c", cli_run, "-n", "50", "--seed", "3"))
    b = ok(invoke("sample", "-c", cli_run, "-n", "50", "--seed", "3"))
    assert a.stdout_bytes == b.stdout_bytes
    assert len(a.stdout) == 50
    assert set(a.stdout) <= set(corpus_text)  # generated characters only, no log text
    assert a.stdout == api.load(cli_run).sample(50, seed=3)
    c = ok(invoke("sample", "-c", cli_run, "-n", "50", "--seed", "4"))
    assert c.stdout != a.stdout


def test_threads_is_one_setting_for_sampling_and_training(cli_run, tmp_path, corpus_file, monkeypatch):
    """--threads (or CHARRNN_THREADS) sets the cores a command uses; the text from a seed does
    not depend on it, nor do the trained weights beyond float32 rounding (two parts' gradients
    are summed in another order); 0 is a usage error."""
    from charrnn.engine import threads

    monkeypatch.setattr(threads, "_configured", None)  # the commands below set it
    a = ok(invoke("sample", "-c", cli_run, "-n", "30", "--seed", "3"))
    b = ok(invoke("sample", "-c", cli_run, "-n", "30", "--seed", "3", "--threads", "2"))
    assert threads.num_threads() == 2 and a.stdout == b.stdout
    user_error(invoke("sample", "-c", cli_run, "-n", "5", "--threads", "0"), "threads", code=2)
    monkeypatch.setenv("CHARRNN_THREADS", "0")
    user_error(invoke("sample", "-c", cli_run, "-n", "5"), "CHARRNN_THREADS", code=2)
    monkeypatch.delenv("CHARRNN_THREADS")
    runs = []
    for n in ("1", "2"):
        out = tmp_path / f"t{n}"
        ok(
            invoke(
                "train",
                corpus_file,
                "-o",
                out,
                "--steps",
                "3",
                "-q",
                "--threads",
                n,
                *TINY[:4],
                "--batch",
                "16",
                "--seq",
                "8",
            )
        )
        runs.append(api.load(out).flat)
    np.testing.assert_allclose(*runs, rtol=0, atol=1e-5)


def test_greedy_sampling_needs_no_seed(cli_run):
    a = ok(invoke("sample", "-c", cli_run, "-n", "40", "--temp", "0"))
    b = ok(invoke("sample", "-c", cli_run, "-n", "40", "--temp", "0"))
    assert a.stdout == b.stdout == api.load(cli_run).sample(40, temp=0)
    assert len(a.stdout) == 40


def test_prime_is_printed_first(cli_run):
    r = ok(invoke("sample", "-c", cli_run, "--prime", "ab", "-n", "30", "--seed", "1"))
    assert r.stdout.startswith("ab") and len(r.stdout) == 32
    assert r.stdout == api.load(cli_run).sample(30, prime="ab", seed=1)
    r = ok(invoke("sample", "-c", cli_run, "--prime", "-", "-n", "5", "--seed", "1", input="ba"))
    assert r.stdout.startswith("ba") and len(r.stdout) == 7


def test_several_samples_and_a_stop_string(cli_run):
    r = ok(
        invoke("sample", "-c", cli_run, "-n", "12", "--seed", "2", "--num-samples", "3", "--separator", "|")
    )
    parts = r.stdout.split("|")
    assert [len(p) for p in parts] == [12, 12, 12]
    r = ok(invoke("sample", "-c", cli_run, "-n", "300", "--seed", "2", "--stop", "a"))
    assert r.stdout.endswith("a") and r.stdout.count("a") == 1


def test_several_samples_stream_the_first_while_the_others_are_drawn(cli_run, monkeypatch):
    """Issue 38: `sample -n 100000 --num-samples 4 | head -c 50` waited for the whole batch. The
    first sample now streams; the reader leaving after 50 characters ends the run a few chunks
    in. The text is the batch's, whether read streaming or whole, with a stop string too."""
    from charrnn.charmodel import CharModel
    from charrnn.cli import sample as sample_cli

    chunks, generate = [], CharModel.generate_ids

    def counted(self, cfg, ids, chunk=256):
        for block in generate(self, cfg, ids, chunk):
            chunks.append(len(block))
            yield block

    def head_c_50(self, s):  # the pipe's reader goes away after 50 characters
        if len(self.written) >= 50:
            raise BrokenPipeError
        self.written += s

    monkeypatch.setattr(CharModel, "generate_ids", counted)
    monkeypatch.setattr(sample_cli._Out, "write", head_c_50)
    monkeypatch.setattr(sample_cli, "quiet_broken_pipe", lambda: None)  # stdout is the runner's
    ok(invoke("sample", "-c", cli_run, "-n", "100000", "--num-samples", "4", "--seed", "1"))
    assert 0 < len(chunks) <= 3 and sum(chunks) < 1000, chunks  # not the 100,000 characters
    monkeypatch.undo()
    model = api.load(cli_run)
    for stop in (None, "ab", "a"):
        args = ["-n", "60", "--seed", "4", "--num-samples", "3", "--separator", "|", "--prime", "b"]
        r = ok(invoke("sample", "-c", cli_run, *args, *(["--stop", stop] if stop else [])))
        whole = model.complete("b", length=60, seed=4, num_samples=3, stop=stop)
        assert r.stdout == "b" + "|b".join(c.text for c in whole)


# ------------------------------------------------------------------------------------ eval, info


def test_eval_prints_the_loss(cli_run, corpus_file, corpus_text):
    expected = api.load(cli_run).loss(corpus_text)
    r = ok(invoke("eval", "-c", cli_run, corpus_file))
    assert len(r.stdout.splitlines()) == 1
    assert float(r.stdout.split()[0]) == pytest.approx(expected, abs=1e-4)
    j = json.loads(ok(invoke("eval", "-c", cli_run, corpus_file, "--json")).stdout)
    assert j["nats_per_char"] == pytest.approx(expected, rel=1e-9)
    assert j["bits_per_char"] == pytest.approx(expected / math.log(2), rel=1e-9)
    n = len(corpus_text) - 1  # predictions; 50 streams of n // 50 are scored
    assert (j["chars"], j["streams"], j["exact"]) == (50 * (n // 50), 50, False)
    assert f"({50 * (n // 50):,} characters scored, read as 50 streams)" in r.stdout
    j = json.loads(ok(invoke("eval", "-c", cli_run, corpus_file, "--exact", "--json")).stdout)
    assert (j["chars"], j["streams"], j["exact"]) == (n, 1, True)
    assert j["nats_per_char"] == pytest.approx(api.load(cli_run).loss(corpus_text, exact=True), rel=1e-9)


def test_info(cli_run):
    j = json.loads(ok(invoke("info", cli_run, "--json")).stdout)
    assert (j["cell"], j["layers"], j["hidden"], j["vocab_size"]) == ("lstm", 1, 16, 6)
    assert j["step"] == 40 and j["evaluations"] == 4 and len(j["history"]) == 4
    assert j["path"] == str(cli_run / checkpoint.BEST)
    r = ok(invoke("info", cli_run))
    assert "lstm 1x16" in r.stdout and r.stderr == ""
    assert ok(invoke("info", "-c", cli_run)).stdout == r.stdout  # as sample and eval take it
    assert invoke("info", cli_run, "-c", cli_run).exit_code == 2


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


# ----------------------------------------------------------------------------------------- resume


def test_resume_continues_and_keeps_the_model(tmp_path, corpus_file):
    run = tmp_path / "r"
    ok(invoke("train", corpus_file, "-o", run, "--steps", "5", "-q", *TINY))
    ok(invoke("train", "--resume", run, "--steps", "10", "-q"))
    assert json.loads(ok(invoke("info", run / "latest.npz", "--json")).stdout)["step"] == 10
    user_error(invoke("train", "--resume", run, "--steps", "20", "--hidden", "32", "-q"), "hidden")
    user_error(invoke("train", "--resume", tmp_path / "nothing", "-q"), "nothing to resume")


def test_training_from_stdin(tmp_path, corpus_text):
    run = tmp_path / "r"
    ok(invoke("train", "-", "-o", run, "--steps", "3", "-q", *TINY, input=corpus_text))
    user_error(invoke("train", "--resume", run, "--steps", "5", "-q"), "stdin")
    ok(invoke("train", "-", "--resume", run, "--steps", "5", "-q", input=corpus_text))
    assert checkpoint.load(run / "latest.npz")[0]["progress"]["step"] == 5


# ----------------------------------------------------------------------------------------- errors


def test_corpus_errors(tmp_path):
    user_error(invoke("train", tmp_path / "missing.txt", "-o", tmp_path / "r", "-q"), "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    user_error(invoke("train", tmp_path / "empty.txt", "-o", tmp_path / "r", "-q"), "empty")
    (tmp_path / "bin.dat").write_bytes(b"abc\x00def" * 100)
    user_error(invoke("train", tmp_path / "bin.dat", "-o", tmp_path / "r", "-q"), "binary", "--bytes")
    (tmp_path / "short.txt").write_text("ab\n" * 100)
    user_error(invoke("train", tmp_path / "short.txt", "-o", tmp_path / "r", "-q"), "--batch", "--seq")
    assert not (tmp_path / "r").exists()  # a failed start leaves no run directory behind


def test_option_errors(cli_run, corpus_file, tmp_path):
    user_error(invoke("sample", "-c", cli_run, "--temp", "-1"), "--temp", code=2)
    user_error(invoke("sample", "-c", cli_run, "--top-p", "2"), "--top-p", code=2)
    user_error(invoke("sample", "-c", cli_run, "-n", "0", "--num-samples", "2"), "--length", code=2)
    user_error(invoke("sample", "-c", cli_run, "--prime", "xyz"), "not in the vocabulary")
    # an option's bad value is a usage error in train as in sample (issue 19, item 8)
    user_error(invoke("train", corpus_file, "-o", tmp_path / "r", "--hidden", "0", "-q"), "hidden", code=2)
    user_error(
        invoke("train", corpus_file, "-o", tmp_path / "r", "--cell", "transformer", "-q"),
        "transformer",
        code=2,
    )


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


@pytest.mark.parametrize("command", ["sample", "info", "eval"])
def test_a_corrupt_checkpoint(tmp_path, command, corpus_file):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(np.random.default_rng(1).bytes(2000))

    def args(ckpt):
        return {
            "sample": ["sample", "-c", ckpt],
            "info": ["info", ckpt],
            "eval": ["eval", "-c", ckpt, corpus_file],
        }[command]

    message = user_error(invoke(*args(bad)), "broken.npz")
    assert "pickle" not in message  # random bytes are not "pickled objects"
    user_error(invoke(*args(tmp_path / "absent.npz")), "absent.npz")


def test_a_run_directory_that_holds_a_run_needs_force(tmp_path, corpus_file):
    run = tmp_path / "r"
    ok(invoke("train", corpus_file, "-o", run, "--steps", "3", "-q", *TINY))
    before = (run / "latest.npz").read_bytes()
    user_error(
        invoke("train", corpus_file, "-o", run, "--steps", "3", "-q", *TINY),
        "already holds a run",
        "--resume",
    )
    assert (run / "latest.npz").read_bytes() == before
    ok(invoke("train", corpus_file, "-o", run, "--steps", "4", "-q", "--force", *TINY))
    assert checkpoint.load(run / "latest.npz")[0]["progress"]["step"] == 4
    # issue 38: the new run's metrics.jsonl, not the old one's with the new rows after them
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"][:1] == [1]
    assert sum(r["kind"] == "train" and r["step"] == 1 for r in rows) == 1, rows


def test_a_lock_file_that_nobody_holds_is_no_obstacle(tmp_path, corpus_file):
    """Only a held flock counts (tests/training/test_runs.py has a live holder): a .lock file left by a
    killed training is taken over whatever pid it names, even a live process's."""
    run = tmp_path / "r"
    run.mkdir()
    (run / ".lock").write_text(str(os.getpid()))
    ok(invoke("train", corpus_file, "-o", run, "--steps", "3", "-q", *TINY))
    assert (run / "latest.npz").exists() and not (run / ".lock").exists()


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


# ---------------------------------------------------------------------------- real processes

CHARRNN = [sys.executable, "-m", "charrnn"]
START = 150  # seconds a process may take to start: compiling kernels on a cold Numba cache


@contextlib.contextmanager
def watchdog(process, seconds):
    """Kill the process if the test has not finished with it in time (a hang fails the test
    instead of blocking the suite), and in any case on the way out."""
    timer = threading.Timer(seconds, process.kill)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_endless_sample_into_a_closed_pipe_ends_quietly(cli_run):
    p = subprocess.Popen(
        [*CHARRNN, "sample", "-c", str(cli_run), "-n", "0", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with watchdog(p, START + 60):
        head = p.stdout.read(100)  # like `| head -c 100`
        p.stdout.close()
        _, err = p.communicate(timeout=60)
    assert head.decode() == api.load(cli_run).sample(100, seed=1)
    assert p.returncode == 0, err
    assert b"Traceback" not in err and b"Error" not in err


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


def test_ctrl_c_saves_and_exits_130(tmp_path, corpus_file):
    run = tmp_path / "r"
    p = subprocess.Popen(
        [
            *CHARRNN,
            "train",
            str(corpus_file),
            "-o",
            str(run),
            "--steps",
            "100000",
            "--eval-every",
            "5",
            *TINY,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    err, progress = [], threading.Event()

    def read_stderr():
        for raw in iter(p.stderr.readline, b""):
            err.append(raw.decode())
            if err[-1].startswith("step") and " val " in err[-1]:  # after an evaluation
                progress.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    with watchdog(p, START + 60):
        deadline = time.monotonic() + START
        while not progress.wait(0.1):
            assert p.poll() is None and time.monotonic() < deadline, "".join(err)
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
        out = p.stdout.read()
    reader.join(timeout=10)
    err = "".join(err)
    assert p.returncode == 130, err
    assert out == b""
    assert "Traceback" not in err and "interrupted at step" in err
    model = api.load(run / "latest.npz")
    assert model.meta["progress"]["step"] >= 5
    assert not (run / ".lock").exists()


def test_init_from_takes_the_shape_from_the_checkpoint(tmp_path, corpus_file):
    """Fine-tuning needs no shape flags; a shape flag that disagrees is an error."""
    base = tmp_path / "base"
    tiny = ["--steps", "3", "-q", "--batch", "4", "--seq", "16"]
    ok(invoke("train", corpus_file, "-o", base, "--hidden", "12", *tiny))
    ok(invoke("train", corpus_file, "-o", tmp_path / "ft", "--init-from", base, *tiny))
    assert json.loads(ok(invoke("info", tmp_path / "ft", "--json")).stdout)["hidden"] == 12
    user_error(
        invoke("train", corpus_file, "-o", tmp_path / "ft2", "--init-from", base, "--hidden", "16", *tiny),
        "hidden=12",
    )
