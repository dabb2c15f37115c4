"""Pictures of what probe.py measures: a text coloured by one unit's activation (a standalone
HTML page; the colours also serve the terminal view in cli/inspect.py) and the gate-saturation scatter
(a PNG through matplotlib, the plot extra).

The colour scale is the one of Karpathy, Johnson and Fei-Fei's figures: a diverging scale from
red (-1) through white (0) to blue (+1), applied to h as it is, to 2g - 1 for a gate g in (0, 1),
and to a cell state divided by its own range along the text (see c_scale).
"""

import codecs
import html

import numpy as np

from ..errors import CharrnnError, install_hint
from .probe import GATE_TITLES

# fmt: off
WHITE = np.array([247, 247, 247])
BLUE = np.array([33, 102, 172])   # +1
RED = np.array([178, 24, 43])     # -1
STATE_TITLES = {"h": "hidden state", "c": "cell state"}
# fmt: on


def c_scale(values):
    """What a cell state is divided by for colouring: its 99th-percentile magnitude along the
    text. Cells that count grow well past 1, where tanh(c) (the paper's choice) shows one
    flat colour; the unit's own range keeps its rise and fall visible."""
    m = float(np.percentile(np.abs(values), 99)) if len(values) else 0.0
    return m if m > 0 else 1.0


def signed(values, kind):
    """Values mapped onto [-1, 1] for colouring: h as it is, a cell state divided by c_scale,
    2g - 1 for a gate g in (0, 1)."""
    v = np.asarray(values, np.float64)
    if kind == "c":
        v = v / c_scale(v)
    elif kind != "h":
        v = 2 * v - 1
    return np.clip(v, -1, 1)


def colours(values, kind):
    """(background '#rrggbb', dark) for each value: dark says the text should be white."""
    s = signed(values, kind)
    a = np.abs(s)[:, None]
    rgb = np.where(s[:, None] >= 0, WHITE + a * (BLUE - WHITE), WHITE + a * (RED - WHITE))
    rgb = np.rint(rgb).astype(int)
    return [("#%02x%02x%02x" % tuple(c), bool(m > 0.6)) for c, m in zip(rgb, a[:, 0])]


def pieces(model, ids):
    """What each step shows: its character, or for a byte model the text its byte completes
    (the whole character at its last byte, nothing at the others)."""
    if not model.vocab.byte_level:
        table = np.array(list(model.vocab.symbols))
        return list(table[ids])
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return [dec.decode(model.vocab.decode(ids[k : k + 1])) for k in range(len(ids))]


# C0 controls (but newline and tab) and DEL as their Unicode pictures: the text's own ESC
# bytes would otherwise reach the terminal inside the colouring and act on it
_PICTURES = {c: 0x2400 + c for c in range(32) if c not in (9, 10)} | {127: 0x2421}


def visible(piece):
    """A piece of text as the terminal view shows it: control characters as ␛-like pictures."""
    return piece.translate(_PICTURES)


def describe_unit(layer, unit, kind, cell):
    what = STATE_TITLES.get(kind) or f"{GATE_TITLES[kind]} gate"
    return f"{cell} layer {layer} unit {unit}, {what} ({kind})"


def html_page(texts, values, kind, title):
    """A standalone page: one span per step (texts[t], coloured by values[t], the value on
    hover), inside a pre-formatted block so that newlines and indentation stay."""
    spans = []
    for piece, v, (bg, dark) in zip(texts, values, colours(values, kind)):
        style = f"background:{bg}" + (";color:#fff" if dark else "")
        spans.append(f'<span style="{style}" title="{v:.3f}">{html.escape(piece, quote=True)}</span>')
    low, mid, high, note = ("-1", "0", "+1", "") if kind == "h" else ("0", "0.5", "1", "")
    if kind == "c":
        m = c_scale(values)
        low, mid, high, note = f"{-m:.3g}", "0", f"+{m:.3g}", " (the 99th percentile of |c|)"
    legend = (
        f'<div class="legend">{kind}: <i style="background:#{_hex(RED)}"></i> {low} '
        f'<i style="background:#{_hex(WHITE)}"></i> {mid} '
        f'<i style="background:#{_hex(BLUE)}"></i> {high}{note} &middot; '
        "hover over a character for its value</div>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n"
        "body { font-family: sans-serif; margin: 1.5em; color: #222; }\n"
        "h1 { font-size: 1.1em; font-weight: normal; }\n"
        "pre { font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 14px;"
        " line-height: 1.4; white-space: pre-wrap; word-break: break-all; }\n"
        ".legend { font-size: 0.9em; margin-bottom: 1em; }\n"
        ".legend i { display: inline-block; width: 1.4em; height: 0.9em;"
        " vertical-align: middle; border: 1px solid #ccc; }\n"
        "</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{legend}\n<pre>{''.join(spans)}</pre>\n"
        "</body>\n</html>\n"
    )


def _hex(rgb):
    return "%02x%02x%02x" % tuple(int(x) for x in rgb)


def saturation_png(fractions, path, title=""):
    """The scatter of Karpathy et al.'s figure 3: per unit, the fraction of steps its gate is
    left saturated (x) against right saturated (y); one panel per layer and gate."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CharrnnError(f"writing a PNG needs matplotlib: {install_hint('plot')}") from None
    gates = list(fractions)
    L = next(iter(fractions.values()))[0].shape[0]
    fig, axes = plt.subplots(L, len(gates), figsize=(3 * len(gates), 3 * L), squeeze=False)
    for l in range(L):
        for k, g in enumerate(gates):
            ax = axes[l][k]
            left, right = fractions[g][0][l], fractions[g][1][l]
            ax.plot([0, 1], [1, 0], color="#bbb", lw=0.8)
            ax.scatter(left, right, s=6, alpha=0.5, color="#2166ac" if l == 0 else "#b2182b")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"layer {l}, {GATE_TITLES[g]} gate ({g})", fontsize=9)
            ax.set_xlabel("fraction left saturated (< 0.1)", fontsize=8)
            ax.set_ylabel("fraction right saturated (> 0.9)", fontsize=8)
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
