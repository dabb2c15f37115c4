"""The import rules, checked by walking every module's imports (docs/design.md states them):
the subsystems stack in layers and import only downwards, only the command line imports Typer
and Rich, nothing imports the command line, the engine imports only NumPy, Numba and SciPy (and
the package's config and errors), the numeric kernels only NumPy, Numba and each other, and the
library never prints."""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "charrnn"

# Each subsystem (a folder, or a top-level module) may import from its own layer's members only
# when they are the same subsystem, and otherwise only from lower layers.
LAYERS = [
    {"errors", "_version", "fsutil"},
    {"config"},
    {"engine"},
    {"warm"},
    {"text"},
    {"checkpoint", "completion"},
    {"inspect"},
    {"charmodel"},
    {"training"},
    {"api"},
    {"sweep", "serve", "export"},
    {"", "cli"},  # "" is the package's __init__ (charrnn.train, charrnn.load)
    {"__main__"},
]
LAYER = {name: k for k, names in enumerate(LAYERS) for name in names}
CORE = {
    "engine.sharedcache",
    "engine.kernels",
    "engine.cells",
    "engine.gemm",
    "engine.vec",
    "engine.sample_kernels",
    "engine.sync",
    "engine.repetition",
    "engine.qgemm",
    "engine.bgemm",
    "engine.bf16ops",
    "engine.amx",
}
CORE_DEPS = {"numpy", "numba", "llvmlite"}
ENGINE_DEPS = CORE_DEPS | {"scipy", "threadpoolctl"}
CLI_ONLY = {"typer", "rich", "click"}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def subsystem(name):
    return name.split(".")[0]


def imports(path):
    """(package modules, outside top-level names) a file imports, at any depth (lazy imports
    inside functions count). A package module is its dotted name under charrnn ('' for the
    package itself); `from . import x` counts as the module x."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = list(path.relative_to(PACKAGE).parent.parts)
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "charrnn":
                    inside.add(".".join(parts[1:]))
                else:
                    outside.add(parts[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "charrnn":
                    outside.add(parts[0])
                    continue
                base = parts[1:]
            else:
                base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            if base and (node.level == 0 or node.module):
                inside.add(".".join(base))
            else:
                inside.update(".".join(base + [a.name]) for a in node.names)
    return inside, outside - set(sys.stdlib_module_names)


ALL = list(modules())


def is_cli(name):
    return subsystem(name) in ("cli", "__main__")


@pytest.mark.parametrize("name, path", ALL, ids=[n or "charrnn" for n, _ in ALL])
def test_import_rules(name, path):
    inside, outside = imports(path)
    sub = subsystem(name)
    assert sub in LAYER, f"{name}: a new subsystem needs its place in LAYERS"
    if not is_cli(name):
        assert not outside & CLI_ONLY, f"{name} imports {outside & CLI_ONLY}: only the CLI may"
    for target in inside:
        tsub = subsystem(target)
        assert tsub != "cli" or is_cli(name), f"{name} imports the command line"
        if tsub == sub or target == "__version__":
            continue
        assert LAYER[tsub] < LAYER[sub], (
            f"{name} imports {target}: {sub} sits on layer {LAYER[sub]}, {tsub} on {LAYER[tsub]}"
        )
    if sub == "engine":
        stray = {t for t in inside if subsystem(t) not in ("engine", "config", "errors")}
        assert not stray and not outside - ENGINE_DEPS, (
            f"the engine module {name} imports {stray | (outside - ENGINE_DEPS)}"
        )
    if name in CORE:
        stray = {t for t in inside if t not in CORE and t != "engine"}
        assert not stray and not outside - CORE_DEPS, (
            f"the kernel module {name} imports {stray | (outside - CORE_DEPS)}"
        )


@pytest.mark.parametrize("name, path", ALL, ids=[n or "charrnn" for n, _ in ALL])
def test_library_modules_never_print(name, path):
    if is_cli(name):
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
    ]
    assert not calls, f"{name} calls print() at line {calls[0].lineno}: report through the CLI"


def test_the_walk_sees_imports():
    """The checker itself: it finds lazy, relative and absolute imports, and a stray one."""
    inside, outside = imports(PACKAGE / "cli" / "train.py")
    assert "typer" in outside and {"warm", "config", "errors"} <= inside
    assert "rich" in imports(PACKAGE / "cli" / "progress.py")[1]
    inside, outside = imports(PACKAGE / "engine" / "model.py")
    assert {"engine.kernels", "config"} <= inside and "numpy" in outside
    inside, _ = imports(PACKAGE / "training" / "run.py")
    assert "charmodel" in inside and LAYER["charmodel"] < LAYER["training"]


MAX_LINES = 400  # a module longer than this holds two jobs; the kernels are one long job
LONG_ALLOWED = {"engine.kernels"}


@pytest.mark.parametrize("name, path", ALL, ids=[n or "charrnn" for n, _ in ALL])
def test_modules_stay_small(name, path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES or name in LONG_ALLOWED, (
        f"{name} has {lines} lines: split it by what its parts do (at most {MAX_LINES})"
    )


def test_export_imports_its_extra_only_when_used():
    """charrnn.export imports onnx inside the functions that need it: the HTML page and the
    command's option checks work without the export extra."""
    for path in sorted((PACKAGE / "export").glob("*.py")):
        top = [
            n
            for n in ast.parse(path.read_text(encoding="utf-8")).body
            if isinstance(n, (ast.Import, ast.ImportFrom))
        ]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
        assert not names & {"onnx", "onnxruntime"}, f"{path.name} imports {names} at the top"


def module_map():
    """Each module with its lines and the package modules it imports: `python tests/test_layout.py`
    prints it (the map the layout is judged by)."""
    rows = []
    for name, path in ALL:
        inside, _ = imports(path)
        lines = len(path.read_text(encoding="utf-8").splitlines())
        rows.append((name or "charrnn", lines, sorted(t or "charrnn" for t in inside)))
    return rows


if __name__ == "__main__":
    for name, lines, targets in module_map():
        print(f"{name:<26} {lines:>5}  {' '.join(targets)}")
