"""A trained model with its text-level conveniences (encode, score, generate, sample) and the
checkpoint metadata it was loaded with; and loading one from a checkpoint."""

from dataclasses import replace

import numpy as np

from . import checkpoint
from .completion import Stream, complete, prepare_prime
from .config import SampleConfig
from .errors import CheckpointError, CorpusError, UsageError
from .engine.model import Model
from .text.vocab import Vocab


class CharModel(Model):
    """A trained Model with text-level conveniences and its checkpoint metadata."""

    meta = None  # the checkpoint.Meta it was loaded with (None: not loaded from a file)

    def __init__(self, config, vocab, flat=None, dtype=np.float32):
        """vocab: a Vocab, or its symbols (a str of characters, or bytes of byte values);
        id = index."""
        if len(vocab) != config.vocab_size:
            raise ValueError("vocabulary size does not match the config")
        super().__init__(config, flat, dtype)
        self.vocab = Vocab(vocab)

    @property
    def byte_level(self):
        return self.vocab.byte_level

    def encode(self, text, unknown="error"):
        """Ids of a text (bytes, or a str taken as UTF-8, for a byte-level model)."""
        return self.vocab.encode(text, unknown=unknown)

    def loss(self, text, batch=50, seq=100, exact=False, unknown=None):
        """Mean cross-entropy of the text under the model, in nats per character (see score)."""
        return self.score(text, batch, seq, exact, unknown).nats

    def score(self, text, batch=50, seq=100, exact=False, unknown=None):
        """Score(nats per character, characters scored, streams): the text read as up to
        batch streams side by side, each from a zero state, or with exact as one stream
        from a zero state, every character after the first scored (Model.score_ids).
        Characters the model does not know are an error, or (unknown="drop") left out and
        counted (dropped); a --max-vocab model reads them as its unknown symbol, and the Score
        counts those targets (unknown) and gives the loss over the others apart (nats_known)."""
        if unknown is None:
            unknown = "unk" if self.vocab.unk_id >= 0 else "error"
        ids = self.encode(text, unknown=unknown)
        if len(ids) < 2:
            raise CorpusError("need at least two characters to measure a loss")
        score = self.score_ids(ids, batch, seq, exact, self.vocab.unk_id)
        return score._replace(dropped=self.vocab.length(text) - len(ids))

    def states(self, text, unknown=None):
        """What the model holds after each character of text, read from the zero state: a
        probe.States of h (L, N, H), c (L, N, H) (lstm; else None) and gates, a dict of
        (L, N, H) arrays by name (lstm i f g o, gru r z n). unknown: "error" or "drop", or None:
        the unknown symbol for a model with one, as score reads them."""
        from .inspect import probe

        return probe.states(self, text, unknown)

    def start_id(self):
        return self.vocab.start_id

    def generate_ids(self, cfg, ids, chunk=256):
        """An iterator of (n, cfg.num_samples) arrays of new ids after the prime ids (a 1-d
        sequence, at least one), cfg.length in all (0: without end); cfg a SampleConfig."""
        from .engine.sampler import Sampler, pick_of

        cfg.validate()
        s = Sampler(self, cfg.num_samples, precision=cfg.precision)
        s.prime(ids)
        rng = np.random.default_rng(cfg.seed)
        how, length = pick_of(cfg, self.vocab.unk_id), cfg.length

        def chunks():
            done, n = 0, min(chunk, 32)  # a short first chunk: text appears at once
            while length <= 0 or done < length:
                if length > 0:
                    n = min(n, length - done)
                yield s.generate(n, rng, how)
                done += n
                n = chunk

        return chunks()

    def generate(
        self,
        length,
        temp=1.0,
        prime="",
        seed=None,
        top_k=0,
        top_p=1.0,
        num_samples=1,
        chunk=256,
        unknown="error",
        precision="fp32",
        **repetition,
    ):
        """An iterator of (n, num_samples) arrays of new ids, `length` in all (0: without end).
        The options are checked, and the prime read, here, before the first chunk is asked
        for (completion.prepare_prime: unknown "error" or "drop"); precision: the weights'
        format, fp32 (exact), bf16 or int8 (engine/precision.py); repetition: SampleConfig's
        presence_penalty, frequency_penalty, penalty_window, no_repeat."""
        cfg = SampleConfig(
            length=length,
            temp=temp,
            top_k=top_k,
            top_p=top_p,
            num_samples=num_samples,
            seed=seed,
            precision=precision,
            **repetition,
        ).validate()
        return self.generate_ids(cfg, prepare_prime(self, prime, unknown).ids, chunk)

    def stream(self, prime="", unknown="error", **options):
        """One sample as a completion.Stream of text pieces; options are SampleConfig's fields
        (length, temp, top_k, top_p, stop, seed, presence_penalty, frequency_penalty,
        penalty_window, no_repeat); its finish_reason says why it ended."""
        cfg = SampleConfig(**options).validate()
        if cfg.num_samples != 1:
            raise UsageError("a stream is one sample: use complete() for several")
        p = prepare_prime(self, prime, unknown)
        return Stream(self, cfg, p, self.generate_ids(cfg, p.ids))

    def complete(self, prime="", unknown="error", **options):
        """cfg.num_samples completion.Completions (text, finish_reason) of the prime, drawn
        together; options are SampleConfig's fields, and length must be positive."""
        cfg = SampleConfig(**options).validate(endless_ok=False)
        p = prepare_prime(self, prime, unknown)
        return complete(self, cfg, p, self.generate_ids(cfg, p.ids))

    def at_precision(self, precision):
        """A copy of the model whose weights are those a `precision` sampler reads (fp32,
        bf16 or int8; engine/precision.py), as float32: its loss on a text is what sampling
        at that precision costs (`charrnn eval --precision`)."""
        from .config import check_precision
        from .engine.precision import reduced_params

        check_precision(precision)
        if self.dtype != np.float32:
            raise UsageError(f"--precision {precision} needs a float32 model")
        out = CharModel(self.config, self.vocab, self.flat.copy())
        for name, arr in reduced_params(self.params, precision).items():
            getattr(out.params, name)[...] = arr
        out.meta = self.meta
        return out

    def decoder(self):
        """A function from an id array to its text: a str (multi-byte characters kept whole),
        or for a byte-level model the bytes themselves."""
        return self.vocab.decoder()

    def sample(
        self,
        length=200,
        temp=1.0,
        prime="",
        seed=None,
        top_k=0,
        top_p=1.0,
        include_prime=True,
        stop=None,
        unknown="error",
        precision="fp32",
        **repetition,
    ):
        """The prime followed by `length` generated characters (fewer when a stop string ends
        it), as `charrnn sample` prints them (include_prime=False: the generated part alone).
        A str, or bytes for a byte-level model (whose prime may be bytes, or a str taken as
        UTF-8). The prime is read as the corpus was: newlines folded. precision: the weights'
        format, fp32 (exact), bf16 or int8 (engine/precision.py). repetition: SampleConfig's
        presence_penalty, frequency_penalty, penalty_window, no_repeat."""
        cfg = SampleConfig(
            length=length,
            temp=temp,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            seed=seed,
            precision=precision,
            **repetition,
        )
        cfg.validate(endless_ok=False)
        p = prepare_prime(self, prime, unknown)
        text = complete(self, cfg, p, self.generate_ids(cfg, p.ids))[0].text
        return p.text + text if include_prime else text


def grown(base, vocab, rng):
    """A CharModel over vocab (a superset of base's, as Vocab.grown makes it) with base's
    weights: its symbols' input rows and output columns copied exactly, the new symbols' drawn
    as for a fresh model (Model.init_weights from rng), every other weight copied."""
    cfg = replace(base.config, vocab_size=len(vocab))
    model = CharModel(cfg, vocab, dtype=base.dtype)
    model.init_weights(rng)
    old = vocab.ids_of(base.vocab)
    for name, new, was in zip(model.params._fields, model.params, base.params):
        if name == "Wx0":
            new[old] = was
        elif name == "Wy":
            new[:, old] = was
        elif name == "by":
            new[old] = was
        else:
            new[...] = was
    return model


def model_from_checkpoint(path, dtype=np.float32):
    """(CharModel, Meta, train arrays) from a checkpoint file; dtype None keeps the saved one."""
    meta, params, train = checkpoint.load(path)
    return from_arrays(meta, params, dtype, path), meta, train


def from_arrays(meta, params, dtype, path):
    """The CharModel of a loaded checkpoint (checkpoint.load's meta and params), checked: the
    weights must fit the model and be finite. dtype None keeps the saved one."""
    try:
        if dtype is None:
            dtype = params["Wx0"].dtype
            if dtype not in (np.float32, np.float64):
                raise ValueError(f"weights of type {dtype}")
        model = CharModel(meta.model, meta.vocab, dtype=dtype)
        for name, arr in zip(model.params._fields, model.params):
            if params[name].shape != arr.shape:
                raise ValueError(f"{name} has shape {params[name].shape}, expected {arr.shape}")
            arr[:] = params[name]
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} does not describe a valid model ({e})") from None
    if not np.isfinite(model.flat).all():
        raise CheckpointError(f"{path} holds non-finite weights")
    model.meta = meta
    return model
