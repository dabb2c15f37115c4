"""Looking inside a trained model: what each unit's state does along a text.

A text is read as one continuous stream from the zero state, through the same forward kernel
training uses (kernels.forward, one stream, windows of WINDOW characters with the state
carried), and after each window its hidden states, LSTM cell states and gate activations are
handed to accumulators:

    Collect     every array, for notebooks (CharModel.states)
    Trace       one unit's values along the text (for colouring the text)
    Correlate   Pearson correlation of every unit with a per-character feature
    Saturate    how often each sigmoid gate unit is below 0.1 or above 0.9

All but Collect keep O(L H) memory, so a long text costs time, not memory. The value at step t
is the state *after* reading character t, and the features (below) are defined the same way:
the quotation mark that opens a string is inside it, the one that closes it is outside.

The features units are compared with are in features.py.
"""

from typing import NamedTuple, Optional

import numpy as np

from ..engine import kernels, threads
from ..errors import ConfigError, CorpusError
from .features import FEATURES, check_feature, feature  # noqa: F401 (re-exported)

WINDOW = 128  # characters per forward call
# in the fused block's order
GATE_NAMES = {kernels.LSTM: "ifgo", kernels.GRU: "rzn", kernels.RNN: "", kernels.LNLSTM: "ifgo"}
# the ones --gates reports
SIGMOID_GATES = {kernels.LSTM: "ifo", kernels.GRU: "rz", kernels.RNN: "", kernels.LNLSTM: "ifo"}
CELL_STATE = (kernels.LSTM, kernels.LNLSTM)  # the cells with a cell state c beside h
GATE_TITLES = {
    "i": "input",
    "f": "forget",
    "g": "cell candidate",
    "o": "output",
    "r": "reset",
    "z": "update",
    "n": "candidate",
}
LEFT, RIGHT = 0.1, 0.9  # saturation thresholds, as in Karpathy, Johnson and Fei-Fei (2015)


class States(NamedTuple):
    """Every layer's state after each character of a text of N characters."""

    # fmt: off
    ids: np.ndarray            # (N,) the characters read
    h: np.ndarray              # (L, N, H) hidden states
    c: Optional[np.ndarray]    # (L, N, H) lstm cell states; None for gru and rnn
    gates: dict                # name -> (L, N, H): lstm i f g o, gru r z n, rnn none
    # fmt: on


# ---------------------------------------------------------------------------------------------
# Reading a text


def encode(model, text, unknown=None):
    """The ids of a non-empty text; unknown is "error" or "drop" (characters the model never saw),
    or None: read as the model's unknown symbol if it has one (as eval reads them), else "error"."""
    if unknown is None:
        unknown = "unk" if model.vocab.unk_id >= 0 else "error"
    try:
        ids = model.encode(text, unknown=unknown)
    except CorpusError as e:
        raise CorpusError(f"{e}; pass --drop-unknown to leave them out") from None
    if len(ids) == 0:
        raise CorpusError("the text is empty" + (" once unknown characters are dropped" if len(text) else ""))
    return np.asarray(ids, np.int32)


def run(model, ids, *accumulators, window=WINDOW):
    """Feed ids (N,) through the model from the zero state; each accumulator's add(start, h, c, G)
    sees every window: h, c (L, T, H) and G (L, T, K), views valid only during the call."""
    threads.single_threaded_blas()  # batch-1 products: a second thread only waits
    h0, c0 = model.zero_state(1)
    for start in range(0, len(ids), window):
        x = np.ascontiguousarray(ids[start : start + window].reshape(-1, 1))
        w = model.forward(x, h0, c0)
        for acc in accumulators:
            acc.add(start, w.Hs[:, 1:, 0], w.Cs[:, 1:, 0], w.G[:, :, 0])
        h0, c0 = w.Hs[:, -1].copy(), w.Cs[:, -1].copy()
    return accumulators


def compile_kernels(cell, dtype):
    """Compile (or load from Numba's cache) the forward kernel on a tiny model: inspect needs
    nothing else (api.compile_kernels would also build the training kernels)."""
    from ..engine.model import Model, ModelConfig

    m = Model(ModelConfig(cell=cell, layers=2, hidden=2, vocab_size=2), dtype=dtype)
    run(m, np.array([0, 1], np.int32))


class Collect:
    def __init__(self, model, n):
        L, H = model.config.layers, model.config.hidden
        self.cell = model.cell
        self.h = np.empty((L, n, H), model.dtype)
        self.c = np.empty((L, n, H), model.dtype) if model.cell in CELL_STATE else None
        self.G = np.empty((L, n, model.params.Wh.shape[2]), model.dtype)

    def add(self, start, h, c, G):
        end = start + h.shape[1]
        self.h[:, start:end] = h
        if self.c is not None:
            self.c[:, start:end] = c
        self.G[:, start:end] = G

    def gates(self):
        H = self.h.shape[2]
        return {name: self.G[:, :, k * H : (k + 1) * H] for k, name in enumerate(GATE_NAMES[self.cell])}


def states(model, text, unknown=None, window=WINDOW):
    """The States of a text read from the zero state (text: str, or bytes for a byte model)."""
    ids = encode(model, text, unknown)
    (col,) = run(model, ids, Collect(model, len(ids)), window=window)
    return States(ids, col.h, col.c, col.gates())


def select(states_, kind):
    """The (L, N, H) array of kind: h, c, or a gate name."""
    if kind == "h":
        return states_.h
    if kind == "c" and states_.c is not None:
        return states_.c
    if kind in states_.gates:
        return states_.gates[kind]
    raise ConfigError(f"no state {kind!r} in this model")


def kinds(model):
    """The state kinds a unit of this model has: h, c (lstm) and its gates."""
    return ("h",) + (("c",) if model.cell in CELL_STATE else ()) + tuple(GATE_NAMES[model.cell])


def check_unit(model, layer, unit, kind="h"):
    L, H = model.config.layers, model.config.hidden
    if not (0 <= layer < L and 0 <= unit < H):
        raise ConfigError(
            f"no unit {layer}:{unit}: this {model.config.cell} has {L} layer"
            f"{'s' if L > 1 else ''} (0-{L - 1}) of {H} units (0-{H - 1})"
        )
    if kind not in kinds(model):
        raise ConfigError(
            f"a {model.config.cell} has no {kind!r} state; choose one of {', '.join(kinds(model))}"
        )


def _part(model, kind, h, c, G):
    if kind == "h":
        return h
    if kind == "c":
        return c
    H = model.config.hidden
    k = GATE_NAMES[model.cell].index(kind)
    return G[:, :, k * H : (k + 1) * H]


class Trace:
    """One unit's values along the text."""

    def __init__(self, model, n, layer, unit, kind="h"):
        check_unit(model, layer, unit, kind)
        self.model, self.layer, self.unit, self.kind = model, layer, unit, kind
        self.values = np.empty(n, np.float64)

    def add(self, start, h, c, G):
        part = _part(self.model, self.kind, h, c, G)
        self.values[start : start + part.shape[1]] = part[self.layer, :, self.unit]


class Correlate:
    """Pearson correlation of every unit's h (and, for the lstm, c) with a feature (N,),
    accumulated over windows: sums of x, x^2 and x f, shifted by each unit's first value so
    that large, steady cell states lose no precision."""

    def __init__(self, model, values):
        f = np.asarray(values, np.float64)
        self.mean = float(f.mean())
        self.f = f - self.mean
        if not np.any(self.f):
            raise CorpusError(
                "the feature is the same at every character of this text, so nothing can correlate with it"
            )
        self.model = model
        self.kinds = ("h", "c") if model.cell in CELL_STATE else ("h",)
        self.shift, self.sx, self.sxx, self.sxf = {}, {}, {}, {}

    def add(self, start, h, c, G):
        f = self.f[start : start + h.shape[1]]
        for kind in self.kinds:
            x = _part(self.model, kind, h, c, G).astype(np.float64)  # (L, T, H)
            if kind not in self.shift:
                self.shift[kind] = x[:, 0].copy()
                self.sx[kind] = self.sxx[kind] = self.sxf[kind] = 0.0
            x -= self.shift[kind][:, None]
            self.sx[kind] = self.sx[kind] + x.sum(axis=1)
            self.sxx[kind] = self.sxx[kind] + (x * x).sum(axis=1)
            self.sxf[kind] = self.sxf[kind] + np.einsum("lth,t->lh", x, f)

    def result(self):
        """kind -> r (L, H); a unit that never changes gets r = 0."""
        n, ff = len(self.f), float(self.f @ self.f)
        out = {}
        for kind in self.kinds:
            sx, sxx, sxf = self.sx[kind], self.sxx[kind], self.sxf[kind]
            var = sxx - sx * sx / n  # the feature is centred: sum f = 0
            steady = var <= 1e-12 * np.maximum(sxx, 1e-300)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = sxf / np.sqrt(np.where(steady, 1.0, var) * ff)
            out[kind] = np.where(steady, 0.0, r)
        return out


def rank(corr, top=10):
    """The top units by |r| from Correlate.result(): dicts with layer, unit, state, r."""
    rows = [
        (abs(float(r[l, j])), kind, l, j, float(r[l, j]))
        for kind, r in corr.items()
        for l in range(r.shape[0])
        for j in range(r.shape[1])
    ]
    rows.sort(key=lambda t: (-t[0], t[2], t[3], t[1]))
    return [{"layer": l, "unit": j, "state": kind, "r": v} for _, kind, l, j, v in rows[:top]]


class Saturate:
    """Per layer and sigmoid gate, the fraction of steps each unit spends below LEFT and above
    RIGHT."""

    def __init__(self, model):
        self.names = SIGMOID_GATES[model.cell]
        if not self.names:
            raise ConfigError(f"a vanilla {model.config.cell} has no gates; --gates needs an lstm or a gru")
        self.model, self.n = model, 0
        L, H = model.config.layers, model.config.hidden
        self.left = {g: np.zeros((L, H)) for g in self.names}
        self.right = {g: np.zeros((L, H)) for g in self.names}

    def add(self, start, h, c, G):
        self.n += h.shape[1]
        for g in self.names:
            a = _part(self.model, g, h, c, G)
            self.left[g] += (a < LEFT).sum(axis=1)
            self.right[g] += (a > RIGHT).sum(axis=1)

    def fractions(self):
        """gate -> (left (L, H), right (L, H)) fractions of steps."""
        return {g: (self.left[g] / self.n, self.right[g] / self.n) for g in self.names}

    def summary(self):
        """One row per layer and gate: the mean fractions, and the share of units that are
        mostly (over half the steps) left or right saturated, or rarely (under a tenth of the
        steps) saturated at all."""
        rows = []
        fr = self.fractions()
        for l in range(self.model.config.layers):
            for g in self.names:
                left, right = fr[g][0][l], fr[g][1][l]
                rows.append(
                    {
                        "layer": l,
                        "gate": g,
                        "left": float(left.mean()),
                        "right": float(right.mean()),
                        "mostly_left": float((left > 0.5).mean()),
                        "mostly_right": float((right > 0.5).mean()),
                        "rarely": float((left + right < 0.1).mean()),
                    }
                )
        return rows


def step_chars(model, ids):
    """The text as one character per step: a byte model's bytes as Latin-1 characters (the
    features only look at ASCII punctuation and whitespace)."""
    if model.vocab.byte_level:
        return model.vocab.decode(ids).decode("latin-1")
    return model.vocab.decode(ids)
