"""Data-parallel training over MPI (`pip install 'charrnn[mpi]'`): two ranks train the same model
as one process with the same global batch, checkpoints do not depend on the rank count, Ctrl-C
stops every rank after the same step, and a rank that dies ends the job instead of hanging it.
Skipped where mpi4py or an mpiexec is missing."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from charrnn.training import dist
from charrnn.errors import CorpusError
from conftest import markov_text

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None
    or not shutil.which("python3")
    or subprocess.run([sys.executable, "-c", "import mpi4py"], capture_output=True).returncode != 0,
    reason="needs mpi4py and mpiexec: pip install -e '.[mpi]'",
)
RUN = [
    "--float64",
    "--batch",
    "8",
    "--seq",
    "16",
    "--layers",
    "2",
    "--hidden",
    "16",
    "--eval-every",
    "3",
    "--dropout",
    "0.2",
    "-q",
]
ENV = dict(os.environ, CHARRNN_THREADS="1")  # each process one part: 2 ranks = 2 parts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    text, _ = markov_text("abcd \n", 8000, seed=3)
    path = tmp_path_factory.mktemp("mpi") / "corpus.txt"
    path.write_text(text)
    return path


def charrnn(*args, ranks=1, **kwargs):
    cmd = [sys.executable, "-m", "charrnn", *map(str, args)]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, **kwargs)
    # the launcher reports a rank that died (its exit code, the signal) on stdout
    assert r.returncode == 0, f"stderr:\n{r.stderr}\nstdout:\n{r.stdout}"
    return r


def arrays(run):
    with np.load(run / "latest.npz") as z:
        meta = json.loads(z["meta"].tobytes())
        return {k: z[k] for k in z.files if k != "meta"}, meta


def assert_same_run(a, b, tol=1e-10):
    (wa, ma), (wb, mb) = arrays(a), arrays(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert wa[k].shape == wb[k].shape, k
        assert np.allclose(wa[k], wb[k], rtol=0, atol=tol), (k, np.abs(wa[k] - wb[k]).max())
    for ha, hb in zip(ma["history"], mb["history"], strict=True):
        assert abs(ha["train_loss"] - hb["train_loss"]) < tol
        assert abs(ha["val_loss"] - hb["val_loss"]) < tol
    assert ma["progress"]["step"] == mb["progress"]["step"]


@needs_mpi
def test_two_ranks_train_what_one_process_trains(corpus, tmp_path):
    r = charrnn("train", corpus, "-o", tmp_path / "two", "--steps", "6", *RUN[:-1], ranks=2)
    # rank 0 speaks, to the end: no rank may leave (and the launcher kill it) before it is done
    assert r.stderr.count("finished at step 6 after") == 1, r.stderr
    assert r.stderr.count("data-parallel over 2 MPI ranks") == 1, r.stderr  # said once
    names = {p.name for p in (tmp_path / "two").iterdir()}
    assert {"best.npz", "latest.npz"} <= names and not [n for n in names if ".tmp" in n]
    charrnn("train", corpus, "-o", tmp_path / "one", "--steps", "6", *RUN)
    assert_same_run(tmp_path / "two", tmp_path / "one")
    assert arrays(tmp_path / "two")[0]["train/h"].shape == (2, 8, 16)  # every stream's state


@needs_mpi
def test_two_ranks_build_the_model_rank_0_sized(corpus, tmp_path):
    """--minutes without --hidden: rank 0 measures, says so once, and every rank builds its
    choice (a rank building another model would fail at the first gradient exchange)."""
    args = ["--minutes", "0.02", "--batch", "8", "--seq", "16", "--float64"]
    r = charrnn("train", corpus, "-o", tmp_path / "r", *args, ranks=2)
    said = re.findall(r"sized from the budget: 2 x (\d+), dropout ([\d.]+)", r.stderr)
    assert len(said) == 1, r.stderr
    model = arrays(tmp_path / "r")[1]["model"]
    assert (model["hidden"], model["dropout"]) == (int(said[0][0]), float(said[0][1]))


@needs_mpi
def test_checkpoints_resume_on_another_rank_count(corpus, tmp_path):
    charrnn("train", corpus, "-o", tmp_path / "a", "--steps", "6", *RUN, ranks=2)
    charrnn("train", corpus, "-o", tmp_path / "b", "--steps", "6", *RUN)
    charrnn("train", corpus, "--resume", tmp_path / "a", "--steps", "12", "-q")  # 2 ranks -> 1
    charrnn("train", corpus, "--resume", tmp_path / "b", "--steps", "12", "-q", ranks=2)
    assert_same_run(tmp_path / "a", tmp_path / "b")


def long_training_at_its_first_evaluation(corpus, run, *extra):
    """A two-rank training with no end in sight, once it has written its first evaluation (at
    most two minutes): the Popen, its stdout and stderr piped."""
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "charrnn", "train", str(corpus), "-o", str(run),
           "--batch", "8", "--seq", "16", "--hidden", "32", "--steps", "1000000", "--eval-every", "20",
           *extra]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    return p


@needs_mpi
def test_ctrl_c_stops_every_rank_after_the_same_step_and_saves_once(corpus, tmp_path):
    run = tmp_path / "r"
    p = long_training_at_its_first_evaluation(corpus, run)
    assert (run / "metrics.jsonl").exists(), "training never reached its first evaluation"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert all(ln.startswith("[mpiexec") for ln in out.splitlines())  # the launcher's own
    assert err.count("interrupted at step") == 1  # rank 0 speaks, once
    _, meta = arrays(run)
    step = meta["progress"]["step"]
    assert f"interrupted at step {step} " in err


@needs_mpi
def test_a_rank_that_dies_ends_the_job(corpus, tmp_path):
    """MPICH's launcher (what the mpi extra installs) kills the other ranks and says why; the
    survivor must not wait forever in its next allreduce."""
    run = tmp_path / "r"
    p = long_training_at_its_first_evaluation(corpus, run, "-q")
    ranks = subprocess.run(
        ["pgrep", "-f", f"^{sys.executable} -m charrnn train .* -o {run} "], capture_output=True, text=True
    )  # the ranks, not the launcher
    pids = [int(x) for x in ranks.stdout.split()]
    assert len(pids) == 2, ranks
    os.kill(pids[-1], signal.SIGKILL)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail("the job hung after a rank died")
    assert p.returncode != 0
    said = out + err  # the launcher reports on stdout, or the survivor's MPI aborts it
    assert any(w in said for w in ("BAD TERMINATION", "Fatal error", "Abort")), said


class FakeComm(dist.MPI):
    """Two ranks' view of an allgather, without MPI: for the error agreement."""

    def __init__(self, rank, errors):
        self.rank, self.size, self.errors = rank, 2, errors

        class Comm:
            @staticmethod
            def allgather(_):
                return [None if e is None else (type(e), str(e)) for e in errors]

        self.comm = Comm()


def test_an_error_on_one_rank_stops_every_rank():
    errors = [None, CorpusError("cannot read corpus.txt: Permission denied")]
    with pytest.raises(CorpusError, match="^rank 1: cannot read corpus.txt"):
        FakeComm(0, errors).all_ok(None)
    with pytest.raises(CorpusError, match="^cannot read corpus.txt"):
        FakeComm(1, errors).all_ok(errors[1])
    FakeComm(0, [None, None]).all_ok(None)


def test_streams_shared_out_whole():
    for B, n in ((8, 2), (7, 3), (64, 5), (3, 3)):
        parts = [dist.share(B, r, n) for r in range(n)]
        assert [p.start for p in parts] == [0] + [p.stop for p in parts[:-1]]
        assert parts[-1].stop == B and min(p.stop - p.start for p in parts) >= B // n


@needs_mpi
def test_two_ranks_train_what_one_process_trains_with_the_regularisers(corpus, tmp_path):
    """Every rank draws the same weight masks and keeps the same average (regularise.py)."""
    regs = ["--dropout-mode", "variational", "--weight-drop", "0.3", "--embed-drop", "0.2", "--ema", "0.9"]
    charrnn("train", corpus, "-o", tmp_path / "two", "--steps", "6", *RUN, *regs, ranks=2)
    charrnn("train", corpus, "-o", tmp_path / "one", "--steps", "6", *RUN, *regs)
    assert_same_run(tmp_path / "two", tmp_path / "one")
    assert "train/weights" in arrays(tmp_path / "two")[0]
