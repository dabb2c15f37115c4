"""What a run records: its evaluations on the validation sample, the best model and the final
larger evaluation of it, metrics.jsonl, and the checkpoints that let it resume exactly.

Record is the half of Trainer (trainer.py) that scores and writes; it reads the state the
trainer's steps move on (step, position, weights, Adam moments, carried state) and keeps the
run's scores (best_val, best_step, stale, history, val_full), which go into every checkpoint.
"""

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, replace

from .. import checkpoint
from ..charmodel import model_from_checkpoint
from ..checkpoint import HistoryRow, Meta, Progress
from ..engine.model import num_params
from .evaluation import EVAL_SHARE, ValSample, fitted_eval_chars
from .events import EvalEvent, FullEvent, TrainEvent


class Record:
    """Evaluations, the best model and the run's files, for Trainer."""

    # -- scores -----------------------------------------------------------------------------

    def resync_best(self):
        """After resume: when the validation sample changed (a new --eval-chars, or a run from
        before the sample was fixed), the saved best was scored on other characters than the
        evaluations to come; score it again. Returns a notice saying so, or None."""
        if self.saved_sample == self.sample.spec() or not self.best_step:
            return None
        was = self.best_val
        if self.rescore_best() is None:
            return None
        return (
            f"the validation sample changed; best.npz (step {self.best_step}) "
            f"scores {self.best_val:.4f} on it (was {was:.4f})"
        )

    def unigram(self):
        """The unigram baseline on the validation sample: the training text's character
        frequencies, add-one smoothed (evaluation.unigram_loss); nan without validation text.
        A model no better than this has learned nothing from what came before a character."""
        key = tuple(self.sample.spec())
        if self._unigram[0] != key:
            self._unigram = (key, self.sample.unigram(self.train_counts, self.val_ids))
        return self._unigram[1]

    def fit_evaluations(self, per_char=None, later=False):
        """Before a --minutes run's first evaluation: make the validation sample smaller when
        evaluating it would take more than its share of the budget (evaluation.fitted_eval_chars;
        what a character costs grows with the vocabulary, V x H in the output layer). per_char:
        seconds per validation character, measured here (measure_evaluation) when None. Sets
        cfg.eval_chars to what is read (so checkpoints and --resume keep the sample); returns a
        notice saying so, or None when the sample stays. later: fit it at the first evaluation
        instead, measured then (the evaluation event carries the notice): for a run whose steps
        need none of the evaluation's kernels (bf16 products), so that its first step need not
        wait for them to compile."""
        if not self.cfg.minutes or self.history or self.sample.length < 1:
            return None  # evaluations have read the sample: it stays
        if later:
            self.budget.fit_between = self.cfg.eval_every * self.cfg.batch * self.cfg.seq
            return None
        return self._fit(per_char)

    @property
    def fit_later(self):
        """Whether the sample waits to be fitted to --minutes at the first evaluation (the
        budget plans the end for the fit meanwhile)."""
        return bool(self.budget.fit_between)

    def _fit(self, per_char=None):
        cfg, sample = self.cfg, self.sample
        self.budget.fit_between = 0
        if per_char is None:
            measured = self.measure_evaluation() if self.dist.rank == 0 else None
            per_char = self.dist.bcast(measured)
        self.budget.timing.eval_per_char = per_char
        between = cfg.eval_every * cfg.batch * cfg.seq
        chars = fitted_eval_chars(sample.chars, per_char, cfg.minutes, between)
        if chars >= sample.chars:
            return None
        self.sample = self.budget.sample = ValSample(len(self.val_ids), chars, cfg.batch, cfg.seq)
        self.cfg = replace(cfg, eval_chars=self.sample.chars)  # which reads the same sample
        m = self.model.config
        return (
            f"evaluations read {self.sample.chars:,} validation characters, not "
            f"{sample.chars:,}: at about {1e3 * per_char:.3g} ms a character here ({m.vocab_size:,} "
            f"symbols x {m.hidden} units in the output layer) more would not fit in "
            f"{EVAL_SHARE:.0%} of --minutes {cfg.minutes:g}"
        )

    def measure_evaluation(self):
        """Seconds per validation character of this model: one window of the sample's streams
        scored, after a tiny call that loads the compiled code (the faster of two when one
        takes under 0.1 s)."""
        s, model = self.sample, self.model
        T = min(s.length, s.seq)
        model.score_segments(self.val_ids, s.starts[:1], min(2, T), s.seq, model.vocab.unk_id)
        best = math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            model.score_segments(self.val_ids, s.starts, T, s.seq, model.vocab.unk_id)
            best = min(best, time.perf_counter() - t0)
            if best >= 0.1:
                break
        return best / (len(s.starts) * T)

    def validate(self, model=None):
        """Loss of the model (default: the one training) on the fixed validation sample: the
        number every evaluation reports and the best checkpoint is chosen by (nan without
        validation text)."""
        if self.sample.length < 1:
            return math.nan
        if self.dist.rank != 0:  # rank 0 evaluates; every rank then decides on its number
            return self.dist.bcast(None)
        if model is not None:
            return self.dist.bcast(self.sample.score(model, self.val_ids).nats)
        with self.eval_model() as model:
            return self.dist.bcast(self.sample.score(model, self.val_ids).nats)

    def eval_model(self):
        """A context holding the model with the weights evaluations and checkpoints use: the
        average with --ema (swapped in, and out again exactly), else the trained ones."""
        if self.average is not None:
            return self.average.swapped_into(self.model)
        return nullcontext(self.model)

    def weights_kind(self):
        """Which weights evaluations score and checkpoints hold: "averaged" or "trained"."""
        return "averaged" if self.average is not None else "trained"

    def rescore_best(self):
        """Score best.npz on this run's sample, after the sample changed (a new --eval-chars on
        resume, or a checkpoint from before samples): best_val must stay comparable."""
        path = self.run_dir / checkpoint.BEST
        if not self.best_step or not path.is_file():
            self.best_val = math.inf
            return None
        self.best_val = self.validate(model_from_checkpoint(path, dtype=None)[0])
        return self.best_val

    def train_loss(self):
        """The "train" figure: the mean loss of the last steps (trainer.TRAIN_MEAN_STEPS, fewer
        at the start of a run), nan before the first."""
        return float(sum(self.recent) / len(self.recent)) if self.recent else math.nan

    def train_row(self, window):
        """The "train" event: the training loss (train_loss) and the speed over the window's
        steps."""
        rate = window.steps_per_sec()
        return TrainEvent(
            step=self.step,
            epoch=round(self.epoch + self.pos / self.windows, 4),
            elapsed=round(self.elapsed, 3),
            chars=self.chars_seen,
            train_loss=self.train_loss(),
            lr=self.lr_now(),
            chars_per_sec=rate * self.cfg.batch * self.cfg.seq,
            eta=self.eta(rate),
        )

    def evaluate(self, window):
        """Score the sample, update best and patience; returns the "eval" event. The first
        evaluation of a session first calls before_evaluations() (when set: it makes the
        evaluation's kernels ready, waiting for a second process compiling them) and fits the
        sample when fit_evaluations left it for now."""
        notice = None
        if self.before_evaluations is not None:
            ready, self.before_evaluations = self.before_evaluations, None
            ready()
        if self.fit_later:
            notice = self._fit()
        t0 = time.perf_counter()
        val = self.validate()
        secs = time.perf_counter() - t0
        if self.sample.chars:
            self.budget.timing.eval_per_char = secs / self.sample.chars
        if math.isfinite(val):
            improved = val < self.best_val
            if improved:
                self.best_val, self.best_step, self.stale = val, self.step, 0
            else:
                self.stale += 1
        else:  # no validation text: best.npz is the newest model, and there is no best val
            improved, self.best_step, self.stale = True, self.step, 0
        norms = None
        if self.cfg.log_grad_norms:
            norms = [round(float(v), 6) for v in self.grad_norms[0]]
        row = {k: v for k, v in self.train_row(window).items() if k != "kind"}
        event = EvalEvent(
            **row,
            val_loss=val,
            unigram=self.unigram(),
            eval_seconds=secs,
            weights=self.weights_kind(),
            best=improved,
            grad_norms=norms,
            notice=notice,
        )
        self.history.append(HistoryRow.of_event(event))
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
            self.save(
                f"step{self.step:07d}_val{val:.4f}.npz" if math.isfinite(val) else f"step{self.step:07d}.npz"
            )
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
            left = (
                60 * self.cfg.minutes - self.budget.setup - self.elapsed - (time.perf_counter() - self._mark)
            )
            length = self.budget.full_length(left - self.budget.saves * self.budget.save_seconds())
        path = self.run_dir / checkpoint.BEST
        if not length or (self.best_step != self.step and not path.is_file()):
            return None, None
        on_disk, model = None, self.model
        if self.best_step != self.step:
            model, meta, train = model_from_checkpoint(path, dtype=None)
            on_disk = (meta, model.params, train)
        t0 = time.perf_counter()
        with self.eval_model() if model is self.model else nullcontext(model) as model:
            score = sample.score_full(model, self.val_ids, length)
        secs = time.perf_counter() - t0
        self.val_full = dict(step=self.best_step, loss=score.nats, chars=score.chars)
        at = next((h for h in self.history if h.step == self.best_step), None)  # of the model
        event = FullEvent(
            step=self.best_step,
            elapsed=None if at is None else at.elapsed,
            chars=None if at is None else at.chars,
            val_loss_full=score.nats,
            val_chars_full=score.chars,
            val_chars=sample.chars,
            best_val=self.best_val,
            all=sample.full_is_all and length == sample.full_len,
            eval_seconds=secs,
            weights=self.weights_kind(),
        )
        return event, on_disk

    def rewrite_best(self, on_disk):
        """best.npz again, with the larger evaluation in its metadata."""
        meta, params, train = on_disk
        meta = replace(
            meta,
            val_loss_full=self.val_full["loss"],
            val_chars_full=self.val_full["chars"],
            progress=replace(meta.progress or Progress(), val_full=self.val_full),
        )
        checkpoint.save(self.run_dir / checkpoint.BEST, meta, params, train)

    # -- files ------------------------------------------------------------------------------

    def log(self, event):
        """Append the event to metrics.jsonl (rank 0); returns it. A new run's first event
        starts the file afresh: --force over a finished run does not add to its rows."""
        if self.dist.rank != 0:
            return event
        mode, self.appending = ("a" if self.appending else "w"), True
        with open(self.run_dir / "metrics.jsonl", mode) as f:
            f.write(json.dumps({k: finite_or_none(v) for k, v in event.items()}) + "\n")
        return event

    def prune(self):
        if self.dist.rank != 0:
            return
        stamped = sorted(self.run_dir.glob("step[0-9]*.npz"))
        for old in stamped[: -self.cfg.keep]:
            old.unlink(missing_ok=True)

    def meta(self):
        """The checkpoint.Meta of the run as it stands."""
        m, full = self.model, self.val_full
        scored = full and full["step"] == self.step  # these weights had the larger evaluation
        progress = Progress(
            step=self.step,
            epoch=self.epoch,
            pos=self.pos,
            elapsed=self.elapsed,
            setup=self.budget.setup,
            chars_seen=self.chars_seen,
            best_val=self.best_val,
            best_step=self.best_step,
            stale=self.stale,
            rng=self.rng.bit_generator.state,
            val_sample=self.sample.spec(),
            val_full=full,
            timing=asdict(self.budget.timing),
            recent_losses=list(self.recent),
            unigram=finite_or_none(self.unigram()),
        )
        return Meta(
            model=m.config,
            vocab=m.vocab,
            train=self.cfg,
            info=self.info,
            progress=progress,
            history=self.history,
            num_params=num_params(m.config),
            val_loss=self.history[-1].val_loss if self.history else None,
            val_loss_full=full["loss"] if scored else None,
            val_chars_full=full["chars"] if scored else None,
        )

    def save(self, name):
        """Write a checkpoint (rank 0; under MPI every rank first gathers the carried state of
        all B streams, so the file is the same whatever the number of processes)."""
        if self.dist.size > 1:
            self.h = self.dist.gather_streams(self.h, self.streams)
            self.c = self.dist.gather_streams(self.c, self.streams)
            if self.dist.rank != 0:
                return None
        train = {"adam_m": self.opt.m, "adam_v": self.opt.v, "h": self.h, "c": self.c}
        if self.average is None:
            return checkpoint.save(self.run_dir / name, self.meta(), self.model.params, train)
        train["weights"] = self.model.flat.copy()  # the file's weights are the average (--ema)
        with self.average.swapped_into(self.model):
            return checkpoint.save(self.run_dir / name, self.meta(), self.model.params, train)


def finite_or_none(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v
