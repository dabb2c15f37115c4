#!/usr/bin/env python
"""The exported page's size and its speed in headless Chromium (issue 24), beside charrnn's own
batch-1 sampling, for 2x128 and 2x512 LSTMs (and GRUs with --cells lstm,gru).

    python -m benchmarks.export_page                  # random weights, V = 65 (Tiny Shakespeare's)
    python -m benchmarks.export_page -c RUN           # a trained model instead, as its size is
    python -m benchmarks.export_page -c RUN --text FILE   # and what fp16 weights cost it

With --text, the fp16 page's cost: the loss (nats/char, one exact stream) of the last
--score-chars characters of FILE with the weights as the fp32 and the fp16 page hold them, and
how far the greedy text of each (after --prime) agrees. With --screenshot PNG, a picture of the
page after writing 400 characters at temperature 0.8 after --prime (docs/export-page.png).

Size and speed do not depend on what the weights are, so random weights (charrnn's
initialisation) stand in for trained ones. Speed: characters per second of one `write` of
--chars characters at temperature 0.8, wall time from the click to the end, median of
--repeats, in Chromium launched offline (tests/browser.py's flags); charrnn: `CharModel.generate`
of the same length, after a warm-up, one thread. For timing, unset OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE in that command only:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.export_page
"""

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from charrnn import api
from charrnn.charmodel import CharModel
from charrnn.config import ModelConfig
from charrnn.export import page
from tests.browser import FLAGS, executable

V = 65


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        return platform.processor()


def random_model(cell, hidden):
    vocab = "".join(chr(c) for c in range(32, 32 + V - 1)) + "\n"
    cfg = ModelConfig(cell=cell, layers=2, hidden=hidden, vocab_size=V)
    return CharModel(cfg, "".join(sorted(vocab))).init_weights(np.random.default_rng(0))


def page_speed(browser, path, chars, repeats):
    ctx = browser.new_context(offline=True)
    p = ctx.new_page()
    t0 = time.perf_counter()
    p.goto(path.as_uri())
    p.wait_for_selector("body[data-state=ready]", state="attached", timeout=600_000)
    load = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        p.fill("#temp", "0.8")
        p.fill("#length", str(chars))
        p.click("#write")
        p.wait_for_selector("body[data-state=done]", state="attached", timeout=600_000)
        rates.append(float(p.get_attribute("body", "data-rate")))
    ctx.close()
    return load, statistics.median(rates)


def charrnn_speed(model, chars, repeats):
    api.compile_kernels(model.config.cell, model.dtype, sampling=True)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in model.generate(chars, temp=0.8, seed=1):
            pass
        rates.append(chars / (time.perf_counter() - t0))
    return statistics.median(rates)


def fp16_cost(model, text_file, n, prime):
    text = text_file.read_text(encoding="utf-8")[-n:]
    half = CharModel(model.config, model.vocab, page.rounded(model, "fp16"))
    a, b = model.loss(text, exact=True), half.loss(text, exact=True)
    ta = model.sample(2000, temp=0, prime=prime, include_prime=False)
    tb = half.sample(2000, temp=0, prime=prime, include_prime=False)
    same = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), len(ta))
    print(
        f"fp16 cost on the last {len(text)} characters of {text_file.name}: loss {a:.5f} -> "
        f"{b:.5f} nats/char ({b - a:+.5f}); greedy text after {prime!r} agrees for the first "
        f"{same} of 2000 characters"
    )


def screenshot(model, prime, png):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "writer.html"
        path.write_text(page.render(model, "fp32"), encoding="utf-8")
        browser = pw.chromium.launch(executable_path=executable(), args=FLAGS)
        p = browser.new_context(offline=True, viewport={"width": 860, "height": 640}).new_page()
        p.goto(path.as_uri())
        p.wait_for_selector("body[data-state=ready]", state="attached")
        p.fill("#prime", prime)
        p.fill("#length", "400")
        p.click("#write")
        p.wait_for_selector("body[data-state=done]", state="attached")
        p.screenshot(path=str(png))
        browser.close()
    print(f"wrote {png}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--checkpoint", help="a trained model instead of random ones")
    ap.add_argument("--cells", default="lstm")
    ap.add_argument("--chars", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--text", help="with -c: measure the fp16 weights' loss cost on this text")
    ap.add_argument("--score-chars", type=int, default=100_000)
    ap.add_argument("--prime", default="ROMEO:")
    ap.add_argument("--screenshot", help="with -c: write a picture of the page here")
    args = ap.parse_args()
    if args.screenshot and args.checkpoint:
        return screenshot(api.load(args.checkpoint), args.prime, Path(args.screenshot))
    if args.text and args.checkpoint:
        fp16_cost(api.load(args.checkpoint), Path(args.text), args.score_chars, args.prime)
    from playwright.sync_api import sync_playwright

    models = (
        [("given", api.load(args.checkpoint))]
        if args.checkpoint
        else [(f"2x{h} {cell}", random_model(cell, h)) for cell in args.cells.split(",") for h in (128, 512)]
    )
    print(f"machine: {cpu_model()}, {platform.python_version()}, chromium {executable()}")
    print(
        f"{'model':<12} {'params':>9} {'prec':>5} {'page MB':>8} {'load s':>7} "
        f"{'page ch/s':>10} {'charrnn ch/s':>13}"
    )
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path=executable(), args=FLAGS)
        for name, m in models:
            ours = charrnn_speed(m, args.chars, args.repeats)
            for prec in ("fp32", "fp16"):
                path = Path(tmp) / f"{prec}.html"
                path.write_text(page.render(m, prec), encoding="utf-8")
                load, rate = page_speed(browser, path, args.chars, args.repeats)
                print(
                    f"{name:<12} {m.flat.size:>9} {prec:>5} {path.stat().st_size / 1e6:>8.2f} "
                    f"{load:>7.2f} {rate:>10.0f} {ours:>13.0f}",
                    flush=True,
                )
        browser.close()
    print(
        f"(one write of {args.chars} characters at temperature 0.8, median of {args.repeats})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
