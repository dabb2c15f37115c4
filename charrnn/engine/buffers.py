"""The buffers of a window's kernels: their shapes (training/memory.py counts them before a
run allocates them) and their allocation, one set per part of a window's streams (see
model.Model.work and threads.py)."""

import numpy as np

from . import gemm, kernels, threads
from .kernels import GATES, Work


def part_slices(B):
    """The streams of a batch of B, split into one part per thread (see threads.py)."""
    n = min(threads.num_threads(), max(1, B // 8))  # tiny parts are not worth a thread
    bounds = np.linspace(0, B, n + 1).astype(int)
    return [slice(bounds[i], bounds[i + 1]) for i in range(n)]


def packed_shape(cfg, dtype):
    """(2L-1, H*K) of each packed copy of the layers' (H, K) weights, Wh of every layer then Wx
    of the layers above the first (see kernels.pack_weights), or (2L-1, 0) where the hidden
    size does not suit the packed product."""
    L, H = cfg.layers, cfg.hidden
    n = H * GATES[kernels.CELLS[cfg.cell]] * H if gemm.packable(np.zeros(1, dtype), H) else 0
    return (2 * L - 1, n)


def alloc_packed(cfg, dtype):
    """(Whp, WhTp): the buffers every part's Work shares for the packed weights."""
    shape = packed_shape(cfg, dtype)
    return np.zeros(shape, dtype), np.zeros(shape, dtype)


def work_shapes(cfg, T, B, dropout=False, grad_norms=False):
    """{field of Work: shape}, the buffers of one part's window (the packed weights, shared by
    all parts, aside); gn is float64, the rest in the model's dtype. alloc_work allocates these
    and memory.py counts them. grad_norms: room for |d loss / d h_t| (see Work.gn)."""
    L, H, V = cfg.layers, cfg.hidden, cfg.vocab_size
    G = GATES[kernels.CELLS[cfg.cell]] * H
    TD = T if dropout else 0
    return dict(
        G=(L, T, B, G),
        Hs=(L, T + 1, B, H),
        Cs=(L, T + 1, B, H),
        Aux=(L, T, B, H),
        M=(L, TD, B, H),
        D=(L, TD, B, H),
        P=(T * B, V),
        R=(B, G),
        dR=(T if cfg.cell == "gru" else 0, B, G),
        dH=(L, T, B, H),
        dh=(B, H),
        dc=(B, H),
        dhn=(B, H),
        gn=(L, T if grad_norms else 0),
    )


def grad_block_size(cfg, T, B, dtype):
    """Elements of a window's block of dG packed for the weight gradients (Work.Gp), or 0
    where the hidden size does not suit the packed products."""
    if packed_shape(cfg, dtype)[1] == 0:
        return 0
    return min(gemm.KC, T * B) * GATES[kernels.CELLS[cfg.cell]] * cfg.hidden


def alloc_work(cfg, T, B, dtype, dropout=False, packed=None, grad_norms=False):
    """Buffers for one window (T, B); packed: the shared (Whp, WhTp) buffers, or new ones."""
    Whp, WhTp = packed if packed is not None else alloc_packed(cfg, dtype)
    return Work(
        **{
            k: np.zeros(shape, np.float64 if k == "gn" else dtype)
            for k, shape in work_shapes(cfg, T, B, dropout, grad_norms).items()
        },
        Whp=Whp,
        WhTp=WhTp,
        Gp=np.zeros(grad_block_size(cfg, T, B, dtype), dtype),
    )
