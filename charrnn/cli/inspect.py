"""charrnn inspect: which units of a model track what along a text."""

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (
    EXIT_USAGE,
    CheckpointOpt,
    DropUnknownOpt,
    JsonOpt,
    Opt,
    compile_notice,
    dropped_line,
    fail,
    load,
    user_errors,
)


@user_errors
def inspect(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="The text to read, as one stream from the zero state: a file or '-' for stdin.",
        ),
    ],
    checkpoint: CheckpointOpt = None,
    unit: Annotated[
        Optional[str],
        Opt(
            help="Show the text coloured by one unit, LAYER:UNIT "
            "counted from 0 (e.g. 1:37): blue for positive, "
            "red for negative."
        ),
    ] = None,
    state: Annotated[
        str,
        Opt(
            help="With --unit: h (hidden state), c (lstm cell state, "
            "coloured on its own range) or a gate: i f g o (lstm), r z n "
            "(gru)."
        ),
    ] = "h",
    html: Annotated[
        Optional[Path],
        Opt("--html", help="With --unit: write the coloured text to this standalone HTML page instead."),
    ] = None,
    find: Annotated[
        Optional[str],
        Opt(
            help="Rank units (h, and the lstm's c) by |Pearson r| "
            "with a per-character feature: string, comment (Python's), "
            "quote, brackets (every one), python-brackets (outside Python strings and comments), "
            "line-position, indent, or re:PATTERN (^ and $ at every line)."
        ),
    ] = None,
    regex: Annotated[
        Optional[str],
        Opt(help="Same as --find 're:PATTERN': inside any match of this regular expression (multi-line)."),
    ] = None,
    top: Annotated[int, Opt(help="How many units --find lists.")] = 10,
    gates: Annotated[
        bool,
        Opt("--gates", help="How often each gate unit is saturated: below 0.1 (left) or above 0.9 (right)."),
    ] = False,
    png: Annotated[
        Optional[Path],
        Opt(
            "--png",
            help="With --gates: draw the saturation of "
            "every unit to this PNG (needs matplotlib: the plot extra).",
        ),
    ] = None,
    drop_unknown: DropUnknownOpt = False,
    as_json: JsonOpt = False,
):
    """Look inside a model: which units track what along a text."""
    find, layer, j = _inspect_request(unit, find, regex, gates, html, png, top)
    from ..text import data
    from ..inspect import probe

    model = load(checkpoint)
    if unit is not None:
        probe.check_unit(model, layer, j, state)
    text, desc = data.read_text(file, byte_level=model.byte_level)
    ids = probe.encode(model, text, "drop" if drop_unknown else None)
    dropped = model.vocab.length(text) - len(ids)
    if dropped:
        sys.stderr.write(f"charrnn: {dropped_line(dropped, 'text')}\n")
    chars = probe.step_chars(model, ids)
    accs = {}
    if find is not None:
        accs["find"] = probe.Correlate(model, probe.feature(find, chars))
    if gates:
        accs["gates"] = probe.Saturate(model)
    if unit is not None:
        accs["unit"] = probe.Trace(model, len(ids), layer, j, state)
    with compile_notice():
        probe.compile_kernels(model.config.cell, model.dtype)
    probe.run(model, ids, *accs.values())
    cfg = model.config
    out = {
        "file": desc,
        "chars": len(ids),
        "dropped_chars": dropped,
        "model": f"{cfg.cell} {cfg.layers}x{cfg.hidden}",
    }
    if find is not None:
        out["find"] = {
            "feature": find,
            "mean": accs["find"].mean,
            "units": probe.rank(accs["find"].result(), top),
        }
    if gates:
        out["gates"] = accs["gates"].summary()
        if png is not None:
            _saturation_png(accs["gates"], png, out["model"], file, len(ids))
    shown = None
    if unit is not None:
        out["unit"], shown = _unit_view(model, ids, accs["unit"].values, layer, j, state, desc, html)
    if as_json:
        print(json.dumps(out))
        return
    _inspect_print(out, shown if html is None else None, state)


def _inspect_request(unit, find, regex, gates, html, png, top):
    """inspect's options checked (usage errors exit 2): (the feature or None, layer, unit)."""
    from ..inspect import probe
    from ..errors import ConfigError

    if find is not None and regex is not None:
        fail("give --find or --regex, not both", EXIT_USAGE)
    if regex is not None:
        find = "re:" + regex
    if unit is None and find is None and not gates:
        fail("nothing to show: give --unit L:J, --find FEATURE or --gates", EXIT_USAGE)
    if html is not None and unit is None:
        fail("--html draws a unit: add --unit L:J", EXIT_USAGE)
    if png is not None and not gates:
        fail("--png draws the gate saturation: add --gates", EXIT_USAGE)
    if top < 1:
        fail("--top must be at least 1", EXIT_USAGE)
    if find is not None:
        try:
            probe.check_feature(find)
        except ConfigError as e:
            fail(f"--find: {e}", EXIT_USAGE)
    layer = j = None
    if unit is not None:
        try:
            layer, j = (int(x) for x in unit.split(":"))
        except ValueError:
            fail(f"--unit must be LAYER:UNIT, e.g. 1:37, not {unit!r}", EXIT_USAGE)
    return find, layer, j


def _saturation_png(saturate, png, model_name, file, n):
    from ..inspect import view as probe_view

    name = "stdin" if file == "-" else Path(file).name
    probe_view.saturation_png(saturate.fractions(), png, f"{model_name}, {name} ({n:,} chars)")
    sys.stderr.write(f"charrnn: wrote {png}\n")


def _unit_view(model, ids, values, layer, j, state, desc, html):
    """(inspect's "unit" result, the text's pieces as shown); writes the HTML page if asked."""
    from ..inspect import view as probe_view

    title = probe_view.describe_unit(layer, j, state, model.config.cell) + f" on {desc}"
    shown = probe_view.pieces(model, ids)
    if html is not None:
        try:
            html.write_text(probe_view.html_page(shown, values, state, title), encoding="utf-8")
        except OSError as e:
            fail(f"cannot write {html}: {e.strerror or e}")
        sys.stderr.write(f"charrnn: wrote {html}\n")
    return {
        "layer": layer,
        "unit": j,
        "state": state,
        "title": title,
        "text": "".join(shown),
        "values": values.tolist(),
    }, shown


def _inspect_print(out, shown, kind):
    """The human-readable forms of inspect's results, on stdout."""
    from rich.console import Console
    from rich.text import Text
    from ..inspect.probe import GATE_TITLES
    from ..inspect.view import colours, visible

    if "find" in out:
        f = out["find"]
        sys.stderr.write(
            f"charrnn: {out['model']} on {out['file']}: units by |r| with "
            f"{f['feature']} (h: hidden state, c: cell state)\n"
        )
        print(f"{'rank':>4}  {'unit':>7}  state  {'r':>7}")
        for k, u in enumerate(f["units"], 1):
            print(f"{k:>4}  {u['layer']:>3}:{u['unit']:<3}  {u['state']:^5}  {u['r']:>+7.3f}")
    if "gates" in out:
        if "find" in out:
            print()
        print(
            f"{'layer':>5}  {'gate':<16} {'left':>6} {'right':>6}  {'mostly left':>11}  "
            f"{'mostly right':>12}  {'rarely':>6}"
        )
        for g in out["gates"]:
            name = f"{g['gate']} ({GATE_TITLES[g['gate']]})"
            print(
                f"{g['layer']:>5}  {name:<16} {g['left']:>6.3f} {g['right']:>6.3f}  "
                f"{g['mostly_left']:>11.1%}  {g['mostly_right']:>12.1%}  {g['rarely']:>6.1%}"
            )
        sys.stderr.write(
            "charrnn: left/right: mean fraction of steps below 0.1 / above 0.9; "
            "mostly: units saturated on over half the steps; rarely: units "
            "saturated on under a tenth\n"
        )
    if shown is not None:
        u = out["unit"]
        if "find" in out or "gates" in out:
            print()
        sys.stderr.write(f"charrnn: {u['title']}: blue positive, red negative\n")
        con = Console(highlight=False, soft_wrap=True)  # plain text when not a terminal
        text = Text()
        for piece, (bg, dark) in zip(shown, colours(u["values"], kind)):
            text.append(visible(piece), style=f"{'#ffffff' if dark else '#000000'} on {bg}")
        con.print(text, end="" if u["text"].endswith("\n") else "\n")
