"""A CharModel as ONNX graphs: one sampling step, or a whole sequence for scoring.

The step graph is what an application drives in its own loop, one character at a time:

    inputs   id      (N,) int64       the character just read (or written), per row
             h       (L, N, H) float  the state before it
             c       (L, N, H) float  lstm and lnlstm only: the cell state
    outputs  logits  (N, V) float     scores of the next character (softmax for probabilities)
             h_out   (L, N, H)        the state after it
             c_out   (L, N, H)        lstm and lnlstm only

It spells out charrnn's equations with MatMul, Add, Mul, Sigmoid and Tanh, in charrnn's own gate
order (kernels.py: lstm i f g o, gru r z n with n = tanh(Wx x + b + r * (Wh h + bh))), so the
graph reads as the kernels do; the lnlstm's three normalisations are ONNX's
LayerNormalization (opset 17), with the kernels' epsilon.

The sequence graph (`sequence=True`) scores a whole text at once with ONNX's own LSTM, GRU and
RNN operators, one per layer, whose gate orders differ (ONNX LSTM: i o f c; GRU: z r h, here
with linear_before_reset=1, charrnn's variant; its bias B is [Wb, Rb]). ONNX has no operator
for the lnlstm: its sequence graph is a Scan over the step graph.

    inputs   ids     (T, N) int64     outputs  logits (T, N, V), h_out, c_out (lstm, lnlstm)
             h, c    as above

Both carry the vocabulary and the model's shape in metadata_props (key "charrnn", JSON; see
metadata()), so a consumer maps characters to ids without charrnn. The weights are float32.
"""

import json

import numpy as np

from .. import __version__
from ..engine.kernels import LN_EPS

OPSET = 17  # ONNX Runtime 1.12+ and onnxruntime-web run it
META_KEY = "charrnn"
WITH_C = ("lstm", "lnlstm")  # the cells with a cell state c beside h


def metadata(model, graph):
    """The JSON of metadata_props["charrnn"]: everything needed to drive the graph."""
    cfg, vocab = model.config, model.vocab
    return {
        "format": "charrnn-onnx",
        "graph": graph,
        "charrnn_version": __version__,
        "cell": cfg.cell,
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "vocab_size": cfg.vocab_size,
        "byte_level": model.byte_level,
        # id = index: a character (str) per id, or a byte value (int) for a byte-level model
        "vocab": list(vocab.symbols),
        "start_id": int(vocab.start_id),  # the input to begin from without a prime
        "unk_id": int(vocab.unk_id),  # never to be drawn (-1: none)
        "inputs": ["id" if graph == "step" else "ids", "h"] + (["c"] if cfg.cell in WITH_C else []),
        "outputs": ["logits", "h_out"] + (["c_out"] if cfg.cell in WITH_C else []),
        "newlines": "folded" if not model.byte_level else "raw",  # \r\n read as \n in training
    }


class _Graph:
    """Nodes and initializers under construction, with fresh names."""

    def __init__(self, helper, numpy_helper, n=0):
        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits, self.n = [], [], n  # n: where fresh names start

    def const(self, name, array):
        self.inits.append(self.nh.from_array(np.array(array, order="C"), name))
        return name

    def op(self, kind, *inputs, outputs=1, **attrs):
        names = [f"{kind.lower()}_{self.n}_{k}" for k in range(outputs)]
        self.n += 1
        self.nodes.append(self.h.make_node(kind, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def rename(self, name, to):
        """Give the value `name` the graph output name `to`."""
        self.nodes.append(self.h.make_node("Identity", [name], [to]))


def _f32(a):
    return np.asarray(a, np.float32)


def _lib():
    try:
        import onnx
        from onnx import helper, numpy_helper, TensorProto
    except ImportError:
        from ..errors import CharrnnError, install_hint

        raise CharrnnError(f"ONNX export needs the onnx package: {install_hint('export')}") from None
    return onnx, helper, numpy_helper, TensorProto


def _step(g, model, id_, h_in, c_in):
    """Nodes of one step into g, from the values named id_ (N,), h_in and c_in (L, N, H; c_in
    None without a cell state): the names of the logits (N, V), the stacked h and c (or None)."""
    p, cfg = model.params, model.config
    L, H, cell = cfg.layers, cfg.hidden, cfg.cell
    G = p.Wh.shape[2]
    split = g.const("split_gates", np.array([H] * (G // H), np.int64)) if G > H else None
    hs, cs = [], []
    for l in range(L):
        idx = g.const(f"layer{l}", np.array(l, np.int64))
        h_prev = g.op("Gather", h_in, idx, axis=0)  # (N, H)
        if l == 0:
            x = g.op("Gather", g.const("Wx0", _f32(p.Wx0)), id_, axis=0)  # (N, K)
        else:
            x = g.op("MatMul", hs[-1], g.const(f"Wx{l}", _f32(p.Wx[l - 1])))
        x = g.op("Add", x, g.const(f"b{l}", _f32(p.b[l])))
        r = g.op("MatMul", h_prev, g.const(f"Wh{l}", _f32(p.Wh[l])))  # (N, K)
        if cell in WITH_C:
            c_prev = g.op("Gather", c_in, idx, axis=0)
            a = g.op("Add", x, r) if cell == "lstm" else _ln_gates(g, l, p.ln[l], x, r, G)
            i, f, gg, o = g.op("Split", a, split, axis=1, outputs=4)
            i, f, o = g.op("Sigmoid", i), g.op("Sigmoid", f), g.op("Sigmoid", o)
            c = g.op("Add", g.op("Mul", f, c_prev), g.op("Mul", i, g.op("Tanh", gg)))
            tc = c  # what the tanh takes: c, or for the lnlstm gc * LN(c) + bc
            if cell == "lnlstm":
                q = p.ln[l, 3 * G :]
                tc = _ln(g, c, f"gc{l}", q[:H], f"bc{l}", q[H:])
            h = g.op("Mul", o, g.op("Tanh", tc))
            cs.append(c)
        elif cell == "gru":
            xr, xz, xn = g.op("Split", x, split, axis=1, outputs=3)
            rr, rz, rn = g.op("Split", r, split, axis=1, outputs=3)
            rg = g.op("Sigmoid", g.op("Add", xr, rr))
            z = g.op("Sigmoid", g.op("Add", xz, rz))
            a = g.op("Add", rn, g.const(f"bh{l}", _f32(p.bh[l])))
            n = g.op("Tanh", g.op("Add", xn, g.op("Mul", rg, a)))
            h = g.op("Add", n, g.op("Mul", z, g.op("Sub", h_prev, n)))  # (1 - z) n + z h_prev
        else:
            h = g.op("Tanh", g.op("Add", x, r))
        hs.append(h)
    axis0 = g.const("axis0", np.array([0], np.int64))
    stack = lambda vs: g.op("Concat", *[g.op("Unsqueeze", v, axis0) for v in vs], axis=0)
    logits = g.op("Add", g.op("MatMul", hs[-1], g.const("Wy", _f32(p.Wy))), g.const("by", _f32(p.by)))
    return logits, stack(hs), stack(cs) if cs else None


def _ln(g, v, scale_name, scale, bias_name=None, bias=None):
    """LayerNormalization of v over its last axis, as the kernels' ln_rows, times scale plus bias."""
    ins = [v, g.const(scale_name, _f32(scale))] + ([g.const(bias_name, _f32(bias))] if bias_name else [])
    return g.op("LayerNormalization", *ins, axis=-1, epsilon=LN_EPS)


def _ln_gates(g, l, q, x, r, K):
    """The lnlstm's gate inputs: gx * LN(x) + bx + gh * LN(r), q = Params.ln[l]."""
    xn = _ln(g, x, f"gx{l}", q[:K], f"bx{l}", q[K : 2 * K])
    return g.op("Add", xn, _ln(g, r, f"gh{l}", q[2 * K : 3 * K]))


def _state_info(helper, TP, name, cfg):
    return helper.make_tensor_value_info(name, TP.FLOAT, [cfg.layers, "N", cfg.hidden])


def step_model(model):
    """The onnx.ModelProto of one sampling step of model (a CharModel)."""
    onnx, helper, numpy_helper, TP = _lib()
    g, cfg = _Graph(helper, numpy_helper), model.config
    with_c = cfg.cell in WITH_C
    logits, h, c = _step(g, model, "id", "h", "c" if with_c else None)
    g.rename(logits, "logits")
    g.rename(h, "h_out")
    inputs = [helper.make_tensor_value_info("id", TP.INT64, ["N"]), _state_info(helper, TP, "h", cfg)]
    outputs = [
        helper.make_tensor_value_info("logits", TP.FLOAT, ["N", cfg.vocab_size]),
        _state_info(helper, TP, "h_out", cfg),
    ]
    if with_c:
        g.rename(c, "c_out")
        inputs.append(_state_info(helper, TP, "c", cfg))
        outputs.append(_state_info(helper, TP, "c_out", cfg))
    return _finish(onnx, helper, g, "charrnn_step", inputs, outputs, metadata(model, "step"))


def _scan_sequence(model):
    """The sequence graph of a cell ONNX has no operator for: a Scan whose body is the step."""
    onnx, helper, numpy_helper, TP = _lib()
    cfg = model.config
    body = _Graph(helper, numpy_helper)
    logits, h, c = _step(body, model, "id_t", "h_t", "c_t")
    for name, to in ((h, "h_next"), (c, "c_next"), (logits, "logits_t")):
        body.rename(name, to)
    step = helper.make_graph(
        body.nodes,
        "charrnn_step_body",
        [_state_info(helper, TP, "h_t", cfg), _state_info(helper, TP, "c_t", cfg),
         helper.make_tensor_value_info("id_t", TP.INT64, ["N"])],
        [_state_info(helper, TP, "h_next", cfg), _state_info(helper, TP, "c_next", cfg),
         helper.make_tensor_value_info("logits_t", TP.FLOAT, ["N", cfg.vocab_size])],
        body.inits,
    )  # fmt: skip
    g = _Graph(helper, numpy_helper, n=body.n)  # names apart from the body's
    h_out, c_out, logits = g.op("Scan", "h", "c", "ids", outputs=3, body=step, num_scan_inputs=1)
    for name, to in ((logits, "logits"), (h_out, "h_out"), (c_out, "c_out")):
        g.rename(name, to)
    inputs = [helper.make_tensor_value_info("ids", TP.INT64, ["T", "N"])]
    inputs += [_state_info(helper, TP, "h", cfg), _state_info(helper, TP, "c", cfg)]
    outputs = [helper.make_tensor_value_info("logits", TP.FLOAT, ["T", "N", cfg.vocab_size])]
    outputs += [_state_info(helper, TP, "h_out", cfg), _state_info(helper, TP, "c_out", cfg)]
    return _finish(onnx, helper, g, "charrnn_sequence", inputs, outputs, metadata(model, "sequence"))


# charrnn's gate blocks in the order of ONNX's operators
ONNX_ORDER = {
    "lstm": [0, 3, 1, 2],  # i f g o -> i o f c
    "gru": [1, 0, 2],  # r z n   -> z r h
    "rnn": [0],
}


def _onnx_gates(W, cell, H):
    """(..., K) columns in charrnn's gate order -> ONNX's order, transposed to (K, ...)."""
    blocks = [W[..., k * H : (k + 1) * H] for k in ONNX_ORDER[cell]]
    return np.concatenate(blocks, axis=-1).T


def sequence_model(model):
    """The onnx.ModelProto scoring a whole sequence ids (T, N) with ONNX's recurrent operators."""
    if model.config.cell not in ONNX_ORDER:
        return _scan_sequence(model)
    onnx, helper, numpy_helper, TP = _lib()
    g = _Graph(helper, numpy_helper)
    p, cfg = model.params, model.config
    L, H, V, cell = cfg.layers, cfg.hidden, cfg.vocab_size, cfg.cell
    K = p.Wh.shape[2]
    op = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell]
    x = g.op(
        "OneHot",
        "ids",
        g.const("depth", np.array(V, np.int64)),
        g.const("onehot_values", _f32([0, 1])),
        axis=-1,
    )  # (T, N, V)
    axis1 = g.const("axis1", np.array([1], np.int64))
    hs, cs = [], []
    for l in range(L):
        idx = g.const(f"layer{l}", np.array([l], np.int64))
        Wx = p.Wx0 if l == 0 else p.Wx[l - 1]
        bias = np.zeros(2 * K, np.float32)
        bias[:K] = _onnx_gates(p.b[l], cell, H)
        if cell == "gru":  # Rb: only the candidate's (h) block, the r * (Wh h + bh) of charrnn
            bias[K + 2 * H :] = p.bh[l]
        ins = [
            x,
            g.const(f"W{l}", _f32(_onnx_gates(Wx, cell, H)[None])),
            g.const(f"R{l}", _f32(_onnx_gates(p.Wh[l], cell, H)[None])),
            g.const(f"B{l}", bias[None]),
            "",
            g.op("Gather", "h", idx, axis=0),
        ]
        attrs = {"hidden_size": H}
        if cell == "lstm":
            ins.append(g.op("Gather", "c", idx, axis=0))
        if cell == "gru":
            attrs["linear_before_reset"] = 1
        outs = g.op(op, *ins, outputs=3 if cell == "lstm" else 2, **attrs)
        x = g.op("Squeeze", outs[0], axis1)  # (T, 1, N, H) -> (T, N, H)
        hs.append(outs[1])
        if cell == "lstm":
            cs.append(outs[2])
    logits = g.op("Add", g.op("MatMul", x, g.const("Wy", _f32(p.Wy))), g.const("by", _f32(p.by)))
    g.rename(logits, "logits")
    g.rename(g.op("Concat", *hs, axis=0), "h_out")
    state = lambda name: helper.make_tensor_value_info(name, TP.FLOAT, [L, "N", H])
    inputs = [helper.make_tensor_value_info("ids", TP.INT64, ["T", "N"]), state("h")]
    outputs = [helper.make_tensor_value_info("logits", TP.FLOAT, ["T", "N", V]), state("h_out")]
    if cell == "lstm":
        g.rename(g.op("Concat", *cs, axis=0), "c_out")
        inputs.append(state("c"))
        outputs.append(state("c_out"))
    return _finish(onnx, helper, g, "charrnn_sequence", inputs, outputs, metadata(model, "sequence"))


def _finish(onnx, helper, g, name, inputs, outputs, meta):
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.inits)
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="charrnn",
        producer_version=__version__,
    )
    m.ir_version = 8  # what opset 17 needs; older runtimes refuse newer IR versions
    helper.set_model_props(m, {META_KEY: json.dumps(meta)})  # ASCII: any symbol survives
    m.doc_string = (
        "charrnn character model: feed a character id and the state, get the next "
        "character's logits and the new state; vocabulary in metadata_props['charrnn']"
    )
    onnx.checker.check_model(m)
    return m


def to_bytes(model, sequence=False):
    """The serialised ONNX model (the step graph, or with sequence the scoring graph)."""
    m = sequence_model(model) if sequence else step_model(model)
    return m.SerializeToString()
