"""errors.install_hint: the pip command that adds an extra as this charrnn was installed (from a
checkout `pip install -e '.[serve]'`, as the README says; `pip install 'charrnn[serve]'` names a
package on the index), and the messages of every extra, which use it."""

import sys
from pathlib import Path

import pytest

from charrnn import errors
from charrnn.errors import CharrnnError

CHECKOUT = Path(__file__).resolve().parents[1]  # the tests run from a checkout (.ci/run: pip -e)


def test_from_a_checkout_the_hint_installs_the_checkout(monkeypatch, tmp_path):
    assert Path(errors.__file__).resolve().parents[1] == CHECKOUT
    monkeypatch.chdir(CHECKOUT)
    assert errors.install_hint("serve") == "pip install -e '.[serve]'"
    monkeypatch.chdir(tmp_path)  # elsewhere: the checkout's path
    assert errors.install_hint("plot") == f"pip install -e '{CHECKOUT}[plot]'"


def test_from_the_package_index_the_hint_names_the_package(monkeypatch, tmp_path):
    installed = tmp_path / "lib" / "python3" / "site-packages" / "charrnn"
    installed.mkdir(parents=True)
    monkeypatch.setattr(errors, "__file__", str(installed / "errors.py"))
    monkeypatch.chdir(tmp_path)
    assert errors.install_hint("serve") == "pip install 'charrnn[serve]'"


def test_every_extra_s_message_says_how_to_install_it_from_here(monkeypatch, tmp_path):
    monkeypatch.chdir(CHECKOUT)
    from charrnn import serve
    from charrnn.export import onnxgraph
    from charrnn.inspect import view
    from charrnn.sweep import study
    from charrnn.training import dist, plot

    def message(extra, call, module):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, module, None)  # its import raises ImportError
            with pytest.raises(CharrnnError) as e:
                call()
        assert str(e.value).endswith(f": pip install -e '.[{extra}]'"), str(e.value)

    monkeypatch.delitem(sys.modules, "charrnn.serve.server", raising=False)  # imports uvicorn
    message("serve", lambda: serve.serve([]), "uvicorn")
    message("plot", lambda: plot.png([], tmp_path / "a.png"), "matplotlib")
    message("plot", lambda: view.saturation_png({}, tmp_path / "a.png"), "matplotlib")
    message("export", onnxgraph._lib, "onnx")
    message("sweep", study._optuna, "optuna")
    message("mpi", dist.MPI, "mpi4py")
