"""The cell ids: ints to Python, a Numba type each, so that a kernel compiles for one cell."""

import pickle

import numba
import numpy as np
import pytest

from charrnn.engine import cells, kernels
from reference import tiny


def test_cell_ids_are_ints_to_python():
    assert [kernels.CELLS[n] for n in ("lstm", "gru", "rnn")] == [0, 1, 2]
    assert kernels.GATES[1] == kernels.GATES[kernels.GRU] == 3
    assert {v: k for k, v in kernels.CELLS.items()}[2] == "rnn"
    back = pickle.loads(pickle.dumps(kernels.LSTM))
    assert back == 0 and type(back) is cells.Cell and repr(back) == "Cell(lstm)"


def test_each_cell_is_a_numba_type_of_its_own():
    types_ = {numba.typeof(c) for c in kernels.CELLS.values()}
    assert len(types_) == 4 and {cells.which(t) for t in types_} == {0, 1, 2, 3}
    assert numba.typeof(kernels.GRU) == numba.typeof(cells.Cell(1))  # equal ids, one type


@numba.njit
def _update(cell, p, G, w):
    kernels.cell_update(cell, p, 0, G, w)


def _step_args(name, m):
    K = m.params.Wh.shape[2]
    G = np.random.default_rng(1).standard_normal((2, K))
    R, h_prev, c_prev = (
        np.random.default_rng(k).standard_normal(s) for k, s in ((2, (2, K)), (3, (2, 3)), (4, (2, 3)))
    )
    h, c, aux = np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3))
    ln = name == "lnlstm"  # its normalised product and cell state, and their statistics
    norms = np.zeros((2, K * ln)), np.zeros((2, 3 * ln)), np.zeros((2, 3 * ln))
    return G, (R, h_prev, c_prev, h, c, aux, *norms)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_a_cell_and_its_int_take_the_same_step(name):
    """A Cell compiles its own step alone, an int every cell's, choosing as it runs: the same
    numbers either way."""
    m, rng = tiny(name, L=1, H=3)
    out = []
    for cell in (kernels.CELLS[name], m.cell):
        G, w = _step_args(name, m)
        _update(cell, m.params, G, w)
        out.append((G, *w[3:]))
    assert type(m.cell) is int and m.window_cell is m.cell  # float64: any cell
    lone = type(tiny(name, dtype=np.float32)[0].window_cell) is cells.Cell
    assert lone == (name == "lstm")  # the default cell's float32 windows compile for it alone
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)
    assert np.abs(out[0][1]).sum() > 0


def test_the_lnlstm_runs_on_kernels_of_its_own_type_and_an_int_refuses_it():
    """The lnlstm's code compiles only into kernels typed for it, so that the kernels of any
    cell (an int: the sampling kernels, float64's windows) hold none of it; given its int, they
    refuse it rather than step it as another cell."""
    for dtype in (np.float32, np.float64):
        m, _ = tiny("lnlstm", L=1, H=3, dtype=dtype)
        assert type(m.cell) is cells.Cell and m.window_cell is m.cell
    m, _ = tiny("lnlstm", L=1, H=3)
    G, w = _step_args("lnlstm", m)
    _update(m.cell, m.params, G, w)
    assert np.abs(w[3]).sum() > 0
    with pytest.raises(ValueError, match="own cell type"):
        _update(int(m.cell), m.params, *_step_args("lnlstm", m))


def test_a_kernel_refuses_another_cell_type():
    with pytest.raises((TypeError, numba.core.errors.TypingError), match="cells.Cell or an int"):
        _update(1.5, None, np.zeros((1, 1)), ())
