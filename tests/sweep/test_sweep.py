"""Sweeps on Optuna: the search space, trials as run directories, the shared journal storage,
failures, interruption and continuation, the results table, and a real PostgreSQL server."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from charrnn.sweep import study as sweep, space as sweep_space, trials  # noqa: E402
from charrnn.errors import ConfigError  # noqa: E402
from conftest import invoke  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY_SPACE = 'cell = "lstm"\nlayers = 1\nhidden = [8, 16]\nbatch = 8\nseq = 16\n'


def ok(result):
    assert result.exit_code == 0, (result.stderr, result.exc_info)
    return result


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(TINY_SPACE)
    return path


def cli(*args):
    """`charrnn ARGS` in a process of its own (from the source tree)."""
    return [sys.executable, "-m", "charrnn", *map(str, args)]


def child_env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def show(sweep_dir, *extra):
    return json.loads(ok(invoke("sweep", "show", sweep_dir, "--json", *extra)).stdout)


def evals_in(run_dir):
    rows = [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind", "eval") == "eval"]  # not the training-loss rows


# ------------------------------------------------------------------------------------ the space


def test_space_forms(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'cell = "gru"\nhidden = [128, 512]\nlayers = {choices = [1, 3]}\n'
        "lr = {low = 1e-3, high = 1e-2, log = true}\nseq = [50, 100, 150]\n"
        "dropout = {low = 0, high = 0.3, step = 0.1}\ngrad_clip = 1\n"
    )
    s = sweep_space.build(sweep_space.load(path))
    assert s["cell"] == {"fixed": "gru"}
    assert s["hidden"] == {"low": 128, "high": 512, "log": True, "step": None}  # log by default
    assert s["layers"] == {"choices": [1, 3]}
    assert s["lr"] == {"low": 1e-3, "high": 1e-2, "log": True, "step": None}
    assert s["seq"] == {"choices": [50, 100, 150]}
    assert s["dropout"] == {"low": 0.0, "high": 0.3, "log": False, "step": 0.1}
    assert s["grad_clip"] == {"fixed": 1.0}
    assert s["batch"] == sweep_space.normalize("batch", sweep_space.DEFAULT["batch"])  # untouched
    js = tmp_path / "s.json"
    js.write_text(json.dumps({"cell": ["lstm", "gru"], "hidden": 64}))
    s = sweep_space.build(sweep_space.load(js))
    assert s["cell"] == {"choices": ["lstm", "gru"]} and s["hidden"] == {"fixed": 64}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("width = 3", "does not know"),
        ("hidden = [512, 128]", "above high"),
        ('cell = "lstn"', "not one of lstm, gru, rnn"),
        ("cell = {low = 1, high = 2}", "not a range"),
        ("lr = {low = 0, high = 1e-2, log = true}", "above 0"),
        ("layers = [1.5, 3]", "whole numbers"),
        ("dropout = 1.5", "outside [0, 1)"),
        ("hidden = {choices = []}", "non-empty"),
        ("hidden = {low = 8}", "a range is"),
        ("hidden = [", "not valid TOML"),
    ],
)
def test_space_errors(tmp_path, text, fragment):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        sweep_space.build(sweep_space.load(path))
    assert fragment in str(e.value)


def test_suggest_gives_fixed_values_and_stays_in_ranges():
    s = sweep_space.build(
        {"cell": "gru", "hidden": [8, 16], "lr": {"low": 1e-3, "high": 2e-3}, "layers": {"choices": [1, 3]}}
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        p = sweep_space.suggest(study.ask(), s)
        assert p["cell"] == "gru" and 8 <= p["hidden"] <= 16 and 1e-3 <= p["lr"] <= 2e-3
        assert p["layers"] in (1, 3) and isinstance(p["hidden"], int)


# ------------------------------------------------------------------------------- a whole sweep


def test_sweep_of_three_trials(tmp_path, corpus_file, space):
    out = tmp_path / "sw"
    r = ok(
        invoke(
            "sweep",
            "run",
            corpus_file,
            "--trials",
            3,
            "--steps",
            40,
            "--space",
            space,
            "-o",
            out,
            "--no-prune",
        )
    )
    assert r.stdout == ""  # progress goes to stderr
    assert "trial 2: complete" in r.stderr and "3 of 3 trials finished" in r.stderr
    res = show(out)
    assert [t["state"] for t in res["trials"]] == ["complete"] * 3
    for t in res["trials"]:
        assert Path(t["run_dir"]) == (out / f"trial-{t['number']:04d}").resolve()
        assert [e["step"] for e in evals_in(t["run_dir"])] == [10, 20, 30, 40]  # --evals 4
        assert t["params"]["cell"] == "lstm" and 8 <= t["params"]["hidden"] <= 16
        assert t["chars"] == 40 * 8 * 16 and t["value"] == t["best_val"]
        assert t["value"] == min(e["val_loss"] for e in evals_in(t["run_dir"]))
    best = min(res["trials"], key=lambda t: t["value"])
    assert res["best"]["number"] == best["number"]
    text = ok(invoke("sample", "-c", best["run_dir"], "-n", 30, "--seed", 1)).stdout
    assert len(text) == 30 and set(text) <= set("abcd \n")
    # the table names every trial, its parameters and the best run
    table = ok(invoke("sweep", "show", out)).stdout.splitlines()
    assert table[0].split()[:4] == ["trial", "state", "cell", "layers"]
    assert [ln.split()[:2] for ln in table[1:4]] == [[str(i), "complete"] for i in range(3)]
    assert table[-1].startswith(f"best: trial {best['number']}, val {best['value']:.4f}")
    # rerunning the same command finds the study finished and runs nothing
    r = ok(
        invoke(
            "sweep",
            "run",
            corpus_file,
            "--trials",
            3,
            "--steps",
            40,
            "--space",
            space,
            "-o",
            out,
            "--no-prune",
        )
    )
    assert "trial 3" not in r.stderr and len(show(out)["trials"]) == 3
    # ... and --trials counts the total: raising it runs only the missing ones
    ok(
        invoke(
            "sweep",
            "run",
            corpus_file,
            "--trials",
            4,
            "--steps",
            40,
            "--space",
            space,
            "-o",
            out,
            "--no-prune",
        )
    )
    assert [t["number"] for t in show(out)["trials"]] == [0, 1, 2, 3]


def test_same_seed_same_proposals(tmp_path, corpus_file, space):
    for name in ("a", "b"):
        ok(
            invoke(
                "sweep",
                "run",
                corpus_file,
                "--trials",
                4,
                "--steps",
                8,
                "--space",
                space,
                "-o",
                tmp_path / name,
                "-q",
            )
        )
    a, b = (show(tmp_path / n)["trials"] for n in ("a", "b"))
    assert [t["params"] for t in a] == [t["params"] for t in b]
    assert len({json.dumps(t["params"]) for t in a}) == 4


def test_rerun_with_other_settings_is_an_error(tmp_path, corpus_file, space):
    out = tmp_path / "sw"
    ok(invoke("sweep", "run", corpus_file, "--trials", 1, "--steps", 8, "--space", space, "-o", out))
    r = invoke("sweep", "run", corpus_file, "--trials", 2, "--steps", 9, "--space", space, "-o", out)
    assert r.exit_code == 1 and r.stderr.startswith("charrnn: error: ")
    assert "steps 8 there, 9 here" in r.stderr and len(r.stderr.splitlines()) == 1
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text()[::-1])
    r = invoke("sweep", "run", other, "--trials", 2, "--steps", 8, "--space", space, "-o", out)
    assert r.exit_code == 1 and "a different text" in r.stderr


def test_usage_errors(tmp_path, corpus_file):
    r = invoke("sweep", "run", corpus_file, "--trials", 2)
    assert r.exit_code == 1 and "--minutes M or --steps N" in r.stderr
    r = invoke("sweep", "show", tmp_path)
    assert r.exit_code == 1 and "holds no sweep" in r.stderr
    assert invoke("sweep").exit_code == 2
    assert invoke("sweep", "run", corpus_file, "--show", tmp_path).exit_code == 2
    r = invoke("sweep", "run", tmp_path / "missing.txt", "--steps", 5, "-o", tmp_path / "x")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert "Usage:" in ok(invoke("sweep", "--help")).stdout


def test_the_old_spellings_still_work_with_a_note(tmp_path, corpus_file):
    """`sweep CORPUS` is `sweep run CORPUS`, `sweep --show DIR` is `sweep show DIR`."""
    r = invoke("sweep", corpus_file, "--trials", 2)
    assert r.exit_code == 1 and "--minutes M or --steps N" in r.stderr
    assert r.stderr.splitlines()[0] == (
        "charrnn: note: `charrnn sweep CORPUS` is now `charrnn "
        "sweep run CORPUS`; the old spelling still works in this "
        "release"
    )
    r = invoke("sweep", "--show", tmp_path, "--json")
    assert r.exit_code == 1 and "holds no sweep" in r.stderr
    assert "`charrnn sweep --show ARG` is now `charrnn sweep show ARG`" in r.stderr
    assert invoke("sweep", corpus_file, "--show", tmp_path).exit_code == 2


# --------------------------------------------------------------------------- failures, pruning


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, corpus_file):
    space = tmp_path / "space.toml"  # a batch of 1000 x 16 is longer than the 5,400-char text
    space.write_text(TINY_SPACE.replace("batch = 8", "batch = {choices = [8, 1000]}"))
    out = tmp_path / "sw"
    r = ok(
        invoke(
            "sweep",
            "run",
            corpus_file,
            "--trials",
            5,
            "--steps",
            8,
            "--space",
            space,
            "-o",
            out,
            "--seed",
            3,
            "--no-prune",
        )
    )
    trials = show(out)["trials"]
    assert len(trials) == 5
    for t in trials:
        if t["params"]["batch"] == 1000:
            assert t["state"] == "failed" and "shorter than one batch" in t["error"]
        else:
            assert t["state"] == "complete" and t["error"] is None
    failed = [t for t in trials if t["state"] == "failed"]
    assert 0 < len(failed) < 5  # the seed gives both kinds
    assert f"trial {failed[0]['number']}: failed: the training text" in r.stderr
    table = ok(invoke("sweep", "show", out)).stdout
    assert f"trial {failed[0]['number']} failed: the training text" in table


def test_out_of_memory_fails_one_trial(tmp_path, corpus_file, monkeypatch):
    from charrnn.training import run

    real, calls = run.prepare, []

    def prepare(*args, **kwargs):  # the second trial runs out of memory
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError()
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "prepare", prepare)
    sw = sweep.Sweep(
        str(corpus_file),
        tmp_path / "sw",
        trials=3,
        steps=8,
        space=sweep_space.build(sweep_space._toml(TINY_SPACE)),
        prune=False,
    )
    assert trials.run(sw) == "done"
    res = sweep.results(tmp_path / "sw")
    assert [t["state"] for t in res["trials"]] == ["complete", "failed", "complete"]
    assert res["trials"][1]["error"] == "out of memory"


class PruneTrialOne(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number == 1 and max(trial.intermediate_values) >= 2


def test_a_pruned_trial_stops_and_keeps_its_checkpoint(tmp_path, corpus_file):
    sw = sweep.Sweep(
        str(corpus_file),
        tmp_path / "sw",
        trials=3,
        steps=40,
        space=sweep_space.build(sweep_space._toml(TINY_SPACE)),
        prune=False,
    )
    events = []
    assert (
        trials.run(sw, report=lambda kind, **f: events.append((kind, f.get("trial"))), pruner=PruneTrialOne())
        == "done"
    )
    res = sweep.results(tmp_path / "sw")
    assert [t["state"] for t in res["trials"]] == ["complete", "pruned", "complete"]
    pruned = res["trials"][1]
    assert [e["step"] for e in evals_in(pruned["run_dir"])] == [10, 20]  # stopped at half
    assert pruned["chars"] == 20 * 8 * 16 and ("pruned", 1) in events
    st = optuna.load_study(study_name="sw", storage=sweep.open_storage(tmp_path / "sw"))
    assert st.trials[1].intermediate_values == {
        1: evals_in(pruned["run_dir"])[0]["val_loss"],
        2: evals_in(pruned["run_dir"])[1]["val_loss"],
    }
    ok(invoke("sample", "-c", pruned["run_dir"], "-n", 10))


def next_eval(t):
    n = t.cfg.eval_every
    return (t.step // n + 1) * n


def test_a_time_budget_spreads_the_evaluations_over_it():
    """With --minutes, the trainer's eval_every is aimed from the timed steps at the next
    quarter of the budget (1 minute, 4 evaluations: 15, 30, 45 s), and past its end after
    the last quarter."""
    from types import SimpleNamespace
    from charrnn.training.trainer import TrainConfig

    sw = sweep.Sweep("x", Path("sw"), minutes=1, evals=4)
    t = SimpleNamespace(step=1, elapsed=0.7, cfg=TrainConfig(eval_every=trials.NEVER))
    st = {"t1": None}
    trials._schedule(t, st, sw)
    assert st["t1"] == 0.7 and t.cfg.eval_every == trials.NEVER
    t.step, t.elapsed = 3, 0.9  # too little time to trust
    trials._schedule(t, st, sw)
    assert t.cfg.eval_every == trials.NEVER
    t.step, t.elapsed = 11, 1.7  # 0.1 s a step: 133 more steps to 15 s
    trials._schedule(t, st, sw)
    assert abs(next_eval(t) - 144) <= 133 // 20
    t.step, t.elapsed = 144, 16.0  # evaluated, 1 s late; now at 0.2 s a step: 70 to 30 s
    trials._aim(t, sw, 0.2)
    assert abs(next_eval(t) - 214) <= 70 // 20
    t.step, t.elapsed = 428, 46.0  # past the last quarter: the next one is beyond the end
    trials._aim(t, sw, 0.2)
    assert next_eval(t) > 428 + 14 / 0.2


@pytest.mark.parametrize("step, ahead", [(0, 1), (0, 150), (7, 14), (144, 70), (1000, 3), (12345, 997)])
def test_interval_hits_the_step_aimed_at(step, ahead):
    n = trials._interval(step, ahead)
    assert abs((step // n + 1) * n - step - ahead) <= ahead // 20
    assert n <= 2 * ahead or n == step + ahead


# ------------------------------------------------------------- interruption and continuation


def test_interrupting_and_rerunning_continues_the_study(tmp_path, corpus_file):
    sw = sweep.Sweep(
        str(corpus_file),
        tmp_path / "sw",
        trials=3,
        steps=40,
        space=sweep_space.build(sweep_space._toml(TINY_SPACE)),
        prune=False,
    )
    seen = []

    def report(kind, **f):
        seen.append((kind, f.get("trial"), f.get("step")))

    stop = lambda: ("eval", 1, 20) in seen  # noqa: E731  Ctrl-C in trial 1, after step 20
    assert trials.run(sw, stop, report) == "interrupted"
    res = sweep.results(tmp_path / "sw")
    assert [t["state"] for t in res["trials"]] == ["complete", "interrupted"]
    cut = res["trials"][1]
    assert (Path(cut["run_dir"]) / "latest.npz").is_file() and cut["chars"] == 20 * 8 * 16
    assert trials.run(sw, report=report) == "done"  # the same sweep again
    res = sweep.results(tmp_path / "sw")
    assert [t["state"] for t in res["trials"]] == [
        "complete",
        "interrupted",
        "complete",
        "complete",
    ]  # 3 count; 1 is replaced
    assert [t["number"] for t in res["trials"]] == [0, 1, 2, 3]


def test_ctrl_c_saves_marks_and_exits_130(tmp_path, corpus_file, space):
    out = tmp_path / "sw"
    p = subprocess.Popen(
        cli(
            "sweep",
            "run",
            corpus_file,
            "--trials",
            2,
            "--minutes",
            1,
            "--space",
            space,
            "-o",
            out,
            "--evals",
            60,
        ),
        cwd=ROOT,
        env=child_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in p.stderr:  # training has begun: the first evaluation (after about a second)
        if line.startswith("charrnn: trial 0: step"):
            break
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    assert p.wait(timeout=60) == 130, rest
    assert "trial 0: interrupted; its checkpoint is kept" in rest
    (t,) = show(out)["trials"]
    assert t["state"] == "interrupted" and (Path(t["run_dir"]) / "latest.npz").is_file()
    assert 0 < t["seconds"] < 30


# ---------------------------------------------------------------------- workers sharing a study


def check_total(out, total):
    """Exactly `total` trials counted, each trained once in its own directory."""
    res = sweep.results(out)
    trials = res["trials"]
    assert [t["state"] for t in trials] == ["complete"] * total
    assert sorted(t["number"] for t in trials) == list(range(total))
    dirs = sorted(p.name for p in Path(out).glob("trial-*"))
    assert dirs == [f"trial-{i:04d}" for i in range(total)]
    for t in trials:
        assert [e["step"] for e in evals_in(t["run_dir"])] == [5, 10, 15, 20]  # once, not twice
    return trials


def test_two_processes_share_the_journal(tmp_path, corpus_file, space):
    out = tmp_path / "sw"
    cmd = cli(
        "sweep",
        "run",
        corpus_file,
        "--trials",
        5,
        "--steps",
        20,
        "--space",
        space,
        "-o",
        out,
        "-q",
        "--no-prune",
    )
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    trials = check_total(out, 5)
    assert len({t["pid"] for t in _attrs(out)}) == 2  # both did some of the work
    assert len({json.dumps(t["params"]) for t in trials}) == 5


def _attrs(out):
    st = optuna.load_study(study_name=Path(out).name, storage=sweep.open_storage(out))
    return [t.user_attrs for t in st.trials if sweep.state_of(t) == "complete"]


def test_jobs_run_trials_at_once_with_a_share_of_the_cores(tmp_path, corpus_file, space):
    out = tmp_path / "sw"
    r = subprocess.run(
        cli(
            "sweep",
            "run",
            corpus_file,
            "--trials",
            4,
            "--steps",
            20,
            "--space",
            space,
            "-o",
            out,
            "--jobs",
            2,
            "--no-prune",
        ),
        cwd=ROOT,
        env=dict(child_env(), CHARRNN_THREADS="4"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "2 workers, 2 thread(s) each" in r.stderr and "4 of 4 trials finished" in r.stderr
    check_total(out, 4)
    assert {a["threads"] for a in _attrs(out)} == {2}
    assert len({a["pid"] for a in _attrs(out)}) >= 2


def test_ctrl_c_stops_every_worker(tmp_path, corpus_file, space):
    out = tmp_path / "sw"
    p = subprocess.Popen(
        cli(
            "sweep",
            "run",
            corpus_file,
            "--trials",
            4,
            "--minutes",
            1,
            "--space",
            space,
            "-o",
            out,
            "--evals",
            60,
            "--jobs",
            2,
        ),
        cwd=ROOT,
        env=child_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    started = set()
    for line in p.stderr:  # both workers are training
        if ": step " in line:
            started.add(line.split(":")[1])
            if len(started) == 2:
                break
    p.send_signal(signal.SIGINT)  # the terminal's Ctrl-C reaches the parent only
    rest = p.stderr.read()
    assert p.wait(timeout=60) == 130, rest
    trials = show(out)["trials"]
    assert [t["state"] for t in trials] == ["interrupted"] * 2
    assert all((Path(t["run_dir"]) / "latest.npz").is_file() for t in trials)


def test_a_killed_worker_is_marked_failed_by_the_next(tmp_path, corpus_file, space):
    out = tmp_path / "sw"
    cmd = cli("sweep", "run", corpus_file, "--trials", 2, "--minutes", 1, "--space", space, "-o", out)
    p = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if line.startswith("charrnn: trial 0:"):
            break
    p.kill()  # as the out-of-memory killer would
    p.wait()
    assert show(out)["trials"][0]["state"] == "died"
    st = optuna.load_study(study_name="sw", storage=sweep.open_storage(out))
    sweep.fail_dead(st)
    (t,) = show(out)["trials"]
    assert t["state"] == "failed" and "ended while training" in t["error"]


# ------------------------------------------------------------------------------------ PostgreSQL

PG_BIN = Path("/usr/lib/postgresql")


def _pg_tool(name):
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(PG_BIN.glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A PostgreSQL server of the test's own in a temporary directory (about 4 s to start);
    skipped when the server's programs or the driver are not installed."""
    import importlib.util

    if not any(importlib.util.find_spec(m) for m in ("psycopg", "psycopg2")):
        pytest.skip("no PostgreSQL driver: pip install 'psycopg[binary]'")
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    base = Path(tempfile.mkdtemp(prefix="charrnn-pg-"))  # not under pytest's private tmp
    run_as = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server")
        shutil.chown(base, "postgres")
        runuser = shutil.which("runuser") or next(
            (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)), None
        )
        if runuser is None:  # a PATH without sbin, or a system without util-linux's runuser
            pytest.skip("running as root and no runuser to start the server as postgres")
        run_as = [runuser, "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = base / "data"
    subprocess.run(
        [*run_as, initdb, "-D", data, "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            data,
            "-l",
            base / "log",
            "-w",
            "start",
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
        ],
        check=True,
        capture_output=True,
    )
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*run_as, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def test_two_machines_share_a_postgresql_study(tmp_path, corpus_file, space, postgres):
    """Two workers with sweep directories of their own (two machines) and one database."""
    dirs = [tmp_path / "a" / "sw", tmp_path / "b" / "sw"]
    procs = [
        subprocess.Popen(
            cli(
                "sweep",
                "run",
                corpus_file,
                "--trials",
                4,
                "--steps",
                20,
                "--space",
                space,
                "-o",
                d,
                "--storage",
                postgres,
                "-q",
                "--no-prune",
            ),
            cwd=ROOT,
            env=child_env(),
            stderr=subprocess.PIPE,
        )
        for d in dirs
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    res = show(dirs[0])  # sweep.json says where the study is
    assert res["storage"] == postgres
    trials = res["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 4
    assert sorted(t["number"] for t in trials) == [0, 1, 2, 3]
    made = sorted((d.parent.name, p.name) for d in dirs for p in d.glob("trial-*"))
    assert len(made) == 4 and len({name for _, name in made}) == 4  # each trial once
    assert show(dirs[1])["trials"] == trials
    r = invoke(
        "sweep", "show", tmp_path / "a" / "sw", "--storage", postgres.replace("/postgres", "/nosuchdb")
    )
    assert r.exit_code == 1 and "cannot open the storage" in r.stderr
