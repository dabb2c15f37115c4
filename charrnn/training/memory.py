"""How much memory a training will take, and whether this machine has it.

The estimate follows the shapes the code allocates, from the same functions: the weights
(model.num_params), their gradient buffer, Adam's two moments, one gradient copy for each thread
part but the first, every part's window buffers (buffers.work_shapes) for training windows and for
the evaluation's windows, and the carried state. To that held memory it adds the largest passing
peak: either the float64 draw that initialises the weights (the optimiser state read from the
checkpoint, on resume), or one step's dropout masks, window copies and the weight-gradient
product that the backward pass allocates in each part. The corpus's ids are not counted: by the
time of the check they are a memory-mapped file or already in memory.

`available()` reads MemAvailable from /proc/meminfo, lowered to the room left under a cgroup v2
memory limit when one is set; None where neither is known (the check is then skipped).
"""

from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from ..engine import kernels
from ..errors import ConfigError
from .evaluation import FULL_TIMES, segments
from ..engine.buffers import (
    bf16_sizes,
    grad_block_size,
    packed16_shape,
    packed_shape,
    part_slices,
    work_shapes,
)
from ..engine.model import num_params

WARN_FRACTION = 0.5  # warn when the estimate takes more than this share of the available memory


class Estimate(NamedTuple):
    # fmt: off
    held: dict   # {what: bytes} of the arrays the trainer and its model hold while training
    peak: int    # bytes at the highest point: held memory plus the largest passing allocation
    # fmt: on


def training(
    mcfg,
    batch,
    seq,
    val_len=0,
    eval_chars=0,
    dtype=np.float32,
    *,
    resume=False,
    base_model=False,
    weight_drop=0.0,
    embed_drop=0.0,
    ema=0.0,
    precision="fp32",
):
    """Estimate of a training's memory, following Trainer and Model as they allocate.

    val_len: characters of validation text (0: no evaluation buffers); eval_chars: the
    trainer's cap per evaluation (ten times as many at the last one; 0 reads all). resume: the
    weights come from a checkpoint; base_model: an --init-from model is held while the new one
    is built. weight_drop, embed_drop, ema: the regularisers' settings (regularise.py): the
    recurrent weights' mask, held (Model.weight_mask) with, in bf16, the weights times it, and
    each step the random bits it is made from and (in fp32) a copy of the recurrent weights;
    each step a mask of the first layer's input rows and a copy of them; the averaged
    weights, held, and at each save three more copies of the weights. Variational dropout's
    smaller masks are counted as the standard ones.
    precision: of the training's products (bf16: their own packed weights and buffers)."""
    it = np.dtype(dtype).itemsize
    L, H, V = mcfg.layers, mcfg.hidden, mcfg.vocab_size
    G = kernels.GATES[kernels.CELLS[mcfg.cell]] * H
    B, T, N = batch, seq, num_params(mcfg)
    parts = part_slices(B)
    held = {
        "weights": N * it,
        "gradients": N * it,
        "Adam moments": 2 * N * it,
        "carried state": 2 * L * B * H * it + 8 * L * T,  # h, c; the step's gradient norms
        "thread gradients": (len(parts) - 1) * N * it,
    }
    bf16 = precision == "bf16"
    keys = {(T, s.stop - s.start, mcfg.dropout > 0, i, bf16) for i, s in enumerate(parts)}
    keys |= {k + (False,) for k in _eval_keys(val_len, eval_chars, B, T)}
    held["window buffers"] = sum(_work_bytes(mcfg, *k[:3], dtype, k[4]) for k in keys)
    held["packed weights"] = 2 * int(np.prod(packed_shape(mcfg, dtype))) * it  # W, W^T
    if precision == "bf16":  # the training windows' bf16 copies beside (evaluations keep fp32's)
        held["bf16 packed weights"] = 2 * int(np.prod(packed16_shape(mcfg))) * 2
        held["bf16 window buffers"] = sum(
            2 * sum(bf16_sizes(mcfg, T, s.stop - s.start).values()) for s in parts
        )
    static = sum(held[k] for k in ("weights", "gradients", "Adam moments", "carried state"))
    if resume:
        start = 2 * N * it  # the checkpoint's Adam moments, read before they are copied
    else:
        start = 8 * N + (N * it if base_model else 0)  # rng.uniform draws float64 for all weights
    masks = (1 + 2 * it) * L * T * B * H if mcfg.dropout > 0 else 0  # bool keep, cast, scaled
    if weight_drop > 0:  # the mask; with bf16 products the weights times it beside (Work.Wm)
        held["weight drop"] = L * H * G * it * (2 if precision == "bf16" else 1)
        masks += L * H * G * (4 + (it if precision != "bf16" else 0))  # its bits; the raw copy
    masks += (V * G + 2 * V) * it if embed_drop > 0 else 0
    if ema > 0:
        held["averaged weights"] = N * it
    windows = 6 * L * B * H * it + 4 * T * B * 4  # state copies, joined states; int32 windows
    packed = packed_shape(mcfg, dtype)[1] > 0  # dWh, dWx packed (Work.Gp), else through np.dot
    backward = len(parts) * (H * V if packed else max(H * G, H * V)) * it  # np.dot's results
    step = masks + windows + backward
    save = 3 * N * it if ema > 0 else 0  # the trained weights aside, a copy to write, and
    # np.savez's copy of it as bytes
    return Estimate(held, max(static + start, sum(held.values()) + max(step, save)))


def _eval_keys(val_len, eval_chars, B, T):
    """The window shapes the evaluations ask buffers for (evaluation.ValSample: the periodic one
    and the larger final one, each read as up to B segments side by side, T characters at a
    time; the last window may be shorter)."""
    keys = set()
    for chars in {eval_chars, FULL_TIMES * eval_chars}:
        starts, length = segments(val_len, chars, B, T)
        lengths = {min(T, length - at) for at in range(0, length, T)}
        keys |= {
            (t, s.stop - s.start, False, i) for t in lengths for i, s in enumerate(part_slices(len(starts)))
        }
    return keys


def _work_bytes(mcfg, T, B, dropout, dtype, bf16=False):
    """A window's buffers; a bf16 window's float32 ones (its packed dG block, Work.Gp, is
    bf16's: bf16_sizes)."""
    itemsize = np.dtype(dtype).itemsize
    return (
        sum(
            int(np.prod(shape)) * (8 if k == "gn" else itemsize)
            for k, shape in work_shapes(mcfg, T, B, dropout).items()
        )
        + (0 if bf16 else grad_block_size(mcfg, T, B, dtype)) * itemsize
    )


def check(estimate, what, hint):
    """Raise ConfigError when the estimate's peak exceeds the available memory; return a
    one-line warning when it takes more than half of it; else None."""
    avail = available()
    if avail is None:
        return None
    need = estimate.peak
    if need > avail:
        raise ConfigError(
            f"{what} needs about {fmt_bytes(need)} of memory, but this machine has "
            f"{fmt_bytes(avail)} available; {hint}"
        )
    if need > WARN_FRACTION * avail:
        return (
            f"warning: {what} needs about {fmt_bytes(need)} of memory, "
            f"{100 * need / avail:.0f}% of the {fmt_bytes(avail)} available"
        )
    return None


def available() -> Optional[int]:
    """Bytes this process can still allocate without swapping, or None where unknown."""
    found = [v for v in (_meminfo("MemAvailable"), _cgroup_room()) if v is not None]
    return min(found) if found else None


def _meminfo(field):
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == field:
                    value, *unit = rest.split()
                    return int(value) * (1024 if unit == ["kB"] else 1)
    except (OSError, ValueError):
        return None
    return None


def _cgroup_room():
    """Room left under the tightest cgroup v2 memory.max of this process and its ancestors."""
    try:
        with open("/proc/self/cgroup") as f:
            rel = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
    except OSError:
        return None
    if rel is None:
        return None
    root = Path("/sys/fs/cgroup")
    d, room = root / rel.lstrip("/"), None
    while True:
        try:
            limit = (d / "memory.max").read_text().strip()
            if limit != "max":
                left = int(limit) - int((d / "memory.current").read_text().strip())
                room = left if room is None else min(room, left)
        except (OSError, ValueError):
            pass
        if d == root or d.parent == d:
            return None if room is None else max(0, room)
        d = d.parent


def fmt_bytes(n):
    """1.2 GB, 340.0 MB, 12 B: decimal units, as disk and memory tools print them."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


__all__ = ["training", "check", "available", "fmt_bytes", "Estimate"]
