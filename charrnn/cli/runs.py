"""charrnn runs, plot and cache: the run directories, a run's curves, and the id cache."""

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import EXIT_USAGE, JsonOpt, Opt, fail, fmt, group, print_table, user_errors


@user_errors
def plot(
    run_dir: Annotated[
        Optional[Path],
        typer.Argument(
            metavar="RUN_DIR",
            help="A run directory (it holds metrics.jsonl). Default: the most recently written run "
            "under the run root ($CHARRNN_RUNS, else ./runs), the one sample and info take.",
        ),
    ] = None,
    png: Annotated[
        Optional[Path],
        Opt(
            "--png",
            help="Also write the curves to this PNG file (needs matplotlib: the plot extra).",
        ),
    ] = None,
    x: Annotated[str, Opt(help="Horizontal axis: elapsed (seconds) or chars.")] = "elapsed",
):
    """Draw the run's training and validation loss against time or characters seen."""
    from ..training import plot as plotting

    if x not in ("elapsed", "chars"):
        fail("--x must be elapsed or chars", EXIT_USAGE)
    rows = plotting.read_metrics(_latest_run() if run_dir is None else run_dir)
    for line in plotting.text_chart(rows, x):
        print(line)
    if png is not None:
        plotting.png(rows, png)
        sys.stderr.write(f"charrnn: wrote {png}\n")


def _latest_run():
    """The run whose checkpoint sample and info take without one given
    (training.discovery.resolve), said on stderr."""
    from ..training import discovery
    from ..errors import CheckpointError

    try:
        path, _ = discovery.resolve_explained(None)
    except CheckpointError:  # its message suggests -c, which plot does not take
        fail(
            f"no run directory given and no trained run under {discovery.runs_root()}/; train one with "
            "`charrnn train`, pass RUN_DIR, or set CHARRNN_RUNS to where your runs are"
        )
    sys.stderr.write(
        f"charrnn: plotting {path.parent}, the most recently written run under {discovery.runs_root()}/; "
        "pass RUN_DIR to choose\n"
    )
    return path.parent


@user_errors
def list_runs(
    directory: Annotated[
        Optional[Path],
        typer.Argument(
            metavar="DIR",
            help="A directory of runs, or one run directory. Default: $CHARRNN_RUNS, else ./runs.",
        ),
    ] = None,
    as_json: JsonOpt = False,
):
    """List runs with their corpus, model, steps, best validation loss and last write, oldest
    first."""
    from ..training import discovery, runs

    where = discovery.runs_root() if directory is None else directory
    if not where.is_dir():
        if directory is not None:
            fail(f"{where} is not a directory")
        rows = []
    else:
        rows = runs.listing(where)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        sys.stderr.write(f"charrnn: no runs under {where}/ (set CHARRNN_RUNS, or pass a directory)\n")
        return
    sys.stderr.write(f"charrnn: runs in {where.resolve()}\n")
    table = [("date", "run", "corpus", "model", "steps", "best val", "")]
    for r in rows:
        model = f"{r['cell']} {r['layers']}x{r['hidden']}" if r["cell"] else "-"
        table.append(
            (
                (r["date"] or "-")[:16].replace("T", " "),
                r["name"],
                _short(r["corpus"]),
                model,
                "-" if r["steps"] is None else f"{r['steps']:,}",
                fmt(r["best_val_loss"]),
                r["note"] or "",
            )
        )
    print_table(table, right={4, 5})


def _short(corpus):
    """'/long/path/input.txt (1,115,394 chars)' as 'input.txt (1,115,394 chars)'."""
    if not corpus:
        return "-"
    name, sep, rest = corpus.rpartition(" (")
    return f"{os.path.basename(name.rstrip('/')) or name}{sep}{rest}" if sep else corpus


cache = group(
    "cache",
    "The id cache: corpus files of 1 MiB or more, encoded for training. It "
    "keeps itself under CHARRNN_CACHE_MAX (default 4G; 0: no cap) by removing least "
    "recently used entries.",
    default="show",
    moved=[("--clear", "clear", False)],
)


@cache.command("clear")
@user_errors
def clear_cache():
    """Remove every entry (each is rebuilt when its corpus is next trained on)."""
    from ..text import cachedir, idcache
    from ..training.memory import fmt_bytes

    where = idcache.cache_dir()
    count, freed = cachedir.clear(where)
    sys.stderr.write(
        f"charrnn: removed {count} entr{'y' if count == 1 else 'ies'}, freed {fmt_bytes(freed)} in {where}\n"
    )


@cache.command("show")
@user_errors
def show_cache(as_json: JsonOpt = False):
    """Show the id cache's directory, size and entries, least recently used first."""
    from datetime import datetime
    from ..text import cachedir, idcache
    from ..training.memory import fmt_bytes

    where = idcache.cache_dir()
    found, cap = cachedir.entries(where), cachedir.max_bytes()
    total = sum(e.size for e in found)
    when = lambda e: datetime.fromtimestamp(e.last_used).astimezone()
    if as_json:
        print(
            json.dumps(
                {
                    "dir": str(where),
                    "bytes": total,
                    "max_bytes": cap or None,
                    "entries": [
                        {
                            "source": e.source,
                            "bytes": e.size,
                            "vocab_size": e.vocab_size,
                            "length": e.length,
                            "last_used": when(e).isoformat("T", "seconds"),
                            "key": e.key,
                            "read_as": e.mode,
                            "current": e.current,
                        }
                        for e in found
                    ],
                },
                ensure_ascii=False,
            )
        )
        return
    limit = f"of a {fmt_bytes(cap)} cap" if cap else "(no cap)"
    print(f"{where}: {len(found)} entr{'y' if len(found) == 1 else 'ies'}, {fmt_bytes(total)} {limit}")
    if found:
        table = [("last used", "size", "vocab", "length", "key", "read as", "source")]
        table += [
            (
                when(e).strftime("%Y-%m-%d %H:%M"),
                fmt_bytes(e.size),
                "-" if e.vocab_size is None else e.vocab_size,
                "-" if e.length is None else f"{e.length:,}",
                e.key[:8],
                e.mode or "-",
                (e.source or "(incomplete entry)")
                + (" (changed since: a stale entry)" if e.current is False else ""),
            )
            for e in found
        ]
        print_table(table, right={1, 2, 3})
