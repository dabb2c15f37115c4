#!/usr/bin/env python
"""How fast a large corpus is encoded into the id cache, and with how much memory.

    python benchmarks/encode_bench.py                 # 100 MB and 1 GB
    python benchmarks/encode_bench.py --sizes 100     # MB

Generates each corpus in a temporary directory (Tiny Shakespeare repeated when it is found, else
seeded pseudo-words, with a few non-ASCII characters so the UTF-8 path is exercised), then, in a
fresh process each, encodes it through the id cache (hash, count, encode, write the .npy) and
reads it back from the warm cache, reporting wall time, MB/s and the child's peak resident
memory. The generated files and caches are deleted afterwards.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from charrnn import idcache
t = time.perf_counter()
ids, vocab, desc, notice = idcache.encoded_corpus(sys.argv[1])
secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "chars": int(ids.size), "dtype": str(ids.dtype),
                  "vocab": len(vocab), "notice": notice,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_corpus(path, mb):
    if SHAKESPEARE.is_file():
        block = SHAKESPEARE.read_text(encoding="utf-8")
    else:
        import random

        rng = random.Random(1)
        words = [
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))
            for _ in range(5000)
        ]
        block = " ".join(rng.choice(words) for _ in range(200_000))
    block += "\nCafé — naïve façade, 東京.\n"
    data = block.encode("utf-8")
    target = mb * 1_000_000
    with open(path, "wb") as f:
        written = 0
        while written < target:
            piece = data[: target - written]
            f.write(piece)
            written += len(piece)
    # a cut may split a multi-byte character at the very end: end on a clean line
    with open(path, "ab") as f:
        f.write(b"\n")


def child(path, cache):
    env = dict(os.environ, CHARRNN_CACHE_DIR=str(cache))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,1000", help="corpus sizes in MB, comma-separated")
    ap.add_argument("--tmp", default=None, help="where to write the generated corpora")
    a = ap.parse_args()
    print(
        f"# python {platform.python_version()}, {os.cpu_count()} cpus; corpus: "
        f"{'Tiny Shakespeare repeated' if SHAKESPEARE.is_file() else 'pseudo-words'}"
    )
    print("| corpus | first encode (s) | MB/s | peak RSS (MB) | cached read (s) | ids |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for mb in (int(s) for s in a.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=a.tmp) as d:
            path, cache = Path(d) / f"corpus{mb}.txt", Path(d) / "cache"
            make_corpus(path, mb)
            size = path.stat().st_size / 1e6
            first = child(path, cache)
            again = child(path, cache)
            print(
                f"| {size:,.0f} MB | {first['seconds']:.1f} | {size / first['seconds']:.0f} | "
                f"{first['peak_rss_mb']:.0f} | {again['seconds']:.2f} | "
                f"{first['chars']:,} {first['dtype']}, vocabulary {first['vocab']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
