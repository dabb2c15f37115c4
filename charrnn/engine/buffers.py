"""The buffers of a window's kernels: their shapes (training/memory.py counts them before a
run allocates them) and their allocation, one set per part of a window's streams (see
model.Model.work and threads.py)."""

import numpy as np

from . import amx, gemm, kernels, threads
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


def packed16_shape(cfg):
    """(2L-1, H*K) of each bf16 packed copy of the layers' (H, K) weights (bgemm.pack: k needs
    no padding, H and K being whole strips), for a window trained with bf16 products."""
    L, H = cfg.layers, cfg.hidden
    return (2 * L - 1, H * GATES[kernels.CELLS[cfg.cell]] * H)


def alloc_packed16(cfg):
    """(Wbp, WbTp): the bf16 packed weights every part's Work shares, in a bf16 window."""
    shape = packed16_shape(cfg)
    return np.zeros(shape, np.uint16), np.zeros(shape, np.uint16)


def bf16_sizes(cfg, T, B):
    """{field of Work: elements} of a bf16 window's own buffers (see Work): the products' inputs
    converted to bf16 (Ab), a block of the weight gradients' inputs (Xb, Gb; k padded to whole
    AMX tiles, which the vdpbf16ps products read as they are) and the AMX configuration."""
    H = cfg.hidden
    K = GATES[kernels.CELLS[cfg.cell]] * H
    kb = amx.padded(min(gemm.KC, T * B))
    return dict(Ab=T * B * K, Xb=H * kb, Gb=kb * K, tiles=64 if amx.available() else 0)


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
        dR=(T if cfg.cell in ("gru", "lnlstm") else 0, B, G),
        dH=(L, T, B, H),
        dh=(B, H),
        dc=(B, H),
        dhn=(B, H),
        gn=(L, T if grad_norms else 0),
        **norm_shapes(cfg, T, B),
    )


def norm_shapes(cfg, T, B):
    """{field of Work: shape} of an lnlstm's normalised products and states (Work.Xn, Rn, Cn,
    S); (L, T, B, 0) each for the other cells."""
    L, H = cfg.layers, cfg.hidden
    ln = cfg.cell == "lnlstm"
    return dict(Xn=(L, T, B, 4 * H * ln), Rn=(L, T, B, 4 * H * ln), Cn=(L, T, B, H * ln), S=(L, T, B, 3 * ln))


def grad_block_size(cfg, T, B, dtype):
    """Elements of a window's block of dG packed for the weight gradients (Work.Gp), or 0
    where the hidden size does not suit the packed products."""
    if packed_shape(cfg, dtype)[1] == 0:
        return 0
    return min(gemm.KC, T * B) * GATES[kernels.CELLS[cfg.cell]] * cfg.hidden


def alloc_work(
    cfg, T, B, dtype, dropout=False, packed=None, grad_norms=False, packed16=None, weight_mask=None
):
    """Buffers for one window (T, B); packed: the shared (Whp, WhTp) buffers, or new ones.
    packed16: the shared (Wbp, WbTp) of a window with bf16 products (alloc_packed16), whose
    float32 packed buffers are then empty; None for float32 products. weight_mask: the (L, H, K)
    weight-drop mask a bf16 window packs its Wh with (Work.Wm), shared too; None: none."""
    L = cfg.layers
    if packed16 is None:
        Whp, WhTp = packed if packed is not None else alloc_packed(cfg, dtype)
        Wbp = WbTp = np.zeros((2 * L - 1, 0), np.uint8)  # a type of its own: see Work
        sizes, gp = dict(Ab=0, Xb=0, Gb=0, tiles=0), grad_block_size(cfg, T, B, dtype)
    else:
        Whp = WhTp = np.zeros((2 * L - 1, 0), dtype)
        Wbp, WbTp = packed16
        sizes, gp = bf16_sizes(cfg, T, B), 0
    return Work(
        **{
            k: np.zeros(shape, np.float64 if k == "gn" else dtype)
            for k, shape in work_shapes(cfg, T, B, dropout, grad_norms).items()
        },
        Whp=Whp,
        WhTp=WhTp,
        Gp=np.zeros(gp, dtype),
        Wbp=Wbp,
        WbTp=WbTp,
        **{k: np.zeros(n, np.uint16) for k, n in sizes.items() if k != "tiles"},
        # the AMX configuration, uint8; a window without tiles has an int8 placeholder, a type of
        # its own, so that its kernels compile only the vdpbf16ps products (kernels._amx)
        tiles=np.zeros(sizes["tiles"], np.uint8 if sizes["tiles"] or packed16 is None else np.int8),
        Wm=np.zeros((0, 0, 0), dtype) if weight_mask is None else weight_mask,
    )
