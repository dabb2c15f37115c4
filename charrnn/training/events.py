"""What a run tells its callback and writes to metrics.jsonl, typed: one dataclass per kind of
row. Each reads as a mapping too (event["step"], event.get("best"), `"val_loss" in event`), as
the dicts it replaces were read, so callbacks and the JSON lines stay as they were."""

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Optional


class _Row(Mapping):
    """The mapping view: "kind" first, then the fields in order; an optional field that is
    None (OPTIONAL) is left out, as the dicts left it out."""

    OPTIONAL = ()

    def _keys(self):
        names = [f.name for f in fields(self) if f.name != "kind"]
        return ["kind"] + [n for n in names if not (n in self.OPTIONAL and getattr(self, n) is None)]

    def __getitem__(self, key):
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._keys())

    def __len__(self):
        return len(self._keys())


@dataclass(frozen=True)
class TrainEvent(_Row):
    """The training loss (the mean over the last steps) and the speed since the last row."""

    # fmt: off
    step: int                   # optimizer steps taken
    epoch: float                # passes over the training text, fractional
    elapsed: float              # training seconds (evaluations and saves included)
    chars: int                  # training characters seen
    train_loss: float           # mean over the last 50 steps (trainer.TRAIN_MEAN_STEPS)
    lr: float                   # the learning rate at this step
    chars_per_sec: float        # over those steps
    eta: Optional[float]        # seconds left under the budget that ends first (None: no budget)
    kind: str = "train"
    # fmt: on


@dataclass(frozen=True)
class EvalEvent(TrainEvent):
    """An evaluation on the fixed validation sample, with the training row of its step."""

    # fmt: off
    val_loss: float = math.nan  # on the validation sample (nan without validation text)
    unigram: float = math.nan   # the unigram baseline on the same characters (Record.unigram)
    eval_seconds: float = 0.0
    weights: str = "trained"    # which weights were scored: "trained" or "averaged" (--ema)
    best: bool = False          # a new best: best.npz now holds these weights
    grad_norms: Optional[list] = None  # |dL/dh_t| across the window, with --log-grad-norms
    notice: Optional[str] = None  # what changed before it (the sample fitted to --minutes)
    kind: str = "eval"
    # fmt: on

    OPTIONAL = ("grad_norms", "notice")


@dataclass(frozen=True)
class FullEvent(_Row):
    """The final, larger evaluation of best.npz (reported, never compared with the sample's)."""

    # fmt: off
    step: int                   # the best model's step
    elapsed: Optional[float]    # training seconds when it was saved (None: not in the history)
    chars: Optional[int]        # training characters it had seen
    val_loss_full: float
    val_chars_full: int         # validation characters scored
    val_chars: int              # the sample's characters, for comparison
    best_val: float             # the best model's score on the sample
    all: bool                   # the whole validation text was scored
    eval_seconds: float
    weights: str = "trained"
    kind: str = "full"
    # fmt: on
