"""What scoring a text gives back (Model.score_ids): the loss, the characters and streams read,
and the share of the loss on a --max-vocab model's unknown symbol."""

from typing import NamedTuple

import numpy as np


class Score(NamedTuple):
    # fmt: off
    nats: float        # mean loss, nats per character
    chars: int         # characters scored (predictions made)
    streams: int       # streams the text was read as, each from a zero state
    # fmt: on
    unknown: int = 0  # of them, targets that are the unknown symbol (a --max-vocab model's
    # stand-in for every character it lacks)
    nats_known: float = float("nan")  # mean loss over the other targets (nan: none)
    dropped: int = 0  # characters left out of the text before scoring (unknown="drop")

    @property
    def unknown_share(self):
        return self.unknown / self.chars if self.chars else 0.0

    @property
    def nats_unknown(self):
        """Mean loss over the targets that are the unknown symbol (nan: none)."""
        if not self.unknown:
            return float("nan")
        known = self.chars - self.unknown
        return (self.nats * self.chars - (self.nats_known * known if known else 0.0)) / self.unknown


class Unknowns:
    """The summed loss and count of the targets that are the unknown symbol (unk_id), from the
    logits a window's forward pass leaves (kernels.window_loss keeps them in Work.P)."""

    def __init__(self, unk_id):
        self.id, self.loss, self.count = unk_id, 0.0, 0

    def of(self, P, y):
        """(summed loss, count) of the rows of logits P (N, V) whose target y (N,) is unk."""
        rows = np.flatnonzero(y.reshape(-1) == self.id)
        if rows.size == 0:
            return 0.0, 0
        z = P[rows].astype(np.float64)
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        return float((lse - z[:, self.id]).sum()), int(rows.size)

    def add(self, loss, count):
        self.loss += loss
        self.count += count
