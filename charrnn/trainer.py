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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from . import __version__, checkpoint
from .errors import ConfigError, CorpusError, TrainingDiverged
from .api import CharModel, model_from_checkpoint
from .model import dropout_masks, num_params
from .optim import Adam


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64          # B parallel streams of the training text
    seq_len: int = 100            # T characters per window (truncated BPTT length)
    lr: float = 3e-3              # Adam learning rate (peak, with a schedule)
    grad_clip: float = 5.0        # clip the global gradient norm to this (0: off)
    weight_decay: float = 0.0     # decoupled weight decay
    schedule: str = "cosine"      # constant (with optional lr_decay) or cosine (over the budget)
    warmup: int = 0               # linear warm-up steps
    min_lr_frac: float = 0.05     # cosine ends at lr * min_lr_frac
    lr_decay: float = 1.0         # constant schedule: multiply lr by this every epoch ...
    lr_decay_after: int = 10      # ... after this many epochs (char-rnn's scheme)
    steps: int = 0                # stop after this many optimizer steps (0: no limit)
    minutes: float = 0.0          # stop after this much training wall time (0: no limit)
    epochs: float = 0.0           # stop after this many passes over the text (0: no limit)
    val_frac: float = 0.1         # the last fraction of the text is held out for validation
    eval_every: int = 200         # steps between evaluations (and checkpoints)
    eval_chars: int = 120_000     # validation characters read per evaluation, 10x at the end (0: all)
    keep: int = 0                 # also keep the last N step-stamped checkpoints
    patience: int = 0             # stop after N evaluations without improvement (0: never)
    seed: int = 1                 # seeds initialisation, dropout and everything random
    log_grad_norms: bool = False  # report |d loss / d h_t| across the window at evaluations
    state_reset: int = 2000       # mean characters between random resets of a stream's carried
                                  # state (0: never); see Trainer.train_step

    def validate(self):
        for name in ("batch_size", "seq_len", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError("lr must be a positive number")
        if not 0 <= self.val_frac < 1:
            raise ConfigError("val-frac must be in [0, 1)")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError("schedule must be constant or cosine")
        if min(self.state_reset, self.grad_clip, self.steps, self.minutes, self.epochs, self.keep,
               self.patience, self.warmup, self.eval_chars, self.weight_decay) < 0:
            raise ConfigError("budgets, counts, clipping and decay cannot be negative")
        return self


def data_hash(ids):
    return hashlib.blake2b(np.ascontiguousarray(ids).view(np.uint8), digest_size=16).hexdigest()


class Trainer:
    """Holds a run's whole state. Construct with `new` or `resume`, then call `run`."""

    def __init__(self, model, train_ids, val_ids, cfg, run_dir, info=None):
        self.model, self.cfg, self.run_dir = model, cfg.validate(), Path(run_dir)
        self.info = dict(info or {})
        B, T = cfg.batch_size, cfg.seq_len
        per = (len(train_ids) - 1) // B
        self.windows = per // T
        if self.windows < 1:
            fit = max(1, (len(train_ids) - 1) // (2 * T))
            raise CorpusError(f"the training text ({len(train_ids):,} characters) is shorter than one "
                              f"batch of {B} x {T}; try --batch {min(fit, B)} --seq "
                              f"{max(1, min(T, (len(train_ids) - 1) // 2))}")
        self.xs = train_ids[:B * per].reshape(B, per)
        self.ys = train_ids[1:B * per + 1].reshape(B, per)
        self.val_ids = val_ids
        self.opt = Adam(model.flat, lr=cfg.lr, grad_clip=cfg.grad_clip, weight_decay=cfg.weight_decay)
        self.grad_flat, self.grads = model.zeros_like_params()
        model.track_grad_norms = cfg.log_grad_norms
        self.rng = np.random.default_rng(cfg.seed)
        self.h, self.c = model.zero_state(B)
        self.step = self.epoch = self.pos = 0
        self.elapsed = 0.0
        self.chars_seen = 0
        self.history = []
        self.best_val, self.best_step, self.stale = math.inf, 0, 0
        self.info.setdefault("data_hash", data_hash(train_ids))

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def new(cls, model_cfg, vocab, train_ids, val_ids, cfg, run_dir, info=None, dtype=np.float32):
        model = CharModel(model_cfg, vocab, dtype=dtype)
        trainer = cls(model, train_ids, val_ids, cfg, run_dir, info)
        model.init_weights(trainer.rng)
        return trainer

    @classmethod
    def resume(cls, path, train_ids, val_ids, overrides=None, run_dir=None):
        """Continue the run saved in checkpoint `path`, in the dtype it was trained in;
        overrides may change budgets."""
        model, meta, train = model_from_checkpoint(path, dtype=None)
        if "adam_m" not in train:
            raise ConfigError(f"{path} holds no training state to resume from")
        cfg = replace(TrainConfig(**meta["train"]), **(overrides or {}))
        t = cls(model, train_ids, val_ids, cfg, run_dir or Path(path).parent, meta.get("info"))
        if meta.get("info", {}).get("data_hash") != data_hash(train_ids):
            raise ConfigError(f"{path} was trained on a different text; resume with the same corpus "
                              "and --val-frac, or start a new run with --init-from")
        pr = meta["progress"]
        t.opt.m[:], t.opt.v[:], t.opt.t = train["adam_m"], train["adam_v"], pr["step"]
        t.h[:], t.c[:] = train["h"], train["c"]
        t.rng.bit_generator.state = pr["rng"]
        t.step, t.epoch, t.pos = pr["step"], pr["epoch"], pr["pos"]
        t.elapsed, t.chars_seen = pr["elapsed"], pr["chars_seen"]
        t.best_val, t.best_step, t.stale = pr["best_val"], pr["best_step"], pr["stale"]
        t.history = meta.get("history", [])
        return t

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
        if cfg.minutes:
            done = max(done, self.elapsed / (60 * cfg.minutes))
        if cfg.epochs:
            done = max(done, (self.epoch + self.pos / self.windows) / cfg.epochs)
        return done

    def masks(self):
        p = self.model.config.dropout
        if p <= 0:
            return None
        cfg, mc = self.cfg, self.model.config
        shape = (mc.num_layers, cfg.seq_len, cfg.batch_size, mc.hidden_size)
        return dropout_masks(self.rng, shape, p, self.model.dtype)

    def train_step(self):
        T = self.cfg.seq_len
        if self.cfg.state_reset:
            # Streams whose state is never reset let an LSTM drift into huge cell states it then
            # relies on (measured: |c| ~ 70 on average after 200 steps at 2x256 with dropout);
            # from the zero state that evaluation and sampling start in, such a model scored
            # 7.9 nats/char while training at 2.4. Resetting each stream now and then keeps it
            # able to start from nothing.
            reset = self.rng.random(self.cfg.batch_size) < T / self.cfg.state_reset
            self.h[:, reset] = 0
            self.c[:, reset] = 0
        s = slice(self.pos * T, (self.pos + 1) * T)
        x = np.ascontiguousarray(self.xs[:, s].T, dtype=np.int32)
        y = np.ascontiguousarray(self.ys[:, s].T, dtype=np.int32)
        loss, (self.h, self.c) = self.model.loss_and_grad(x, y, self.h, self.c, self.grads,
                                                          self.masks())
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at step {self.step + 1}; nothing after "
                                   "the last checkpoint was saved. Try a lower --lr or --grad-clip")
        self.opt.step(self.model.flat, self.grad_flat, self.lr_now())
        self.step += 1
        self.chars_seen += x.size
        self.pos += 1
        if self.pos == self.windows:  # next epoch: streams restart, so does the state
            self.pos, self.epoch = 0, self.epoch + 1
            self.h[:] = 0
            self.c[:] = 0
        return loss

    def validate(self, full=True):
        """Validation loss: the first eval_chars characters of the held-out text, or at the
        end of training ten times as many (all of Tiny Shakespeare's either way; a gigabyte
        corpus is not read whole at every evaluation)."""
        ids = self.val_ids
        if len(ids) < 2:
            return math.nan
        cap = self.cfg.eval_chars * (10 if full else 1)
        if cap and len(ids) > cap:
            ids = ids[:cap]
        return self.model.evaluate(ids, self.cfg.batch_size, self.cfg.seq_len)

    # -- the loop ---------------------------------------------------------------------------

    def budget_done(self):
        cfg = self.cfg
        return ((cfg.steps and self.step >= cfg.steps)
                or (cfg.minutes and self.elapsed >= 60 * cfg.minutes)
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

    def run(self, callback=None, should_stop=lambda: False):
        """Train until the budget is spent, patience runs out or should_stop() is true.
        Returns "done", "patience" or "interrupted". The latest checkpoint is always written
        before returning; callback(event: dict) hears of every evaluation."""
        callback = callback or (lambda event: None)
        losses, t_mark, train_secs = [], time.perf_counter(), 0.0
        status = "done"
        while True:
            if self.budget_done():
                break
            if should_stop():
                status = "interrupted"
                break
            losses.append(self.train_step())
            now = time.perf_counter()
            self.elapsed += now - t_mark
            train_secs += now - t_mark
            t_mark = now
            last = self.budget_done()
            if self.step % self.cfg.eval_every == 0 or last:
                event = self.evaluate_and_save(losses, train_secs, full=bool(last))
                now = time.perf_counter()  # evaluating and saving count against the budget
                self.elapsed += now - t_mark
                t_mark = now
                losses, train_secs = [], 0.0
                callback(event)
                if self.cfg.patience and self.stale >= self.cfg.patience:
                    status = "patience"
                    break
        if status != "done" or not self.history or self.history[-1]["step"] != self.step:
            self.save(checkpoint.LATEST)
        return status

    def evaluate_and_save(self, losses, train_secs, full):
        t0 = time.perf_counter()
        val = self.validate(full)
        secs = time.perf_counter() - t0
        train_loss = float(np.mean(losses)) if losses else math.nan
        rate = len(losses) / train_secs if train_secs > 0 else 0.0  # steps per second
        event = dict(step=self.step, epoch=round(self.epoch + self.pos / self.windows, 4),
                     elapsed=round(self.elapsed, 3), chars=self.chars_seen,
                     train_loss=train_loss, val_loss=val, lr=self.lr_now(),
                     chars_per_sec=rate * self.cfg.batch_size * self.cfg.seq_len,
                     eta=self.eta(rate), eval_seconds=secs)
        self.history.append({k: event[k] for k in ("step", "epoch", "elapsed", "chars",
                                                    "train_loss", "val_loss", "lr")})
        score = val if math.isfinite(val) else train_loss
        improved = score < self.best_val
        if improved:
            self.best_val, self.best_step, self.stale = score, self.step, 0
        else:
            self.stale += 1
        event["best"] = improved
        if self.cfg.log_grad_norms:
            event["grad_norms"] = [round(float(v), 6) for v in self.model.grad_norms[0]]
        self.save(checkpoint.LATEST)
        if improved:
            self.save(checkpoint.BEST)
        if self.cfg.keep:
            self.save(f"step{self.step:07d}_val{score:.4f}.npz")
            self.prune()
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({k: finite_or_none(v) for k, v in event.items()}) + "\n")
        return event

    def prune(self):
        stamped = sorted(self.run_dir.glob("step*_val*.npz"))
        for old in stamped[:-self.cfg.keep]:
            old.unlink(missing_ok=True)

    # -- checkpoints ------------------------------------------------------------------------

    def meta(self):
        m = self.model
        vocab = m.vocab
        return {
            "charrnn": __version__,
            "model": m.config.to_dict(),
            "vocab": ({"kind": "bytes", "ids": list(vocab)} if isinstance(vocab, bytes)
                      else {"kind": "text", "chars": vocab}),
            "train": asdict(self.cfg),
            "info": self.info,
            "num_params": num_params(m.config),
            "progress": {"step": self.step, "epoch": self.epoch, "pos": self.pos,
                         "elapsed": self.elapsed, "chars_seen": self.chars_seen,
                         "best_val": self.best_val, "best_step": self.best_step,
                         "stale": self.stale, "rng": self.rng.bit_generator.state},
            "val_loss": self.history[-1]["val_loss"] if self.history else None,
            "history": self.history,
        }

    def save(self, name):
        train = {"adam_m": self.opt.m, "adam_v": self.opt.v, "h": self.h, "c": self.c}
        return checkpoint.save(self.run_dir / name, self.meta(), self.model.params, train)


def finite_or_none(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v
