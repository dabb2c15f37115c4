"""The defaults the README and docs/usage.md quote are config.py's: a quoted `--flag VALUE`
with a number, a `--flag` (VALUE), and a `--flag ...` (default VALUE) must equal the field's
default. Mentions that are examples, not defaults, are listed in EXAMPLES."""

import dataclasses
import re
from pathlib import Path

import pytest

from charrnn import config as C

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/usage.md"]
EXAMPLES = {
    ("minutes", "10"),  # the presets' thresholds
    ("minutes", "15"),
    ("hidden", "8192"),  # a preset's threshold; a size too large
    ("weight-drop", "0.1"),  # the 15-minute preset's, not the field's default
    ("weight-decay", "0.1"),  # likewise
    # the repetition table's rows
    ("presence-penalty", "0.5"),
    ("frequency-penalty", "0.1"),
    ("no-repeat", "20"),
}
QUOTED = re.compile(
    r"`--([a-z][a-z-]*) ([0-9][0-9e.+_-]*)`"  # `--batch 64`
    r"|`--([a-z][a-z-]*)` \(([^)\s,;]+)\)"  # `--batch` (64)
    r"|`--([a-z][a-z-]*)[^`]*` \(default ([^)\s,;]+)\)"
)  # `--cell a|b` (default a)


def defaults():
    found = {}
    for cls in (C.ModelConfig, C.TrainConfig, C.SampleConfig):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                found.setdefault(f.name, f.default)
    return found


def quoted(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    for m in QUOTED.finditer(text):
        flag, value = next((m.group(k), m.group(k + 1)) for k in (1, 3, 5) if m.group(k))
        line = text.count("\n", 0, m.start()) + 1
        yield flag, value, line


def same(value, default):
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return value == str(default)
    try:
        return float(value.replace("_", "")) == float(default)
    except ValueError:
        return False


CASES = [(doc, *q) for doc in DOCS if (ROOT / doc).exists() for q in quoted(doc)]


def test_the_docs_quote_defaults():
    assert len(CASES) >= 10, "the pattern no longer finds the quoted defaults"


@pytest.mark.parametrize("doc, flag, value, line", CASES, ids=[f"{d}:{ln}:--{f}" for d, f, _, ln in CASES])
def test_quoted_default_is_configs(doc, flag, value, line):
    if (flag, value) in EXAMPLES:
        return
    field = flag.replace("-", "_")
    known = defaults()
    if field not in known:
        return  # an option of the command line alone (--prime, --out, ...)
    assert same(value, known[field]), (
        f"{doc}:{line} quotes --{flag} {value}, but config.py's default is {known[field]!r}"
    )


# the words each command's usage line writes for its arguments: FILE for one it needs, [CORPUS]
# for one it can do without, as the README's table of commands and docs/scale-out.md write them
ARGUMENTS = {
    "train": "[CORPUS]",
    "eval": "FILE",
    "info": "[CKPT]",
    "runs": "[DIR]",
    "plot": "[RUN_DIR]",
    "inspect": "FILE",
    "sweep run": "[CORPUS]",
    "sweep show": "DIR",
}


@pytest.mark.parametrize("command", ARGUMENTS)
def test_usage_lines_write_the_arguments_as_the_docs_do(command):
    from typer.testing import CliRunner

    from charrnn.cli import app

    r = CliRunner().invoke(app, [*command.split(), "--help"], prog_name="charrnn")
    assert r.exit_code == 0, r.output
    assert f"Usage: charrnn {command} [OPTIONS] {ARGUMENTS[command]}" in r.stdout.splitlines()
    docs = {doc: (ROOT / doc).read_text(encoding="utf-8") for doc in ("README.md", "docs/scale-out.md")}
    cell = re.search(rf"^\| `charrnn {command}( [^`]*)?` \|", docs["README.md"], re.M)
    if cell is not None:  # a row of the README's table of commands
        assert cell.group(0).endswith(f" {ARGUMENTS[command]}` |"), cell.group(0)
    for written in re.findall(rf"`charrnn {command} ([A-Z_\[\]]+)`", docs["docs/scale-out.md"]):
        assert written == ARGUMENTS[command], (command, written)
