"""Shared helpers for the training, checkpoint and command-line tests: seeded Markov corpora whose
entropy rate is known exactly, one tiny run trained through the command line, running a command
in-process and the one-line error contract it is held to."""

import numpy as np
import pytest


def markov_chain(V, seed, peaked_rows=()):
    """A seeded transition matrix P (V, V), its stationary distribution and its entropy rate in
    nats: sum_i pi_i * H(P[i]). Rows in peaked_rows put most of their mass on one or two symbols."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(V), size=V)
    for i in peaked_rows:
        P[i] = rng.dirichlet(np.full(V, 0.15))
    w, vecs = np.linalg.eig(P.T)
    pi = np.real(vecs[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    logP = np.log(np.where(P > 0, P, 1.0))
    rate = float(pi @ -(P * logP).sum(axis=1))
    return P, pi, rate


def markov_text(symbols, n, seed=0, peaked_rows=()):
    """(text of n symbols drawn from a seeded first-order Markov chain, its entropy rate)."""
    P, pi, rate = markov_chain(len(symbols), seed, peaked_rows)
    rng = np.random.default_rng(seed + 1)
    cum = np.cumsum(P, axis=1)
    u = rng.random(n)
    ids = np.empty(n, np.int64)
    ids[0] = rng.choice(len(symbols), p=pi)
    for t in range(1, n):
        ids[t] = min(int(np.searchsorted(cum[ids[t - 1]], u[t], side="right")), len(symbols) - 1)
    return "".join(symbols[i] for i in ids), rate


def zipf_cjk(n, symbols, seed=0):
    """n characters drawn by a Zipf law from `symbols` CJK code points: a large alphabet whose
    frequent few hold most of the text (its unigram entropy is well below log(symbols))."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, symbols + 1)
    return "".join(rng.choice([chr(0x4E00 + k) for k in range(symbols)], n, p=weights / weights.sum()))


@pytest.fixture(autouse=True)
def fresh_thread_setting():
    """Each test starts from no --threads: a command run in-process sets the module's count
    (threads.configure), which would otherwise outlive its test and steer the next one."""
    from charrnn.engine import threads

    threads.configure(None)
    yield
    threads.configure(None)


def write_bytes(path, content):
    path.write_bytes(content)
    return path


def streamed(path, chunk_size=3, **kwargs):
    """A file encoded through the id cache's streamed path, whatever its size."""
    from charrnn.text import idcache

    return idcache.encoded_corpus(str(path), chunk_size=chunk_size, min_bytes=0, **kwargs)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty id cache directory of the test's own."""
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# the rate pinned: tests calibrated on what these models learn (test_repetition's bounds) do not
# follow the default's changes
TINY = ["--layers", "1", "--hidden", "16", "--batch", "8", "--seq", "16", "--lr", "3e-3"]
# the same model for charrnn.train (which keeps its own default rate)
TINY_API = dict(layers=1, hidden=16, batch=8, seq=16)


def invoke(*args, input=None):
    """`charrnn ARGS` run in-process by Typer's CliRunner; paths and numbers may be passed as they are."""
    from typer.testing import CliRunner
    from charrnn.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def error_line(r, code, *fragments):
    """The one-line error contract: exit `code`, nothing on stdout, no traceback, and on stderr
    (beside the compile notices) one line "charrnn: error: ..." holding every fragment; returns it."""
    assert r.exit_code == code, (r.exit_code, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("charrnn: compiling")]
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """A small text over 'abcd', space and newline, written to a file."""
    text, _ = markov_text("abcd \n", 6000, seed=3)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory, corpus_file):
    """A run directory trained by `charrnn train` in-process: 40 steps of a 1x16 LSTM."""
    from typer.testing import CliRunner
    from charrnn.cli import app

    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(corpus_file),
            "-o",
            str(out),
            "--steps",
            "40",
            "--eval-every",
            "10",
            "--keep",
            "2",
            "-q",
            *TINY,
        ],
    )
    assert result.exit_code == 0, result.stderr
    # --quiet: nothing but the warning that 40 steps leave it no better than the unigram
    # baseline (1.64 against 1.63 nats/char), which --quiet does not hide
    lines = result.stderr.splitlines()
    assert result.stdout == "" and len(lines) <= 1
    assert all(ln.startswith("charrnn: warning: the best model scores") for ln in lines), lines
    return out


# What most of the suite calls, compiled ahead when the Numba cache is cold (warm.py): the
# training, scoring and sampling kernels of an LSTM in float32 and float64, the sampler's
# narrow weight formats, and the float32 windows of the other cells (one compile for the GRU and
# the RNN: the LSTM's float32 windows have a cell type of their own). On a warm cache this only
# loads them (about a second). Under pytest-xdist (`-n auto`, the README's command: a worker a
# core) each worker takes its turns at the list, so the cores compile it between them before any
# runs a test; in one process, a second process takes turns with it.
AHEAD = (
    [
        (g, "lstm", dt, "fp32")
        for dt in ("float32", "float64")
        for g in ("forward", "evaluate", "backward", "optimizer", "sample", "split")
    ]
    + [(g, "lstm", "float32", p) for p in ("bf16", "int8") for g in ("sample", "split")]
    + [(g, "gru", "float32", "fp32") for g in ("forward", "backward")]  # the other cells' windows
)
# and where the CPU multiplies bf16, the bf16 training windows the bf16 tests call: the LSTM's
# (a cell type of its own) and the other cells' (one compile for both), so that the two workers
# share them rather than one of them compiling all four in its tests (60 s of a 150 s cold run)
AHEAD_BF16 = [(g, c, "float32", "fp32") for c in ("lstm", "gru") for g in ("forward_bf16", "backward_bf16")]
AHEAD_FROM = 200  # tests in the session: fewer (a file, a -k) compile only what they call


@pytest.fixture(scope="session", autouse=True)
def kernels_compiled_ahead(request):
    if len(request.session.items) >= AHEAD_FROM:
        import os

        from charrnn import warm

        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        from charrnn.engine import bgemm

        warm.prepare_many(AHEAD + (AHEAD_BF16 if bgemm.available() else []), helper=workers < 2)
