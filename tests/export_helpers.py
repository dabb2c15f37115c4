"""Shared pieces of the export tests: tiny random-weight checkpoints, charrnn's own logits and
greedy text to compare the exported model with, and a naive greedy driver of the ONNX step
graph through ONNX Runtime."""

import json
import subprocess

import numpy as np

from charrnn import checkpoint
from charrnn.charmodel import CharModel
from charrnn.config import ModelConfig

VOCAB = "\n !',.?abcdefghijklmnopqrstuvwxyzAEIOU"


def tiny_model(cell="lstm", layers=2, hidden=24, vocab=VOCAB, seed=0, sharpen=3.0):
    """A CharModel with charrnn's initial weights; sharpen scales the decoder, so that the
    greedy choice is seldom a near tie (a random model's logits are nearly flat). An LSTM's
    forget gates start open (bias 1): from charrnn's 0 an untrained LSTM's greedy text falls
    into a cycle of one or two characters, whatever the seed, and compares little."""
    cfg = ModelConfig(cell=cell, layers=layers, hidden=hidden, vocab_size=len(vocab))
    m = CharModel(cfg, vocab).init_weights(np.random.default_rng(seed))
    if cell == "lstm":
        m.params.b[:, hidden : 2 * hidden] = 1.0
    if cell == "lnlstm":  # gains and biases away from 1 and 0, each seen where it acts
        H, K, q = hidden, 4 * hidden, m.params.ln
        q[:] = np.random.default_rng(seed + 2).normal(0, 0.2, q.shape)
        for gain in (slice(0, K), slice(2 * K, 3 * K), slice(3 * K, 3 * K + H)):
            q[:, gain] += 1.0
        q[:, K + H : K + 2 * H] += 1.0  # bx's forget block: after the normalisation, as b above
    m.params.Wy[:] *= sharpen
    m.params.by[:] = np.random.default_rng(seed + 1).normal(0, 0.5, m.params.by.shape)
    return m


def save(model, path):
    vocab = model.vocab.to_json()
    checkpoint.save(path, {"model": model.config.to_dict(), "vocab": vocab}, model.params)
    return path


def charrnn_logits(model, ids):
    """charrnn's logits (T, V) after each of ids, read as one stream from the zero state."""
    h0, c0 = model.zero_state(1)
    return model.forward(np.asarray(ids, np.int32)[:, None], h0, c0).P.copy()


def exact(model, ids, h0=None, c0=None):
    """The float64 reference's (tests/reference.py) logits (T, N, V) and final h and c of model
    reading ids (T, N) from h0, c0 (zeros if None)."""
    from charrnn.engine import kernels
    from reference import reference_forward

    ids = np.asarray(ids).reshape(len(ids), -1)
    L, H, (T, N) = model.config.layers, model.config.hidden, ids.shape
    h0, c0 = (np.zeros((L, N, H)) if s is None else np.asarray(s, np.float64) for s in (h0, c0))
    p = kernels.Params(*[np.asarray(a, np.float64) for a in model.params])
    logits, h, c = reference_forward(model.config.cell, p, ids, h0, c0)
    return logits.reshape(T, N, -1), h, c


def as_near_exact_as_charrnn(got, charrnn, exact, factor=8.0):
    """An export's float32 result `got` is as near the float64 result `exact` as charrnn's own
    float32 result is, within `factor` (root mean square). For the lnlstm: its normalisations
    amplify float32 rounding wherever a row's spread is small against its mean, as in these
    tiny random models, whose float32 logits charrnn's own kernels compute up to 3e-4 from
    float64's (a trained 2 x 384's: 1e-5, the export's too); a fixed tolerance would test the
    model's conditioning, not the export. Measured: 0.1-3.6 times charrnn's error; a gain or
    bias misplaced, or another epsilon, is hundreds of times it."""
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))
    err, own = rms(np.asarray(got, np.float64) - exact), rms(np.asarray(charrnn, np.float64) - exact)
    assert err <= factor * own + 1e-7, f"{err:.2e} from float64, charrnn's own float32 {own:.2e}"


def cli(*args):
    """`charrnn ARGS` run in this process (Typer's CliRunner: a new Python process for each
    would cost more than the command itself, an import of ONNX for an export), as a
    CompletedProcess: returncode, stdout and stderr as text, stdout_bytes as written."""
    from typer.testing import CliRunner

    from charrnn.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    done = subprocess.CompletedProcess(["charrnn", *map(str, args)], r.exit_code, r.stdout, r.stderr)
    done.stdout_bytes = r.stdout_bytes
    return done


def charrnn_sample(ckpt, prime, length, *extra):
    """What `charrnn sample --temp 0` prints (the prime, then `length` characters), as bytes."""
    done = cli("sample", "-c", ckpt, "--temp", "0", "-n", length, "--prime", prime, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout_bytes


def onnx_session(data):
    ort = __import__("onnxruntime")
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def onnx_meta(session):
    return json.loads(session.get_modelmeta().custom_metadata_map["charrnn"])


def onnx_steps(session, ids):
    """The step graph's logits (T, V) after each of ids, from the zero state, one run per id."""
    meta = onnx_meta(session)
    names = meta["inputs"][1:]
    state = {n: np.zeros((meta["layers"], 1, meta["hidden"]), np.float32) for n in names}
    out = []
    for i in ids:
        logits, *new = session.run(None, {"id": np.array([i], np.int64), **state})
        state = dict(zip(names, new))
        out.append(logits[0])
    return np.array(out), state


def onnx_greedy(session, prime_ids, length):
    """Greedy ids after prime_ids from the step graph: each step's likeliest id (the first of
    equals, never the unknown symbol), as `charrnn sample --temp 0` picks them."""
    meta = onnx_meta(session)
    names = meta["inputs"][1:]
    state = {n: np.zeros((meta["layers"], 1, meta["hidden"]), np.float32) for n in names}
    feed, out = list(prime_ids), []
    for _ in range(length):
        for i in feed:
            logits, *new = session.run(None, {"id": np.array([i], np.int64), **state})
            state = dict(zip(names, new))
        row = logits[0].astype(np.float64)
        if meta["unk_id"] >= 0:
            row[meta["unk_id"]] = -np.inf
        feed = [int(np.argmax(row))]
        out.append(feed[0])
    return out


def sampler_logits(model, ids):
    """The logits (T, V) `charrnn sample` computes after each of ids (its packed float32 step,
    sample_kernels.step, and decoder), from the zero state."""
    from charrnn.engine import gemm, sample_kernels
    from charrnn.engine.sampler import Sampler

    s = Sampler(model, 1, parallel=False)
    w, p, V, L = s.work, model.params, model.config.vocab_size, model.config.layers
    out = []
    for i in ids:
        sample_kernels.step(model.cell, p, w, np.array([i], np.int64), w.h, w.c)
        gemm.matmul(w.h[L - 1], w.Wyp, w.logits)
        out.append(w.logits[0, :V] + p.by)
    return np.array(out)
