"""Compiling the kernels a command will call before it calls them, in named groups, on both
cores, with a report after each group.

Numba compiles a kernel the first time a process calls it (seconds each; tens of seconds for a
training) and keeps it in its cache on disk, after which loading it takes milliseconds. A
command asks for a Plan: the groups it needs now, those it can hand to a second process (which
compiles them on the other core into the same cache meanwhile), and those a later command will
want (the sampling kernels after a training), which the second process compiles after the
others without the command waiting for them. That process is a session of its own: it finishes
its work and leaves it in the cache even when the command has ended first, so no compile is
thrown away. Each group compiles under engine.compiling.exclusive, so two charrnn processes
never compile the same group side by side: the second waits and loads the first's.

Only the groups a run needs compile: its cell, its precision, its dtype. A group runs the
kernels once on a tiny model (their code depends on dtypes and array ranks, not sizes).

    python -m charrnn.warm lstm float32 fp32 backward optimizer ...   # the second process
"""

import os
import subprocess
import sys
import threading
from typing import Callable, NamedTuple, Optional

import numpy as np

from .engine import compiling, kernels, sampler, threads
from .engine.groups import GROUPS


def run(name, cell="lstm", dtype=np.float32, precision="fp32"):
    """Compile (or load) one group under its lock; returns how many kernels it compiled."""
    key = f"{name}-{cell}-{np.dtype(dtype).name}-{precision}-{_cache_id()}"
    before = compiling.compiled()
    with compiling.exclusive(key):
        GROUPS[name](cell, np.dtype(dtype), precision)
    return compiling.compiled() - before


def _cache_id():
    """Names the cache the kernels go to: NUMBA_CACHE_DIR, else this package's own directory
    (Numba caches beside the source), so that two checkouts' processes do not wait for each other."""
    import zlib

    where = os.environ.get("NUMBA_CACHE_DIR") or os.path.dirname(os.path.abspath(__file__))
    return format(zlib.crc32(where.encode()), "x")


class Plan(NamedTuple):
    here: tuple  # groups this process compiles, in order
    there: tuple = ()  # groups a second process compiles meanwhile; the command waits for them
    later: tuple = ()  # groups the second process compiles after those once release() is called
    # (or this process has ended); nobody waits for them


PLANS = {
    # a training: its two passes on the two cores, then the sampling and scoring kernels for the
    # `charrnn sample` and `charrnn eval` that follow it, on the second core while it trains
    "train": Plan(("forward", "evaluate", "optimizer"), ("backward",), ("sample", "split")),
    # with bf16 products: its windows' two passes, one on each core (the backward, the longer,
    # here: 11.4 s against the forward's 8.7 s and the second process's start; Adam's step,
    # 0.6 s, there after the forward, which it still ends first), then the float32 kernels of
    # its evaluations (run.prepare's `evaluations`: the first one waits for them if it must)
    # and of the sampling beside the training
    "train-bf16": Plan(
        ("backward_bf16",), ("forward_bf16", "optimizer"), ("forward", "evaluate", "sample", "split")
    ),
    "eval": Plan(("forward", "evaluate")),
    "sample": Plan(("sample",)),
}


class Report(NamedTuple):
    done: int  # groups ready of those to compile
    total: int  # groups to compile that the command waits for (0: all were in the cache)
    name: Optional[str]  # the group just ready (None: the first report, before any)
    processes: int = 1  # compiling them: this one, or this one and a second


def prepare(
    command,
    cell="lstm",
    dtype=np.float32,
    precision="fp32",
    report: Optional[Callable[[Report], None]] = None,
    background=True,
):
    """Make the kernels of `command`'s Plan ready and return how many groups had to be
    compiled. Groups already in Numba's cache are loaded; of the others, this process compiles
    its own while a second process compiles the rest (with background and more than one core).
    report(r) hears first what is to compile (when anything is), then of each group as it
    gets ready."""
    plan = PLANS[command]
    report = report or (lambda r: None)
    args = (cell, np.dtype(dtype), precision)
    missing = [g for g in plan.here + plan.there + plan.later if not compiling.cached(GROUPS[g], *args)]
    waited = [g for g in plan.here + plan.there if g in missing]
    if not missing:
        return 0
    state = {"done": 0}
    lock = threading.Lock()

    def ready(name):
        with lock:
            state["done"] += 1
            report(Report(state["done"], len(waited), name))

    helper = None
    now = [g for g in plan.there if g in missing]
    then = [g for g in plan.later if g in missing]
    if background and (now or then) and _cores() > 1:
        helper = Helper(now + (["--then"] + then if then else []), args, ready, waited=now)
    if waited:
        report(Report(0, len(waited), None, 1 + (helper is not None and helper.proc is not None)))
    for g in plan.here:
        if g in missing:
            run(g, *args)
            ready(g)
    if helper is not None:
        helper.wait()
    for g in plan.there:  # load what the helper compiled (or, if it failed, compile it here)
        if g in missing:
            run(g, *args)
            if helper is None or helper.failed(g):
                ready(g)
    return len(waited)  # on one core, what a later command wants compiles when it is wanted


def evaluations(cell, dtype):
    """Before a bf16 training's first evaluation (run.prepare's `evaluations`): its float32
    kernels, which the second process compiles beside the first steps (the train-bf16 plan),
    waited for or loaded (or compiled here, when that process failed or has not reached them)."""
    prepare("eval", cell, dtype, background=False)


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Helper:
    """The second process: `python -m charrnn.warm` over the missing groups, in a session of
    its own (it outlives this process and Ctrl-C here), telling which are done on its stdout.
    ready(name) is called for each of `waited` from a reader thread."""

    def __init__(self, groups, args, ready, waited):
        cell, dtype, precision = args
        self.waited, self.ready = set(waited), ready
        self.done, self.gone = {}, threading.Event()
        self.cond = threading.Condition()
        env = dict(os.environ, CHARRNN_THREADS=str(threads.num_threads()))
        cmd = [sys.executable, "-m", "charrnn.warm", cell, dtype.name, precision, *groups]
        self.proc = _background(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE, env=env, text=True)
        if self.proc is None:
            self.gone.set()
            return
        _helpers.append(self)
        threading.Thread(target=self._read, name="charrnn-warm-reader", daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            name, _, n = line.strip().partition(" ")
            with self.cond:
                self.done[name] = int(n or 0)
                self.cond.notify_all()
            if name in self.waited:
                self.ready(name)
        with self.cond:
            self.gone.set()
            self.cond.notify_all()

    def wait(self):
        """Until every waited-for group is done, or the process has ended."""
        with self.cond:
            while not self.gone.is_set() and not self.waited <= set(self.done):
                self.cond.wait(0.5)

    def failed(self, name):
        return name not in self.done

    def release(self):
        """Let it go on to the later groups (it waits at --then until this, or this process's
        end, closes its standard input)."""
        try:
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass


_helpers = []  # the Helpers started, for release()


def release():
    """Let the second processes go on to the groups a later command will want: the command has
    done what must not share the cores with them (sizing measures the training rate)."""
    while _helpers:
        _helpers.pop().release()


def start_background(groups, cell, dtype, precision="fp32"):
    """Compile groups in a second process of their own, and return at once; the returned
    process's wait() says when they are in the cache (None: it could not be started)."""
    return _background([sys.executable, "-m", "charrnn.warm", cell, np.dtype(dtype).name, precision, *groups])


# Groups share much of their compiled code (kernels they both call): evaluate compiles nothing
# after forward, and backward, sample, split after sample, and a narrow precision's sample after
# float32's each compile a fraction of what they would alone (docs/benchmarks.md). So groups that
# share their code compile in one process one after the other (a job), and a job that reuses
# another's comes after it in the order, so that what it reuses is most often in the cache by
# then. Nobody waits for it: a core waiting for another's job was slower than one compiling a
# little of it again.
JOB_OF = {"forward": "forward", "evaluate": "forward", "backward": "backward", "optimizer": "backward"}
JOB_OF.update(sample="sample", split="sample", forward_bf16="forward_bf16", backward_bf16="backward_bf16")
# about the CPU seconds of each group after what it reuses, to take the costly jobs first
COST = {"forward": 15.0, "evaluate": 0.0, "backward": 9.0, "optimizer": 0.5, "sample": 9.0, "split": 8.0}
COST.update(forward_bf16=20.0, backward_bf16=20.0)


class Job(NamedTuple):
    key: tuple  # (first group, cell, dtype name, precision)
    groups: tuple  # compiled in this order in one process
    after: Optional[tuple]  # the key of the job whose code this one reuses (taken before it)


def jobs(items):
    """(group, cell, dtype, precision) items as Jobs, in the order to take them: the jobs
    others reuse first, the most costly first within a level."""
    by_key = {}
    for g, cell, dtype, precision in items:
        key = (JOB_OF[g], cell, np.dtype(dtype).name, precision)
        by_key.setdefault(key, []).append(g)
    order = list(GROUPS)
    out = []
    for key, groups in by_key.items():
        job, cell, dtype, precision = key
        if precision != "fp32":  # the narrow formats reuse fp32's sampler
            wanted = [("sample", cell, dtype, "fp32"), ("forward", cell, dtype, "fp32")]
        else:
            wanted = [] if job == "forward" else [("forward", cell, dtype, precision)]
        after = next((k for k in wanted if k in by_key), None)
        out.append(Job(key, tuple(sorted(groups, key=order.index)), after))
    level = lambda j: 0 if j.after is None else 1 + level(next(i for i in out if i.key == j.after))
    return sorted(out, key=lambda j: (level(j), -sum(COST[g] for g in j.groups)))


def _claim(key):
    return "job-" + "-".join(key) + "-" + _cache_id()


def take_turns(todo, load=True):
    """Compile the Jobs todo that no other process has taken, in order, then (with load) load
    those that others compiled, waiting for them: any number of processes can share a list this
    way, each taking the next job nobody holds, and none compiles a job another is compiling."""
    for job in todo:
        with compiling.exclusive(_claim(job.key), wait=False) as mine:
            if mine:
                for g in job.groups:
                    run(g, *job.key[1:])
    for job in todo if load else ():
        with compiling.exclusive(_claim(job.key)):
            for g in job.groups:
                run(g, *job.key[1:])


def prepare_many(items, helper=True):
    """Compile (or load) many (group, cell, dtype, precision) items at once (a test session's
    start, tests/conftest.py), taking turns with a second process when helper is set and there
    is a second core, or with whatever other processes call this on the same items (the test
    session's workers); returns the items that had to be compiled."""
    missing = [it for it in items if not compiling.cached(GROUPS[it[0]], *it[1:])]
    todo = jobs(missing)
    proc = None
    if helper and len(todo) > 1 and _cores() > 1:
        tokens = [f"{g}:{c}:{np.dtype(d).name}:{p}" for g, c, d, p in missing]
        proc = _background([sys.executable, "-m", "charrnn.warm", "--items", *tokens])
    take_turns(todo)
    if proc is not None:
        proc.wait()  # it has ended (or is ending): take_turns waited for its jobs
    return missing


def _background(cmd, **kw):
    """cmd in a session of its own (it outlives this process and its Ctrl-C), its streams
    closed unless kw opens them; None when it cannot be started."""
    streams = dict(stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return subprocess.Popen(cmd, start_new_session=True, **{**streams, **kw})
    except OSError:
        return None


_running = {}  # (group, cell, dtype, precision): the process compiling it for this one


def _compile_elsewhere(group, model, precision):
    """engine.sampler's hook: compile a group for this model in a second process (one per
    group at a time, whatever asks for it meanwhile); True once it is in the cache (False:
    the process could not be started or failed)."""
    cell = {v: k for k, v in kernels.CELLS.items()}[model.cell]
    key = (group, cell, model.dtype.name, precision)
    with _lock:
        proc = _running.get(key)
        if proc is None or proc.poll() not in (None, 0):
            proc = _running[key] = start_background([group], cell, model.dtype, precision)
    return proc is not None and proc.wait() == 0


_lock = threading.Lock()


sampler.compile_elsewhere = _compile_elsewhere


def main(argv):
    if argv[:1] == ["--items"]:  # group:cell:dtype:precision ... (prepare_many)
        take_turns(jobs(tuple(t.split(":")) for t in argv[1:]), load=False)
        return
    cell, dtype, precision, *groups = argv  # ... [--then group ...] (Helper, start_background)
    items = [(g, cell, dtype, precision) for g in groups]
    for g, cell, dtype, precision in items:
        if g == "--then":  # wait for release(), or the end of the command
            sys.stdin.read()
            continue
        n = run(g, cell, np.dtype(dtype), precision)
        try:  # the protocol with Helper, on a pipe: a line per group done
            sys.stdout.write(f"{g} {n}\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError):  # the command has ended: go on, for the cache
            sys.stdout = open(os.devnull, "w")


if __name__ == "__main__":
    main(sys.argv[1:])
