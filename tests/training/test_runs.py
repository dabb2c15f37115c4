"""Run directories: names that keep any script, the run root (CHARRNN_RUNS) that new runs go to and
sample/eval/info search, `charrnn runs`, and a lock that a live training never loses."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from charrnn import checkpoint
from charrnn.training import discovery, run, runs
from charrnn.errors import CheckpointError, ConfigError
from conftest import TINY, error_line, invoke


def ok(r):
    assert r.exit_code == 0, r.stderr
    return r


def user_error(r, *fragments):
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """CHARRNN_RUNS set to a fresh directory; the working directory elsewhere."""
    where = tmp_path / "all runs"
    monkeypatch.setenv("CHARRNN_RUNS", str(where))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return where


# ------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Война_и_мир", "Война_и_мир"),
        ("東京物語", "東京物語"),
        ("Œuvres complètes", "Œuvres-complètes"),
        ('a/b\\c:d*e?f"g<h>i|j', "a-b-c-d-e-f-g-h-i-j"),
        ("tab\there\nnul\0bell\x07", "tab-here-nul-bell"),
        (".hidden", "hidden"),
        ("--looks-like-an-option", "looks-like-an-option"),
        ("bad\udcffbyte", "bad-byte"),  # an undecodable byte of a file name (surrogateescape)
        ("???", "run"),
    ],
)
def test_run_names_keep_any_script_and_replace_only_unsafe_characters(name, expected):
    assert runs.safe_name(name) == expected


def test_a_long_name_is_cut_on_a_character_boundary():
    name = runs.safe_name("ж" * 200)
    assert name == "ж" * (runs.NAME_BYTES // 2)
    assert len(runs.safe_name("ab" + "ж" * 200).encode()) <= runs.NAME_BYTES


def test_a_non_ascii_corpus_trains_into_a_run_named_after_it(root, corpus_file):
    corpus = root.parent / "Война_и_мир.txt"
    corpus.write_text(corpus_file.read_text())
    ok(invoke("train", corpus, "--steps", "2", "-q", *TINY))
    (made,) = root.iterdir()
    assert made.name.startswith("Война_и_мир-") and (made / "latest.npz").is_file()


# --------------------------------------------------------------------------- the run root


def test_the_run_root_is_used_for_new_runs_and_searched_from_anywhere(root, corpus_file, tmp_path):
    ok(invoke("train", corpus_file, "--steps", "2", "-q", *TINY))
    (made,) = root.iterdir()
    assert made.name.startswith("corpus-")
    assert not (tmp_path / "elsewhere" / "runs").exists()
    text = ok(invoke("sample", "-n", "20", "--seed", "1")).stdout
    assert ok(invoke("sample", "-c", made.name, "-n", "20", "--seed", "1")).stdout == text
    assert json.loads(ok(invoke("info", "--json")).stdout)["path"] == str(made / "best.npz")
    assert json.loads(ok(invoke("info", made.name, "--json")).stdout)["hidden"] == 16
    ok(invoke("eval", corpus_file))
    ok(invoke("train", "--resume", made.name, "--steps", "3", "-q"))
    assert checkpoint.load_meta(made / "latest.npz")["progress"]["step"] == 3
    message = user_error(invoke("sample", "-c", "no-such-run"), "no-such-run", str(root))
    assert "no such checkpoint or run directory" in message


def test_without_runs_the_error_says_where_it_looked(root):
    user_error(invoke("sample"), "no trained run under", str(root), "CHARRNN_RUNS")
    user_error(invoke("plot"), "no trained run under", str(root), "CHARRNN_RUNS")


def test_plot_takes_the_latest_run_as_info_does_and_says_which(root, corpus_file):
    ok(invoke("train", corpus_file, "-o", root / "older", "--steps", "4", "--eval-every", "2", "-q", *TINY))
    ok(invoke("train", corpus_file, "-o", root / "newer", "--steps", "2", "-q", *TINY))
    for f in (root / "older").iterdir():  # make the order not depend on speed
        os.utime(f, (1e9, 1e9))
    r = ok(invoke("plot"))
    assert r.stdout == ok(invoke("plot", root / "newer")).stdout != ok(invoke("plot", root / "older")).stdout
    assert json.loads(ok(invoke("info", "--json")).stdout)["path"] == str(root / "newer" / "best.npz")
    assert r.stderr == (
        f"charrnn: plotting {root / 'newer'}, the most recently written run under {root}/; "
        "pass RUN_DIR to choose\n"
    )


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


# ------------------------------------------------------------------------------- charrnn runs


def test_runs_lists_runs_oldest_first_and_notes_broken_ones(root, corpus_file):
    ok(invoke("train", corpus_file, "-o", root / "first", "--steps", "4", "--eval-every", "2", "-q", *TINY))
    ok(invoke("train", corpus_file, "-o", root / "second", "--steps", "2", "-q", "--cell", "gru", *TINY))
    os.utime(root / "first" / "latest.npz", (1e9, 1e9))  # make the order not depend on speed
    for f in (root / "first").iterdir():
        os.utime(f, (1e9, 1e9))
    (root / "broken").mkdir()
    (root / "broken" / "latest.npz").write_bytes(b"PK\x03\x04" + bytes(100))
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("not a run")
    (root / "stray.txt").write_text("not a directory")
    (root / "older").mkdir()  # a folder of runs: listed by its runs, not as a run (issue 38)
    shutil.copytree(root / "second", root / "older" / "third")

    rows = json.loads(ok(invoke("runs", "--json")).stdout)
    assert isinstance(rows, list)
    by = {r["name"]: r for r in rows}
    assert set(by) == {"first", "second", "broken", "foreign", "older/third"}
    assert by["older/third"]["cell"] == "gru" and by["older/third"]["note"] is None
    assert "gru" in ok(invoke("info", "older/third")).stdout  # the name -c takes
    assert rows[0]["name"] == "first"  # the oldest write first
    first = by["first"]
    assert (first["cell"], first["layers"], first["hidden"], first["steps"]) == ("lstm", 1, 16, 4)
    assert first["corpus"] == f"{corpus_file} (6,000 chars)"
    assert first["best_val_loss"] == checkpoint.load_meta(root / "first" / "best.npz")["progress"]["best_val"]
    assert first["date"].startswith("2001-09-")
    assert by["second"]["cell"] == "gru" and by["second"]["steps"] == 2
    assert "corrupt" in by["broken"]["note"] and by["broken"]["cell"] is None
    assert by["foreign"]["note"] == "no checkpoint"
    assert not any(r["training"] for r in rows)

    r = ok(invoke("runs"))
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["date", "run", "corpus", "model", "steps", "best", "val"]
    assert [ln.split()[2] for ln in lines[1:]] == [row["name"] for row in rows]
    assert "  corpus.txt (6,000 chars)  lstm 1x16  " in lines[1]
    assert f"{first['best_val_loss']:.4f}" in lines[1]
    assert "Traceback" not in r.stderr and str(root) in r.stderr
    # one run directory, given as DIR, lists itself
    (row,) = json.loads(ok(invoke("runs", root / "second", "--json")).stdout)
    assert row["name"] == "second"


def test_runs_without_a_run_root(root):
    r = ok(invoke("runs"))
    assert r.stdout == "" and "no runs under" in r.stderr
    assert ok(invoke("runs", "--json")).stdout.strip() == "[]"
    user_error(invoke("runs", root / "absent"), "not a directory")


def test_load_meta_reads_no_weights_and_validates_as_load_does(tmp_path, corpus_file):
    ok(invoke("train", corpus_file, "-o", tmp_path / "r", "--steps", "2", "-q", *TINY))
    meta = checkpoint.load_meta(tmp_path / "r" / "latest.npz")
    assert meta == checkpoint.load(tmp_path / "r" / "latest.npz")[0]
    assert checkpoint.param_dtype(tmp_path / "r" / "latest.npz") == np.float32
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="not an .npz"):
        checkpoint.load_meta(bad)


# ---------------------------------------------------------------------------------------- lock

HOLD = """
import sys, time
from charrnn.training import run
with run.run_directory(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds a run directory's lock; yields (process, directory)."""
    procs = []

    def start(run_dir):
        p = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        procs.append(p)
        timer = threading.Timer(120, p.kill)
        timer.start()
        line = p.stdout.readline()
        timer.cancel()
        assert line == b"locked\n", p.stderr.read().decode()
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_a_live_training_keeps_its_directory_and_a_killed_one_frees_it(tmp_path, corpus_file, holder):
    d = tmp_path / "r"
    ok(invoke("train", corpus_file, "-o", d, "--steps", "2", "-q", *TINY))
    before = (d / "latest.npz").read_bytes()
    p = holder(d)
    assert runs.holder(d) == p.pid
    for args in ([], ["--force"]):  # --force never takes a live training's directory
        user_error(
            invoke("train", corpus_file, "-o", d, "--steps", "2", "-q", *args, *TINY),
            "in use by a training that is still running",
            f"pid {p.pid}",
        )
    user_error(invoke("train", "--resume", d, "--steps", "4", "-q"), "still running", f"pid {p.pid}")
    assert (d / "latest.npz").read_bytes() == before
    (row,) = json.loads(ok(invoke("runs", d, "--json")).stdout)
    assert row["training"] and row["note"] == "training now"

    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (d / runs.LOCK).exists() and runs.holder(d) is None  # a file, but no lock
    ok(invoke("train", "--resume", d, "--steps", "4", "-q"))
    assert checkpoint.load_meta(d / "latest.npz")["progress"]["step"] == 4
    assert not (d / runs.LOCK).exists()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with run.run_directory(tmp_path / "r"):
        with pytest.raises(ConfigError, match="still running"):
            runs.RunLock(tmp_path / "r").acquire(wait=0)


def test_a_save_between_prepare_and_lock_is_noticed(tmp_path, corpus_file):
    """Another training that saves after this one read the directory: refused, not overwritten
    (a new run) and not continued from a stale checkpoint (a resume)."""
    d = tmp_path / "r"
    opts = dict(hidden=16, layers=1, batch=8, seq=16)
    t = run.prepare(corpus_file, d, steps=2, **opts)
    other = run.prepare(corpus_file, d, steps=2, **opts)
    with run.run_directory(other.trainer.run_dir, seen=other.dir_seen):
        other.trainer.run()
    with pytest.raises(ConfigError, match="already holds a run"):
        with run.run_directory(d, seen=t.dir_seen):
            pass
    resumed = run.prepare(corpus_file, resume=d, steps=4)
    again = run.prepare(corpus_file, resume=d, steps=3)
    with run.run_directory(again.trainer.run_dir, seen=again.dir_seen):
        again.trainer.run()
    with pytest.raises(ConfigError, match="resume it again"):
        with run.run_directory(d, seen=resumed.dir_seen):
            pass


def test_a_killed_writers_temporaries_are_swept_when_the_run_is_opened(corpus_file, tmp_path):
    run = tmp_path / "r"
    assert invoke("train", corpus_file, *TINY, "--steps", 2, "-o", run, "-q").exit_code == 0
    stale = [run / ".best.npz.k2j3h4.tmp", run / ".probe12345"]
    for f in stale:
        f.write_bytes(b"\0" * 1000)
    assert invoke("train", "--resume", run, "--steps", 3, "-q").exit_code == 0
    assert not any(f.exists() for f in stale)
    assert (run / "best.npz").exists()
