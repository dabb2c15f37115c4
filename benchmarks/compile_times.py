#!/usr/bin/env python
"""Where a first run's compile time goes: each compile group (charrnn/engine/groups.py) compiled
from an empty Numba cache in a fresh process of its own, as a first run's two processes
compile them, with the kernels that took longest.

    python benchmarks/compile_times.py                          # the groups of a training
    python benchmarks/compile_times.py forward backward_bf16    # these groups
    python benchmarks/compile_times.py --together forward_bf16 backward_bf16   # one process
    python benchmarks/compile_times.py --top 15 backward

For each group: the wall and CPU seconds of warm.run(group) (the process's imports not
counted), the number of functions Numba compiled, and the --top functions by their own
seconds (exclusive: their callees' compiles taken out; a kernel's own time includes optimising
and generating the code it inlines or links in). --together compiles the groups one after the
other in one process (what they share then compiles once).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAINING = ["forward", "evaluate", "optimizer", "backward"]
BF16 = ["forward_bf16", "backward_bf16"]


def child(groups, cell, dtype, precision, top):
    """In the fresh process: compile the groups, print one JSON line per group."""
    import numba.core.event as ev

    stack, rows = [], []

    class Listener(ev.Listener):
        def on_start(self, event):
            f = event.data["dispatcher"].py_func
            stack.append([f"{f.__module__.split('.')[-1]}.{f.__name__}", time.perf_counter(), 0.0])

        def on_end(self, event):
            name, t0, inner = stack.pop()
            took = time.perf_counter() - t0
            if stack:
                stack[-1][2] += took
            rows.append((name, took - inner))

    ev.register("numba:compile", Listener())
    import numpy as np

    from charrnn import warm

    for g in groups:
        rows.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        warm.run(g, cell, np.dtype(dtype), precision)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        own = {}
        for name, secs in rows:
            own[name] = own.get(name, 0.0) + secs
        slowest = sorted(own.items(), key=lambda kv: -kv[1])[:top]
        print(json.dumps(dict(group=g, wall=wall, cpu=cpu, compiles=len(rows), slowest=slowest)), flush=True)


def run(groups, args):
    cache = tempfile.mkdtemp(prefix="charrnn-compile-")
    try:
        cmd = [sys.executable, __file__, "--child", "--cell", args.cell, "--dtype", args.dtype]
        cmd += ["--top", str(args.top), *groups]
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("groups", nargs="*", help="compile groups (default: a training's, and bf16's)")
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--together", action="store_true", help="all the groups in one process")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        groups = args.groups
        child(groups, args.cell, args.dtype, "bf16" if any(g in BF16 for g in groups) else "fp32", args.top)
        return
    groups = args.groups
    if not groups:
        from charrnn.engine import bgemm

        groups = TRAINING + (BF16 if bgemm.available() else [])
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    pick = ("Model name", "Model:")
    cpu = "; ".join(ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith(pick))
    print(
        f"# compile groups from an empty Numba cache: {cpu or platform.processor()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, cell {args.cell}, {args.dtype}"
    )
    batches = [groups] if args.together else [[g] for g in groups]
    print("| group | wall s | CPU s | functions compiled | slowest (own seconds) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for batch in batches:
        for r in run(batch, args):
            slow = ", ".join(f"{name} {secs:.2f}" for name, secs in r["slowest"])
            row = (r["group"], f"{r['wall']:.2f}", f"{r['cpu']:.2f}", str(r["compiles"]), slow)
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
