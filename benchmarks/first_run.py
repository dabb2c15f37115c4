#!/usr/bin/env python
"""A newcomer's first run, timed: the README's quick start from an empty Numba cache.

    python benchmarks/first_run.py                 # quiet machine
    python benchmarks/first_run.py --beside        # with a second training on both cores beside it
    python benchmarks/first_run.py --minutes 2 --repeats 2
    python benchmarks/first_run.py --precision fp32   # train --precision fp32 (default: auto)

Each repeat makes a fresh Numba cache (NUMBA_CACHE_DIR) and a fresh run root, then, in a pipe as a
script would see them, with every stderr line stamped with the seconds since the command began:
  1. `charrnn train --minutes M`: its first line, the compile notice, each compile group, the
     first progress line (step 1), and the end;
  2. `charrnn sample -n 500` right after it: its wall time (a first sample should compile nothing);
  3. `charrnn sample -n N` twice (N = --long): the first long sample's chars/s against the same
     sample run again (the two-core sampling kernels should be ready when the training ends);
  4. `charrnn sample -n 100` a few times: the warm start-up.
It prints the environment, every stamped line, and a table of the moments (medians over repeats).
The training corpus is the built-in default, as in the README. --beside runs a 2 x 256 training of
Tiny Shakespeare-like random text beside steps 1-2 (both cores busy), as a user would meet it
while other work runs.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def environment():
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    pick = ("Model name", "Vendor ID", "CPU family", "Model:", "CPU(s):")
    cpu = "; ".join(ln.split(":", 1)[0].strip() + " " + ln.split(":", 1)[1].strip()
                    for ln in lscpu.splitlines() if ln.startswith(pick))  # fmt: skip
    return {
        "cpu": cpu or platform.processor(),
        "python": platform.python_version(),
        "load_before": os.getloadavg()[0],
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def stamped(cmd, env, cwd):
    """Run cmd; (wall seconds, [(seconds, stderr line)], stdout bytes)."""
    t0 = time.monotonic()
    out_file = tempfile.TemporaryFile()  # not a pipe: a long sample would fill it while stderr is read
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out_file, stderr=subprocess.PIPE)
    lines = []
    buf = b""
    while True:
        chunk = os.read(p.stderr.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        for ln in done:
            lines.append((time.monotonic() - t0, ln.decode(errors="replace")))
    p.wait()
    out_file.seek(0)
    out = out_file.read()
    if buf:
        lines.append((time.monotonic() - t0, buf.decode(errors="replace")))
    return time.monotonic() - t0, lines, out, p.returncode


def first(lines, *starts):
    return next((t for t, ln in lines if ln.startswith(starts)), None)


def one_repeat(args, charrnn):
    cache, home = tempfile.mkdtemp(prefix="numba-"), tempfile.mkdtemp(prefix="first-run-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, CHARRNN_RUNS=os.path.join(home, "runs"))
    env.pop("COLUMNS", None)
    moments = {}
    extra = ["--precision", args.precision] if args.precision else []
    wall, lines, _, rc = stamped([*charrnn, "train", "--minutes", str(args.minutes), *extra], env, home)
    for t, ln in lines:
        log(f"  train {t:7.2f}  {ln}")
    if rc:
        raise SystemExit(f"charrnn train failed ({rc})")
    moments["first line on stderr"] = lines[0][0] if lines else None
    moments["compile notice"] = first(lines, "charrnn: compiling kernels, first run")
    compiled = [t for t, ln in lines if ln.startswith("charrnn: compiling kernels ") and " ready " in ln]
    moments["last compile group ready"] = compiled[-1] if compiled else None
    moments["first progress line (step 1)"] = first(lines, "step      1", "step 1 ")
    moments[f"the whole --minutes {args.minutes:g} training"] = wall
    wall, lines, _, rc = stamped([*charrnn, "sample", "-n", "500"], env, home)
    for t, ln in lines:
        log(f"  sample {t:7.2f}  {ln}")
    moments["first `sample -n 500` after it"] = wall
    for k in range(2):
        wall, _, out, _ = stamped([*charrnn, "sample", "-n", str(args.long)], env, home)
        rate = args.long / wall
        moments["first long sample, chars/s" if k == 0 else "the same sample again, chars/s"] = rate
    starts = [stamped([*charrnn, "sample", "-n", "100"], env, home)[0] for _ in range(3)]
    moments["warm `sample -n 100`"] = statistics.median(starts)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    return moments


def beside_load():
    """A 2 x 256 training on both cores, on random text, until killed."""
    home = tempfile.mkdtemp(prefix="beside-")
    text = Path(home) / "text.txt"
    import random

    rnd = random.Random(0)
    text.write_text("".join(rnd.choice("abcdefghij klmnop\n") for _ in range(2_000_000)))
    cmd = [sys.executable, "-m", "charrnn", "train", str(text), "--hidden", "256", "--steps", "100000", "-q",
           "-o", os.path.join(home, "run")]  # fmt: skip
    return subprocess.Popen(cmd, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), home


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--precision", help="train's --precision (default: the README's, none given)")
    ap.add_argument("--long", type=int, default=200_000, help="characters of the long sample")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--beside", action="store_true", help="with a training on both cores beside it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    charrnn = [sys.executable, "-m", "charrnn"]
    env = environment()
    log("environment:", json.dumps(env))
    load = None
    if args.beside:
        load, load_home = beside_load()
        time.sleep(20)  # its own compile and start, so the measured run meets a training
    try:
        runs = [one_repeat(args, charrnn) for _ in range(args.repeats)]
    finally:
        if load is not None:
            load.kill()
            shutil.rmtree(load_home, ignore_errors=True)
    table = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if r[key] is not None]
        table[key] = statistics.median(vals) if vals else None
    if args.json:
        print(json.dumps({"environment": env, "args": vars(args), "runs": runs, "median": table}))
        return
    print(f"# first run, {'beside a 2 x 256 training' if args.beside else 'quiet'}: {env['cpu']}; "
          f"{env['date']}; medians of {args.repeats}")  # fmt: skip
    print("| moment | seconds (or chars/s) |")
    print("| --- | ---: |")
    for key, v in table.items():
        print(f"| {key} | {'-' if v is None else f'{v:,.0f}' if v > 1000 else f'{v:.2f}'} |")


if __name__ == "__main__":
    main()
