"""charrnn sweep run and charrnn sweep show: an Optuna study over the training options."""

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import TrainConfig
from .common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    DataDirOpt,
    JsonOpt,
    Opt,
    QuietOpt,
    console,
    fail,
    fmt,
    group,
    stop_flag,
    user_errors,
)


sweep = group(
    "sweep",
    "Search cell, layers, hidden size, dropout, learning rate, window and batch "
    "with Optuna (the sweep extra), and show a study's trials.",
    default="run",
    moved=[("--show", "show", True)],
    old_argument="CORPUS",
)

StorageOpt = Annotated[
    Optional[str],
    Opt(
        help="Where the study lives: a database URL Optuna "
        "accepts (postgresql://user@host/db), shared by "
        "machines, or a journal file's path. Default: "
        "the sweep directory's journal file."
    ),
]
StudyOpt = Annotated[
    Optional[str], Opt(help="The study's name in the storage. Default: the sweep directory's name.")
]


@sweep.command("run")
@user_errors
def run_sweep(
    corpus: Annotated[
        Optional[str],
        typer.Argument(
            metavar="CORPUS",
            help="Training text, as `charrnn train` takes it (a file, a directory or a corpus name).",
        ),
    ] = None,
    trials: Annotated[
        int,
        Opt(
            help="The study's total number of trials: a rerun (or another "
            "worker) runs only those still missing."
        ),
    ] = 20,
    minutes: Annotated[float, Opt(help="Each trial's training time, evaluations included.")] = 0.0,
    steps: Annotated[int, Opt(help="Each trial's optimizer steps (instead of --minutes).")] = 0,
    out: Annotated[
        Optional[Path],
        Opt(
            "--out",
            "-o",
            help="Sweep directory: the study's "
            "journal and one run directory per trial. Default: "
            "sweeps/<corpus>.",
        ),
    ] = None,
    space: Annotated[
        Optional[Path], Opt(help="A TOML or JSON file that narrows or fixes options (see docs/scale-out.md).")
    ] = None,
    jobs: Annotated[
        int,
        Opt(help="Trials run at once on this machine, each in its own process with its share of the cores."),
    ] = 1,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    evals: Annotated[
        int,
        Opt(help="Evaluations per trial, at even fractions of its budget; the pruner compares trials there."),
    ] = 4,
    eval_chars: Annotated[
        int,
        Opt(help="Validation characters read per evaluation, ten times as many at the last one (0: all)."),
    ] = TrainConfig.eval_chars,
    val_frac: Annotated[
        float, Opt(help="Fraction at the end of the text held out for validation.")
    ] = TrainConfig.val_frac,
    seed: Annotated[int, Opt(help="Seeds the sampler and every trial's training.")] = TrainConfig.seed,
    prune: Annotated[
        bool,
        Opt(help="Stop trials whose validation loss lags the median of earlier trials at the same point."),
    ] = True,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
):
    """Run a study's trials (with the sweep extra); each trial is a run directory under
    the sweep directory."""
    from ..sweep import study as sweeps, space as sweep_space, trials as trial_runs

    if corpus is None:
        fail("give a CORPUS to sweep over (or `charrnn sweep show DIR`)", EXIT_USAGE)
    if jobs < 1:
        fail("--jobs must be at least 1", EXIT_USAGE)
    sw = sweeps.Sweep(
        corpus,
        out if out is not None else sweeps.default_dir(corpus),
        trials=trials,
        minutes=minutes,
        steps=steps,
        space=sweep_space.build(sweep_space.load(space) if space else None),
        evals=evals,
        eval_chars=eval_chars,
        val_frac=val_frac,
        seed=seed,
        prune=prune,
        storage=storage,
        study=study,
        data_dir=str(data_dir) if data_dir else None,
    )
    con = console()
    say = (lambda kind, **f: None) if quiet else functools.partial(_sweep_line, con)
    stop = stop_flag()
    try:
        if jobs == 1:
            status = trial_runs.run(sw, stop.is_set, say)
            code = EXIT_INTERRUPTED if status == "interrupted" else 0
        else:
            sweeps.open_study(sw)  # created once, settings checked once, before the workers
            code = trial_runs.run_workers(_worker_command(sw, space, quiet), jobs, stop.is_set, say)
    finally:
        stop.restore()
    if not quiet:
        _sweep_summary(con, sweeps.results(sw.sweep_dir, storage, sw.study), sw)
    if code:
        raise typer.Exit(code)


@sweep.command("show")
@user_errors
def show_sweep(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A sweep directory.")],
    storage: StorageOpt = None,
    study: StudyOpt = None,
    as_json: JsonOpt = False,
):
    """Print the trials of a sweep and name the best run."""
    from ..sweep import study as sweeps

    res = sweeps.results(directory, storage, study)
    print(json.dumps(res) if as_json else "\n".join(_sweep_table(res)))


def _worker_command(sw, space, quiet):
    cmd = [
        sys.executable,
        "-m",
        "charrnn",
        "sweep",
        "run",
        sw.corpus,
        "--trials",
        str(sw.trials),
        "--minutes",
        repr(sw.minutes),
        "--steps",
        str(sw.steps),
        "-o",
        str(sw.sweep_dir),
        "--evals",
        str(sw.evals),
        "--eval-chars",
        str(sw.eval_chars),
        "--val-frac",
        repr(sw.val_frac),
        "--seed",
        str(sw.seed),
        "--prune" if sw.prune else "--no-prune",
        "--study",
        sw.study_name,
        "--jobs",
        "1",
    ]
    for flag, value in (("--space", space), ("--storage", sw.storage), ("--data-dir", sw.data_dir)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + (["-q"] if quiet else [])


def _params_text(params):
    return " ".join(f"{k}={_short_value(v)}" for k, v in params.items())


def _short_value(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _minutes(s):
    return "-" if s is None else f"{int(s) // 60}:{int(s) % 60:02d}"


def _chars(n):
    if n is None:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def _sweep_line(con, kind, **f):
    t = f"charrnn: trial {f['trial']}" if "trial" in f else "charrnn:"
    if kind == "start":
        con.print(f"{t}: {_params_text(f['params'])} -> {f['run_dir']}")
    elif kind == "eval":
        con.print(f"{t}: step {f['step']} ({f['progress']:.0%})  val {fmt(f['val'])}")
    elif kind in ("complete", "pruned", "interrupted"):
        how = {
            "complete": "complete",
            "pruned": f"pruned at {f.get('progress', 0):.0%}",
            "interrupted": "interrupted; its checkpoint is kept",
        }[kind]
        con.print(
            f"{t}: {how}, best val {fmt(f['best_val'])} ({_chars(f['chars'])} "
            f"characters in {_minutes(f['seconds'])})"
        )
    elif kind == "failed":
        con.print(f"{t}: failed: {f['error']}")
    elif kind == "workers":
        con.print(f"{t} {f['jobs']} workers, {f['threads']} thread(s) each")
    elif kind == "worker-died":
        con.print(f"{t} worker {f['pid']} was killed (signal {f['signal']}); starting another")


def _sweep_summary(con, res, sw):
    states = [r["state"] for r in res["trials"]]
    done = sum(s in ("complete", "pruned", "failed") for s in states)
    parts = [
        f"{states.count(s)} {s}"
        for s in ("complete", "pruned", "failed", "interrupted", "running")
        if s in states
    ]
    line = (
        f"charrnn: study {res['study']}: {done} of {sw.trials} trials finished"
        f"{' (' + ', '.join(parts) + ')' if parts else ''}"
    )
    if res["best"]:
        b = res["best"]
        line += f"; best: trial {b['number']}, val {fmt(b['value'])}: charrnn sample -c {_rel(b['run_dir'])}"
    con.print(line + f"; the table: charrnn sweep show {sw.sweep_dir}")


def _rel(path):
    if path is None:
        return "-"
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    except ValueError:
        return path


def _sweep_table(res):
    """The `sweep show` table: one row per trial, then the best run."""
    names = list(dict.fromkeys(k for r in res["trials"] for k in r["params"]))
    hosts = {r["host"] for r in res["trials"]}
    head = ["trial", "state", *names, "best val", "chars", "time", "run"]
    rows = [
        [
            str(r["number"]),
            r["state"],
            *(_short_value(r["params"].get(k, "-")) for k in names),
            fmt(r["best_val"]),
            _chars(r["chars"]),
            _minutes(r["seconds"]),
            (f"{r['host']}:" if len(hosts) > 1 else "") + _rel(r["run_dir"]),
        ]
        for r in res["trials"]
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    left = {1, len(head) - 1} | {2 + i for i, k in enumerate(names) if k in ("cell", "schedule")}
    lines = [
        "  ".join(
            x.ljust(w) if i in left else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in [head, *rows]
    ]
    lines += [
        f"trial {r['number']} failed: {r['error']}"
        for r in res["trials"]
        if r["error"] and r["state"] == "failed"
    ]
    b = res["best"]
    lines.append(
        f"best: trial {b['number']}, val {fmt(b['value'])}, {_rel(b['run_dir'])}"
        if b
        else "best: none yet (no complete trial)"
    )
    return lines
