"""Running a sweep's trials: one process claims a trial, trains it as an ordinary run with
evaluations at even fractions of its budget, reports them to the pruner, and records the run;
run_workers keeps several such processes going on one machine."""

import math
import os
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from . import space as sweep_space
from ..errors import CharrnnError
from .study import _optuna, _sampler, counts, fail_dead, open_study, state_of

# fmt: off
NEVER = 10 ** 12            # eval_every until a time budget's step time is measured
EARLY = 0.25                # an evaluation this much of an interval early counts as on time
# fmt: on


class _TrialFailed(Exception):
    """The trial's own error, already recorded; the sweep goes on."""


class _Surplus(Exception):
    """Other workers took the last trials while this one was starting."""


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM: the trial saved its checkpoint; the sweep stops."""


def run(sw, should_stop=lambda: False, report=lambda kind, **fields: None, pruner=None):
    """Run trials until the study holds sw.trials finished ones. Returns "done" or
    "interrupted". report(kind, **fields) hears of each trial's start, evaluations and end
    (kinds: start, eval, complete, pruned, failed, interrupted)."""
    study = open_study(sw)
    if pruner is not None:
        study.pruner = pruner
    objective = _Objective(sw, study, should_stop, report)
    while True:
        fail_dead(study)
        done, running = counts(study)
        if done + running >= sw.trials:
            return "done"
        if should_stop():
            return "interrupted"
        try:
            study.optimize(objective, n_trials=1, catch=(_TrialFailed,))
        except _Surplus:
            return "done"
        except _Interrupted:
            return "interrupted"


class _Objective:
    def __init__(self, sw, study, should_stop, report):
        self.sw, self.study, self.should_stop, self.report = sw, study, should_stop, report

    def __call__(self, trial):
        optuna, sw = _optuna(), self.sw
        self.study.sampler = _sampler(sw, trial.number)  # before the first suggestion
        self._claim(trial)
        params = sweep_space.suggest(trial, sw.space)
        run_dir = Path(sw.sweep_dir) / f"trial-{trial.number:04d}"
        from ..engine.threads import num_threads

        for k, v in (
            ("run_dir", str(run_dir.resolve())),
            ("host", socket.gethostname()),
            ("pid", os.getpid()),
            ("threads", num_threads()),
        ):
            trial.set_user_attr(k, v)
        self.report("start", trial=trial.number, params=params, run_dir=run_dir)
        trainer = None
        try:
            prepared = self._prepare(run_dir, params)
            trainer = prepared.trainer
            status, pruned = self._train(trial, prepared)
        except KeyboardInterrupt:  # a second Ctrl-C: the trial is abandoned, not failed
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as e:
            msg = (
                "out of memory"
                if isinstance(e, MemoryError)
                else str(e)
                if isinstance(e, CharrnnError)
                else f"{type(e).__name__}: {e}"
            )
            if trainer is not None:
                _record(trial, trainer)
            trial.set_user_attr("error", msg)
            self.report("failed", trial=trial.number, error=msg, run_dir=run_dir)
            raise _TrialFailed(msg) from e
        _record(trial, trainer)
        best = trainer.best_val if math.isfinite(trainer.best_val) else None
        done = dict(
            trial=trial.number,
            best_val=best,
            chars=trainer.chars_seen,
            seconds=trainer.elapsed,
            run_dir=run_dir,
        )
        if status == "interrupted" and pruned:
            self.report("pruned", progress=trainer.progress(), **done)
            raise optuna.TrialPruned(f"pruned at {trainer.progress():.0%} of its budget")
        if status == "interrupted":
            trial.set_user_attr("interrupted", True)
            self.report("interrupted", **done)
            raise _Interrupted()
        self.report("complete", **done)
        return trainer.best_val

    def _claim(self, trial):
        """Give the trial up if the study already has its total without it: another worker
        asked for a trial in the same moment as this one."""
        ahead = sum(
            1
            for t in self.study.get_trials(deepcopy=False)
            if t.number < trial.number and state_of(t) not in ("interrupted", "surplus")
        )
        if ahead >= self.sw.trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus()

    def _prepare(self, run_dir, params):
        from .. import api
        from ..training import run as runs

        sw = self.sw
        every = math.ceil(sw.steps / sw.evals) if sw.steps else NEVER
        prepared = runs.prepare(
            sw.corpus,
            run_dir,
            data_dir=sw.data_dir,
            minutes=sw.minutes,
            steps=sw.steps,
            eval_every=every,
            eval_chars=sw.eval_chars,
            val_frac=sw.val_frac,
            seed=sw.seed,
            auto_size=False,  # trials differ by their parameters, not by a rate each measures
            **params,
        )
        model = prepared.trainer.model
        api.compile_kernels(model.config.cell, model.dtype)
        return prepared

    def _train(self, trial, prepared):
        """Train (run.execute), reporting the validation loss at each evaluation to the pruner.
        Returns (the run's status, whether the pruner stopped it)."""
        from ..training.run import execute

        sw, st = self.sw, {"reported": 0, "pruned": False, "t1": None}
        trainer = prepared.trainer

        def on_event(e):
            if e.get("kind", "eval") != "eval":  # training-loss rows and the final larger one
                return
            _record(trial, trainer)
            val, p = e["val_loss"], trainer.progress()
            k = min(sw.evals, int(p * sw.evals + EARLY))  # the fraction of the budget it is at
            if k > st["reported"] and math.isfinite(val):
                for j in range(st["reported"] + 1, k + 1):  # steps no evaluation fell on
                    trial.report(val, j)
                st["reported"] = k
                if k < sw.evals and trial.should_prune():
                    st["pruned"] = True
            if sw.minutes and not sw.steps and e.get("chars_per_sec"):
                bt = trainer.cfg.batch * trainer.cfg.seq  # re-aim at the next fraction
                _aim(trainer, sw, bt / e["chars_per_sec"])
            self.report("eval", trial=trial.number, step=e["step"], val=val, progress=p)

        def stop():
            if trainer.cfg.eval_every == NEVER:
                _schedule(trainer, st, sw)
            return st["pruned"] or self.should_stop()

        return execute(prepared, on_event, stop), st["pruned"]


def _schedule(trainer, st, sw):
    """With a time budget, the first evaluation: once a few steps are timed, aim at the first
    even fraction of the budget."""
    if trainer.step == 1:
        st["t1"] = trainer.elapsed  # the first step may include warming up
    elif (
        st["t1"] is not None
        and trainer.step >= 3
        and (trainer.elapsed - st["t1"] >= 1.0 or trainer.step >= 50)
    ):
        _aim(trainer, sw, (trainer.elapsed - st["t1"]) / (trainer.step - 1))


def _aim(trainer, sw, per_step):
    """Set the trainer's eval_every (it reads it at every step, evaluating when the step is a
    multiple of it) so that the next evaluation falls near the next even fraction of the time
    budget, at per_step seconds a step. After the last fraction it aims past the budget's end,
    which evaluates anyway."""
    budget = 60 * sw.minutes
    tick = int(trainer.elapsed / budget * sw.evals + EARLY) + 1
    left = tick * budget / sw.evals - trainer.elapsed
    if tick >= sw.evals:
        left = 2 * (budget - trainer.elapsed) + budget
    every = _interval(trainer.step, max(1.0, left / max(per_step, 1e-9)))
    trainer.cfg = replace(trainer.cfg, eval_every=every)


def _interval(step, ahead):
    """An eval_every whose next multiple after `step` is within 5% of step + ahead, as near
    `ahead` as can be (step + ahead itself, which always hits, when nothing smaller does)."""
    ahead = max(1, round(ahead))

    def miss(n):
        return abs(-(-(step + 1) // n) * n - step - ahead)

    fits = [n for n in range(1, 2 * ahead + 1) if miss(n) <= ahead // 20]
    return min(fits, key=lambda n: abs(n - ahead)) if fits else step + ahead


def _record(trial, trainer):
    trial.set_user_attr(
        "progress",
        {
            "best_val": trainer.best_val if math.isfinite(trainer.best_val) else None,
            "chars": trainer.chars_seen,
            "seconds": round(trainer.elapsed, 1),
            "step": trainer.step,
        },
    )


# -- several workers on one machine ----------------------------------------------------------


def run_workers(command, jobs, should_stop, report=lambda kind, **fields: None, threads=None):
    """Run `command` (a worker: this sweep with --jobs 1) in `jobs` processes, each with
    CHARRNN_THREADS = its share of the cores. A worker killed by a signal (the kernel's
    out-of-memory killer, say) is replaced; the next worker marks its trial failed. On
    should_stop() every worker gets one SIGTERM (it finishes its step and saves). Returns the
    exit code: 0, 130 when interrupted, else the first failing worker's."""
    from ..engine.threads import num_threads

    share = max(1, (threads or num_threads()) // jobs)
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(
        os.environ,
        CHARRNN_THREADS=str(share),
        PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    )

    def spawn():  # a session of its own: Ctrl-C reaches only us, and we pass it on once
        return subprocess.Popen(command, env=env, start_new_session=True)

    procs = [spawn() for _ in range(jobs)]
    report("workers", jobs=jobs, threads=share)
    codes, signalled, restarts = [], 0, 0
    try:
        while procs:
            if should_stop() and not signalled:
                signalled = _signal_all(procs)
            time.sleep(0.1)
            for p in [p for p in procs if p.poll() is not None]:
                procs.remove(p)
                if p.returncode < 0 and not signalled and restarts < 100:
                    report("worker-died", pid=p.pid, signal=-p.returncode)
                    procs.append(spawn())
                    restarts += 1
                else:
                    codes.append(p.returncode)
    except KeyboardInterrupt:  # the second Ctrl-C: the workers abandon their trials
        _signal_all(procs)
        for p in procs:
            p.wait()
        return 130
    if signalled or 130 in codes:
        return 130
    return next((c if c > 0 else 1 for c in codes if c != 0), 0)


def _signal_all(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    return 1


# -- results ---------------------------------------------------------------------------------
