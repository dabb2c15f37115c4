#!/usr/bin/env python
"""Which cell learns more per character? A PyTorch study of issue 41's lever 2, before building one.

Standalone (torch, numpy, the standard library), run with a separate interpreter that has torch:

    /work/torchenv/bin/python benchmarks/cell_study.py --corpus ../shared/corpora/tinyshakespeare.txt \
        --cells lstm,lnlstm,attn --chars 3e6

Every cell trains on the same characters in the same order with charrnn's recipe, scaled down:
one-hot input (the first layer's input rows uniform in +-2, as charrnn starts them), 2 layers,
batch 16 x window 100, truncated BPTT with the state carried, Adam at 4e-3 on a cosine to 5% over
the characters, clipping at 5, dropout between layers and before the decoder. Validation: the last
tenth of the text, cut into 16 contiguous streams, state carried, exact mean nats/char, at a few
points along the way. Equal characters, not equal time: the figures do not depend on the machine's
load; the chars/s column says what each costs here in PyTorch (a Python loop over time steps, so
only a rough guide to what a fused kernel would pay).

Cells:
  lstm    the LSTM as charrnn has it (PyTorch's gate order i f g o, zero biases).
  lnlstm  layer-normalised LSTM (Ba et al. 2016): the input product and the recurrent product
          normalised apart, each with its own gain and bias, and the cell state before its tanh.
  attn    the LSTM with one attention head on the top layer (after Merity's SHA-RNN, 2019): each
          position attends over the window so far and the previous window's states (detached),
          query and key of 64, and the head's output added to the top layer's before the decoder.

Prints one JSON object on stdout; progress on stderr.
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_baseline import load_corpus, log  # this directory's: reads a corpus as the baseline does


def load(path):
    """(training ids, validation ids: the last tenth, vocabulary size), as torch_baseline reads a corpus."""
    ids, vocab = load_corpus(path)
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:], len(vocab)


def streams(ids, B):
    S = (len(ids) - 1) // B
    x = torch.from_numpy(np.ascontiguousarray(ids[: B * S].reshape(B, S)).T.copy())
    y = torch.from_numpy(np.ascontiguousarray(ids[1 : B * S + 1].reshape(B, S)).T.copy())
    return x, y  # (S, B)


class LayerNorm(nn.Module):
    def __init__(self, n, bias=0.0):
        super().__init__()
        self.g = nn.Parameter(torch.ones(n))
        self.b = nn.Parameter(torch.full((n,), bias))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.g, self.b, 1e-5)


class Layer(nn.Module):
    """One LSTM layer over a window; `ln` normalises as lnlstm does."""

    def __init__(self, n_in, H, first, ln):
        super().__init__()
        self.H, self.first, self.ln = H, first, ln
        if first:  # a one-hot input: its product is a row lookup
            self.Wx = nn.Embedding(n_in, 4 * H)
            nn.init.uniform_(self.Wx.weight, -2.0, 2.0)
        else:
            self.Wx = nn.Linear(n_in, 4 * H, bias=False)
            nn.init.uniform_(self.Wx.weight, -1 / math.sqrt(H), 1 / math.sqrt(H))
        self.Wh = nn.Linear(H, 4 * H, bias=False)
        nn.init.uniform_(self.Wh.weight, -1 / math.sqrt(H), 1 / math.sqrt(H))
        self.b = nn.Parameter(torch.zeros(4 * H))
        if ln:
            self.ln_x, self.ln_h, self.ln_c = LayerNorm(4 * H), LayerNorm(4 * H), LayerNorm(H)

    def forward(self, x, h, c):
        X = self.Wx(x)
        if self.ln:
            X = self.ln_x(X)
        out = []
        for t in range(X.shape[0]):
            R = self.Wh(h)
            if self.ln:
                R = self.ln_h(R)
            i, f, g, o = (X[t] + R + self.b).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.ln_c(c) if self.ln else c)
            out.append(h)
        return torch.stack(out), h, c


class Head(nn.Module):
    """One causal attention head over [previous window; this window] of the top layer."""

    def __init__(self, H, dk=64):
        super().__init__()
        self.q, self.k = nn.Linear(H, dk, bias=False), nn.Linear(H, dk, bias=False)
        self.v = nn.Linear(H, H, bias=False)
        nn.init.zeros_(self.v.weight)  # starts as the plain LSTM
        self.scale = 1 / math.sqrt(dk)

    def forward(self, h, memory):
        T = h.shape[0]
        keys = h if memory is None else torch.cat([memory, h])
        M = keys.shape[0] - T
        q = self.q(h).transpose(0, 1)  # (B, T, dk)
        k = self.k(keys).transpose(0, 1)  # (B, M+T, dk)
        v = self.v(keys).transpose(0, 1)  # (B, M+T, H)
        s = q @ k.transpose(1, 2) * self.scale  # (B, T, M+T)
        mask = torch.ones(T, M + T, dtype=torch.bool).triu(M + 1)
        a = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
        return h + (a @ v).transpose(0, 1)


class Model(nn.Module):
    def __init__(self, cell, V, H, L, dropout):
        super().__init__()
        ln = cell == "lnlstm"
        self.layers = nn.ModuleList(Layer(V if l == 0 else H, H, l == 0, ln) for l in range(L))
        self.head = Head(H) if cell == "attn" else None
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(H, V)
        self.H, self.L = H, L

    def zero(self, B):
        z = torch.zeros(B, self.H)
        return [(z, z) for _ in range(self.L)], None

    def forward(self, x, state):
        states, memory = state
        new = []
        for l, layer in enumerate(self.layers):
            h, c = states[l]
            x, h, c = layer(x, h, c)
            new.append((h.detach(), c.detach()))
            if l < self.L - 1:
                x = self.drop(x)
        if self.head is not None:
            x, memory = self.head(x, memory), x.detach()
        return self.out(self.drop(x)), (new, memory)


def evaluate(model, val, B, T):
    model.eval()
    x, y = streams(val, B)
    state, total, n = model.zero(B), 0.0, 0
    with torch.no_grad():
        for p in range(0, x.shape[0], T):
            logits, state = model(x[p : p + T], state)
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y[p : p + T].reshape(-1), reduction="sum"
            ).item()
            n += y[p : p + T].numel()
    model.train()
    return total / n


def run(cell, train, val, V, args):
    torch.manual_seed(args.seed)
    model = Model(cell, V, args.hidden, args.layers, args.dropout)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    x, y = streams(train, args.batch)
    T, per_step = args.seq, args.batch * args.seq
    steps = int(args.chars // per_step)
    evals = {int(steps * k / args.points) for k in range(1, args.points + 1)}
    state, pos, curve, trained = model.zero(args.batch), 0, [], 0.0
    log(f"{cell}: {params:,} parameters, {steps} steps of {per_step} characters")
    for step in range(1, steps + 1):
        lr = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        if pos + T > x.shape[0]:
            pos, state = 0, model.zero(args.batch)
        t0 = time.perf_counter()
        logits, state = model(x[pos : pos + T], state)
        loss = F.cross_entropy(logits.reshape(-1, V), y[pos : pos + T].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        trained += time.perf_counter() - t0
        pos += T
        if step in evals:
            v = evaluate(model, val, 16, 100)
            curve.append({"step": step, "chars": step * per_step, "val": round(v, 4)})
            log(
                f"{cell}: step {step}, {step * per_step / 1e6:.2f}M chars, train {loss.item():.4f}, "
                f"val {v:.4f}, {step * per_step / trained:,.0f} chars/s"
            )
    return {
        "cell": cell,
        "params": params,
        "chars_per_sec": round(steps * per_step / trained),
        "val": curve[-1]["val"],
        "curve": curve,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--cells", default="lstm,lnlstm,attn")
    ap.add_argument("--chars", type=float, default=3e6, help="training characters per cell")
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=100)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--points", type=int, default=4, help="evaluations along the way")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, val, V = load(args.corpus)
    config = {k: v for k, v in vars(args).items() if k != "corpus"}
    config.update(torch=torch.__version__, corpus=os.path.basename(args.corpus), vocab=V)
    log(json.dumps(config))
    results = [run(cell, train, val, V, args) for cell in args.cells.split(",")]
    print(json.dumps({"config": config, "results": results}, indent=1))


if __name__ == "__main__":
    main()
