"""The import rules, checked by walking every module's imports (docs/design.md states them):
only the command line imports Typer and Rich, nothing imports the command line, the numeric
kernels import only NumPy, Numba (with llvmlite) and each other, and the library never prints."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "charrnn"
KERNELS = {"kernels", "gemm", "sample_kernels", "repetition", "optim"}  # the numeric core
KERNEL_DEPS = {"numpy", "numba", "llvmlite", "typing", "math"}
CLI_ONLY = {"typer", "rich", "click"}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        yield ".".join(rel.parts), path


def imports(path):
    """(top-level name, or '.name' for a module of the package) of every import in a file,
    at any depth (lazy imports inside functions count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    pkg_parts = path.relative_to(PACKAGE).parent.parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                yield ("." + a.name.split(".")[1]) if top == "charrnn" and "." in a.name \
                    else top
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top = (node.module or "").split(".")[0]
                if top == "charrnn":
                    rest = (node.module or "").split(".")[1:]
                    yield from ("." + n for n in (rest[:1] or [a.name for a in node.names]))
                else:
                    yield top
            else:
                base = list(pkg_parts[:len(pkg_parts) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    yield "." + target[0]
                else:  # from . import x, y
                    yield from ("." + a.name for a in node.names)


ALL = list(modules())


def is_cli(name):
    return name == "cli" or name.startswith("cli.") or name == "__main__"


@pytest.mark.parametrize("name, path", ALL, ids=[n for n, _ in ALL])
def test_import_rules(name, path):
    found = set(imports(path))
    if not is_cli(name):
        assert not found & CLI_ONLY, f"{name} imports {found & CLI_ONLY}: only the CLI may"
        assert ".cli" not in found, f"{name} imports the command line"
    if name in KERNELS:
        outside = {f for f in found if not f.startswith(".")} - KERNEL_DEPS
        inside = {f[1:] for f in found if f.startswith(".")} - KERNELS
        assert not outside and not inside, f"the kernel module {name} imports {outside | inside}"


@pytest.mark.parametrize("name, path", ALL, ids=[n for n, _ in ALL])
def test_library_modules_never_print(name, path):
    if is_cli(name):
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert not calls, f"{name} calls print() at line {calls[0].lineno}: report through the CLI"


def test_the_walk_sees_imports():
    """The checker itself: it finds lazy, relative and absolute imports."""
    found = set(imports(PACKAGE / "cli.py"))
    assert {"typer", ".api", ".config", ".errors"} <= found
