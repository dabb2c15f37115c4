"""The cells' ids, each of a Numba type of its own, so that a kernel compiles for one cell.

A cell id is an int (LSTM 0, GRU 1, RNN 2, layer-normalised LSTM 3) to Python: it compares,
hashes and indexes as one.
To Numba each is a type of its own (CellType), carrying no data, so a kernel called with it is
compiled for that cell alone: the steps that differ between cells are chosen by @overload on
that type (kernels.cell_update, kernels.step_back), and the others' code is never typed,
lowered or optimised. Compiling the two other cells' steps beside the one in use cost about
1.8 s of the forward pass's 14 s first compile, and 0.5 s of the backward pass's.
A plain int compiles every cell's steps into a kernel, which then chooses as it runs: the
sampling kernels take that (Model.cell), being compiled in the background, for any cell, once;
the LSTM's float32 window kernels of training and evaluation, on a first run's path, the LSTM
alone (Model.window_cell); the other cells' and float64's (the exactness tests') any, one
compile for the three: the test suite calls them for all three, and typed cells there cost its
cold run 15% (157 s against 136 s).
"""

from numba import types
from numba.core import cgutils
from numba.extending import NativeValue, box, models, register_model, typeof_impl, unbox


class Cell(int):
    """A cell's id: an int, of its own Numba type (CellType)."""

    __slots__ = ()
    NAMES = ("lstm", "gru", "rnn", "lnlstm")

    def __repr__(self):
        return f"Cell({self.NAMES[self]})"


class CellType(types.Dummy):
    """The Numba type of one cell id; `cell` is the id it stands for."""

    def __init__(self, cell):
        self.cell = int(cell)
        super().__init__(name=f"Cell({Cell.NAMES[self.cell]})")


register_model(CellType)(models.OpaqueModel)  # a placeholder pointer, as other data-less types


@typeof_impl.register(Cell)
def _typeof_cell(val, c):
    return CellType(val)


@unbox(CellType)
def _unbox_cell(typ, obj, c):
    # the type holds all there is: the value is a placeholder
    return NativeValue(c.context.get_dummy_value(), is_error=cgutils.false_bit)


@box(CellType)
def _box_cell(typ, val, c):
    return c.pyapi.long_from_longlong(c.context.get_constant(types.int64, typ.cell))


LSTM, GRU, RNN, LNLSTM = Cell(0), Cell(1), Cell(2), Cell(3)
CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN, "lnlstm": LNLSTM}
GATES = {LSTM: 4, GRU: 3, RNN: 1, LNLSTM: 4}


def which(cell):
    """The cell id a kernel's `cell` argument (its Numba type) stands for when it compiles
    (a CellType), or None (an integer: known only as it runs)."""
    if isinstance(cell, CellType):
        return cell.cell
    if isinstance(cell, types.Integer):
        return None
    raise TypeError(f"a kernel's cell must be a cells.Cell or an int, not {cell}")
