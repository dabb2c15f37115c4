"""Numba kernels: forward and backward passes of a stack of recurrent layers over one window.

Everything here is a pure function over arrays: no I/O, no randomness (dropout masks and sampling
coins come in as arrays), no allocation inside the time loop.  The outer structure is shared by the
three cells; only the per-time-step recurrence differs.

Dimension legend, used in every shape comment of the package:
    T  window length (time steps)      B  batch streams
    H  hidden size                     L  layers
    V  vocabulary size                 K  gate width: 4H (lstm), 3H (gru), H (rnn)

Gate layout inside the fused (..., K) block:
    lstm: i f g o   (input, forget, cell candidate, output), as PyTorch orders them
    gru:  r z n     (reset, update, candidate), PyTorch's variant: n = tanh(Wx x + b + r * (Wh h + bh))
    rnn:  a single tanh pre-activation
    lnlstm: i f g o, each product layer-normalised (Ba et al. 2016; see Params.ln)

Arrays are time-major: x is (T, B), states are (L, B, H), per-step slices are contiguous.
float32 arrays use an arithmetic-only tanh (vectorisable, within 4e-7 of the exact value);
float64 arrays use the exact functions, so gradient tests see the true derivatives.
"""

from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from . import amx, bgemm, gemm
from .cells import CELLS, GATES, GRU, LNLSTM, LSTM, RNN, which  # noqa: F401 (the package's names)

# what a kernel compiled for any cell compares its int with
LSTM_ID, GRU_ID, LNLSTM_ID = int(LSTM), int(GRU), int(LNLSTM)
LN_EPS = 1e-5  # the layer normalisations' epsilon, inside the square root

# One decorator for every kernel: cached on disk, and NumPy's error model, so a float division
# is a plain division (Python's model checks for zero and blocks vectorisation).
kernel = njit(cache=True, error_model="numpy", nogil=True)


class Params(NamedTuple):
    """The weights of a model. Gradients and Adam moments use the same type."""

    # fmt: off
    Wx0: np.ndarray  # (V, K)       first layer's input weights: one row per character
    Wx: np.ndarray   # (L-1, H, K)  input weights of layers 1..L-1
    Wh: np.ndarray   # (L, H, K)    recurrent weights
    b: np.ndarray    # (L, K)       input-side bias
    bh: np.ndarray   # (L, H) for gru (bias inside r * (Wh h + bh)), (L, 0) otherwise
    Wy: np.ndarray   # (H, V)       decoder
    by: np.ndarray   # (V,)
    ln: np.ndarray   # (L, 3K+2H) lnlstm: per layer gx bx gh (K each) gc bc (H each); (L, 0) else
    # fmt: on


class Work(NamedTuple):
    """Per-window buffers, allocated once per shape (see buffers.alloc_work)."""

    G: np.ndarray  # (L, T, B, K)    gate activations; the backward pass overwrites them,
    #                 step by step, with the gate pre-activation gradients
    # fmt: off
    Hs: np.ndarray    # (L, T+1, B, H)  hidden states, Hs[l, 0] = initial state
    Cs: np.ndarray    # (L, T+1, B, H)  lstm cell states (unused by gru and rnn)
    Aux: np.ndarray   # (L, T, B, H)    lstm: tanh(c);  gru: Wh h + bh of the n gate
    M: np.ndarray     # (L, T, B, H)    inverted-dropout masks, or (L, 0, B, H) for none
    D: np.ndarray     # (L, T, B, H)    masked layer outputs (inputs of the layer above), if dropout
    P: np.ndarray     # (T*B, V)        logits, then probabilities, then dlogits
    R: np.ndarray     # (B, K)          recurrent product of one step; backward: its dG
    dR: np.ndarray    # (T, B, K)       gru: gradient of the recurrent product (else unused)
    dH: np.ndarray    # (L, T, B, H)    gradient reaching each layer's outputs
    dh: np.ndarray    # (B, H)          carried dh of the backward time loop
    dc: np.ndarray    # (B, H)          carried dc of the backward time loop
    dhn: np.ndarray   # (B, H)          dR[t] @ Wh^T
    # fmt: on
    gn: np.ndarray  # (L, T)          norm of d loss / d h_t, as backward reaches each step,
    #                 or (L, 0) not to measure it
    Whp: np.ndarray  # (2L-1, H*K)     Wh of each layer, then Wx of layers > 0, packed for the
    #                                   forward products (gemm.pack), if packable
    WhTp: np.ndarray  # (2L-1, K*H)     their transposes, packed for the backward products
    Gp: np.ndarray  # (min(KC, T*B) * K,) a block of dG packed for the weight gradients
    #                                   (gemm.matmul_tn_acc), if packable
    # A window with bf16 products (bgemm.py, amx.py; buffers.alloc_work's packed16) has these,
    # and its float32 Whp, WhTp and Gp empty; a float32 window has them empty, and its Wbp and
    # WbTp uint8, a type of their own: the kernels compiled for it hold none of the bf16 path
    # (product16, grad16 and pack16 compile to nothing), which doubled their compile time.
    Wbp: np.ndarray  # (2L-1, H*K) uint16  Whp's matrices in bf16 (bgemm.pack)
    WbTp: np.ndarray  # (2L-1, K*H) uint16 WhTp's
    Ab: np.ndarray  # (T*B*K,) uint16      a product's left operand converted to bf16
    Xb: np.ndarray  # (H*kb,) uint16       a block of a weight gradient's X^T, and ...
    Gb: np.ndarray  # (kb*K,) uint16       ... of its dG packed (kb: buffers.bf16_sizes)
    tiles: np.ndarray  # (64,) uint8       the AMX tile configuration, or (0,) int8 for vdpbf16ps
    Wm: np.ndarray  # (L, H, K)          a bf16 window's Wh times its weight-drop mask, which
    #                                   pack16 packs in its place (the weights themselves stay
    #                                   as they are); (0, 0, 0) without weight drop
    # lnlstm: the normalised products and cell states the backward pass reads, and the inverse
    # standard deviations (input, recurrent, cell) of each row; (L, T, B, 0) for the other cells
    Xn: np.ndarray  # (L, T, B, K)       the input products (and b), normalised
    Rn: np.ndarray  # (L, T, B, K)       the recurrent products, normalised
    Cn: np.ndarray  # (L, T, B, H)       the cell states, normalised
    S: np.ndarray  # (L, T, B, 3)        1 / sqrt(var + LN_EPS) of each


# ---------------------------------------------------------------------------------------------
# Activations: exact in float64, arithmetic-only in float32


def tanh_(x):
    return np.tanh(x)


_TA = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
_TB = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


@overload(tanh_, inline="always")
def _tanh_impl(x):
    if x == types.float32:
        a0, a1, a2, a3, a4, a5, a6 = [np.float32(a) for a in _TA]
        b0, b1, b2, b3 = [np.float32(b) for b in _TB]
        lim = np.float32(7.90531110763549805)

        def fast(x):  # rational minimax approximation, |error| < 4e-7
            x = min(max(x, -lim), lim)
            x2 = x * x
            p = x * (a0 + x2 * (a1 + x2 * (a2 + x2 * (a3 + x2 * (a4 + x2 * (a5 + x2 * a6))))))
            q = b0 + x2 * (b1 + x2 * (b2 + x2 * b3))
            return p / q

        return fast
    return lambda x: np.tanh(x)


def sigmoid_(x):
    return 1.0 / (1.0 + np.exp(-x))


@overload(sigmoid_, inline="always")
def _sigmoid_impl(x):
    if x == types.float32:
        half = np.float32(0.5)
        return lambda x: half * tanh_(half * x) + half
    return lambda x: 1.0 / (1.0 + np.exp(-x))


def like(x, v):
    """The constant v in the floating type of x (keeps float32 loops in float32)."""
    return v


@overload(like, inline="always")
def _like_impl(x, v):
    if x == types.float32:
        return lambda x, v: np.float32(v)
    return lambda x, v: np.float64(v)


# ---------------------------------------------------------------------------------------------
# One time step of each cell. G: (B, K) pre-activations in, activations out.


# The LSTM's step in three pieces, which the lnlstm's step shares (lnlstm_step): short loops
# over at most three arrays each: with more, LLVM's runtime alias checks give up and the loop
# runs scalar (several times slower).


@kernel
def lstm_gates(G):
    """G (B, 4H) pre-activations i f g o become the gates' activations, in place."""
    B, K = G.shape
    H = K // 4
    half = like(G[0, 0], 0.5)
    for bb in range(B):
        # sigmoid(x) = tanh(x/2)/2 + 1/2 for i f o, tanh for g: a loop per block of gates over
        # its own slice (one loop over K choosing each gate's constants ran 1.6x slower)
        sif, gg, o = G[bb, : 2 * H], G[bb, 2 * H : 3 * H], G[bb, 3 * H :]
        for j in range(2 * H):
            sif[j] = half * tanh_(half * sif[j]) + half
        for j in range(H):
            gg[j] = tanh_(gg[j])
        for j in range(H):
            o[j] = half * tanh_(half * o[j]) + half


@kernel
def lstm_cell(G, c_prev, c):
    """c = f * c_prev + i * g from G's activations (c may be c_prev)."""
    H = c.shape[1]
    for bb in range(c.shape[0]):
        g, cb, cpb = G[bb], c[bb], c_prev[bb]
        for j in range(H):
            cb[j] = g[H + j] * cpb[j] + g[j] * g[2 * H + j]


@kernel
def lstm_out(G, tc, h):
    """h = o * tc, tc the cell state's tanh."""
    H = h.shape[1]
    for bb in range(h.shape[0]):
        g, tb, hb = G[bb], tc[bb], h[bb]
        for j in range(H):
            hb[j] = g[3 * H + j] * tb[j]


@kernel
def lstm_step(G, c_prev, c, tc, h):
    lstm_gates(G)
    lstm_cell(G, c_prev, c)
    for bb in range(c.shape[0]):
        cb, tb = c[bb], tc[bb]
        for j in range(c.shape[1]):
            tb[j] = tanh_(cb[j])
    lstm_out(G, tc, h)


@kernel
def gru_step(G, R, bh, h_prev, rn, h):
    B, K = G.shape
    H = K // 3
    for bb in range(B):
        g = G[bb]
        r = R[bb]
        for j in range(2 * H):
            g[j] = sigmoid_(g[j] + r[j])
        for j in range(H):
            a = r[2 * H + j] + bh[j]
            rn[bb, j] = a
            n = tanh_(g[2 * H + j] + g[j] * a)
            g[2 * H + j] = n
            z = g[H + j]
            h[bb, j] = n + z * (h_prev[bb, j] - n)


@kernel
def rnn_step(G, h):
    B, H = G.shape
    for bb in range(B):
        for j in range(H):
            a = tanh_(G[bb, j])
            G[bb, j] = a
            h[bb, j] = a


# Layer normalisation (lnlstm): each row normalised to zero mean and unit variance over its
# own elements. Its two sums may be reassociated (fast-math's reassoc, for these two kernels
# alone), which lets LLVM keep them in vector registers: summed in order they run scalar, and
# made the lnlstm's step a third slower than the LSTM's at 2 x 640.
summing = njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "nsz"})


@summing
def row_sum(x):
    """sum(x) of a 1-d array."""
    s = like(x[0], 0.0)
    for k in range(x.shape[0]):
        s += x[k]
    return s


@summing
def row_dot(x, y, mu):
    """sum((x - mu) * (y - mu)) of two 1-d arrays (mu a scalar of their type)."""
    s = mu - mu
    for k in range(x.shape[0]):
        s += (x[k] - mu) * (y[k] - mu)
    return s


@kernel
def ln_rows(X, Xn, S, j):
    """Xn[n] = (X[n] - mean) / sqrt(var + LN_EPS) for each row of X (N, M), and S[n, j] the
    1 / sqrt(var + LN_EPS). Xn may be X."""
    N, M = X.shape
    one, size, eps = like(X[0, 0], 1.0), like(X[0, 0], M), like(X[0, 0], LN_EPS)
    for n in range(N):
        x, xn = X[n], Xn[n]
        m = row_sum(x) / size
        r = one / np.sqrt(row_dot(x, x, m) / size + eps)
        for k in range(M):
            xn[k] = (x[k] - m) * r
        S[n, j] = r


@kernel
def ln_back_rows(dY, Xn, S, j, dX):
    """dX[n] = S[n, j] * (dY[n] - mean(dY[n]) - Xn[n] * mean(dY[n] * Xn[n])): the gradient of a
    row normalised by ln_rows (Xn its output) from that of its output. dX may be dY."""
    N, M = dY.shape
    zero, size = like(dY[0, 0], 0.0), like(dY[0, 0], M)
    for n in range(N):
        dy, xn, dx = dY[n], Xn[n], dX[n]
        a = row_sum(dy) / size
        b = row_dot(dy, xn, zero) / size
        r = S[n, j]
        for k in range(M):
            dx[k] = r * (dy[k] - a - xn[k] * b)


@kernel
def lnlstm_step(G, c_prev, c, tc, h, Cn, S, q):
    """lstm_step with the cell state normalised before its tanh: tanh(gc * LN(c) + bc), the
    gain gc and bias bc in q (a row of Params.ln), its statistics into Cn and S[:, 2]."""
    B, K = G.shape
    H = K // 4
    gc, bc = q[3 * K : 3 * K + H], q[3 * K + H :]
    lstm_gates(G)
    lstm_cell(G, c_prev, c)
    ln_rows(c, Cn, S, 2)
    for bb in range(B):
        cn, tb = Cn[bb], tc[bb]
        for j in range(H):  # loops over three arrays at most, as lstm_step's
            tb[j] = gc[j] * cn[j]
        for j in range(H):
            tb[j] = tanh_(tb[j] + bc[j])
    lstm_out(G, tc, h)


@kernel
def ln_input(p, l, G, Xn, S):
    """An lnlstm layer's input side: G (N, K), holding its input product and b, becomes
    gx * LN(G) + bx, LN(G) into Xn and its statistics into S[:, 0]."""
    K = G.shape[1]
    q = p.ln[l]
    gx, bx = q[:K], q[K : 2 * K]
    ln_rows(G, Xn, S, 0)
    for n in range(G.shape[0]):
        g, xn = G[n], Xn[n]
        for k in range(K):
            g[k] = gx[k] * xn[k]
        for k in range(K):
            g[k] += bx[k]


def input_norm(cell, p, l, G, Xn, S):
    """ln_input for an lnlstm; nothing for the other cells. The lnlstm's code compiles only
    into kernels typed for it (cells.py): those of any cell, an int, hold none of it."""


@overload(input_norm)
def _input_norm_impl(cell, p, l, G, Xn, S):
    known = which(cell)
    if known == LNLSTM:
        return lambda cell, p, l, G, Xn, S: ln_input(p, l, G, Xn, S)
    return lambda cell, p, l, G, Xn, S: None


@kernel
def cell_step(cell, p, l, G, w, Whp):
    """Advance layer l by one step in place. G (B, K) holds the input projection; w is a tuple
    (R, h_prev, c_prev, h, c, aux, Rn, Cn, S) of (B, .) arrays (the last three an lnlstm's
    normalised recurrent product and cell state and their statistics, see Work); Whp is p.Wh[l]
    packed (gemm.pack), or empty to multiply by p.Wh[l] itself."""
    R, h_prev = w[0], w[1]
    if Whp.size > 0:
        gemm.matmul(h_prev, Whp, R)
    else:
        np.dot(h_prev, p.Wh[l], R)
    cell_update(cell, p, l, G, w)


def cell_update(cell, p, l, G, w):
    """cell_step once w's R holds the recurrent product h_prev @ Wh[l]: compiled for the one
    cell that `cell` names where it is a cells.Cell, for any cell (chosen as it runs) where
    it is an int."""


@kernel
def _gru_update(cell, p, l, G, w):
    R, h_prev, c_prev, h, c, aux = w[:6]
    gru_step(G, R, p.bh[l], h_prev, aux, h)


@kernel
def _lstm_update(cell, p, l, G, w):
    R, h_prev, c_prev, h, c, aux = w[:6]
    G += R
    lstm_step(G, c_prev, c, aux, h)


@kernel
def _rnn_update(cell, p, l, G, w):
    R, h_prev, c_prev, h, c, aux = w[:6]
    G += R
    rnn_step(G, h)


@kernel
def _lnlstm_update(cell, p, l, G, w):
    R, h_prev, c_prev, h, c, aux, Rn, Cn, S = w
    K = G.shape[1]
    gh = p.ln[l, 2 * K : 3 * K]
    ln_rows(R, Rn, S, 1)
    for bb in range(G.shape[0]):
        g, rn = G[bb], Rn[bb]
        for k in range(K):
            g[k] += gh[k] * rn[k]
    lnlstm_step(G, c_prev, c, aux, h, Cn, S, p.ln[l])


@overload(cell_update)
def _cell_update_impl(cell, p, l, G, w):
    known = which(cell)
    if known is not None:
        return {LSTM: _lstm_update, GRU: _gru_update, RNN: _rnn_update, LNLSTM: _lnlstm_update}[known].py_func

    def any_cell(cell, p, l, G, w):
        if cell == GRU_ID:
            _gru_update(cell, p, l, G, w)
        elif cell == LSTM_ID:
            _lstm_update(cell, p, l, G, w)
        elif cell == LNLSTM_ID:  # its kernels are typed for it (Model.cell): never here
            raise ValueError("an lnlstm steps in kernels compiled for its own cell type")
        else:
            _rnn_update(cell, p, l, G, w)

    return any_cell


# ---------------------------------------------------------------------------------------------
# Stack forward over a window


@kernel
def put(dst, src):
    """dst[...] = src for two 2-d arrays of one shape, or two 1-d ones. A loop, not a slice
    assignment: Numba's slice assignment compiles a formatted error message for a shape
    mismatch (an f-string join, ~2.3 s of each fresh process's first compile)."""
    if dst.ndim == 1:
        for i in range(dst.shape[0]):
            dst[i] = src[i]
    else:
        for i in range(dst.shape[0]):
            for j in range(dst.shape[1]):
                dst[i, j] = src[i, j]


@kernel
def rows(a):
    """(T, B, N) C-contiguous -> (T*B, N) view."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2])


@kernel
def layer_input(w, l):
    """The (T, B, H) outputs of layer l as the layer above (or the decoder) sees them."""
    if w.M.shape[1] > 0:
        return w.D[l]
    return w.Hs[l][1:]


@kernel
def embed(p, ids, G):
    """The first layer's input projection: G (N, K) = Wx0[ids] + b[0], a row lookup."""
    for n in range(ids.shape[0]):
        row = p.Wx0[ids[n]]
        for k in range(G.shape[1]):
            G[n, k] = row[k] + p.b[0, k]


@kernel
def packed(w):
    """Whether w's windows multiply by packed recurrent weights (gemm.packable)."""
    return w.Whp.shape[1] > 0


@kernel
def bf16(w):
    """Whether w's windows multiply in bf16 (inputs rounded to bf16, float32 sums)."""
    return w.Wbp.shape[1] > 0


def product16(A, w, Bp, C):
    """C (m, N) = A (m, Kd) @ B in bf16 products, Bp = bgemm.pack(B): A converted into w.Ab,
    then on AMX tiles where w has their configuration, else by vdpbf16ps. Nothing in a window
    without bf16 products (_no_bf16)."""


def _no_bf16(w, dtype):
    """Whether a kernel compiled for Work w and arrays of dtype takes no bf16 path: a float32
    window's (its Wbp uint8), or a float64 one (model.check_train_precision refuses bf16)."""
    Wbp = w.types[w.fields.index("Wbp")]
    return Wbp.dtype != types.uint16 or dtype != types.float32


def _amx(w):
    """Whether a bf16 window's products run on AMX tiles: its tiles are a uint8 configuration
    (buffers.alloc_work); a window without them has an int8 placeholder, a type of its own, so
    neither compiles the other's products."""
    return w.types[w.fields.index("tiles")].dtype == types.uint8


def _dtype(p):
    """The float type of a Params (in typing: its Wh's)."""
    return p.types[p.fields.index("Wh")].dtype


@overload(product16)
def _product16_impl(A, w, Bp, C):
    if _no_bf16(w, C.dtype):
        return lambda A, w, Bp, C: None

    def impl(A, w, Bp, C):
        m, N = C.shape
        Ab = w.Ab[: m * (Bp.size // N)]
        bgemm.convert_rows(A, Ab)
        amx.matmul(Ab, Bp, C, False, w.tiles)

    def vdp(A, w, Bp, C):
        m, N = C.shape
        Ab = w.Ab[: m * (Bp.size // N)]
        bgemm.convert_rows(A, Ab)
        bgemm.matmul(Ab, Bp, C, False)

    return impl if _amx(w) else vdp


def grad16(X, G, dW, w):
    """dW (H, K) += X (N, H)^T @ G (N, K) in bf16 products, on AMX tiles where w has their
    configuration; nothing without bf16 products, as product16."""


def pack16(p, w, backward, part, parts):
    """Part's share of the strips of every layer's Wh and of the input weights Wx of the layers
    above the first, rounded to bf16 and packed (bgemm.pack) into w.Wbp; or of their
    transposes into w.WbTp with backward; in place of Wh, Wh times its weight-drop mask where
    w has it (w.Wm). Nothing without bf16 products, as product16."""


@overload(pack16)
def _pack16_impl(p, w, backward, part, parts):
    if _no_bf16(w, _dtype(p)):
        return lambda p, w, backward, part, parts: None

    def impl(p, w, backward, part, parts):
        L, H, K = p.Wh.shape
        lo, hi = share((H if backward else K) // bgemm.NR, part, parts)
        dropped = w.Wm.shape[0] > 0
        for l in range(2 * L - 1):
            W = (w.Wm[l] if dropped else p.Wh[l]) if l < L else p.Wx[l - L]
            if backward:  # (one call with W.T or W would read both through strided arrays)
                bgemm.pack_strips(W.T, w.WbTp[l], lo, hi)
            else:
                bgemm.pack_strips(W, w.Wbp[l], lo, hi)

    return impl


@overload(grad16)
def _grad16_impl(X, G, dW, w):
    if _no_bf16(w, dW.dtype):
        return lambda X, G, dW, w: None

    if _amx(w):
        return lambda X, G, dW, w: amx.matmul_tn_acc(X, G, dW, w.Xb, w.Gb, w.tiles)
    return lambda X, G, dW, w: bgemm.matmul_tn_acc(X, G, dW, w.Xb, w.Gb)


@kernel
def share(n, part, parts):
    """(lo, hi): the part-th of parts as even shares of range(n)."""
    return n * part // parts, n * (part + 1) // parts


@kernel
def pack_forward(p, w, part=0, parts=1):
    """Pack every layer's Wh into w.Whp[l], and the input weights Wx of layer l > 0 into
    w.Whp[L + l - 1], for the forward products (if the hidden size suits packing); of each
    matrix only part's share of the strips, when parts threads pack it together. In bf16
    (w.Wbp), rounded to bf16 as they are packed."""
    pack16(p, w, False, part, parts)
    pack32(p, w, False, part, parts)


def pack32(p, w, backward, part, parts):
    """pack_forward's or (with backward) pack_backward's float32 packing, where the hidden size
    suits it; nothing in a window with bf16 products (pack16 packs those)."""


@overload(pack32)
def _pack32_impl(p, w, backward, part, parts):
    if not _no_bf16(w, _dtype(p)):
        return lambda p, w, backward, part, parts: None

    def impl(p, w, backward, part, parts):
        if not packed(w):
            return
        L = p.Wh.shape[0]
        if backward:
            lo, hi = share(gemm.strips(p.Wh[0].T, w.WhTp[0]), part, parts)
            for l in range(L):
                gemm.pack_strips(p.Wh[l].T, w.WhTp[l], lo, hi)
            for l in range(1, L):
                gemm.pack_strips(p.Wx[l - 1].T, w.WhTp[L + l - 1], lo, hi)
        else:
            lo, hi = share(gemm.strips(p.Wh[0], w.Whp[0]), part, parts)
            for l in range(L):
                gemm.pack_rows(p.Wh[l], w.Whp[l], lo, hi)
            for l in range(1, L):
                gemm.pack_rows(p.Wx[l - 1], w.Whp[L + l - 1], lo, hi)

    return impl


@kernel
def pack_backward(p, w, part=0, parts=1):
    """Pack the transposes of pack_forward's matrices into w.WhTp (or w.WbTp), for the backward
    products."""
    pack16(p, w, True, part, parts)
    pack32(p, w, True, part, parts)


@kernel
def pack_weights(p, w, backward, part=0, parts=1):
    """pack_forward, and with backward pack_backward: once per window, when its parts share
    the packed weights; part's share of them when parts threads pack them together."""
    pack_forward(p, w, part, parts)
    if backward:
        pack_backward(p, w, part, parts)


# The steps whose products a window with bf16 products takes in bf16: each an @overload that
# gives such a window the bf16 code and any other the float32 code alone, so that neither
# compiles the other's (a branch on bf16(w) would type and generate both).


def input_forward(p, w, l, A, out):
    """out (T*B, K) = A (T*B, H) @ Wx[l - 1], A the outputs of layer l - 1."""


@overload(input_forward)
def _input_forward_impl(p, w, l, A, out):
    if not _no_bf16(w, out.dtype):
        return lambda p, w, l, A, out: product16(A, w, w.Wbp[p.Wh.shape[0] + l - 1], out)

    def impl(p, w, l, A, out):
        if packed(w):
            gemm.matmul(A, w.Whp[p.Wh.shape[0] + l - 1], out)
        else:
            np.dot(A, p.Wx[l - 1], out)

    return impl


def input_backward(p, w, l, dG, out):
    """out (T*B, H) = dG (T*B, K) @ Wx[l - 1]^T: the gradient w.r.t. layer l - 1's outputs."""


@overload(input_backward)
def _input_backward_impl(p, w, l, dG, out):
    if not _no_bf16(w, out.dtype):
        return lambda p, w, l, dG, out: product16(dG, w, w.WbTp[p.Wh.shape[0] + l - 1], out)

    def impl(p, w, l, dG, out):
        if packed(w):
            gemm.matmul(dG, w.WhTp[p.Wh.shape[0] + l - 1], out)
        else:
            np.dot(dG, p.Wx[l - 1].T, out)

    return impl


def recurrent_step(cell, p, w, l, G, wt):
    """One step of layer l: the recurrent product into wt's R, then cell_update."""


@overload(recurrent_step)
def _recurrent_step_impl(cell, p, w, l, G, wt):
    if not _no_bf16(w, G.dtype):

        def narrow(cell, p, w, l, G, wt):
            product16(wt[1], w, w.Wbp[l], wt[0])
            cell_update(cell, p, l, G, wt)

        return narrow
    return lambda cell, p, w, l, G, wt: cell_step(cell, p, l, G, wt, w.Whp[l])


@kernel
def forward(cell, p, x, h0, c0, w, prepacked=False):
    """Run the stack over x (T, B) from state (h0, c0), each (L, B, H); fills w.G, w.Hs, w.Cs,
    w.Aux, w.D and leaves the decoder's logits in w.P (T*B, V). prepacked: w.Whp already
    holds p.Wh packed (pack_weights), as when the parts of a window share it. The package
    passes prepacked always (an omitted argument is a second signature, compiled again)."""
    L, T, B, K = w.G.shape
    if not prepacked:
        pack_forward(p, w)
    for l in range(L):
        G = w.G[l]  # (T, B, K)
        if l == 0:
            for t in range(T):
                embed(p, x[t], G[t])
        else:
            G2 = rows(G)
            input_forward(p, w, l, rows(layer_input(w, l - 1)), G2)
            G2 += p.b[l]
        input_norm(cell, p, l, rows(G), rows(w.Xn[l]), rows(w.S[l]))
        put(w.Hs[l, 0], h0[l])
        put(w.Cs[l, 0], c0[l])
        for t in range(T):
            h_prev, c_prev, h, c = w.Hs[l, t], w.Cs[l, t], w.Hs[l, t + 1], w.Cs[l, t + 1]
            wt = (w.R, h_prev, c_prev, h, c, w.Aux[l, t], w.Rn[l, t], w.Cn[l, t], w.S[l, t])
            recurrent_step(cell, p, w, l, G[t], wt)
        if w.M.shape[1] > 0:
            np.multiply(w.Hs[l][1:], w.M[l], w.D[l])
    P = w.P
    np.dot(rows(layer_input(w, L - 1)), p.Wy, P)
    P += p.by


@kernel
def masks_from_bits(bits, p, scale, out):
    """out (2n,): scale where the float32 uniform made from each 32-bit half of bits (n,)
    uint64, low half first, is >= p, else 0 (NumPy's float32 uniform: the top 24 bits of a
    32-bit draw times 2^-24)."""
    unit = np.float32(1.0 / 16777216.0)
    zero = scale * 0
    for i in range(bits.shape[0]):
        b = bits[i]
        lo = np.float32((b & np.uint64(0xFFFFFFFF)) >> np.uint64(8)) * unit
        hi = np.float32(b >> np.uint64(40)) * unit
        out[2 * i] = scale if float(lo) >= p else zero
        out[2 * i + 1] = scale if float(hi) >= p else zero


@kernel
def xent(P, y, grad, n_total=0):
    """Summed softmax cross-entropy (nats) of logits P (N, V) against targets y (N,).
    With grad, P is overwritten by d(loss)/d(logits) for the loss averaged over n_total
    characters (0: N): a window split in parts still gets the whole window's mean. The
    package passes every argument: an omitted one is a signature of its own, compiled again."""
    N, V = P.shape
    total = 0.0
    inv = like(P[0, 0], 1.0 / (n_total if n_total > 0 else N))
    for n in range(N):
        row = P[n]
        m = row.max()
        target = row[y[n]]
        s = 0.0
        for v in range(V):
            e = np.exp(row[v] - m)
            s += e
            if grad:
                row[v] = e
        total += m + np.log(s) - target
        if grad:
            k = like(inv, 1.0 / s) * inv
            for v in range(V):
                row[v] *= k
            row[y[n]] -= inv
    return total


# ---------------------------------------------------------------------------------------------
# Backward


@kernel
def lstm_step_back(g, c_prev, tc, dh, dc, dG):
    """g (B, 4H) activations; dh (B, H) in; dc (B, H) in: from step t+1, out: to step t-1.
    One short loop per gate over its own slices (as lstm_step): a single loop over all seven
    arrays ran scalar, LLVM's alias checks giving up (3-5x slower at float32)."""
    B, H = dh.shape
    one = like(dh[0, 0], 1.0)
    for bb in range(B):
        a, d, t, dhb, dcb = g[bb], dG[bb], tc[bb], dh[bb], dc[bb]
        o, do = a[3 * H :], d[3 * H :]
        for j in range(H):  # dc at this step, in place
            dcb[j] = dcb[j] + dhb[j] * o[j] * (one - t[j] * t[j])
        for j in range(H):
            do[j] = dhb[j] * t[j] * o[j] * (one - o[j])
    lstm_cell_back(g, c_prev, dc, dG)


@kernel
def lstm_cell_back(g, c_prev, dc, dG):
    """dG's i f g columns from dc (B, H), the gradient of this step's cell state (lstm_cell's
    backward); dc then becomes the gradient of c_prev's part through the forget gate."""
    B, H = dc.shape
    one = like(dc[0, 0], 1.0)
    for bb in range(B):
        a, d, dcb = g[bb], dG[bb], dc[bb]
        i, f, gg = a[:H], a[H : 2 * H], a[2 * H : 3 * H]
        di, df, dg = d[:H], d[H : 2 * H], d[2 * H : 3 * H]
        for j in range(H):
            di[j] = dcb[j] * gg[j] * i[j] * (one - i[j])
        for j in range(H):
            dg[j] = dcb[j] * i[j] * (one - gg[j] * gg[j])
        cp = c_prev[bb]
        for j in range(H):
            df[j] = dcb[j] * cp[j] * f[j] * (one - f[j])
        for j in range(H):
            dcb[j] = dcb[j] * f[j]


@kernel
def gain_back(dY, Xn, gain, dgain, dX):
    """The backward of Y = gain * Xn (+ a bias) row by row: dgain += sum of dY * Xn, and
    dX = dY * gain (dX may be dY)."""
    for n in range(dY.shape[0]):
        dy, xn, dx = dY[n], Xn[n], dX[n]
        for k in range(dy.shape[0]):
            dgain[k] += dy[k] * xn[k]
        for k in range(dy.shape[0]):
            dx[k] = dy[k] * gain[k]


@kernel
def lnlstm_step_back(g, c_prev, tc, Cn, S, q, dq, dh, dc, dG, du):
    """lstm_step_back through lnlstm_step's normalised cell state: q, dq a row of Params.ln
    and of its gradient (gc, bc's accumulate here); du (B, H) scratch."""
    B, H = dh.shape
    K = 4 * H
    one = like(dh[0, 0], 1.0)
    gc, dgc, dbc = q[3 * K : 3 * K + H], dq[3 * K : 3 * K + H], dq[3 * K + H :]
    for bb in range(B):
        a, d, t, dhb, u = g[bb], dG[bb], tc[bb], dh[bb], du[bb]
        o, do = a[3 * H :], d[3 * H :]
        for j in range(H):
            do[j] = dhb[j] * t[j] * o[j] * (one - o[j])
        for j in range(H):
            u[j] = dhb[j] * o[j]
        for j in range(H):
            u[j] *= one - t[j] * t[j]
    add_rows(du, dbc)
    gain_back(du, Cn, gc, dgc, du)
    ln_back_rows(du, Cn, S, 2, du)
    for bb in range(B):
        dcb, u = dc[bb], du[bb]
        for j in range(H):
            dcb[j] += u[j]
    lstm_cell_back(g, c_prev, dc, dG)


@kernel
def gru_step_back(g, rn, h_prev, dh, dG, dR, dbh):
    """g (B, 3H) activations r z n; dh (B, H) in, becomes the direct part of dh_prev."""
    B, H = dh.shape
    one = like(dh[0, 0], 1.0)
    for bb in range(B):
        a = g[bb]
        for j in range(H):
            r, z, n = a[j], a[H + j], a[2 * H + j]
            d = dh[bb, j]
            dn = d * (one - z) * (one - n * n)
            dr = dn * rn[bb, j] * r * (one - r)
            dz = d * (h_prev[bb, j] - n) * z * (one - z)
            dG[bb, j] = dr
            dG[bb, H + j] = dz
            dG[bb, 2 * H + j] = dn
            dR[bb, j] = dr
            dR[bb, H + j] = dz
            dR[bb, 2 * H + j] = dn * r
            dbh[j] += dn * r
            dh[bb, j] = d * z


@kernel
def add_rows(a, out):
    """out (N,) += the sum of a's rows, a (M, N) (a loop LLVM vectorises; NumPy-style
    a.sum(axis=0) in Numba does not)."""
    for i in range(a.shape[0]):
        out += a[i]


@kernel
def merge_into(g, d):
    """g += d, then d = 0 (1-d arrays): a part's gradient merged into the window's."""
    for i in range(g.size):
        g[i] += d[i]
        d[i] = 0


@kernel
def norm2(a):
    """Euclidean norm of a 2-d array, accumulated in float64."""
    s = 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            s += float(a[i, j]) * float(a[i, j])
    return np.sqrt(s)


def rec_back(p, w, l, dG, out):
    """out (B, H) = dG (B, K) @ Wh[l]^T: in bf16, or through the packed WhTp when there is one,
    else BLAS."""


@overload(rec_back)
def _rec_back_impl(p, w, l, dG, out):
    if not _no_bf16(w, out.dtype):
        return lambda p, w, l, dG, out: product16(dG, w, w.WbTp[l], out)

    def impl(p, w, l, dG, out):
        if packed(w):
            gemm.matmul(dG, w.WhTp[l], out)
        else:
            np.dot(dG, p.Wh[l].T, out)

    return impl


def grad_acc(X, G, dW, w):
    """dW (H, K) += X (N, H)^T @ G (N, K): in bf16 (on AMX tiles where w has their
    configuration), or through gemm's packed kernel (w.Gp its buffer) where the window's
    buffers have one, else BLAS."""


@overload(grad_acc)
def _grad_acc_impl(X, G, dW, w):
    if not _no_bf16(w, dW.dtype):
        return lambda X, G, dW, w: grad16(X, G, dW, w)

    def impl(X, G, dW, w):
        if w.Gp.size > 0:
            gemm.matmul_tn_acc(X, G, dW, w.Gp)
        else:
            dW += np.dot(X.T, G)

    return impl


def step_back(cell, p, w, dp, l, t, dG, dg):
    """Step t of layer l backward: the gate gradients into dg (B, K) from w.dh (and w.dc),
    then w.dh becomes the gradient w.r.t. the state before the step. For one cell, as
    cell_update."""


@kernel
def _lstm_back(cell, p, w, dp, l, t, dG, dg):
    lstm_step_back(dG[t], w.Cs[l, t], w.Aux[l, t], w.dh, w.dc, dg)
    rec_back(p, w, l, dg, w.dh)


@kernel
def _gru_back(cell, p, w, dp, l, t, dG, dg):
    gru_step_back(dG[t], w.Aux[l, t], w.Hs[l, t], w.dh, dg, w.dR[t], dp.bh[l])
    rec_back(p, w, l, w.dR[t], w.dhn)
    dh = w.dh
    dh += w.dhn


@kernel
def _rnn_back(cell, p, w, dp, l, t, dG, dg):
    G, dh = dG[t], w.dh
    one = like(G[0, 0], 1.0)
    for bb in range(G.shape[0]):
        for j in range(G.shape[1]):
            dg[bb, j] = dh[bb, j] * (one - G[bb, j] * G[bb, j])
    rec_back(p, w, l, dg, w.dh)


@kernel
def _lnlstm_back(cell, p, w, dp, l, t, dG, dg):
    q, dq = p.ln[l], dp.ln[l]
    S, Rn, dR = w.S[l, t], w.Rn[l, t], w.dR[t]
    lnlstm_step_back(dG[t], w.Cs[l, t], w.Aux[l, t], w.Cn[l, t], S, q, dq, w.dh, w.dc, dg, w.dhn)
    K = dg.shape[1]
    gain_back(dg, Rn, q[2 * K : 3 * K], dq[2 * K : 3 * K], dR)  # the recurrent side: gh * LN(h @ Wh)
    ln_back_rows(dR, Rn, S, 1, dR)
    rec_back(p, w, l, dR, w.dh)


@overload(step_back)
def _step_back_impl(cell, p, w, dp, l, t, dG, dg):
    known = which(cell)
    if known is not None:
        return {LSTM: _lstm_back, GRU: _gru_back, RNN: _rnn_back, LNLSTM: _lnlstm_back}[known].py_func

    def any_cell(cell, p, w, dp, l, t, dG, dg):
        if cell == LSTM_ID:
            _lstm_back(cell, p, w, dp, l, t, dG, dg)
        elif cell == GRU_ID:
            _gru_back(cell, p, w, dp, l, t, dG, dg)
        else:
            _rnn_back(cell, p, w, dp, l, t, dG, dg)

    return any_cell


def recurrent_grads(cell, w, dG):
    """Where the gradients of the recurrent products' outputs are: a GRU's and an lnlstm's own
    (w.dR: the r gate, or the normalisation, stands between), the gates' for the others."""


@overload(recurrent_grads)
def _recurrent_grads_impl(cell, w, dG):
    known = which(cell)
    if known is None:
        return lambda cell, w, dG: w.dR if cell == GRU_ID else dG
    if known in (GRU, LNLSTM):
        return lambda cell, w, dG: w.dR
    return lambda cell, w, dG: dG


@kernel
def ln_input_back(p, dp, l, dG, Xn, S):
    """ln_input backward: dG (N, K), the gradient of gx * Xn + bx, becomes that of its input
    (the input product and b); gx's and bx's gradients accumulate into dp.ln[l]."""
    K = dG.shape[1]
    add_rows(dG, dp.ln[l, K : 2 * K])
    gain_back(dG, Xn, p.ln[l, :K], dp.ln[l, :K], dG)
    ln_back_rows(dG, Xn, S, 0, dG)


def input_norm_back(cell, p, dp, l, dG, Xn, S):
    """ln_input_back for an lnlstm, nothing for the other cells (as input_norm)."""


@overload(input_norm_back)
def _input_norm_back_impl(cell, p, dp, l, dG, Xn, S):
    known = which(cell)
    if known == LNLSTM:
        return lambda cell, p, dp, l, dG, Xn, S: ln_input_back(p, dp, l, dG, Xn, S)
    return lambda cell, p, dp, l, dG, Xn, S: None


@kernel
def backward(cell, p, x, w, dp, dh0, dc0):
    """Accumulate gradients into dp (a Params) from dlogits in w.P, after forward and xent(grad).
    Writes the gradient w.r.t. the initial state into dh0, dc0 (L, B, H). w's packed weights
    must hold the transposes already (pack_backward, or pack_weights with backward): packing
    them here on request compiled a copy of the packing into every backward pass."""
    L, T, B, K = w.G.shape
    top = rows(layer_input(w, L - 1))
    dWy, dby = dp.Wy, dp.by
    dWy += np.dot(top.T, w.P)
    add_rows(w.P, dby)
    np.dot(w.P, p.Wy.T, rows(w.dH[L - 1]))
    for l in range(L - 1, -1, -1):
        dH = w.dH[l]
        if w.M.shape[1] > 0:
            dH *= w.M[l]
        dG = w.G[l]  # each step's gate gradients replace its activations, once read
        dg = w.R  # the step's gate gradients, while the step needs them
        dR = recurrent_grads(cell, w, dG)
        dh = w.dh
        dh[:] = 0
        w.dc[:] = 0
        for t in range(T - 1, -1, -1):
            dh += dH[t]
            if w.gn.shape[1] > 0:
                w.gn[l, t] = norm2(dh)
            step_back(cell, p, w, dp, l, t, dG, dg)
            put(dG[t], dg)
        put(dh0[l], w.dh)
        put(dc0[l], w.dc)
        dG2 = rows(dG)
        input_norm_back(cell, p, dp, l, dG2, rows(w.Xn[l]), rows(w.S[l]))
        grad_acc(rows(w.Hs[l][:T]), rows(dR), dp.Wh[l], w)
        add_rows(dG2, dp.b[l])
        if l > 0:
            below = rows(layer_input(w, l - 1))
            grad_acc(below, dG2, dp.Wx[l - 1], w)
            input_backward(p, w, l, dG2, rows(w.dH[l - 1]))
        else:
            for t in range(T):
                for bb in range(B):
                    row, g = dp.Wx0[x[t, bb]], dG[t, bb]
                    for k in range(K):
                        row[k] += g[k]


def window_grad(cell, p, x, y, h0, c0, w, dp, dh0, dc0, n_total, prepacked=False):
    """Forward, loss and backward over one window (or a part of its streams): accumulates
    gradients into dp, returns the summed loss. Three compiled calls, not one: each pass then
    compiles on its own (a kernel that calls others holds a copy of all their code, optimised
    and generated again), and the two can compile at once in two processes (warm.py); the
    two calls more a window cost microseconds."""
    forward(cell, p, x, h0, c0, w, prepacked)
    loss = xent(w.P, y.reshape(-1), True, n_total)
    if not prepacked:
        pack_backward(p, w, 0, 1)  # as pack_weights calls it: one signature, compiled once
    backward(cell, p, x, w, dp, dh0, dc0)
    return loss


def window_loss(cell, p, x, y, h0, c0, w, prepacked=False):
    """Summed loss over a window, without gradients (forward and xent, as window_grad)."""
    forward(cell, p, x, h0, c0, w, prepacked)
    return xent(w.P, y.reshape(-1), False, 0)
