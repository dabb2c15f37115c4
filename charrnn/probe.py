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

Features, one number per character: string (inside a Python string literal, by a small lexer
that knows comments, escapes and triple quotes), comment (inside a # comment), quote (inside
double quotation marks, for prose), brackets (depth of ( [ { outside strings and comments),
line-position (characters since the last newline), indent (leading whitespace of the current
line, so far), and re:PATTERN (inside any match of a regular expression).
"""
import re
from typing import NamedTuple, Optional

import numpy as np

from . import kernels as K, threads
from .errors import ConfigError, CorpusError

WINDOW = 128  # characters per forward call
GATE_NAMES = {K.LSTM: "ifgo", K.GRU: "rzn", K.RNN: ""}  # in the fused block's order
SIGMOID_GATES = {K.LSTM: "ifo", K.GRU: "rz", K.RNN: ""}  # the ones --gates reports
GATE_TITLES = {"i": "input", "f": "forget", "g": "cell candidate", "o": "output",
               "r": "reset", "z": "update", "n": "candidate"}
LEFT, RIGHT = 0.1, 0.9  # saturation thresholds, as in Karpathy, Johnson and Fei-Fei (2015)
FEATURES = ("string", "comment", "quote", "brackets", "line-position", "indent")


class States(NamedTuple):
    """Every layer's state after each character of a text of N characters."""
    ids: np.ndarray            # (N,) the characters read
    h: np.ndarray              # (L, N, H) hidden states
    c: Optional[np.ndarray]    # (L, N, H) lstm cell states; None for gru and rnn
    gates: dict                # name -> (L, N, H): lstm i f g o, gru r z n, rnn none


# ---------------------------------------------------------------------------------------------
# Reading a text

def encode(model, text, unknown="error"):
    """The ids of a non-empty text; unknown is "error" or "drop" (characters the model never saw)."""
    try:
        ids = model.encode(text, unknown=unknown)
    except CorpusError as e:
        raise CorpusError(f"{e}; pass --drop-unknown to leave them out") from None
    if len(ids) == 0:
        raise CorpusError("the text is empty" + (" once unknown characters are dropped"
                                                  if len(text) else ""))
    return np.asarray(ids, np.int32)


def run(model, ids, *accumulators, window=WINDOW):
    """Feed ids (N,) through the model from the zero state; each accumulator's add(start, h, c, G)
    sees every window: h, c (L, T, H) and G (L, T, K), views valid only during the call."""
    threads.set_blas_threads(1)  # batch-1 products: a second thread only waits (see sampler)
    h0, c0 = model.zero_state(1)
    for start in range(0, len(ids), window):
        x = np.ascontiguousarray(ids[start:start + window].reshape(-1, 1))
        w = model.forward(x, h0, c0)
        for acc in accumulators:
            acc.add(start, w.Hs[:, 1:, 0], w.Cs[:, 1:, 0], w.G[:, :, 0])
        h0, c0 = w.Hs[:, -1].copy(), w.Cs[:, -1].copy()
    return accumulators


def warmup(cell, dtype):
    """Compile (or load from Numba's cache) the forward kernel on a tiny model: inspect needs
    nothing else (api.warmup would also build the training kernels)."""
    from .model import Model, ModelConfig
    m = Model(ModelConfig(cell=cell, num_layers=2, hidden_size=2, vocab_size=2), "ab", dtype=dtype)
    run(m, np.array([0, 1], np.int32))


class Collect:
    def __init__(self, model, n):
        L, H = model.config.num_layers, model.config.hidden_size
        self.cell = model.cell
        self.h = np.empty((L, n, H), model.dtype)
        self.c = np.empty((L, n, H), model.dtype) if model.cell == K.LSTM else None
        self.G = np.empty((L, n, model.params.Wh.shape[2]), model.dtype)

    def add(self, start, h, c, G):
        end = start + h.shape[1]
        self.h[:, start:end] = h
        if self.c is not None:
            self.c[:, start:end] = c
        self.G[:, start:end] = G

    def gates(self):
        H = self.h.shape[2]
        return {name: self.G[:, :, k * H:(k + 1) * H]
                for k, name in enumerate(GATE_NAMES[self.cell])}


def states(model, text, unknown="error", window=WINDOW):
    """The States of a text read from the zero state (text: str, or bytes for a byte model)."""
    ids = encode(model, text, unknown)
    col, = run(model, ids, Collect(model, len(ids)), window=window)
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
    return ("h",) + (("c",) if model.cell == K.LSTM else ()) + tuple(GATE_NAMES[model.cell])


def check_unit(model, layer, unit, kind="h"):
    L, H = model.config.num_layers, model.config.hidden_size
    if not (0 <= layer < L and 0 <= unit < H):
        raise ConfigError(f"no unit {layer}:{unit}: this {model.config.cell} has {L} layer"
                          f"{'s' if L > 1 else ''} (0-{L - 1}) of {H} units (0-{H - 1})")
    if kind not in kinds(model):
        raise ConfigError(f"a {model.config.cell} has no {kind!r} state; choose one of "
                          f"{', '.join(kinds(model))}")


def _part(model, kind, h, c, G):
    if kind == "h":
        return h
    if kind == "c":
        return c
    H = model.config.hidden_size
    k = GATE_NAMES[model.cell].index(kind)
    return G[:, :, k * H:(k + 1) * H]


class Trace:
    """One unit's values along the text."""

    def __init__(self, model, n, layer, unit, kind="h"):
        check_unit(model, layer, unit, kind)
        self.model, self.layer, self.unit, self.kind = model, layer, unit, kind
        self.values = np.empty(n, np.float64)

    def add(self, start, h, c, G):
        part = _part(self.model, self.kind, h, c, G)
        self.values[start:start + part.shape[1]] = part[self.layer, :, self.unit]


class Correlate:
    """Pearson correlation of every unit's h (and, for the lstm, c) with a feature (N,),
    accumulated over windows: sums of x, x^2 and x f, shifted by each unit's first value so
    that large, steady cell states lose no precision."""

    def __init__(self, model, feature):
        f = np.asarray(feature, np.float64)
        self.mean = float(f.mean())
        self.f = f - self.mean
        if not np.any(self.f):
            raise CorpusError("the feature is the same at every character of this text, so "
                              "nothing can correlate with it")
        self.model = model
        self.kinds = ("h", "c") if model.cell == K.LSTM else ("h",)
        self.shift, self.sx, self.sxx, self.sxf = {}, {}, {}, {}

    def add(self, start, h, c, G):
        f = self.f[start:start + h.shape[1]]
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
    rows = [(abs(float(r[l, j])), kind, l, j, float(r[l, j]))
            for kind, r in corr.items() for l in range(r.shape[0]) for j in range(r.shape[1])]
    rows.sort(key=lambda t: (-t[0], t[2], t[3], t[1]))
    return [{"layer": l, "unit": j, "state": kind, "r": v} for _, kind, l, j, v in rows[:top]]


class Saturate:
    """Per layer and sigmoid gate, the fraction of steps each unit spends below LEFT and above
    RIGHT."""

    def __init__(self, model):
        self.names = SIGMOID_GATES[model.cell]
        if not self.names:
            raise ConfigError(f"a vanilla {model.config.cell} has no gates; --gates needs an "
                              "lstm or a gru")
        self.model, self.n = model, 0
        L, H = model.config.num_layers, model.config.hidden_size
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
        for l in range(self.model.config.num_layers):
            for g in self.names:
                left, right = fr[g][0][l], fr[g][1][l]
                rows.append({"layer": l, "gate": g, "left": float(left.mean()),
                             "right": float(right.mean()),
                             "mostly_left": float((left > 0.5).mean()),
                             "mostly_right": float((right > 0.5).mean()),
                             "rarely": float((left + right < 0.1).mean())})
        return rows


# ---------------------------------------------------------------------------------------------
# Features

def step_chars(model, ids):
    """The text as one character per step: a byte model's bytes as Latin-1 characters (the
    features only look at ASCII punctuation and whitespace)."""
    if isinstance(model.vocab, bytes):
        return np.frombuffer(model.vocab, np.uint8)[ids].tobytes().decode("latin-1")
    return "".join(np.array(list(model.vocab))[ids])


def python_strings(text):
    """(inside a string literal, outside strings and comments): two bool arrays (N,).

    A small lexer: '#' starts a comment to the end of the line; ' and " open a string, tripled
    a triple-quoted one; a backslash escapes the next character; an unterminated single-quoted
    string ends at the newline (so a stray apostrophe costs at most a line)."""
    n = len(text)
    inside = np.zeros(n, bool)
    code = np.zeros(n, bool)
    i = 0
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end  # the newline itself is code again
        elif ch in "'\"":
            q = text[i:i + 3] if text[i:i + 3] == ch * 3 else ch
            j = i + len(q)
            while j < n:
                if text[j] == "\\":
                    j += 2
                elif text.startswith(q, j):
                    break
                elif text[j] == "\n" and len(q) == 1:
                    break
                else:
                    j += 1
            j = min(j, n)
            inside[i:j] = True  # opening quote in, closing quote (or newline) out
            i = j + len(q) if j < n and text[j] != "\n" else j
        else:
            code[i] = True
            i += 1
    return inside, code


def comment(text):
    """Inside a Python comment, from its '#' to the end of the line."""
    inside, code = python_strings(text)
    return ~(inside | code)


def quotes(text):
    """Inside double quotation marks (" or the curly pair), across lines, for prose."""
    inside = np.zeros(len(text), bool)
    state = False
    for t, ch in enumerate(text):
        if ch == "\u201c":
            state = True
        elif ch == "\u201d":
            state = False
        elif ch == '"':
            state = not state
        inside[t] = state
    return inside


def bracket_depth(text):
    """Depth of ( [ { after each character, counted outside strings and comments, never below 0."""
    _, code = python_strings(text)
    depth = np.zeros(len(text))
    d = 0
    for t, ch in enumerate(text):
        if code[t]:
            if ch in "([{":
                d += 1
            elif ch in ")]}":
                d = max(d - 1, 0)
        depth[t] = d
    return depth


def line_position(text):
    """Characters since the last newline: 0 at a newline, 1 at a line's first character."""
    pos = np.zeros(len(text))
    col = 0
    for t, ch in enumerate(text):
        col = 0 if ch == "\n" else col + 1
        pos[t] = col
    return pos


def indent(text):
    """The current line's leading spaces and tabs, as far as read (0 at a newline)."""
    out = np.zeros(len(text))
    width, leading = 0, True
    for t, ch in enumerate(text):
        if ch == "\n":
            width, leading = 0, True
        elif leading and ch in " \t":
            width += 1
        else:
            leading = False
        out[t] = width
    return out


def regex_feature(text, pattern):
    """Inside any (non-empty) match of the regular expression."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"bad regular expression {pattern!r}: {e}") from None
    inside = np.zeros(len(text), bool)
    for m in rx.finditer(text):
        inside[m.start():m.end()] = True
    return inside


def check_feature(name):
    """Raise ConfigError unless name is one of FEATURES or re:PATTERN with a valid pattern."""
    if name.startswith("re:"):
        regex_feature("", name[3:])
    elif name not in FEATURES:
        raise ConfigError(f"unknown feature {name!r}: use one of {', '.join(FEATURES)} "
                          "or re:PATTERN")


def feature(name, text):
    """The named feature (one of FEATURES, or 're:PATTERN') of text, as floats (N,)."""
    check_feature(name)
    if name.startswith("re:"):
        return regex_feature(text, name[3:]).astype(np.float64)
    fns = {"string": lambda s: python_strings(s)[0], "comment": comment, "quote": quotes, "brackets": bracket_depth,
           "line-position": line_position, "indent": indent}
    return np.asarray(fns[name](text), np.float64)
