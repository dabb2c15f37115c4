"""A CharModel as one self-contained HTML page that writes in the browser, offline.

The page is writer.html (beside this module, a plain template) with three things filled in: a
JSON description of the model (cell, sizes, vocabulary, where each weight array sits in the
flat buffer, the tanh approximation's coefficients), the weights as base64 of the model's flat
parameter buffer (little-endian fp32, or fp16 to halve the page), and a title. Nothing is
loaded from anywhere else: no script, style, font or image of another host.

The page's sampler follows charrnn's float32 sampler operation by operation (sample_kernels.py
and kernels.py): every product and sum is rounded to float32 (Float32Array stores and
Math.fround), the matrix-vector products accumulate in the same order (k = 0, 1, ... from zero),
and tanh and sigmoid are the same rational approximation. So at temperature 0 it writes the
text `charrnn sample --temp 0` writes. The one difference: charrnn's products use fused
multiply-adds (one rounding), the page rounds the exact product-sum first to a double and then
to float32; the two differ only when that double rounding lands on a float32 tie, about once in
2^28 operations (see docs/export.md). The lnlstm's normalisations sum rows that charrnn's kernels
may sum in another order (kernels.row_sum): its page is as near float64 as charrnn, not equal.
"""

import base64
import html
import json
from importlib import resources

import numpy as np

from .. import __version__
from ..engine import kernels
from ..engine.model import param_shapes

TEMPLATE = "writer.html"
# kernels._tanh_impl's clamp: beyond it the float32 approximation is +-1 (its coefficients are
# kernels._TA and _TB; a test compares the page's tanh with the kernel's, value by value)
TANH_LIM = 7.90531110763549805


def layout(cfg):
    """{Params field: [offset, size]} of each weight array in the flat buffer (model.views)."""
    out, at = {}, 0
    for name, shape in zip(kernels.Params._fields, param_shapes(cfg)):
        n = int(np.prod(shape))
        out[name] = [at, n]
        at += n
    return out


def weights_base64(model, precision):
    """The flat weights as base64: little-endian float32, or float16 (rounded to nearest)."""
    dtype = "<f4" if precision == "fp32" else "<f2"
    return base64.b64encode(np.ascontiguousarray(model.flat, dtype).tobytes()).decode("ascii")


def rounded(model, precision):
    """The float32 weights the page computes with (for fp16: rounded to half and back)."""
    flat = np.asarray(model.flat, np.float32)
    return flat if precision == "fp32" else flat.astype(np.float16).astype(np.float32)


def description(model, precision):
    cfg, vocab = model.config, model.vocab
    return {
        "charrnn_version": __version__,
        "cell": cfg.cell,
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "vocab_size": cfg.vocab_size,
        "gates": kernels.GATES[kernels.CELLS[cfg.cell]],
        "byte_level": model.byte_level,
        "vocab": list(vocab.symbols),  # a character per id, or byte values
        "start_id": int(vocab.start_id),
        "unk_id": int(vocab.unk_id),
        "precision": precision,
        "layout": layout(cfg),
        "tanh": {"a": list(kernels._TA), "b": list(kernels._TB), "lim": TANH_LIM},
        "ln_eps": kernels.LN_EPS,  # the lnlstm's normalisations
        "title": _title(model),
    }


def _title(model):
    cfg = model.config
    kind = "bytes" if model.byte_level else f"{cfg.vocab_size} characters"
    return f"{cfg.layers}\u00d7{cfg.hidden} {cfg.cell.upper()}, {kind}"


def _script_json(obj):
    """JSON safe inside a <script> element: no '<' can close it or open a comment."""
    return json.dumps(obj).replace("<", "\\u003c")


def render(model, precision="fp32"):
    """The page, a str."""
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    b64 = weights_base64(model, precision)
    lines = "\n".join(b64[i : i + 120] for i in range(0, len(b64), 120))
    fill = {
        "@@TITLE@@": html.escape(f"charrnn writer: {_title(model)}"),
        "@@CONFIG@@": _script_json(description(model, precision)),
        "@@WEIGHTS@@": lines,
    }
    for key, value in fill.items():
        assert template.count(key) == 1, key
        template = template.replace(key, value)
    return template
