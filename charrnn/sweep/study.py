"""Hyperparameter sweeps on Optuna: a study whose trials are ordinary charrnn runs.

Each trial trains one model for the sweep's budget in its own run directory under the sweep
directory (trial-0007, ...), so `charrnn sample -c SWEEP/trial-0007` works on any of them. Optuna's
TPE sampler proposes the options of the search space (sweep_space), a median pruner stops a trial
whose validation loss lags the earlier trials' at the same fraction of the budget, and the
objective is the trial's best validation loss.

The study lives in Optuna's own storage: by default a journal file in the sweep directory
(JournalStorage over JournalFileBackend, which several processes on one machine or on a shared
file system can append to at once), or any database URL Optuna accepts. `trials` is the study's
total: a worker starts a trial only while fewer than that are finished or running, so rerunning
the command, or running it in several processes or on several machines, completes the study
without running a trial twice. An interrupted trial does not count (a rerun replaces it).

Optuna is imported only here and in trials.py, inside the functions (pip install 'charrnn[sweep]').
"""

import json
import os
import random
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import space as sweep_space
from ..errors import ConfigError, install_hint

# fmt: off
JOURNAL = "study.journal"   # the default storage, in the sweep directory
INFO = "sweep.json"         # where the study is, so `--show DIR` finds it
DEFINITION = "charrnn_sweep"  # the study's user attribute holding what a rerun must agree with
# fmt: on


@dataclass(frozen=True)
class Sweep:
    # fmt: off
    corpus: str                    # a file, directory or corpus name, as `charrnn train` takes
    sweep_dir: Path                # holds sweep.json, the default journal and the trial runs
    trials: int = 20               # the study's total number of finished trials
    minutes: float = 0.0           # each trial's training time (evaluations included) ...
    steps: int = 0                 # ... or its optimizer steps
    space: dict = field(default_factory=sweep_space.build)  # sweep_space.build's form
    evals: int = 4                 # evaluations per trial, at even fractions of the budget
    eval_chars: int = 120_000      # as `charrnn train --eval-chars`
    val_frac: float = 0.1
    seed: int = 1                  # the sampler's seed, and every trial's training seed
    prune: bool = True
    storage: str | None = None     # None: the journal file; a URL; or a journal file's path
    study: str | None = None       # the study's name (default: the sweep directory's name)
    data_dir: str | None = None    # where named corpora are found
    # fmt: on

    @property
    def study_name(self):
        return self.study or Path(self.sweep_dir).resolve().name

    def check(self):
        if self.trials < 1:
            raise ConfigError("--trials must be at least 1")
        if not (self.minutes > 0 or self.steps > 0) or self.minutes < 0 or self.steps < 0:
            raise ConfigError("give each trial a budget: --minutes M or --steps N")
        if self.evals < 1:
            raise ConfigError("--evals must be at least 1")
        if self.corpus == "-":
            raise ConfigError("a sweep reads its text once per trial, so not from stdin; save it to a file")
        return self


def default_dir(corpus):
    """sweeps/<corpus name>: the same command finds the same sweep again."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(corpus).stem or Path(corpus).name)
    return Path("sweeps") / (name.strip("-") or "sweep")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"sweeps need Optuna: {install_hint('sweep')}") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep reports trials itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# -- storage and the study -------------------------------------------------------------------


def public_url(url):
    """A database URL without its password (it belongs in ~/.pgpass or PGPASSWORD)."""
    if url is None or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).set(password=None).render_as_string(hide_password=False)
    except Exception:
        return url


def open_storage(sweep_dir, url=None, heartbeat=True):
    """Optuna storage: the sweep directory's journal file, a journal file at a path, or a
    database URL (RDBStorage; its heartbeat marks trials of dead workers failed)."""
    optuna = _optuna()
    if url is not None and "://" in url:
        url = _with_driver(url)
        beat = dict(heartbeat_interval=60, grace_period=180) if heartbeat else {}
        for attempt in range(4):
            try:
                return optuna.storages.RDBStorage(url, **beat)
            except ImportError as e:
                raise ConfigError(
                    f"the storage {public_url(url)} needs a database driver ({e});"
                    " for PostgreSQL: pip install 'psycopg[binary]'"
                ) from None
            except Exception as e:  # SQLAlchemy's: no server, bad credentials, a bad URL ...
                if attempt < 3 and ("already exists" in str(e) or "duplicate key" in str(e)):
                    # workers starting together on an empty database race to create Optuna's
                    # tables; the loser finds them made a moment later
                    time.sleep(0.5 + random.random())
                    continue
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConfigError(f"cannot open the storage {public_url(url)}: {first}") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(url) if url is not None else Path(sweep_dir) / JOURNAL
    return JournalStorage(JournalFileBackend(str(path)))


def _with_driver(url):
    """postgresql://... with the PostgreSQL driver that is installed: SQLAlchemy 2.1 takes
    psycopg (3) for a bare postgresql://, 2.0 took psycopg2."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}://{rest}"
    raise ConfigError("a PostgreSQL storage needs a driver: pip install 'psycopg[binary]'")


def _definition(sw, data_hash):
    d = {
        "minutes": sw.minutes,
        "steps": sw.steps,
        "space": sw.space,
        "evals": sw.evals,
        "eval_chars": sw.eval_chars,
        "val_frac": sw.val_frac,
        "seed": sw.seed,
        "data": data_hash,
    }
    return json.loads(json.dumps(d))  # as it reads back from storage


def open_study(sw):
    """Create or load the study, check that it was started with the same settings and text,
    and write sweep.json. Returns the study."""
    optuna = _optuna()
    sw.check()
    from ..text import idcache
    from ..training.trainer import data_hash

    ids = idcache.encoded_corpus(sw.corpus, data_dir=sw.data_dir).ids  # also: corpus readable?
    try:
        Path(sw.sweep_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the sweep directory {sw.sweep_dir}: {e.strerror or e}") from None
    storage = open_storage(sw.sweep_dir, sw.storage)
    study = optuna.create_study(
        study_name=sw.study_name,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        sampler=_sampler(sw, 0),
        pruner=_pruner(sw),
    )
    mine = _definition(sw, data_hash(ids))
    saved = study.user_attrs.get(DEFINITION)
    if saved is None:
        study.set_user_attr(DEFINITION, mine)
    elif saved != mine:
        diff = [k for k in mine if saved.get(k) != mine[k]]
        what = "; ".join(
            "a different text"
            if k == "data"
            else f"{k} {json.dumps(saved.get(k))} there, {json.dumps(mine[k])} here"
            for k in diff
        )
        raise ConfigError(
            f"the study {sw.study_name!r} was started with other settings "
            f"({what}); rerun it with the same options, or start another with "
            "a new -o or --study"
        )
    _write_info(sw)
    return study


def _write_info(sw):
    url = sw.storage
    if url is not None and "://" not in url:  # a journal file's path: found from anywhere
        url = str(Path(url).resolve())
    info = {"study": sw.study_name, "storage": public_url(url), "corpus": sw.corpus}
    path = Path(sw.sweep_dir) / INFO
    try:
        if path.exists() and json.loads(path.read_text()) == info:
            return
    except (OSError, ValueError):
        pass
    tmp = path.with_name(f".{INFO}.{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, path)


def _sampler(sw, number):
    """TPE, seeded from the sweep's seed and the trial's number: one process gives the same
    proposals for the same command, and parallel workers do not propose the same ones."""
    optuna = _optuna()
    return optuna.samplers.TPESampler(
        seed=(sw.seed * 1_000_003 + number) % 2**32,
        n_startup_trials=min(10, max(3, sw.trials // 3)),
        constant_liar=True,
    )


def _pruner(sw):
    optuna = _optuna()
    if not sw.prune:
        return optuna.pruners.NopPruner()
    # intermediate values are reported at steps 1..evals (fractions of the budget); a trial
    # can be stopped from half its budget on, against the median of the finished trials there
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, sw.evals // 2))


# -- the state of trials ---------------------------------------------------------------------


def state_of(t):
    """complete, pruned, failed, interrupted, running, waiting, or surplus (never shown)."""
    name = t.state.name.lower()
    if name == "fail":
        a = t.user_attrs
        return "surplus" if a.get("surplus") else "interrupted" if a.get("interrupted") else "failed"
    return name


def counts(study):
    """(finished trials that count towards the total, trials running now)."""
    states = [state_of(t) for t in study.get_trials(deepcopy=False)]
    done = sum(s in ("complete", "pruned", "failed") for s in states)
    return done, sum(s in ("running", "waiting") for s in states)


def _alive(pid):
    """Whether a process of this machine with that pid exists (a pid not ours counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead(study):
    """Mark failed the running trials of this machine whose process is gone (killed, for
    instance for lack of memory): only the owner's machine can tell."""
    optuna = _optuna()
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not pid or pid == os.getpid() or _alive(pid):
            continue
        # Optuna has no public call to annotate another process's trial; the storage's is stable
        study._storage.set_trial_user_attr(
            t._trial_id,
            "error",
            f"its process (pid {pid}) ended while training: killed, perhaps for lack of memory",
        )
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def results(sweep_dir, storage=None, study=None):
    """The sweep's trials and its best run, as a JSON-able dict."""
    sweep_dir = Path(sweep_dir)
    info = {}
    if (sweep_dir / INFO).is_file():
        try:
            info = json.loads((sweep_dir / INFO).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read {sweep_dir / INFO}: {e}") from None
    elif storage is None and not (sweep_dir / JOURNAL).is_file():
        raise ConfigError(
            f"{sweep_dir} holds no sweep (no {INFO}); give the sweep directory that `charrnn sweep -o` wrote"
        )
    url = storage or info.get("storage")
    name = study or info.get("study") or sweep_dir.resolve().name
    optuna = _optuna()
    try:
        st = optuna.load_study(study_name=name, storage=open_storage(sweep_dir, url, False))
    except KeyError:
        raise ConfigError(
            f"the storage {public_url(url) or sweep_dir / JOURNAL} holds no study {name!r}"
        ) from None
    host, rows = socket.gethostname(), []
    for t in st.get_trials(deepcopy=False):
        state = state_of(t)
        if state == "surplus":
            continue
        a = t.user_attrs
        if state == "running" and a.get("host") == host and a.get("pid") and not _alive(a["pid"]):
            state = "died"  # the next worker on this machine marks it failed
        p = a.get("progress", {})
        rows.append(
            {
                "number": t.number,
                "state": state,
                "params": dict(t.params),
                "value": t.value if state == "complete" else None,
                "best_val": p.get("best_val"),
                "chars": p.get("chars"),
                "seconds": p.get("seconds"),
                "run_dir": a.get("run_dir"),
                "host": a.get("host"),
                "error": a.get("error"),
            }
        )
    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    best = min(complete, key=lambda r: r["value"]) if complete else None
    return {
        "study": name,
        "storage": public_url(url) or str(sweep_dir / JOURNAL),
        "sweep_dir": str(sweep_dir),
        "definition": st.user_attrs.get(DEFINITION),
        "trials": rows,
        "best": best,
    }
