"""Run discovery: which checkpoint a path, a run's name or nothing at all means (a file; a
run directory's best, else latest, checkpoint; the best run under a sweep's directory; the most
recently written run under the run root), beside the run directories themselves (runs.py)."""

import math
import os
from pathlib import Path

from .. import checkpoint
from ..errors import CheckpointError


def runs_root():
    """Where runs go and are looked for: $CHARRNN_RUNS, else ./runs."""
    return Path(os.environ.get("CHARRNN_RUNS") or "runs").expanduser()


def resolve(path=None, runs_dir=None):
    """A checkpoint file from a file, a run directory (its best, else its latest checkpoint), a
    run's name under the run root (when no such path exists here), or nothing (the best
    checkpoint of the most recently written run under the run root, runs_root())."""
    return resolve_explained(path, runs_dir)[0]


def resolve_explained(path=None, runs_dir=None):
    """(the checkpoint file resolve() finds, a sentence saying which one it chose and why when
    the choice was implicit, else None): the latest run's, a run's latest.npz for want of a
    best.npz, or the best run among those under a directory that holds runs (a sweep's)."""
    root = runs_root() if runs_dir is None else Path(runs_dir)
    if path is None:
        runs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
        found = [(_ckpt_in(d).stat().st_mtime, d) for d in runs if _ckpt_in(d)]
        if not found:
            raise CheckpointError(
                f"no checkpoint given and no trained run under {root}/; "
                "train one with `charrnn train`, pass -c PATH, or set "
                "CHARRNN_RUNS to where your runs are"
            )
        when, run = max(found)
        chosen = _ckpt_in(run)
        newer = sorted(
            d.name for d in runs if _ckpt_in(d) is None and _has_files(d) and d.stat().st_mtime > when
        )
        note = f"using {chosen}, the most recently written run's checkpoint under {root}/"
        if newer:
            note += f" ({', '.join(newer[:3])}{' ...' if len(newer) > 3 else ''}: no checkpoint yet)"
        return chosen, note + "; pass -c to choose"
    path = Path(path)
    if not path.exists() and not path.is_absolute() and (root / path).exists():
        path = root / path  # a run's name, as `charrnn runs` lists it
    if path.is_dir():
        found = _ckpt_in(path)
        if found is None:
            return _best_run_under(path)
        if found.name != checkpoint.BEST:
            return found, f"using {found}: {path} holds no {checkpoint.BEST} yet"
        return found, None
    if not path.exists():
        where = "" if path.is_absolute() else f", and no run {path} under {root}/"
        raise CheckpointError(f"no such checkpoint or run directory: {path}{where}")
    return path, None


def _has_files(d):
    try:
        return any(p.is_file() for p in d.iterdir())
    except OSError:
        return False


def _best_run_under(path):
    """A directory without a checkpoint of its own: the best.npz of lowest best validation loss
    among its run directories (a sweep's trials), with a note; else CheckpointError."""
    scored, unscored = [], []
    for d in sorted(p for p in path.iterdir() if p.is_dir()):
        found = _ckpt_in(d)
        if found is None:
            continue
        try:
            pr = checkpoint.load_meta(found).progress
        except CheckpointError:
            continue
        best = pr.best_val if pr is not None else None
        if found.name == checkpoint.BEST and isinstance(best, (int, float)) and math.isfinite(best):
            scored.append((best, d.name, found))
        else:
            unscored.append(d.name)
    if not scored:
        hint = (
            f"; its runs {', '.join(unscored[:5])} have no validation loss to choose by" if unscored else ""
        )
        raise CheckpointError(f"{path} holds no checkpoint ({checkpoint.BEST} or {checkpoint.LATEST}){hint}")
    best, name, found = min(scored)
    return found, (
        f"using {found}: the lowest best validation loss ({best:.4f}) of the {len(scored)} runs under {path}"
    )


def _ckpt_in(run_dir):
    for name in (checkpoint.BEST, checkpoint.LATEST):
        if (run_dir / name).is_file():
            return run_dir / name
    return None
