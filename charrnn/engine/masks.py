"""Dropout masks drawn from a run's generator, exactly as rng.random would draw them, fast."""

import numpy as np

from . import kernels, threads

SPLIT_WORDS = 1 << 16  # above this many 64-bit draws a mask is drawn by every thread, a part each


def dropout_masks(rng, shape, p, dtype, out=None):
    """Inverted-dropout masks (each element 1 / (1 - p) with probability 1 - p, else 0) from
    rng.random(shape, float32) >= p, drawn as that call would draw them, so a run's random
    stream is the same either way; into out (C-contiguous, of that shape) when given.

    With NumPy's default generator (PCG64, which makes a 32-bit draw as one half of a 64-bit
    output, low half first) the float32 uniforms are made here from its raw output, in about
    half the time of rng.random's float32 path; a large mask (weight drop's, 3.3M elements at
    2 x 640) by every thread at once, each from a copy of the generator advanced to its part
    (PCG64's advance: a jump, not a walk), the generator then advanced past them all."""
    n = int(np.prod(shape))
    scale = np.dtype(dtype).type(1 / (1 - p))
    out = np.empty(shape, dtype) if out is None else out
    state = rng.bit_generator.state
    if n % 2 or state["bit_generator"] not in ("PCG64", "PCG64DXSM") or state["has_uint32"]:
        keep = rng.random(shape, dtype=np.float32) >= p  # the general case
        np.multiply(keep, scale, out=out, dtype=dtype, casting="unsafe")
        return out
    words, flat = n // 2, out.reshape(-1)
    parts = threads.num_threads() if words > SPLIT_WORDS else 1
    bounds = [words * i // parts for i in range(parts + 1)]
    last = [None]

    def draw(i):
        gen = rng.bit_generator
        if i > 0:
            gen = type(gen)()
            gen.state = state
            gen.advance(bounds[i])
        bits = gen.random_raw(bounds[i + 1] - bounds[i])
        kernels.masks_from_bits(bits, p, scale, flat[2 * bounds[i] : 2 * bounds[i + 1]])
        if i == parts - 1:
            last[0] = bits[-1]

    threads.side_by_side(draw, parts)
    if parts > 1:
        rng.bit_generator.advance(words - bounds[1])
    state = rng.bit_generator.state  # as rng.random leaves it: the last high half kept, used
    state["uinteger"] = int(last[0] >> np.uint64(32))
    rng.bit_generator.state = state
    return out
