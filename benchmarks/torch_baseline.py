#!/usr/bin/env python
"""PyTorch CPU baseline for charrnn: a char-level nn.LSTM trained and sampled the usual way.

Standalone on purpose: imports only torch, numpy and the standard library, and is meant to be run
with a separate interpreter that has torch installed (torch is never a dependency of charrnn), e.g.

    /work/venv-torch/bin/python benchmarks/torch_baseline.py train --layers 2 --hidden 128 \
        --batch 50 --seq 50 --steps 20 --warmup 3 --repeats 3
    /work/venv-torch/bin/python benchmarks/torch_baseline.py sample --layers 2 --hidden 128 \
        --length 300 --repeats 3
    /work/venv-torch/bin/python benchmarks/torch_baseline.py quality \
        --corpus /work/shared/corpora/tinyshakespeare.txt --minutes 0.5

It prints exactly ONE JSON object on stdout (everything else goes to stderr), so a charrnn
benchmark can run it in a subprocess and compare figures side by side.

Model: one-hot(V) -> nn.LSTM(num_layers=L, hidden_size=H, batch_first=False, dropout=p between
layers) -> Dropout(p) -> nn.Linear(H, V).  (Dropout between layers and before the decoder, as in
charrnn; p = 0 outside `quality` unless --dropout is given.)  PyTorch default initialisation.
Loss CrossEntropy (mean nats/char); Adam lr 2e-3; clip_grad_norm_ 5; truncated BPTT with (h, c)
detached and carried across windows.  Data: random ids, or the ids of --corpus (sorted vocab).

Modes:
  train    times N optimizer steps (after W warm-up steps) R times; chars/s = B*T*N / seconds.
  sample   batch-1 sampling, one character per Python-loop iteration (one-hot (1,1,V) input,
           softmax with temperature, torch.multinomial), as a typical PyTorch script does.
  quality  trains on the first 90% of --corpus for M minutes of training wall time, evaluating
           the last 10% (cut into B contiguous streams, state from zero, eval mode, mean nats/char
           over the evaluated characters) every S seconds of training time (eval time excluded)
           and at the end.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_VOCAB = 65  # Tiny Shakespeare


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# -- environment -------------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def peak_rss_mb():
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / (1024 * 1024) if sys.platform == "darwin" else r / 1024, 1)


class CpuMonitor:
    """CPU used by OTHER processes while timing (from /proc/stat minus /proc/self/stat), as a
    fraction of all cores: a contention flag for figures taken on a shared machine."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
            total = sum(v[:8])
            with open("/proc/self/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])  # utime + stime, all threads
            return busy, total, own
        except (OSError, ValueError, IndexError):
            return None

    def result(self):
        end = self._read()
        if self.start is None or end is None or end[1] == self.start[1]:
            return None
        busy, total, own = (e - s for e, s in zip(end, self.start))
        return {
            "other_processes_cpu_frac": round(max(0.0, (busy - own) / total), 3),
            "own_cpu_frac": round(own / total, 3),
            "loadavg": open("/proc/loadavg").read().split()[:3],
        }


def environment():
    env_keys = [
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
    ]
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        capability = None
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_mkl": torch.backends.mkl.is_available(),
        "torch_mkldnn": torch.backends.mkldnn.is_available(),
        "torch_mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "torch_cpu_capability": capability,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "env": {k: os.environ.get(k) for k in env_keys},
        "platform": platform.platform(),
    }


# -- data ----------------------------------------------------------------------------------------


def load_corpus(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))
    return ids, vocab


def random_ids(n, V, rng):
    return rng.integers(0, V, size=n, dtype=np.int64)


def streams(ids, B):
    """Cut ids into B contiguous streams: inputs (B, S) and targets (B, S) shifted by one."""
    S = (len(ids) - 1) // B
    if S < 1:
        raise SystemExit(f"text of {len(ids)} chars is too short for {B} streams")
    x = torch.from_numpy(np.ascontiguousarray(ids[: B * S].reshape(B, S)))
    y = torch.from_numpy(np.ascontiguousarray(ids[1 : B * S + 1].reshape(B, S)))
    return x, y


class Windows:
    """Endless (T, B) windows over B streams; signals a wrap so the state can be reset."""

    def __init__(self, ids, B, T):
        self.x, self.y = streams(ids, B)
        self.T = T
        self.S = self.x.shape[1]
        if self.S < T:
            raise SystemExit(f"streams of {self.S} chars are shorter than the window T={T}")
        self.pos = 0

    def next(self):
        wrapped = False
        if self.pos + self.T > self.S:
            self.pos, wrapped = 0, True
        p, T = self.pos, self.T
        self.pos += T
        return self.x[:, p : p + T].t(), self.y[:, p : p + T].t(), wrapped


# -- model ---------------------------------------------------------------------------------------


class CharLSTM(nn.Module):
    def __init__(self, V, H, L, dropout=0.0):
        super().__init__()
        self.V, self.H, self.L = V, H, L
        self.lstm = nn.LSTM(V, H, num_layers=L, batch_first=False, dropout=dropout if L > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(H, V)

    def forward(self, x, state):
        # x: (T, B) int64 ids -> one-hot (T, B, V)
        inp = F.one_hot(x, self.V).float()
        out, state = self.lstm(inp, state)
        return self.fc(self.drop(out)), state

    def zero_state(self, B):
        z = torch.zeros(self.L, B, self.H)
        return (z, z.clone())


def detach(state):
    return tuple(s.detach() for s in state)


class Trainer:
    def __init__(self, model, lr=2e-3, clip=5.0, autocast=None):
        """autocast: "bf16" runs the forward pass and loss under torch.autocast("cpu",
        dtype=torch.bfloat16) (PyTorch's CPU mixed precision), None in float32."""
        self.model = model
        self.autocast = autocast
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.clip = clip
        self.loss_fn = nn.CrossEntropyLoss()

    def step(self, x, y, state):
        self.model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast == "bf16"):
            logits, state = self.model(x, state)
            loss = self.loss_fn(logits.reshape(-1, self.model.V), y.reshape(-1))
        state = tuple(s.float() for s in state)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        return loss.item(), detach(state)


@torch.no_grad()
def evaluate(model, x, y, T):
    """Mean nats/char over B contiguous streams (x, y: (B, S)), state from zero, eval mode."""
    model.eval()
    B, S = x.shape
    state = model.zero_state(B)
    total = 0.0
    for p in range(0, S, T):
        xb, yb = x[:, p : p + T].t(), y[:, p : p + T].t()
        logits, state = model(xb, state)
        total += F.cross_entropy(logits.reshape(-1, model.V), yb.reshape(-1), reduction="sum").item()
    model.train()
    return total / (B * S)


# -- modes ---------------------------------------------------------------------------------------


def setup(args):
    torch.set_num_threads(args.threads)
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False  # plain ATen LSTM instead of oneDNN's
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.corpus:
        ids, vocab = load_corpus(args.corpus)
        V = len(vocab)
    else:
        ids, vocab, V = None, None, args.vocab
    return rng, ids, vocab, V


def config_of(args, V, **extra):
    cfg = {k: v for k, v in vars(args).items() if k != "func"}
    cfg["vocab_size"] = V
    cfg.update(extra)
    return cfg


def cmd_train(args):
    rng, ids, vocab, V = setup(args)
    B, T = args.batch, args.seq
    if ids is None:
        # enough random text for every window of the run without wrapping
        n = B * T * (args.warmup + args.steps * args.repeats + 1) + B + 1
        ids = random_ids(n, V, rng)
    model = CharLSTM(V, args.hidden, args.layers, args.dropout)
    trainer = Trainer(model, lr=args.lr, clip=args.clip, autocast=args.autocast)
    windows = Windows(ids, B, T)
    state = model.zero_state(B)

    def run(n):
        nonlocal state
        losses = []
        for _ in range(n):
            x, y, wrapped = windows.next()
            if wrapped:
                state = model.zero_state(B)
            loss, state = trainer.step(x, y, state)
            losses.append(loss)
        return losses

    log(
        f"train: L={args.layers} H={args.hidden} B={B} T={T} V={V} "
        f"threads={torch.get_num_threads()} warmup={args.warmup}"
    )
    t0 = time.perf_counter()
    run(args.warmup)
    warm_s = time.perf_counter() - t0
    runs, secs, cpu_runs, last_losses = [], [], [], []
    mon = CpuMonitor()
    for r in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        losses = run(args.steps)
        dt = time.perf_counter() - t0
        cps = B * T * args.steps / dt
        runs.append(cps)
        cpu_runs.append(B * T * args.steps / (time.process_time() - c0))
        secs.append(dt)
        last_losses.append(losses[-1])
        log(f"  repeat {r + 1}/{args.repeats}: {dt:.3f} s, {cps:,.0f} chars/s, loss {losses[-1]:.4f}")
    if not all(np.isfinite(last_losses)):
        raise SystemExit(f"non-finite loss: {last_losses}")
    med = statistics.median(runs)
    return {
        "mode": "train",
        "config": config_of(args, V, n_params=sum(p.numel() for p in model.parameters())),
        "environment": environment(),
        "chars_per_step": B * T,
        "chars_per_sec_median": round(med, 1),
        "chars_per_sec_runs": [round(c, 1) for c in runs],
        "chars_per_cpu_sec_runs": [round(c, 1) for c in cpu_runs],  # CPU time of all threads
        "seconds_runs": [round(s, 4) for s in secs],
        "ms_per_step_median": round(1000 * B * T / med, 3),
        "warmup_seconds": round(warm_s, 3),
        "final_losses": [round(l, 4) for l in last_losses],
        "cpu_during_timing": mon.result(),
        "peak_rss_mb": peak_rss_mb(),
    }


@torch.no_grad()
def sample_chars(model, n, temp, first, gen):
    """Batch-1 sampling, one char per loop iteration, as a typical PyTorch script does
    (without autograd bookkeeping)."""
    model.eval()
    V = model.V
    h = torch.zeros(model.L, 1, model.H)
    c = torch.zeros(model.L, 1, model.H)
    idx = first
    out_ids = []
    for _ in range(n):
        x = torch.zeros(1, 1, V)
        x[0, 0, idx] = 1.0
        out, (h, c) = model.lstm(x, (h, c))
        logits = model.fc(out[0, 0])
        probs = torch.softmax(logits / temp, dim=-1)
        idx = torch.multinomial(probs, 1, generator=gen).item()
        out_ids.append(idx)
    return out_ids


def cmd_sample(args):
    rng, ids, vocab, V = setup(args)
    model = CharLSTM(V, args.hidden, args.layers)
    gen = torch.Generator().manual_seed(args.seed)
    first = int(ids[0]) if ids is not None else 0
    log(
        f"sample: L={args.layers} H={args.hidden} V={V} length={args.length} temp={args.temp} "
        f"threads={torch.get_num_threads()}"
    )
    sample_chars(model, min(args.length, 50), args.temp, first, gen)  # warm-up
    runs, secs = [], []
    text = None
    mon = CpuMonitor()
    for r in range(args.repeats):
        t0 = time.perf_counter()
        out = sample_chars(model, args.length, args.temp, first, gen)
        dt = time.perf_counter() - t0
        runs.append(args.length / dt)
        secs.append(dt)
        log(f"  repeat {r + 1}/{args.repeats}: {dt:.3f} s, {args.length / dt:,.0f} chars/s")
        if vocab is not None and text is None:
            text = "".join(vocab[i] for i in out[:200])
    med = statistics.median(runs)
    res = {
        "mode": "sample",
        "config": config_of(
            args,
            V,
            n_params=sum(p.numel() for p in model.parameters()),
            note="untrained weights; speed does not depend on them",
        ),
        "environment": environment(),
        "chars_per_sec_median": round(med, 1),
        "chars_per_sec_runs": [round(c, 1) for c in runs],
        "seconds_runs": [round(s, 4) for s in secs],
        "us_per_char_median": round(1e6 / med, 2),
        "cpu_during_timing": mon.result(),
        "peak_rss_mb": peak_rss_mb(),
    }
    if text is not None:
        res["sample_head"] = text
    return res


def cmd_quality(args):
    rng, ids, vocab, V = setup(args)
    B, T = args.batch, args.seq
    n_train = int(0.9 * len(ids))
    train_ids, val_ids = ids[:n_train], ids[n_train:]
    vx, vy = streams(val_ids, B)
    model = CharLSTM(V, args.hidden, args.layers, args.dropout)
    trainer = Trainer(model, lr=args.lr, clip=args.clip)
    windows = Windows(train_ids, B, T)
    state = model.zero_state(B)
    budget = 60.0 * args.minutes
    log(
        f"quality: L={args.layers} H={args.hidden} B={B} T={T} V={V} dropout={args.dropout} "
        f"train={len(train_ids)} val={len(val_ids)} ({vx.numel()} evaluated) "
        f"budget={budget:.0f}s threads={torch.get_num_threads()}"
    )

    curve, eval_secs = [], 0.0

    def checkpoint(train_s, chars, train_loss):
        nonlocal eval_secs
        t0 = time.perf_counter()
        val = evaluate(model, vx, vy, T)
        dt = time.perf_counter() - t0
        eval_secs += dt
        curve.append(
            (round(train_s, 2), chars, None if train_loss is None else round(train_loss, 4), round(val, 4))
        )
        tl = "  -   " if train_loss is None else f"{train_loss:.4f}"
        log(f"  t={train_s:7.1f}s chars={chars:>10,} train={tl} val={val:.4f} (eval {dt:.1f}s)")

    mon = CpuMonitor()
    if args.eval_at_start:
        checkpoint(0.0, 0, None)
    train_s, chars, steps, epochs = 0.0, 0, 0, 0
    next_eval = args.eval_every_seconds
    acc, acc_n = 0.0, 0
    while train_s < budget:
        t0 = time.perf_counter()
        x, y, wrapped = windows.next()
        if wrapped:
            state = model.zero_state(B)
            epochs += 1
        loss, state = trainer.step(x, y, state)
        train_s += time.perf_counter() - t0
        chars += B * T
        steps += 1
        acc += loss
        acc_n += 1
        if train_s >= next_eval and train_s < budget:
            checkpoint(train_s, chars, acc / acc_n)
            acc, acc_n = 0.0, 0
            while next_eval <= train_s:
                next_eval += args.eval_every_seconds
    checkpoint(train_s, chars, acc / acc_n if acc_n else None)
    return {
        "mode": "quality",
        "config": config_of(
            args,
            V,
            n_params=sum(p.numel() for p in model.parameters()),
            train_chars=len(train_ids),
            val_chars=len(val_ids),
            val_chars_evaluated=int(vx.numel()),
        ),
        "environment": environment(),
        "curve_columns": ["train_seconds", "chars_seen", "train_loss", "val_loss"],
        "curve": curve,
        "final_val_loss": curve[-1][3],
        "train_seconds": round(train_s, 2),
        "eval_seconds": round(eval_secs, 2),
        "steps": steps,
        "chars_seen": chars,
        "epochs_completed": epochs,
        "train_chars_per_sec": round(chars / train_s, 1) if train_s else None,
        "cpu_during_run": mon.result(),
        "peak_rss_mb": peak_rss_mb(),
    }


# -- CLI -----------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="mode", required=True)

    def common(p, layers=2, hidden=128, dropout=0.0, corpus_required=False):
        p.add_argument("--layers", type=int, default=layers)
        p.add_argument("--hidden", type=int, default=hidden)
        p.add_argument(
            "--vocab", type=int, default=DEFAULT_VOCAB, help="V for random ids (ignored with --corpus)"
        )
        p.add_argument(
            "--corpus",
            default=None,
            required=corpus_required,
            help="text file; ids from its sorted vocabulary",
        )
        p.add_argument("--dropout", type=float, default=dropout)
        p.add_argument("--lr", type=float, default=2e-3)
        p.add_argument("--clip", type=float, default=5.0)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--no-mkldnn",
            action="store_true",
            help="disable oneDNN (torch.backends.mkldnn.enabled = False); the default "
            "is what a typical script gets",
        )

    p = sub.add_parser("train", help="training throughput")
    common(p)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seq", type=int, default=50)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--autocast",
        choices=["bf16"],
        default=None,
        help="bf16: the forward pass and loss under torch.autocast (PyTorch's CPU mixed precision)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="batch-1 sampling throughput")
    common(p)
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--temp", type=float, default=0.8)
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("quality", help="validation loss against training wall time")
    common(p, layers=2, hidden=512, dropout=0.2, corpus_required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=100)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--eval-every-seconds", type=float, default=60.0)
    p.add_argument(
        "--no-eval-at-start",
        dest="eval_at_start",
        action="store_false",
        help="skip the val loss of the untrained model at t=0",
    )
    p.set_defaults(func=cmd_quality)

    args = ap.parse_args(argv)
    result = args.func(args)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
