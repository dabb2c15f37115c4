"""What a training run's evaluations read, and what the end of a run costs.

Every evaluation that competes for best.npz scores the same characters: a fixed sample spread
over the whole validation text (`Sample`). The final, larger evaluation of the best model reads
ten times as many, from the same starts when it can. `Budget` times training steps, evaluations
and checkpoint writes as the run goes, so that a --minutes run stops training early enough for
its last evaluation, the larger one and the last writes to fit in the budget.
"""

from dataclasses import dataclass

import numpy as np

# fmt: off
FULL_TIMES = 10         # the final evaluation reads this many times eval_chars (0: all)
FULL_SHARE = 0.1        # ... in at most this share of a --minutes budget
MARGIN = 1.25           # estimated costs are multiplied by this, plus SLACK seconds
SLACK = 0.2
# fmt: on


def segments(n, chars, streams, seq):
    """Where to read a validation text of n ids: (starts, length), one segment of `length`
    predictions from each start, each read as a stream from a zero state.

    The n - 1 predictions are cut into S equal blocks (S = streams, fewer when a segment would
    be shorter than one window of seq) and each segment is the beginning of a block: a
    sample spread evenly over the whole text. It depends on these numbers only, so every
    evaluation of a run, and of the run resumed, reads the same characters. chars 0, or at
    least n - 1: all of it, each block whole."""
    total = n - 1
    if total < 1:
        return np.zeros(0, np.int64), 0
    want = total if not chars or chars >= total else chars
    S = max(1, min(streams, want // seq))
    return np.arange(S, dtype=np.int64) * (total // S), want // S


class Sample:
    """A run's validation reading: `starts` and `length` for every periodic evaluation,
    `full_starts` and `full_len` for the final, larger one."""

    def __init__(self, n, eval_chars, streams, seq):
        self.seq = seq
        self.starts, self.length = segments(n, eval_chars, streams, seq)
        self.full_starts, self.full_len = segments(n, FULL_TIMES * eval_chars, streams, seq)
        self.full_is_all = not eval_chars or FULL_TIMES * eval_chars >= n - 1

    @property
    def chars(self):
        return len(self.starts) * self.length

    def spec(self):
        """What fixes the positions, stored in checkpoints: [streams, every, length]."""
        every = int(self.starts[1]) if len(self.starts) > 1 else 0
        return [len(self.starts), every, self.length]

    def score(self, model, ids):
        return model.score_segments(ids, self.starts, self.length, self.seq, model.vocab.unk_id)

    def score_full(self, model, ids, length):
        return model.score_segments(ids, self.full_starts, length, self.seq, model.vocab.unk_id)


@dataclass
class Timing:
    """What the pieces of a run take, measured as it goes (and kept in checkpoints)."""

    # fmt: off
    step: float = 0.0           # seconds per training step (moving average)
    eval_per_char: float = 0.0  # seconds per validation character scored (last evaluation)
    save: float = 0.0           # seconds per checkpoint written (last evaluation)
    # fmt: on

    def note_step(self, secs):
        self.step = secs if not self.step else 0.8 * self.step + 0.2 * secs


class Budget:
    """The end of a --minutes run: what it will cost, and how much of the larger evaluation
    fits. window_chars: characters per training step; saves: checkpoint writes at the end;
    save_guess: seconds per write before one was timed."""

    def __init__(self, sample, minutes, window_chars, saves, save_guess):
        self.sample, self.minutes, self.window_chars = sample, minutes, window_chars
        self.saves, self.save_guess = saves, save_guess
        self.timing = Timing()
        self.setup = 0.0  # seconds before the first step that count against the minutes:
        # compiling the kernels (a first run) and sizing the model (run.prepare)

    def per_char(self):
        """Seconds per validation character: as measured at the last evaluation, or before the
        first guessed from the training steps (a forward pass is about a third of a step; 0.35
        measured for a 2 x 128 LSTM on Tiny Shakespeare)."""
        tm = self.timing
        return tm.eval_per_char or 0.4 * tm.step / self.window_chars

    def save_seconds(self):
        return self.timing.save or self.save_guess

    def full_length(self, seconds=None):
        """Segment length of the final, larger evaluation: full_len, or shorter to fit in
        `seconds` under --minutes (by default FULL_SHARE of the budget: the rest is for
        training). 0 when it would read no more than the sample."""
        s, per_char = self.sample, self.per_char()
        length = s.full_len
        if self.minutes and per_char > 0:
            if seconds is None:
                seconds = FULL_SHARE * 60 * self.minutes
            fit = int(max(0.0, seconds - SLACK) / (MARGIN * per_char))
            length = min(length, fit // max(1, len(s.full_starts)))
        return length if length > s.length else 0

    def final_cost(self):
        """Seconds the end of a run takes after its last step: the last evaluation on the
        sample, the larger one of the best model, reading best.npz back and the writes."""
        s = self.sample
        chars = s.chars + len(s.full_starts) * self.full_length()
        return MARGIN * (self.per_char() * chars + self.save_seconds() * self.saves) + SLACK

    def train_seconds(self, minutes=None):
        """Training time under --minutes (or another budget of minutes): the budget less the
        set-up's and the end's cost."""
        return 60 * (minutes or self.minutes) - self.setup - self.final_cost()
