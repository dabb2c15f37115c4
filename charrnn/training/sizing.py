"""Sizing a model from the characters its time budget will buy (issue 22): with --minutes and
no --hidden, the hidden size and the regularisers follow from this machine's measured training
rate and the corpus size, not from the minutes alone.

The rules are calibrated on the batch-16 runs of docs/choosing-defaults.md on Tiny Shakespeare
and the standard-library corpus, and give back config.budget_preset's models on Tiny
Shakespeare at the rates those runs had (the runs behind each constant: the "Figures behind
the code" table of docs/benchmarks.md):

- size: the largest of SIZES whose budget buys enough training characters per parameter. How
  many is enough depends on how often the budget reads the text. Read MANY_PASSES times or
  more, a small model over-fits and a larger regularised one wins on fewer characters
  (CHARS_PER_PARAM[1]); read fewer times, every character is new and more of them win
  (CHARS_PER_PARAM[0], between the figure of the size that lost and the one that won);
- dropout, weight drop and weight decay: from the exposure, passes over the training text
  times parameters per training character (how far the model can memorise it), by
  REGULARISERS_BY_EXPOSURE, whose steps lie between the exposures of the runs that chose
  each level.

The rate of each size is one measured rate (a few training steps of the second size on random
ids; the fastest of up to MEASURE_TRIES while the cores seem busy, see best_of) scaled by the
sizes' multiply-adds per character: small models reach less of the machine's peak, so the
scaled rates of larger sizes are, if anything, low. A size that takes weight drop is said at
a rate that also pays its masks each step (timed as steps with them less steps without,
scaled by the recurrent weights).
"""

import math
import time
from typing import Callable, NamedTuple

import numpy as np

from ..config import ModelConfig, default_lr
from ..engine.model import Model, num_params, param_shapes
from ..engine.optim import Adam
from .regularise import weight_masks, window_masks

# fmt: off
SIZES = (256, 384, 512, 640)  # the hidden sizes chosen among, 2 layers each
CHARS_PER_PARAM = (1.6, 0.8)  # the least training characters per parameter a size must get,
MANY_PASSES = 4.0           # ... reading the text fewer times than this, and as many or more
REGULARISERS_BY_EXPOSURE = (  # (below this exposure, dropout, weight drop, weight decay)
    (6.0, 0.0, 0.0, 0.0), (12.0, 0.1, 0.0, 0.0), (20.0, 0.2, 0.0, 0.0), (math.inf, 0.3, 0.1, 0.1),
)
TRAIN_SHARE = 0.93          # of the minutes, what training gets (evaluations and saves the rest)
MEASURE_SECONDS = 1.5       # how long the rate is measured for, after one warm-up step
MEASURE_DROPOUT = 0.2       # the rate's window draws dropout masks (most budgets' runs do)
MEASURE_WEIGHT_DROP = 0.1   # ... and the weight-drop masks are timed apart (the largest budgets')
MEASURE_TRIES = 3           # at most this many measurements, while the cores seem busy:
HAD_THE_CORES = 0.8         # the share of the wall time its threads ran for, at least, that
                            # says a measurement had them (between what a quiet machine and
                            # one beside a busy process give: docs/benchmarks.md)
# fmt: on


class Choice(NamedTuple):
    # fmt: off
    hidden: int
    dropout: float
    weight_drop: float
    weight_decay: float
    lr: float               # the size's default rate (config.default_lr)
    chars_per_sec: float    # the (scaled) rate of the chosen size
    chars: float            # training characters the budget buys at that rate
    passes: float           # ... as passes over the training text
    per_param: float        # ... per parameter
    exposure: float         # passes times parameters per training character
    # fmt: on

    def reason(self, layers, measured_at):
        return (
            f"sized from the budget: {layers} x {self.hidden}, dropout "
            f"{self.dropout:g}, weight drop {self.weight_drop:g}"
            + (f", weight decay {self.weight_decay:g}" if self.weight_decay else "")
            + f", lr {self.lr:g}: at about "
            f"{self.chars_per_sec / 1e3:.1f}k chars/s (scaled from "
            f"a measured {measured_at}) the minutes buy {self.chars / 1e6:.1f}M characters, "
            f"{self.passes:.1f} passes over the training text, {self.per_param:.1f} per "
            "parameter (--hidden or --no-auto-size to choose)"
        )


def choose(
    minutes,
    train_chars,
    rate_of: Callable[[int], float],
    cell="lstm",
    layers=2,
    vocab_size=65,
    sizes=SIZES,
    weight_dropped: Callable[[int], float] | None = None,
):
    """The Choice for a budget of `minutes` over a training text of `train_chars` characters,
    rate_of(hidden) giving the training characters per second of each size, weight_dropped(hidden)
    the same with weight-drop masks drawn every step. The size and the regularisers follow from
    rate_of, as calibrated; when they take weight drop, the rate, characters, passes and exposure
    said are weight_dropped's (a 15-minute 2 x 640 was told 10.4M characters and trained 9.4M:
    its masks, 6 ms a step, were not in the rate)."""
    seconds = 60.0 * minutes * TRAIN_SHARE
    text = max(1, train_chars)

    def bought(rate, P):  # (characters, passes, exposure) the budget buys at this rate
        chars = rate * seconds
        return chars, chars / text, chars / text * P / text

    for H in sorted(sizes, reverse=True):
        P = num_params(ModelConfig(cell, layers, H, vocab_size))
        chars, passes, exposure = bought(rate_of(H), P)
        if chars >= CHARS_PER_PARAM[passes >= MANY_PASSES] * P or H == min(sizes):
            break
    regularisers = next(r[1:] for r in REGULARISERS_BY_EXPOSURE if exposure < r[0])
    rate = weight_dropped(H) if regularisers[1] and weight_dropped else rate_of(H)
    chars, passes, exposure = bought(rate, P)
    return Choice(H, *regularisers, default_lr(H), rate, chars, passes, chars / P, exposure)


def work_per_char(cell, layers, hidden, vocab_size):
    """Multiply-adds per character of a training step, relative units: every weight but the
    first layer's input rows (a row lookup) is read by one product forward and two backward."""
    shapes = param_shapes(ModelConfig(cell, layers, hidden, vocab_size))
    return sum(int(np.prod(s)) for s in shapes) - int(np.prod(shapes.Wx0))


class Rate(NamedTuple):
    chars_per_sec: float
    busy: bool  # every measurement ran beside other work (its threads got less than the cores)
    weight_drop_seconds: float = 0.0  # what a step's weight-drop masks add (drawn and applied)


def best_of(once, tries=MEASURE_TRIES, enough=HAD_THE_CORES):
    """The fastest of up to `tries` calls of once() -> (rate, share of the cores it ran on),
    stopping at the first that had the cores (share >= enough). A load that lasts the few
    seconds of measuring only would otherwise size the whole run (a 15-minute run measured 5.6k
    chars/s beside an evaluation ending on the other core, where 6.1k was right, and chose a
    smaller model); a load that lasts is measured as it is, since the run will train beside it."""
    best = 0.0
    for _ in range(tries):
        rate, share = once()
        best = max(best, rate)
        if share >= enough:
            return Rate(best, False)
    return Rate(best, True)


def measure(
    cell,
    layers,
    hidden,
    vocab_size,
    batch,
    seq,
    dtype=np.float32,
    seconds=MEASURE_SECONDS,
    tries=MEASURE_TRIES,
    rng=None,
    precision="fp32",
):
    """Training characters per second of a fresh model of this shape on random ids, as a Rate:
    the whole step the trainer takes (a window's dropout masks drawn, its forward and backward
    passes with products at `precision`, Adam's step, at a rate of 0 so that the weights stay
    as they are), a warm-up step with weight drop and one without, then steps for about
    `seconds`, again while the cores were busy (best_of): steps without weight drop and with it
    (MEASURE_WEIGHT_DROP) in turn, the rate the first kind's, the Rate's weight_drop_seconds
    the difference of their medians. The window's passes alone ran 1.25x the rate a 2 x 384
    trained at with bf16 products (39.9k chars/s against 31.7k), which made the run's
    characters, passes and exposure, and so its regularisers, those of a quarter more
    characters than it got."""
    rng = rng if rng is not None else np.random.default_rng(0)
    m = Model(ModelConfig(cell, layers, hidden, vocab_size), dtype=dtype).init_weights(rng)
    gflat, grads = m.zeros_like_params()
    opt = Adam(m.flat)
    x = rng.integers(0, vocab_size, (seq, batch)).astype(np.int32)
    h, c = m.zero_state(batch)

    def step(weight_drop=0.0):
        masks = window_masks(rng, "standard", MEASURE_DROPOUT, layers, seq, batch, hidden, m.dtype)
        wm = weight_masks(rng, m.params, weight_drop, 0.0, m.dtype, m.weight_mask())
        m.loss_and_grad(x, x, h, c, grads, masks, precision=precision, weight_mask=wm.get("Wh"))
        opt.step(m.flat, gflat, 0.0)

    step(MEASURE_WEIGHT_DROP)
    step()
    threads = len(m.parts(batch))

    dropped = {}  # rate: what weight drop added to that measurement's steps

    def once():
        # steps without weight drop and with it in turn: the rate is the first kind's, and what
        # weight drop adds (its masks drawn, Wh packed times them, its gradient masked) the
        # difference of their medians (the fastest of three of each, timed apart, varied from
        # 1.3 to 3.1 ms at 2 x 384 where the difference is about 1 ms)
        times, t0, cpu0 = ([], []), time.perf_counter(), time.process_time()
        while len(times[0]) < 2 or time.perf_counter() - t0 < seconds:
            for kind, weight_drop in enumerate((0.0, MEASURE_WEIGHT_DROP)):
                t = time.perf_counter()
                step(weight_drop)
                times[kind].append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        rate = len(times[0]) * x.size / sum(times[0])
        dropped[rate] = max(0.0, float(np.median(times[1]) - np.median(times[0])))
        return rate, cpu / (wall * threads)

    rate = best_of(once, tries)
    return rate._replace(weight_drop_seconds=dropped[rate.chars_per_sec])


def scaled_rates(measured_rate, measured_at, cell, layers, vocab_size):
    """rate_of(H): the rate measured at hidden size measured_at, scaled by work_per_char."""
    base = work_per_char(cell, layers, measured_at, vocab_size)
    return lambda H: measured_rate * base / work_per_char(cell, layers, H, vocab_size)


def weight_dropped_rates(rate_of, mask_seconds, measured_at, window_chars, cell, layers, vocab_size):
    """rate_of(H) with a step's weight-drop masks added: mask_seconds as measured at hidden size
    measured_at, scaled by the recurrent weights the masks cover."""

    def weights(H):
        return int(np.prod(param_shapes(ModelConfig(cell, layers, H, vocab_size)).Wh))

    def rate(H):
        extra = mask_seconds * weights(H) / weights(measured_at)
        return window_chars / (window_chars / rate_of(H) + extra)

    return rate
