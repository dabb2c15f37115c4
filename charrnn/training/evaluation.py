"""What a training run's evaluations read, what they cost, and what they are compared with.

Every evaluation that competes for best.npz scores the same characters: a fixed sample spread
over the whole validation text (`ValSample`). The final, larger evaluation of the best model reads
ten times as many, from the same starts when it can. Under --minutes the sample is made smaller
when evaluating it would not fit its share of the budget (`fitted_eval_chars`: with a large
alphabet the output layer, V x H per character, makes every character dear). `Budget` times
training steps, evaluations and checkpoint writes as the run goes, so that a --minutes run
stops training early enough for its last evaluation, the larger one and the last writes to
fit in the budget. `unigram_loss` is the baseline every validation loss is reported beside: the
training text's character frequencies, scored on the same characters.
"""

from dataclasses import dataclass

import numpy as np

# fmt: off
FULL_TIMES = 10         # the final evaluation reads this many times eval_chars (0: all)
FULL_SHARE = 0.1        # ... in at most this share of a --minutes budget
EVAL_SHARE = 0.1        # the evaluations of the sample, the last included, in at most this share
MIN_EVAL_CHARS = 1000   # ... but never fewer characters than this (or the whole validation text)
EVAL_PER_STEP = 0.4     # an evaluated character costs this much of a trained one (a forward pass
                        # against forward and backward; 0.35 measured for a 2 x 128 LSTM on Tiny
                        # Shakespeare)
EVAL_PER_STEP_BF16 = 0.9  # the same against a step with bf16 products (its evaluations stay
                        # float32): 0.66, 0.85, 0.93 at 2 x 256, 384, 640 on the Intel Xeon
                        # with AMX (fp32 there: 0.34-0.35)
MARGIN = 1.25           # estimated costs are multiplied by this, plus SLACK seconds
SLACK = 0.2
# fmt: on


def fitted_eval_chars(chars, per_char, minutes, chars_between):
    """The validation characters an evaluation may read under a --minutes budget: at most
    `chars` (the sample as asked), fewer when the evaluations the budget will hold would take
    more than EVAL_SHARE of it at per_char seconds a character; never fewer than
    MIN_EVAL_CHARS. chars_between: training characters between evaluations (eval_every x batch
    x seq); how many evaluations there will be follows from the training it leaves time for,
    at per_char / EVAL_PER_STEP seconds a training character."""
    if not minutes or per_char <= 0:
        return chars
    seconds = 60.0 * minutes
    training = seconds * (1 - EVAL_SHARE - FULL_SHARE)
    evals = 1 + int(training / (chars_between * per_char / EVAL_PER_STEP))
    fit = int(max(0.0, EVAL_SHARE * seconds - SLACK) / (MARGIN * per_char * evals))
    return min(chars, max(MIN_EVAL_CHARS, fit))


def symbol_counts(ids, vocab_size, chunk=1 << 22):
    """How often each of vocab_size symbols occurs in ids (a memory map is read a chunk at a
    time, never converted whole)."""
    counts = np.zeros(vocab_size, np.int64)
    for at in range(0, len(ids), chunk):
        counts += np.bincount(np.asarray(ids[at : at + chunk]), minlength=vocab_size)
    return counts


def unigram_loss(counts, ids, starts, length):
    """The unigram baseline: cross-entropy in nats per character of the targets a ValSample scores
    (ids[s + 1 : s + length + 1] for each s in starts) under the character frequencies `counts`
    with add-one (Laplace) smoothing over all V symbols, p(c) = (n_c + 1) / (N + V), so that a
    character the counts never saw costs log(N + V), not infinity. nan without targets."""
    if not len(starts) or length < 1:
        return float("nan")
    logp = np.log(counts + 1.0) - np.log(float(counts.sum() + len(counts)))
    total = sum(float(logp[np.asarray(ids[s + 1 : s + length + 1])].sum()) for s in starts)
    return -total / (len(starts) * length)


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


class ValSample:
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

    def unigram(self, counts, ids):
        """The unigram baseline (unigram_loss) on this sample's characters."""
        return unigram_loss(counts, ids, self.starts, self.length)


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

    def __init__(self, sample, minutes, window_chars, saves, save_guess, eval_per_step=EVAL_PER_STEP):
        self.sample, self.minutes, self.window_chars = sample, minutes, window_chars
        self.eval_per_step = eval_per_step  # the guess of per_char before an evaluation is timed
        self.fit_between = 0  # while the sample waits to be fitted to the budget at the first
        # evaluation (Record.fit_evaluations(later=True)): training characters between evaluations
        self.saves, self.save_guess = saves, save_guess
        self.timing = Timing()
        self.setup = 0.0  # seconds before the first step that count against the minutes:
        # compiling the kernels (a first run) and sizing the model (run.prepare)

    def per_char(self):
        """Seconds per validation character: as measured at the last evaluation, or before the
        first guessed from the training steps (eval_per_step: EVAL_PER_STEP, or
        EVAL_PER_STEP_BF16 for a run with bf16 products)."""
        tm = self.timing
        return tm.eval_per_char or self.eval_per_step * tm.step / self.window_chars

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
        s, chars = self.sample, self.sample.chars
        if self.fit_between:  # as the fit at the first evaluation will likely make it
            chars = fitted_eval_chars(chars, self.per_char(), self.minutes, self.fit_between)
        chars += len(s.full_starts) * self.full_length()
        return MARGIN * (self.per_char() * chars + self.save_seconds() * self.saves) + SLACK

    def train_seconds(self, minutes=None):
        """Training time under --minutes (or another budget of minutes): the budget less the
        set-up's and the end's cost."""
        return 60 * (minutes or self.minutes) - self.setup - self.final_cost()
