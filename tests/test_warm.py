"""Compiling ahead (warm.py, engine/compiling.py): a command's plan covers every kernel it calls,
a kernel missing from the cache is found without compiling it, and what a command says while it
compiles."""

import io
import subprocess
import sys
import textwrap
import uuid

import numba
import numpy as np
import pytest
from rich.console import Console

from charrnn import warm
from charrnn.cli.progress import Compiling
from charrnn.engine import bgemm
from charrnn.engine import compiling


def test_cache_only_refuses_to_compile_and_says_which():
    @numba.njit  # never cached, never called: inside cache_only it cannot load
    def twice(x):
        return 2 * x

    with pytest.raises(compiling.NotCached, match="twice"):
        with compiling.cache_only():
            twice(1)
    assert not compiling.cached(twice, 1)
    before = compiling.compiled()
    assert twice(2) == 4  # outside, it compiles as usual, and is counted
    assert compiling.compiled() == before + 1
    assert compiling.cached(twice, 3)  # now in this process: no compile needed


def test_cache_only_is_this_threads_alone():
    import threading

    @numba.njit
    def thrice(x):
        return 3 * x

    out = []
    with compiling.cache_only():
        t = threading.Thread(target=lambda: out.append(thrice(1)))
        t.start()
        t.join()
    assert out == [3]


# Each command's plan, then the command's own calls at tiny sizes on two threads: every kernel
# signature the command calls must be one the plan made ready (a kernel left out would compile
# on a first run after the progress said it was done). Exact whatever the cache holds: it
# compares the dispatchers' signatures in one fresh process.
COVERAGE = textwrap.dedent(
    """
    import sys, numpy as np, numba
    from numba.core.registry import CPUDispatcher
    import charrnn
    from charrnn import warm
    from charrnn.engine import amx, bgemm, gemm, kernels, optim, qgemm, repetition, sample_kernels, sampler
    from charrnn.config import ModelConfig

    def signatures():
        mods = (gemm, kernels, optim, qgemm, repetition, sample_kernels, bgemm, amx)
        return {(m.__name__, n, s) for m in mods for n, d in vars(m).items()
                if isinstance(d, CPUDispatcher) for s in d.signatures}

    command, cell, corpus, out = sys.argv[1:]
    warm.prepare(command, cell, np.float32, background=False)
    if command == "train-bf16":  # its first steps wait for here and there only, not later
        from charrnn.training import run
        for g in warm.PLANS[command].there:
            warm.run(g, cell, np.float32)
        ready = signatures()
        t = run.prepare(corpus, out + "-steps", cell=cell, layers=2, hidden=32, batch=4, seq=8,
                        steps=3, dropout=0.1, weight_drop=0.1, eval_chars=200, precision="bf16").trainer
        t.train_step()
        t.train_step()
        early = signatures() - ready
        if early:
            print("the first steps called, beyond here and there:", sorted(early))
            sys.exit(1)
    for g in warm.PLANS[command].there + warm.PLANS[command].later:
        warm.run(g, cell, np.float32)
    ready = signatures()
    if command == "train":
        charrnn.train(corpus, out, cell=cell, layers=2, hidden=8, batch=4, seq=8, steps=3,
                      eval_every=2, dropout=0.1, weight_drop=0.1, eval_chars=200)
    if command == "train-bf16":
        charrnn.train(corpus, out, cell=cell, layers=2, hidden=32, batch=4, seq=8, steps=3,
                      eval_every=2, dropout=0.1, weight_drop=0.1, eval_chars=200, precision="bf16")
    m = charrnn.load(out)
    if command == "sample":
        m.sample(300, temp=0.8, seed=1)
        m.sample(30, temp=0.8, seed=1, num_samples=3)
    if command in ("eval", "train", "train-bf16"):
        m.loss(open(corpus).read()[:500])
        m.loss(open(corpus).read()[:500], exact=True)
    new = signatures() - ready
    print(sorted(new))
    sys.exit(1 if new else 0)
    """
)


@pytest.mark.parametrize(
    "command,cell",
    [("train", "lstm"), ("train", "gru"), ("sample", "lstm"), ("eval", "lstm"), ("train-bf16", "lstm")],
)
def test_a_commands_plan_covers_the_kernels_it_calls(tmp_path, corpus_file, command, cell):
    if command == "train-bf16" and not bgemm.available():
        pytest.skip("this CPU has no AVX512-BF16: no bf16 training to plan for")
    out = tmp_path / "run"
    if not command.startswith("train"):  # a model to sample and score
        import charrnn

        charrnn.train(str(corpus_file), str(out), cell=cell, layers=2, hidden=8, batch=4, seq=8, steps=2)
    r = subprocess.run(
        [sys.executable, "-c", COVERAGE, command, cell, str(corpus_file), str(out)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "CHARRNN_THREADS": "2"},
    )
    assert r.returncode == 0, f"kernels the plan left out: {r.stdout}{r.stderr[-2000:]}"


def test_the_plans_name_groups_that_exist():
    for plan in warm.PLANS.values():
        for g in plan.here + plan.there + plan.later:
            assert g in warm.GROUPS


def test_a_lock_taken_elsewhere_is_not_waited_for_when_asked_not_to():
    name = f"test-{uuid.uuid4().hex}"  # of this test's own (workers run the suite side by side)
    with compiling.exclusive(name) as mine:
        assert mine
        with compiling.exclusive(name, wait=False) as other:  # another descriptor: another holder
            assert not other
    with compiling.exclusive(name, wait=False) as again:
        assert again


def test_jobs_keep_groups_that_share_code_together_and_after_what_they_reuse():
    from conftest import AHEAD

    todo = warm.jobs(AHEAD)
    assert sorted((g, *j.key[1:]) for j in todo for g in j.groups) == sorted(AHEAD)
    for j in todo:  # each group with the group it reuses most, in the order of GROUPS
        assert len({warm.JOB_OF[g] for g in j.groups}) == 1
        assert list(j.groups) == [g for g in warm.GROUPS if g in j.groups]
        if j.after is not None:
            assert [i.key for i in todo].index(j.after) < todo.index(j)
    narrow = next(j for j in todo if j.key == ("sample", "lstm", "float32", "bf16"))
    assert narrow.after == ("sample", "lstm", "float32", "fp32")


def test_processes_taking_turns_compile_each_job_once(monkeypatch):
    """Three takers (threads here: each lock is a descriptor of its own, as in processes) share
    the jobs: each group is compiled once, a job's groups by one taker; the others load it (run
    it again, now cached), and every taker ends with every group ready."""
    import threading
    import time

    cache = uuid.uuid4().hex  # lock names of this test's own
    monkeypatch.setattr(warm, "_cache_id", lambda: cache)
    items = [(g, "lstm", dt, "fp32") for dt in ("float32", "float64") for g in warm.GROUPS]
    items += [(g, "lstm", "float32", "int8") for g in ("sample", "split")]
    todo = warm.jobs(items)
    compiled, ran, lock = {}, set(), threading.Lock()

    def fake_run(g, cell, dtype, precision):
        it, who = (g, cell, dtype, precision), threading.current_thread().name
        with lock:
            ran.add((who, it))
            if it in compiled:
                return  # in the cache: loaded
            compiled[it] = who
        time.sleep(0.02)

    monkeypatch.setattr(warm, "run", fake_run)
    takers = [threading.Thread(target=warm.take_turns, args=(todo,), name=f"t{k}") for k in range(3)]
    for t in takers:
        t.start()
    for t in takers:
        t.join()
    assert sorted(compiled) == sorted((g, c, np.dtype(d).name, p) for g, c, d, p in items)
    assert len(set(compiled.values())) > 1  # shared
    for j in todo:
        its = [(g, *j.key[1:]) for g in j.groups]
        assert len({compiled[it] for it in its}) == 1  # one taker compiles a job's groups
    assert ran == {(t.name, it) for t in takers for it in compiled}  # every taker has every group


def report_text(reports, terminal=False, quiet=False):
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=terminal, width=100, highlight=False, soft_wrap=True)
    with Compiling(con, quiet, "; counted in --minutes") as say:
        for r in reports:
            say(r)
    return buf.getvalue()


def test_compile_progress_in_a_pipe_is_a_line_a_group_and_nothing_when_quiet():
    reports = [warm.Report(0, 2, None, 2), warm.Report(1, 2, "forward"), warm.Report(2, 2, "backward")]
    lines = report_text(reports).splitlines()
    assert lines[0].startswith("charrnn: compiling kernels, first run only (2 groups, on two cores;")
    assert lines[0].endswith("counted in --minutes")
    assert lines[1].startswith("charrnn: compiling kernels 1/2: forward ready")
    assert lines[2].startswith("charrnn: compiling kernels 2/2: backward ready")
    assert report_text(reports, quiet=True) == ""
    assert report_text([]) == ""  # all in the cache: not a word


def test_prepare_reports_nothing_when_every_group_is_cached():
    warm.prepare("eval", "lstm", np.float32, background=False)  # compiled (or loaded) once
    said = []
    assert warm.prepare("eval", "lstm", np.float32, report=said.append) == 0
    assert said == []


def test_train_speaks_first_and_refuses_a_short_text_before_compiling(tmp_path, monkeypatch):
    """The first line says what the run will do before the text is read; a text too short for one
    batch is refused before any kernel compiles or the budget is measured, with or without
    --minutes."""
    from typer.testing import CliRunner

    from charrnn.cli import app
    from charrnn.training import sizing

    def never(*a, **k):
        raise AssertionError("compiled or measured before the text was checked")

    monkeypatch.setattr(warm, "prepare", never)
    monkeypatch.setattr(sizing, "measure", never)
    short = tmp_path / "short.txt"
    short.write_text("a few words, not a batch\n" * 8)
    for budget in (["--minutes", "0.1"], ["--steps", "5"]):
        r = CliRunner().invoke(app, ["train", str(short), "-o", str(tmp_path / "r"), *budget])
        lines = r.stderr.splitlines()
        assert r.exit_code == 1, r.stderr
        assert lines[0].startswith(f"charrnn: training on {short} for "), lines
        assert lines[0].endswith(f"run directory {tmp_path / 'r'}"), lines
        assert len(lines) == 2 and "shorter than one batch" in lines[1], lines


def test_the_minutes_count_what_came_before_the_first_step(tmp_path, corpus_file):
    """Compiling and sizing count against --minutes: the trainer's budget holds them, they are
    stored with the run, and a resumed run keeps them."""
    from charrnn.training import run

    out = tmp_path / "r"
    p = run.prepare(str(corpus_file), out, minutes=1.0, hidden=8, layers=1, batch=4, seq=8, seed=1)
    assert p.trainer.budget.setup == 0.0  # the library's callers count no set-up
    p.trainer.budget.setup = 20.0  # as the command line sets it after 20 s of compiling
    before = p.trainer.budget.train_seconds()
    assert before <= 60 - 20
    run.execute(p, should_stop=lambda: p.trainer.step >= 2)  # two steps, then saved
    resumed = run.prepare(resume=out)
    assert resumed.trainer.budget.setup == 20.0
    assert resumed.trainer.budget.train_seconds() <= 60 - 20
