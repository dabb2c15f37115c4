"""How long greedy output (--temp 0) goes before it loops, with and without the repetition options
(issue 23): for a 2x128 and a 2x512 LSTM on Tiny Shakespeare, the characters generated until a
20-character stretch first repeats, with no option, each penalty and --no-repeat; and, as a
check on what the options do to the text, the share of the output's words found in the corpus.

    python benchmarks/repetition.py                       # trains both models (3 min each)
    python benchmarks/repetition.py --small RUN --large RUN   # or loads them

Trainings run under `nice -n 10`. Figures depend on the training, so the table prints the
models' validation loss beside them.
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPUS = Path("/work/shared/corpora/tinyshakespeare.txt")
STRETCH = 20
PRIMES = ["\n", "ROMEO:\n", "KING HENRY:\nThe ", "First Citizen:\nWe ", "O, ", "What is "]
SETTINGS = [  # (label, SampleConfig fields)
    ("none", {}),
    ("--presence-penalty 0.5", {"presence_penalty": 0.5}),
    ("--presence-penalty 0.5 --penalty-window 64", {"presence_penalty": 0.5, "penalty_window": 64}),
    ("--frequency-penalty 0.1", {"frequency_penalty": 0.1}),
    ("--frequency-penalty 0.5 --penalty-window 64", {"frequency_penalty": 0.5, "penalty_window": 64}),
    ("--no-repeat 20", {"no_repeat": 20}),
    ("--no-repeat 8", {"no_repeat": 8}),
]


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def train(out, hidden, minutes):
    print(f"training 2x{hidden} for {minutes} min -> {out}", file=sys.stderr)
    subprocess.run(
        [
            "nice",
            "-n",
            "10",
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(CORPUS),
            "-o",
            str(out),
            "--layers",
            "2",
            "--hidden",
            str(hidden),
            "--dropout",
            "0",
            "--minutes",
            str(minutes),
            "-q",
        ],
        check=True,
    )
    return out


def until_repeat(text, n=STRETCH):
    """Characters written when some n-character stretch first occurs a second time (None: never)."""
    seen = set()
    for end in range(n, len(text) + 1):
        s = text[end - n : end]
        if s in seen:
            return end
        seen.add(s)
    return None


def word_share(text, words):
    found = re.findall(r"[a-z]+", text.lower())
    return sum(w in words for w in found) / len(found) if found else 0.0


def measure(model, length, words):
    rows = []
    for label, options in SETTINGS:
        lengths, shares, secs = [], [], 0.0
        for prime in PRIMES:
            t = time.perf_counter()
            text = model.sample(length, temp=0, prime=prime, include_prime=False, **options)
            secs += time.perf_counter() - t
            r = until_repeat(text)
            lengths.append(r if r is not None else length + 1)
            shares.append(word_share(text, words))
        rows.append((label, lengths, statistics.mean(shares), len(PRIMES) * length / secs))
    return rows


def show(r, length):
    return f">{length}" if r > length else str(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=Path, help="a 2x128 run or checkpoint (default: train one)")
    ap.add_argument("--large", type=Path, help="a 2x512 run or checkpoint (default: train one)")
    ap.add_argument("--minutes", type=float, default=3.0, help="training time per model")
    ap.add_argument("--length", type=int, default=3000, help="characters per greedy sample")
    ap.add_argument("--keep", type=Path, help="train into this directory (default: a temporary)")
    args = ap.parse_args()
    import charrnn

    tmp = args.keep or Path(tempfile.mkdtemp(prefix="charrnn-repetition-"))
    small = args.small or train(tmp / "small", 128, args.minutes)
    large = args.large or train(tmp / "large", 512, args.minutes)
    words = set(re.findall(r"[a-z]+", CORPUS.read_text().lower()))
    print(f"# machine: {machine()}; {os.cpu_count()} cores; python {platform.python_version()}")
    print(
        f"# greedy samples of {args.length} characters from {len(PRIMES)} primes; 'repeats "
        f"after': characters written when a {STRETCH}-character stretch first recurs "
        f"(median, min-max over the primes); 'words': share of the output's words found in "
        f"the corpus; chars/s of the whole sample call"
    )
    for name, path in (("2x128", small), ("2x512", large)):
        model = charrnn.load(path)
        print(f"\n## {name} LSTM ({path}), validation loss {model.meta.val_loss:.3f} nats/char")
        print(f"| {'option':44} | repeats after (median, min-max) | words | chars/s |")
        print(f"|{'-' * 46}|{'-' * 33}|-------|---------|")
        for label, lengths, share, speed in measure(model, args.length, words):
            med = show(int(statistics.median(lengths)), args.length)
            span = f"{show(min(lengths), args.length)}-{show(max(lengths), args.length)}"
            print(f"| {label:44} | {med + ' (' + span + ')':31} | {100 * share:4.0f}% | {speed:7.0f} |")


if __name__ == "__main__":
    main()
