"""Training: truncated backpropagation through time over B contiguous streams, Adam, evaluation,
learning-rate schedules, checkpoints and exact resume.

The trainer reports through a callback and never prints. Everything needed to continue a run as
if it had never stopped (weights, Adam moments, step, position in the data, carried hidden state,
random-generator state, loss history) goes into every checkpoint it writes.
"""
import hashlib
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .. import checkpoint
from ..text import data
from . import dist
from ..charmodel import CharModel, from_arrays, model_from_checkpoint
from ..checkpoint import HistoryRow, Meta, Progress, RunInfo
from ..config import TrainConfig  # noqa: F401  (re-exported: its home is config.py)
from ..errors import ConfigError, CorpusError, TrainingDiverged
from .evaluation import Budget, Sample, Timing
from ..engine.model import dropout_masks, num_params
from ..engine.optim import Adam


def data_hash(ids):
    return hashlib.blake2b(np.ascontiguousarray(ids).view(np.uint8), digest_size=16).hexdigest()


class Trainer:
    """Holds a run's whole state. Construct with `new` or `resume`, then call `run`."""

    def __init__(self, model, train_ids, val_ids, cfg, run_dir, info=None):
        """info: the run's checkpoint.RunInfo (its data_hash is filled in here)."""
        self.model, self.cfg, self.run_dir = model, cfg.validate(), Path(run_dir)
        B, T = cfg.batch, cfg.seq
        per = (len(train_ids) - 1) // B
        self.windows = per // T
        if self.windows < 1:
            fit = max(1, (len(train_ids) - 1) // (2 * T))
            raise CorpusError(f"the training text ({len(train_ids):,} characters) is shorter than one "
                              f"batch of {B} x {T}; try --batch {min(fit, B)} --seq "
                              f"{max(1, min(T, (len(train_ids) - 1) // 2))}")
        self.xs, self.ys = data.streams(train_ids, B)
        self.val_ids = val_ids
        self.sample = Sample(len(val_ids), cfg.eval_chars, B, T)  # what evaluations read
        if cfg.patience and self.sample.length < 1:
            raise ConfigError("--patience stops on the validation loss, and this run has no "
                              "validation text; drop --patience or give a --val-frac")
        self.opt = Adam(model.flat, lr=cfg.lr, grad_clip=cfg.grad_clip, weight_decay=cfg.weight_decay)
        self.grad_flat, self.grads = model.zeros_like_params()
        # |d loss / d h_t| of the last step's window, measured only when it is logged
        self.grad_norms = np.zeros((model.config.layers, T)) if cfg.log_grad_norms else None
        self.rng = np.random.default_rng(cfg.seed)
        self.h, self.c = model.zero_state(B)
        self.dist = dist.world()
        if B < self.dist.size:
            raise ConfigError(f"--batch {B} cannot be shared among {self.dist.size} processes: "
                              "give every process at least one stream")
        self.streams = dist.share(B, self.dist.rank, self.dist.size)
        self.step = self.epoch = self.pos = 0
        self.elapsed = 0.0
        self.chars_seen = 0
        self.history = []
        self.best_val, self.best_step, self.stale = math.inf, 0, 0
        self.val_full = None  # the larger final evaluation: {"step", "loss", "chars"}
        self.saved_sample = None  # on resume, the validation sample the saved scores are on
        save_guess = 0.05 + 3 * model.flat.nbytes / 100e6  # weights, Adam moments at 100 MB/s
        self.budget = Budget(self.sample, cfg.minutes, B * T, 4 if cfg.keep else 3, save_guess)
        self.report_seconds = REPORT_SECONDS
        info = info or RunInfo()
        self.info = info if info.data_hash else replace(info, data_hash=data_hash(train_ids))

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def new(cls, model_cfg, vocab, train_ids, val_ids, cfg, run_dir, info=None, dtype=np.float32,
            weights=None):
        """A run from its first step: weights randomly initialised from the run's generator,
        or (weights, e.g. --init-from's) copied, which draws nothing from it."""
        model = CharModel(model_cfg, vocab, dtype=dtype)
        trainer = cls(model, train_ids, val_ids, cfg, run_dir, info)
        if weights is None:
            model.init_weights(trainer.rng)
        else:
            model.flat[:] = weights
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
        t = cls(model, train_ids, val_ids, cfg, run_dir or Path(path).parent, meta.info)
        if meta.info.data_hash != data_hash(train_ids):
            raise ConfigError(f"{path} was trained on a different text; resume with the same corpus "
                              "and --val-frac, or start a new run with --init-from")
        pr = meta.progress
        t.opt.m[:], t.opt.v[:], t.opt.t = train["adam_m"], train["adam_v"], pr.step
        t.h[:], t.c[:] = train["h"], train["c"]
        t.rng.bit_generator.state = pr.rng
        t.step, t.epoch, t.pos = pr.step, pr.epoch, pr.pos
        t.elapsed, t.chars_seen = pr.elapsed, pr.chars_seen
        t.best_val, t.best_step, t.stale = pr.best_val, pr.best_step, pr.stale
        t.val_full = pr.val_full
        t.budget.timing = Timing(**pr.timing)
        t.history = list(meta.history)
        t.saved_sample = pr.val_sample
        return t

    def resync_best(self):
        """After resume: when the validation sample changed (a new --eval-chars, or a run from
        before the sample was fixed), the saved best was scored on other characters than the
        evaluations to come; score it again. Returns a notice saying so, or None."""
        if self.saved_sample == self.sample.spec() or not self.best_step:
            return None
        was = self.best_val
        if self.rescore_best() is None:
            return None
        return (f"the validation sample changed; best.npz (step {self.best_step}) "
                f"scores {self.best_val:.4f} on it (was {was:.4f})")

    # -- one step ---------------------------------------------------------------------------

    def lr_now(self):
        cfg = self.cfg
        lr = cfg.lr
        if cfg.warmup and self.step < cfg.warmup:
            lr *= (self.step + 1) / cfg.warmup
        if cfg.schedule == "cosine":
            f = min(1.0, self.progress())
            lr *= cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * f))
        elif cfg.lr_decay != 1.0 and self.epoch >= cfg.lr_decay_after:
            lr *= cfg.lr_decay ** (self.epoch - cfg.lr_decay_after + 1)
        return lr

    def progress(self):
        """Fraction of the budget used: the largest over the budgets that are set."""
        cfg, done = self.cfg, 0.0
        if cfg.steps:
            done = max(done, self.step / cfg.steps)
        if cfg.minutes:  # the training time, which ends early enough for the final evaluation
            done = max(done, self.elapsed / max(1e-9, self.budget.train_seconds()))
        if cfg.epochs:
            done = max(done, (self.epoch + self.pos / self.windows) / cfg.epochs)
        return done

    def masks(self):
        p = self.model.config.dropout
        if p <= 0:
            return None
        cfg, mc = self.cfg, self.model.config
        shape = (mc.layers, cfg.seq, cfg.batch, mc.hidden)
        return dropout_masks(self.rng, shape, p, self.model.dtype)

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
        n = self.cfg.batch * T
        loss, (self.h[:, mine], self.c[:, mine]) = self.model.loss_and_grad(
            x, y, self.h[:, mine], self.c[:, mine], self.grads,
            None if masks is None else masks[:, :, mine], n_total=n, grad_norms=self.grad_norms)
        if self.dist.size > 1:
            self.dist.sum_(self.grad_flat)
            loss = self.dist.agree(loss * x.size, False)[0] / n
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at step {self.step + 1}; nothing after "
                                   "the last checkpoint was saved. Try a lower --lr or --grad-clip")
        self.opt.step(self.model.flat, self.grad_flat, self.lr_now())
        self.step += 1
        self.chars_seen += n
        self.pos += 1
        if self.pos == self.windows:  # next epoch: streams restart, so does the state
            self.pos, self.epoch = 0, self.epoch + 1
            self.h[:] = 0
            self.c[:] = 0
        return loss

    def validate(self, model=None):
        """Loss of the model (default: the one training) on the fixed validation sample: the
        number every evaluation reports and the best checkpoint is chosen by (nan without
        validation text)."""
        if self.sample.length < 1:
            return math.nan
        if self.dist.rank != 0:  # rank 0 evaluates; every rank then decides on its number
            return self.dist.bcast(None)
        return self.dist.bcast(self.sample.score(model or self.model, self.val_ids).nats)

    def rescore_best(self):
        """Score best.npz on this run's sample, after the sample changed (a new --eval-chars on
        resume, or a checkpoint from before samples): best_val must stay comparable."""
        path = self.run_dir / checkpoint.BEST
        if not self.best_step or not path.is_file():
            self.best_val = math.inf
            return None
        self.best_val = self.validate(model_from_checkpoint(path, dtype=None)[0])
        return self.best_val

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
        return ((cfg.steps and self.step >= cfg.steps)
                or (cfg.minutes and self.step  # a first step, whatever the budget
                    and self.elapsed + self.budget.timing.step >= self.budget.train_seconds())
                or (cfg.epochs and self.epoch + self.pos / self.windows >= cfg.epochs - 1e-12))

    def eta(self, rate_steps):
        """Seconds left under the budget that ends first, or None without a budget."""
        left = []
        if self.cfg.minutes:
            left.append(60 * self.cfg.minutes - self.elapsed)
        if rate_steps > 0 and self.cfg.steps:
            left.append((self.cfg.steps - self.step) / rate_steps)
        if rate_steps > 0 and self.cfg.epochs:
            left.append((self.cfg.epochs * self.windows - self.epoch * self.windows - self.pos)
                        / rate_steps)
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
        evaluation (kind "eval"), the mean training loss after the first step and then every
        report_seconds (kind "train"), and the final, larger evaluation of the best model
        (kind "full"). metrics.jsonl also gets a training-loss row before each evaluation, so
        that its training rows cover every step."""
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
            loss = self.train_step()
            now = self.tick()
            if not first:  # a session's first step also loads compiled code: not typical
                self.budget.timing.note_step(now - start)
            since_eval.add(loss, now - start)
            since_row.add(loss, now - start)
            if self.budget_done():
                break  # the last step is evaluated below, with the larger evaluation
            if self.step % self.cfg.eval_every == 0:
                self.log(self.train_row(since_row))  # the training curve covers every step
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
            if since_row.losses:
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

    def train_row(self, window):
        """The "train" event: the mean training loss and the speed over the window's steps."""
        rate = window.steps_per_sec()
        return dict(kind="train", step=self.step,
                    epoch=round(self.epoch + self.pos / self.windows, 4),
                    elapsed=round(self.elapsed, 3), chars=self.chars_seen,
                    train_loss=window.mean(), lr=self.lr_now(),
                    chars_per_sec=rate * self.cfg.batch * self.cfg.seq,
                    eta=self.eta(rate))

    def evaluate(self, window):
        """Score the sample, update best and patience; returns the "eval" event."""
        t0 = time.perf_counter()
        val = self.validate()
        secs = time.perf_counter() - t0
        if self.sample.chars:
            self.budget.timing.eval_per_char = secs / self.sample.chars
        event = dict(self.train_row(window), kind="eval", val_loss=val, eval_seconds=secs)
        self.history.append(HistoryRow.of_event(event))
        if math.isfinite(val):
            improved = val < self.best_val
            if improved:
                self.best_val, self.best_step, self.stale = val, self.step, 0
            else:
                self.stale += 1
        else:  # no validation text: best.npz is the newest model, and there is no best val
            improved, self.best_step, self.stale = True, self.step, 0
        event["best"] = improved
        if self.cfg.log_grad_norms:
            event["grad_norms"] = [round(float(v), 6) for v in self.grad_norms[0]]
        return event

    def evaluate_and_save(self, window, final=False):
        """Evaluate, then write latest.npz, best.npz when it improved and a stamped checkpoint
        with --keep; at the end of the run (final) also the larger evaluation of the best
        model. Returns the events, already in metrics.jsonl."""
        event = self.evaluate(window)
        full, on_disk = self.evaluate_best_in_full() if final else (None, None)
        t0, saves = time.perf_counter(), 1
        self.save(checkpoint.LATEST)
        if event["best"]:
            self.save(checkpoint.BEST)
            saves += 1
        elif on_disk is not None:
            self.rewrite_best(on_disk)
            saves += 1
        if self.cfg.keep:
            val = event["val_loss"]
            self.save(f"step{self.step:07d}_val{val:.4f}.npz" if math.isfinite(val) else
                      f"step{self.step:07d}.npz")
            self.prune()
            saves += 1
        self.budget.timing.save = (time.perf_counter() - t0) / saves
        return [self.log(e) for e in (event, full) if e is not None]

    def finish(self):
        """The end of a run whose last step had its evaluation already (patience, or a budget
        that ran out during it): the larger evaluation of the best model."""
        full, on_disk = self.evaluate_best_in_full()
        if on_disk is not None:
            self.rewrite_best(on_disk)
        self.save(checkpoint.LATEST)
        return [self.log(full)] if full is not None else []

    def evaluate_best_in_full(self):
        """The final, larger evaluation (ten times eval_chars from the sample's starts, or all
        of the validation text), of the model users get: best.npz. It is reported, never
        compared with the sample's numbers. Returns (the "full" event or None, best.npz's
        contents when it was read back)."""
        sample = self.sample
        if not self.best_step or sample.full_len <= sample.length:  # the sample is all of it
            return None, None
        if self.dist.rank != 0:  # rank 0 alone: it writes best.npz, and nothing here is shared
            return None, None
        length = sample.full_len
        if self.cfg.minutes:
            left = 60 * self.cfg.minutes - self.elapsed - (time.perf_counter() - self._mark)
            length = self.budget.full_length(left - self.budget.saves * self.budget.save_seconds())
        path = self.run_dir / checkpoint.BEST
        if not length or (self.best_step != self.step and not path.is_file()):
            return None, None
        on_disk, model = None, self.model
        if self.best_step != self.step:
            model, meta, train = model_from_checkpoint(path, dtype=None)
            on_disk = (meta, model.params, train)
        t0 = time.perf_counter()
        score = sample.score_full(model, self.val_ids, length)
        secs = time.perf_counter() - t0
        self.val_full = dict(step=self.best_step, loss=score.nats, chars=score.chars)
        at = next((h for h in self.history if h.step == self.best_step), None)  # of the model
        event = dict(kind="full", step=self.best_step,
                     elapsed=None if at is None else at.elapsed,
                     chars=None if at is None else at.chars,
                     val_loss_full=score.nats, val_chars_full=score.chars,
                     val_chars=sample.chars, best_val=self.best_val,
                     all=sample.full_is_all and length == sample.full_len, eval_seconds=secs)
        return event, on_disk

    def rewrite_best(self, on_disk):
        """best.npz again, with the larger evaluation in its metadata."""
        meta, params, train = on_disk
        meta = replace(meta, val_loss_full=self.val_full["loss"],
                       val_chars_full=self.val_full["chars"],
                       progress=replace(meta.progress or Progress(), val_full=self.val_full))
        checkpoint.save(self.run_dir / checkpoint.BEST, meta, params, train)

    def log(self, event):
        """Append the event to metrics.jsonl (rank 0); returns it."""
        if self.dist.rank != 0:
            return event
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({k: finite_or_none(v) for k, v in event.items()}) + "\n")
        return event

    def prune(self):
        if self.dist.rank != 0:
            return
        stamped = sorted(self.run_dir.glob("step[0-9]*.npz"))
        for old in stamped[:-self.cfg.keep]:
            old.unlink(missing_ok=True)

    # -- checkpoints ------------------------------------------------------------------------

    def meta(self):
        """The checkpoint.Meta of the run as it stands."""
        m, full = self.model, self.val_full
        scored = full and full["step"] == self.step  # these weights had the larger evaluation
        progress = Progress(step=self.step, epoch=self.epoch, pos=self.pos, elapsed=self.elapsed,
                            chars_seen=self.chars_seen, best_val=self.best_val,
                            best_step=self.best_step, stale=self.stale,
                            rng=self.rng.bit_generator.state, val_sample=self.sample.spec(),
                            val_full=full, timing=asdict(self.budget.timing))
        return Meta(model=m.config, vocab=m.vocab, train=self.cfg, info=self.info,
                    progress=progress, history=self.history, num_params=num_params(m.config),
                    val_loss=self.history[-1].val_loss if self.history else None,
                    val_loss_full=full["loss"] if scored else None,
                    val_chars_full=full["chars"] if scored else None)

    def save(self, name):
        """Write a checkpoint (rank 0; under MPI every rank first gathers the carried state of
        all B streams, so the file is the same whatever the number of processes)."""
        if self.dist.size > 1:
            self.h = self.dist.gather_streams(self.h, self.streams)
            self.c = self.dist.gather_streams(self.c, self.streams)
            if self.dist.rank != 0:
                return None
        train = {"adam_m": self.opt.m, "adam_v": self.opt.v, "h": self.h, "c": self.c}
        return checkpoint.save(self.run_dir / name, self.meta(), self.model.params, train)


REPORT_SECONDS = 5.0  # a training-loss row in metrics.jsonl (and the callback) this often


class Window:
    """Training losses and seconds since some point: their mean and the step rate."""

    def __init__(self):
        self.losses, self.secs = [], 0.0

    def add(self, loss, secs):
        self.losses.append(loss)
        self.secs += secs

    def mean(self):
        return float(np.mean(self.losses)) if self.losses else math.nan

    def steps_per_sec(self):
        return len(self.losses) / self.secs if self.secs > 0 else 0.0


def finite_or_none(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v
