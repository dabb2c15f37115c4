"""Training: truncated backpropagation through time over B contiguous streams, Adam, evaluation,
learning-rate schedules, checkpoints and exact resume.

The trainer reports through a callback and never prints. Everything needed to continue a run as
if it had never stopped (weights, Adam moments, step, position in the data, carried hidden state,
random-generator state, loss history) goes into every checkpoint it writes.
"""

import hashlib
import math
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import checkpoint
from ..text import data
from . import dist
from ..charmodel import CharModel, from_arrays
from ..checkpoint import RunInfo
from ..config import TrainConfig  # noqa: F401  (re-exported: its home is config.py)
from ..errors import ConfigError, CorpusError, TrainingDiverged
from .evaluation import EVAL_PER_STEP, EVAL_PER_STEP_BF16, Budget, ValSample, Timing, symbol_counts
from .record import Record
from .regularise import Average, masked, weight_masks, window_masks
from ..engine.model import check_train_precision, train_precision
from ..engine.optim import Adam


def data_hash(ids):
    return hashlib.blake2b(np.ascontiguousarray(ids).view(np.uint8), digest_size=16).hexdigest()


def check_fits(n, B, T):
    """CorpusError unless n training characters make at least one window of B x T."""
    if (n - 1) // B // T < 1:
        fit = max(1, (n - 1) // (2 * T))
        raise CorpusError(
            f"the training text ({n:,} characters) is shorter than one "
            f"batch of {B} x {T}; try --batch {min(fit, B)} --seq "
            f"{max(1, min(T, (n - 1) // 2))}"
        )


PATIENCE_NEEDS_VALIDATION = (
    "--patience stops on the validation loss, and this run has no "
    "validation text; drop --patience or give a --val-frac"
)


class Trainer(Record):
    """Holds a run's whole state. Construct with `new` or `resume`, then call `run`. The steps,
    the schedule and the budget are here; the scores and the files the run writes are Record's
    (record.py)."""

    def __init__(self, model, train_ids, val_ids, cfg, run_dir, info=None):
        """info: the run's checkpoint.RunInfo (its data_hash is filled in here)."""
        cfg = replace(cfg, precision=train_precision(model.config, model.dtype, cfg.precision))
        self.model, self.cfg, self.run_dir = model, cfg.validate(), Path(run_dir)
        check_train_precision(model.config, model.dtype, cfg.precision)
        B, T = cfg.batch, cfg.seq
        per = (len(train_ids) - 1) // B
        self.windows = per // T
        check_fits(len(train_ids), B, T)
        self.xs, self.ys = data.streams(train_ids, B)
        self.val_ids = val_ids
        self.sample = ValSample(len(val_ids), cfg.eval_chars, B, T)  # what evaluations read
        self.train_counts = symbol_counts(train_ids, model.config.vocab_size)  # for the unigram
        self._unigram = (None, math.nan)  # (the sample's spec, its unigram baseline)
        if cfg.patience and self.sample.length < 1:
            raise ConfigError(PATIENCE_NEEDS_VALIDATION)
        self.opt = Adam(model.flat, lr=cfg.lr, grad_clip=cfg.grad_clip, weight_decay=cfg.weight_decay)
        self.grad_flat, self.grads = model.zeros_like_params()
        # |d loss / d h_t| of the last step's window, measured only when it is logged
        self.grad_norms = np.zeros((model.config.layers, T)) if cfg.log_grad_norms else None
        self.rng = np.random.default_rng(cfg.seed)
        self.average = None  # the Average of the weights (--ema), once the weights are set
        self.h, self.c = model.zero_state(B)
        self.dist = dist.world()
        if B < self.dist.size:
            raise ConfigError(
                f"--batch {B} cannot be shared among {self.dist.size} processes: "
                "give every process at least one stream"
            )
        self.streams = dist.share(B, self.dist.rank, self.dist.size)
        self.step = self.epoch = self.pos = 0
        self.elapsed = 0.0
        self.chars_seen = 0
        self.history = []
        self.recent = deque(maxlen=TRAIN_MEAN_STEPS)  # the last steps' losses: the "train" figure
        self.best_val, self.best_step, self.stale = math.inf, 0, 0
        self.val_full = None  # the larger final evaluation: {"step", "loss", "chars"}
        self.rate_notice = None  # on resume: how a new budget or schedule moves the rate
        self.appending = False  # to metrics.jsonl: a resumed run's; a new one starts it afresh
        self.saved_sample = None  # on resume, the validation sample the saved scores are on
        self.before_evaluations = None  # called before this session's first evaluation
        save_guess = 0.05 + 3 * model.flat.nbytes / 100e6  # weights, Adam moments at 100 MB/s
        per_step = EVAL_PER_STEP_BF16 if cfg.precision == "bf16" else EVAL_PER_STEP
        self.budget = Budget(self.sample, cfg.minutes, B * T, 4 if cfg.keep else 3, save_guess, per_step)
        self.report_seconds = REPORT_SECONDS
        info = info or RunInfo()
        self.info = info if info.data_hash else replace(info, data_hash=data_hash(train_ids))

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def new(
        cls, model_cfg, vocab, train_ids, val_ids, cfg, run_dir, info=None, dtype=np.float32, weights=None
    ):
        """A run from its first step: weights randomly initialised from the run's generator,
        or (weights, e.g. --init-from's) copied, which draws nothing from it."""
        model = CharModel(model_cfg, vocab, dtype=dtype)
        trainer = cls(model, train_ids, val_ids, cfg, run_dir, info)
        if weights is None:
            model.init_weights(trainer.rng)
        else:
            model.flat[:] = weights
        if cfg.ema:
            trainer.average = Average(model.flat, cfg.ema)
        return trainer

    @classmethod
    def resume(cls, path, train_ids, val_ids, overrides=None, run_dir=None, loaded=None):
        """Continue the run saved in checkpoint `path`, in the dtype it was trained in;
        overrides may change budgets. loaded: checkpoint.load(path), if already read. The
        caller then calls resync_best (run.prepare does)."""
        meta, params, train = loaded or checkpoint.load(path)
        model = from_arrays(meta, params, None, path)
        if "adam_m" not in train or meta.progress is None or meta.train is None:
            raise ConfigError(f"{path} holds no training state to resume from")
        cfg = replace(meta.train, **(overrides or {}))
        hold = cfg.schedule != meta.train.schedule  # config.resolve_resume: cosine -> constant
        t = cls(model, train_ids, val_ids, cfg, run_dir or Path(path).parent, meta.info)
        if meta.info.data_hash != data_hash(train_ids):
            raise ConfigError(
                f"{path} was trained on a different text; resume with the same corpus "
                "and --val-frac, or start a new run with --init-from"
            )
        pr = meta.progress
        t.opt.m[:], t.opt.v[:], t.opt.t = train["adam_m"], train["adam_v"], pr.step
        t.h[:], t.c[:] = train["h"], train["c"]
        t.rng.bit_generator.state = pr.rng
        t.step, t.epoch, t.pos = pr.step, pr.epoch, pr.pos
        t.elapsed, t.chars_seen = pr.elapsed, pr.chars_seen
        t.best_val, t.best_step, t.stale = pr.best_val, pr.best_step, pr.stale
        t.val_full = pr.val_full
        t.budget.timing = Timing(**pr.timing)
        t.budget.setup = pr.setup
        t.history = list(meta.history)
        t.recent.extend(pr.recent_losses)
        t.saved_sample = pr.val_sample
        t.appending = True
        t.rate_notice = t._hold_rate(meta.train) if hold else t._rate_change(meta.train)
        if cfg.ema:  # the file's weights are the average; the trained ones are resume state
            if "weights" not in train:
                raise ConfigError(f"{path} holds no trained weights beside the averaged ones")
            t.average = Average(model.flat, cfg.ema)
            model.flat[:] = train["weights"]
        return t

    # -- one step ---------------------------------------------------------------------------

    def lr_now(self, cfg=None, warmup=True):
        """The learning rate of this step under cfg's schedule and budget (default: the run's)."""
        cfg = cfg or self.cfg
        lr = cfg.lr
        if warmup and cfg.warmup and self.step < cfg.warmup:
            lr *= (self.step + 1) / cfg.warmup
        if cfg.schedule == "cosine":
            f = min(1.0, self.progress(cfg))
            lr *= cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * f))
        elif cfg.lr_decay != 1.0 and self.epoch >= cfg.lr_decay_after:
            lr *= cfg.lr_decay ** (self.epoch - cfg.lr_decay_after + 1)
        return lr

    def _rate_change(self, saved):
        """After resume with a new budget: a line saying that the cosine, now stretched over it,
        moves the rate (extending a finished run raises it again), or None."""
        was, now = self.lr_now(saved), self.lr_now()
        if self.cfg.schedule != "cosine" or abs(now - was) <= 0.01 * was:
            return None
        return (
            f"the cosine schedule now runs over the new budget: the rate goes from {was:.3g} to "
            f"{now:.3g} (--schedule constant continues at {was:.3g})"
        )

    def _hold_rate(self, saved):
        """--schedule constant on resuming a cosine run: go on at the rate where its cosine
        stands (warmup, if not yet over, still applies). Returns the line that says so."""
        rate = self.lr_now(saved, warmup=False)
        self.cfg = replace(self.cfg, lr=rate)
        return f"--schedule constant: the rate stays at {rate:.3g}, where the run's cosine left it"

    def progress(self, cfg=None):
        """Fraction of cfg's budget (default: the run's) used: the largest over the budgets set."""
        cfg, done = cfg or self.cfg, 0.0
        if cfg.steps:
            done = max(done, self.step / cfg.steps)
        if cfg.minutes:  # the training time, which ends early enough for the final evaluation
            done = max(done, self.elapsed / max(1e-9, self.budget.train_seconds(cfg.minutes)))
        if cfg.epochs:
            done = max(done, (self.epoch + self.pos / self.windows) / cfg.epochs)
        return done

    def masks(self):
        """The window's dropout masks (L, T, B, H), or None without dropout."""
        cfg, mc = self.cfg, self.model.config
        return window_masks(
            self.rng, cfg.dropout_mode, mc.dropout, mc.layers, cfg.seq, cfg.batch, mc.hidden, self.model.dtype
        )

    def train_step(self):
        T = self.cfg.seq
        if self.cfg.state_reset:
            # Streams whose state is never reset let an LSTM drift into huge cell states it then
            # relies on (measured: |c| ~ 70 on average after 200 steps at 2x256 with dropout);
            # from the zero state that evaluation and sampling start in, such a model scored
            # 7.9 nats/char while training at 2.4. Resetting each stream now and then keeps it
            # able to start from nothing.
            reset = self.rng.random(self.cfg.batch) < T / self.cfg.state_reset
            self.h[:, reset] = 0
            self.c[:, reset] = 0
        s = slice(self.pos * T, (self.pos + 1) * T)
        mine = self.streams  # under MPI this process's share of the B streams (see dist.py)
        x = np.ascontiguousarray(self.xs[mine, s].T, dtype=np.int32)
        y = np.ascontiguousarray(self.ys[mine, s].T, dtype=np.int32)
        masks = self.masks()  # drawn for all B streams on every rank: the same random numbers
        m, drop = self.model, self.cfg.weight_drop
        out = m.weight_mask() if drop > 0 else None
        weights = weight_masks(self.rng, m.params, drop, self.cfg.embed_drop, m.dtype, out)
        recurrent = weights.pop("Wh", None)  # the model applies it (as it packs Wh, in bf16)
        n = self.cfg.batch * T
        with masked(self.model.params, self.grads, weights):
            loss, (self.h[:, mine], self.c[:, mine]) = self.model.loss_and_grad(
                x,
                y,
                self.h[:, mine],
                self.c[:, mine],
                self.grads,
                None if masks is None else masks[:, :, mine],
                n_total=n,
                grad_norms=self.grad_norms,
                precision=self.cfg.precision,
                weight_mask=recurrent,
            )
        if self.dist.size > 1:
            self.dist.sum_(self.grad_flat)
            loss = self.dist.agree(loss * x.size, False)[0] / n
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss} at step {self.step + 1}; nothing after "
                "the last checkpoint was saved. Try a lower --lr or --grad-clip"
            )
        self.opt.step(self.model.flat, self.grad_flat, self.lr_now())
        self.step += 1
        if self.average is not None:
            self.average.update(self.model.flat, self.step)
        self.chars_seen += n
        self.pos += 1
        if self.pos == self.windows:  # next epoch: streams restart, so does the state
            self.pos, self.epoch = 0, self.epoch + 1
            self.h[:] = 0
            self.c[:] = 0
        return loss

    # -- the loop ---------------------------------------------------------------------------

    def budget_done(self):
        """Whether a budget is spent: under MPI, on any rank (see agreed)."""
        return self.agreed(self.spent(), False)[0]

    def agreed(self, done, stop):
        """(done, stop) as every rank sees them: true if true on any (see dist.py), so all
        ranks end, or evaluate, after the same step. Every rank must call it alike."""
        if self.dist.size == 1:
            return bool(done), bool(stop)
        stops, done = self.dist.agree(1.0 if stop else 0.0, done)
        return done, stops > 0

    def spent(self):
        cfg = self.cfg
        return (
            (cfg.steps and self.step >= cfg.steps)
            or (
                cfg.minutes
                and self.step  # a first step, whatever the budget
                and self.elapsed + self.budget.timing.step >= self.budget.train_seconds()
            )
            or (cfg.epochs and self.epoch + self.pos / self.windows >= cfg.epochs - 1e-12)
        )

    def eta(self, rate_steps):
        """Seconds left under the budget that ends first, or None without a budget."""
        left = []
        if self.cfg.minutes:
            left.append(60 * self.cfg.minutes - self.budget.setup - self.elapsed)
        if rate_steps > 0 and self.cfg.steps:
            left.append((self.cfg.steps - self.step) / rate_steps)
        if rate_steps > 0 and self.cfg.epochs:
            left.append((self.cfg.epochs * self.windows - self.epoch * self.windows - self.pos) / rate_steps)
        return max(0.0, min(left)) if left else None

    def tick(self):
        """Add the wall time since the last tick to elapsed (evaluating and saving count
        against the budget too); returns now."""
        now = time.perf_counter()
        self.elapsed += now - self._mark
        self._mark = now
        return now

    def run(self, callback=None, should_stop=lambda: False):
        """Train until the budget is spent, patience runs out or should_stop() is true.
        Returns "done", "patience" or "interrupted". The latest checkpoint is always written
        before returning. callback(event: dict) hears, and metrics.jsonl records, every
        evaluation (kind "eval"), the training loss after the first step and then every
        report_seconds (kind "train"), and the final, larger evaluation of the best model
        (kind "full"). metrics.jsonl also gets a training-loss row before each evaluation.
        Every training loss is the mean over the last TRAIN_MEAN_STEPS steps."""
        callback = callback or (lambda event: None)
        self._mark = time.perf_counter()
        since_eval, since_row, next_row = Window(), Window(), 0.0  # a row after the first step
        status, first_step = "done", self.step
        while True:
            done, stop = self.agreed(self.spent(), should_stop())
            if done:
                break
            if stop:
                status = "interrupted"
                break
            start, first = self._mark, self.step == first_step
            self.recent.append(float(self.train_step()))
            now = self.tick()
            if not first:  # a session's first step also loads compiled code: not typical
                self.budget.timing.note_step(now - start)
            since_eval.add(now - start)
            since_row.add(now - start)
            if self.budget_done():
                break  # the last step is evaluated below, with the larger evaluation
            if self.step % self.cfg.eval_every == 0:
                self.log(self.train_row(since_row))  # the training curve has every evaluation
                events = self.evaluate_and_save(since_eval)
                since_eval, since_row = Window(), Window()
            elif now >= next_row:
                events = [self.log(self.train_row(since_row))]
                since_row = Window()
            else:
                continue
            next_row = self.tick() + self.report_seconds
            for event in events:
                callback(event)
            if self.cfg.patience and self.stale >= self.cfg.patience:
                status = "patience"
                break
        for event in self.end(status, self.step > first_step, since_eval, since_row):
            callback(event)
        return status

    def end(self, status, stepped, since_eval, since_row):
        """The last evaluation (unless the last step had one), the larger evaluation of the
        best model, the last writes; returns the events. stepped: this session trained."""
        if status == "done" and (not self.history or self.history[-1].step != self.step):
            if since_row.steps:
                self.log(self.train_row(since_row))
            events = self.evaluate_and_save(since_eval, final=True)
        elif status == "patience" or (status == "done" and stepped):
            events = self.finish()  # the last step was evaluated as a periodic one
        else:  # interrupted, or a finished run resumed without more budget
            events = []
            if status != "done":
                self.save(checkpoint.LATEST)
        self.tick()
        return events


REPORT_SECONDS = 5.0  # a training-loss row in metrics.jsonl (and the callback) this often
# Every "train" figure (progress lines, evaluation lines, metrics.jsonl, `charrnn info`) is the
# mean loss of the last TRAIN_MEAN_STEPS steps: one meaning wherever it is shown, whatever the
# time between lines, and the same for a run resumed (the losses go into checkpoints). A mean
# since the previous evaluation was another number on the same line: at the first evaluation
# it still held the first steps' loss, and read as a training loss above the validation loss.
TRAIN_MEAN_STEPS = 50


class Window:
    """Steps and seconds since some point: the step rate."""

    def __init__(self):
        self.steps, self.secs = 0, 0.0

    def add(self, secs):
        self.steps += 1
        self.secs += secs

    def steps_per_sec(self):
        return self.steps / self.secs if self.secs > 0 else 0.0
