"""benchmarks/serve_load.py runs with the extras it documents: every package it imports comes
with charrnn or with those extras, and without one it says which install command to run."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "serve_load.py"


def requirement_names(reqs):
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_its_imports_come_with_the_extras_it_names():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tree = ast.parse(BENCH.read_text())
    (extras,) = [
        n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "EXTRAS"
    ]
    assert f"pip install -e '.[{extras}]'" in ast.get_docstring(tree)
    have = requirement_names(project["dependencies"])
    for extra in extras.split(","):
        have |= requirement_names(project["optional-dependencies"][extra])
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"charrnn", "benchmarks"}
    assert third_party and third_party <= have, third_party - have


def test_without_httpx_it_names_the_install_command():
    code = (
        "import sys; sys.modules['httpx'] = None; from benchmarks import serve_load; serve_load.need_extras()"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == "serve_load needs httpx: pip install -e '.[serve,bench]'"
