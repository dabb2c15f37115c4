"""The library interface for scripts and notebooks:

    import charrnn
    model = charrnn.load("runs/shakespeare")      # a checkpoint file or a run directory
    print(model.sample(200, temp=0.8, prime="ROMEO:", seed=1))
    print(model.loss(open("some.txt").read()))    # nats per character
    charrnn.train("input.txt", out="runs/mine", minutes=2)
"""
import codecs
import math

import numpy as np

from . import checkpoint, data
from .errors import CheckpointError, CorpusError
from .model import Model, ModelConfig, num_params


class CharModel(Model):
    """A trained Model with text-level conveniences and its checkpoint metadata."""

    meta: dict = {}

    @property
    def byte_level(self):
        return isinstance(self.vocab, bytes)

    def encode(self, text, unknown="error"):
        if self.byte_level and isinstance(text, str):
            text = text.encode("utf-8")
        return data.encode(text, self.vocab, unknown=unknown)

    def loss(self, text, batch_size=50, seq_len=100):
        """Mean cross-entropy of the text under the model, in nats per character."""
        ids = self.encode(text, unknown="unk" if data.UNK in self.vocab else "error")
        if len(ids) < 2:
            raise CorpusError("need at least two characters to measure a loss")
        return self.evaluate(ids, batch_size, seq_len)

    def start_id(self):
        nl = b"\n"[0] if self.byte_level else "\n"
        idx = self.vocab.find(bytes([nl]) if self.byte_level else nl)
        return max(idx, 0)

    def generate(self, length, temp=1.0, prime="", seed=None, top_k=0, top_p=1.0,
                 num_samples=1, chunk=256, unknown="error"):
        """An iterator of (n, num_samples) arrays of new ids, `length` in all (0: without end).
        The prime is checked here, before the first chunk is asked for."""
        from .sampler import Sampler
        s = Sampler(self, num_samples)
        try:
            ids = self.encode(prime, unknown=unknown) if prime else np.array([self.start_id()])
        except CorpusError as e:
            raise CorpusError(f"the prime: {e}; pass --drop-unknown to leave them out") from None
        if len(ids) == 0:
            ids = np.array([self.start_id()])
        s.prime(ids)
        rng = np.random.default_rng(seed)
        banned = self.vocab.find(data.UNK) if not self.byte_level else -1

        def chunks():
            done, n = 0, min(chunk, 32)  # a short first chunk: text appears at once
            while length <= 0 or done < length:
                if length > 0:
                    n = min(n, length - done)
                yield s.generate(n, rng, temp, top_k, top_p, banned)
                done += n
                n = chunk
        return chunks()

    def decoder(self):
        """A function from an id array to text, keeping multi-byte characters whole."""
        if not self.byte_level:
            table = np.array(list(self.vocab))
            return lambda ids: "".join(table[ids])
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda ids: dec.decode(np.asarray(ids, np.uint8).tobytes())

    def sample(self, length=200, temp=1.0, prime="", seed=None, top_k=0, top_p=1.0):
        """Generated text (after the prime, which is not included)."""
        decode = self.decoder()
        return "".join(decode(ids[:, 0]) for ids in
                       self.generate(length, temp, prime, seed, top_k, top_p))


def model_from_checkpoint(path, dtype=np.float32):
    """(CharModel, meta, train arrays) from a checkpoint file; dtype None keeps the saved one."""
    meta, params, train = checkpoint.load(path)
    try:
        if dtype is None:
            dtype = params["Wx0"].dtype
            if dtype not in (np.float32, np.float64):
                raise ValueError(f"weights of type {dtype}")
        cfg = ModelConfig(**meta["model"])
        v = meta["vocab"]
        vocab = bytes(v["ids"]) if v["kind"] == "bytes" else v["chars"]
        model = CharModel(cfg, vocab, dtype=dtype)
        for name, arr in zip(model.params._fields, model.params):
            if params[name].shape != arr.shape:
                raise ValueError(f"{name} has shape {params[name].shape}, expected {arr.shape}")
            arr[:] = params[name]
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} does not describe a valid model ({e})") from None
    if not np.isfinite(model.flat).all():
        raise CheckpointError(f"{path} holds non-finite weights")
    model.meta = meta
    return model, meta, train


def load(path=None, dtype=np.float32):
    """Load a model from a checkpoint file or run directory (default: the latest run)."""
    return model_from_checkpoint(checkpoint.resolve(path), dtype)[0]


def describe(meta):
    """A dict summarising a checkpoint for `charrnn info`."""
    cfg = ModelConfig(**meta["model"])
    hist = meta.get("history", [])
    vals = [h["val_loss"] for h in hist if h.get("val_loss") is not None
            and math.isfinite(h["val_loss"])]
    pr = meta.get("progress", {})
    return {
        "cell": cfg.cell, "layers": cfg.num_layers, "hidden": cfg.hidden_size,
        "vocab_size": cfg.vocab_size, "dropout": cfg.dropout, "params": num_params(cfg),
        "vocab_kind": meta["vocab"]["kind"], "step": pr.get("step"),
        "epoch": hist[-1]["epoch"] if hist else pr.get("epoch", 0),  # fractional
        "elapsed_seconds": pr.get("elapsed"),
        "chars_seen": pr.get("chars_seen"), "val_loss": meta.get("val_loss"),
        "best_val_loss": min(vals) if vals else None, "evaluations": len(hist),
        "corpus": meta.get("info", {}).get("corpus"), "charrnn_version": meta.get("charrnn"),
        "train": meta.get("train", {}), "history": hist,
    }


def warmup(cell="lstm", dtype=np.float32, sampling=False):
    """Compile (or load from Numba's cache) the kernels a command needs, on a tiny model:
    the compiled code depends only on dtypes and array ranks, not on sizes."""
    cfg = ModelConfig(cell=cell, num_layers=2, hidden_size=2, vocab_size=2)
    m = CharModel(cfg, "ab", dtype=dtype)
    if sampling:
        from .sampler import Sampler
        from . import threads
        split = cell == "lstm" and (threads.explicit() or 1) > 1  # see sampler.Sampler
        for parallel in (False, True) if split else (False,):
            s = Sampler(m, 1, parallel=parallel)
            s.prime(np.array([0, 1]))
            s.generate(1, np.random.default_rng(0), 1.0)
        return
    from .optim import Adam
    x = np.zeros((1, 1), np.int32)  # windows are int32 whatever the ids' storage type
    gflat, grads = m.zeros_like_params()
    m.loss_and_grad(x, x, *m.zero_state(1), grads)  # dropout masks take the same kernel
    Adam(m.flat).step(m.flat, gflat)
    m.evaluate(np.array([0, 1, 0], np.uint8), 1, 1)
