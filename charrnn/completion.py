"""Samples as text: the prime read as the corpus was (newlines folded, unknown characters
refused or dropped and counted), stop strings the vocabulary must be able to spell, several
samples drawn together, and why each sample ended ("stop" or "length").

The command line, `CharModel.sample` and a server all go through here, so a Python caller gets
the same checks and the same text as `charrnn sample`. The ids come in from the caller as an
iterator of arrays (CharModel.generate_ids), so this layer only turns them into text.
"""

from typing import NamedTuple, Union

import numpy as np

from .text import data
from .errors import CorpusError, UsageError


class Completion(NamedTuple):
    text: Union[str, bytes]  # the generated text after the prime; with finish_reason "stop"
    # it ends with the stop string
    finish_reason: str  # "stop": the stop string was written; "length": the length ran out


class Prime(NamedTuple):
    # fmt: off
    text: Union[str, bytes]  # the prime as the model reads it (and as it is echoed)
    ids: np.ndarray          # its ids; the start symbol alone for an empty prime
    dropped: int             # characters left out (unknown="drop")
    # fmt: on


def fold_text(model, s):
    """s as the model's text is: newlines folded for a character model (as the corpus was)."""
    if model.byte_level:
        return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)
    if isinstance(s, (bytes, bytearray)):
        raise TypeError("a character model reads str, not bytes")
    return data.fold_newlines(s)


def prepare_prime(model, prime, unknown="error"):
    """The Prime of a prime text. unknown: "error" (a CorpusError naming the characters the
    model does not know) or "drop" (they are left out of the text and of what is echoed)."""
    text = fold_text(model, prime or "")
    missing = _unspellable(model, text)
    dropped = 0
    if missing:
        if unknown != "drop":
            raise CorpusError(
                f"the prime has characters not in the vocabulary: "
                f"{_show(missing)}; pass --drop-unknown to leave them out"
            )
        kept = [s for s in _symbols(text) if s not in missing]
        dropped = len(_symbols(text)) - len(kept)
        text = bytes(kept) if model.byte_level else "".join(kept)
    ids = model.encode(text, unknown="error") if len(text) else np.zeros(0, np.int64)
    if len(ids) == 0:
        ids = np.array([model.start_id()])
    return Prime(text, np.asarray(ids, np.int64), dropped)


def check_stop(model, stop):
    """The stop string as the model writes text (newlines folded), or UsageError when the
    model can never write it: a stop string it cannot spell would let an endless sample run
    for ever."""
    if stop is None:
        return None
    folded = fold_text(model, stop)
    missing = _unspellable(model, folded)
    if missing:
        raise UsageError(
            f"--stop {_show_string(stop)} can never appear: the model never writes {_show(missing)}"
        )
    return folded


def _symbols(text):
    return list(text)  # characters of a str; byte values of bytes


def _unspellable(model, text):
    """The distinct symbols of text that the model cannot produce (not in its vocabulary, or
    its unknown symbol, which sampling never draws), in order of first appearance."""
    out = {}
    for s in _symbols(text):
        if s not in out and s not in model.vocab:  # the unknown symbol is not in it
            out[s] = True
    return list(out)


def _show(symbols, most=8):
    def one(s):
        return (
            f"byte 0x{s:02x}" if isinstance(s, int) else (repr(s) if s.isprintable() else f"U+{ord(s):04X}")
        )

    shown = ", ".join(one(s) for s in symbols[:most])
    return shown + (f" and {len(symbols) - most} more" if len(symbols) > most else "")


def _show_string(s):
    return repr(s.decode("utf-8", "backslashreplace") if isinstance(s, bytes) else s)


class Stream:
    """One sample's text as it is generated, piece by piece (a str, or bytes for a byte-level
    model), cut after the stop string; `finish_reason` once it is exhausted ("stop" or
    "length"; None while it runs, and for ever with length 0 and no stop). ids: an iterator
    of (n, 1) arrays of the ids drawn after the prime, as cfg says (CharModel.generate_ids)."""

    def __init__(self, model, cfg, prime, ids):
        self.decode = model.decoder()
        self.empty = b"" if model.byte_level else ""
        self.stop = check_stop(model, cfg.stop)
        self.gen = ids
        self.finish_reason = None

    def __iter__(self):
        stop, held = self.stop, self.empty  # held: text that may begin the stop string
        for ids in self.gen:
            held += self.decode(ids[:, 0])
            if stop:
                cut = held.find(stop)
                if cut >= 0:
                    self.finish_reason = "stop"
                    yield held[: cut + len(stop)]
                    return
                keep = len(stop) - 1
                ready, held = (held[:-keep], held[-keep:]) if keep else (held, self.empty)
                if ready:
                    yield ready
            else:
                yield held
                held = self.empty
        self.finish_reason = "length"
        if held:
            yield held


class Rows:
    """cfg.num_samples samples drawn together in one batch, given out in order as they become
    final: row 0's text as it is generated, each later row's as soon as the rows before it are
    done (what it has by then at once, the rest as it comes). Each ends at its first stop
    string or after cfg.length characters (which must be positive). Iterating yields (row,
    piece) pairs, rows in order; `finish_reasons` ("stop" or "length", a row's) once exhausted.
    One batch, one generator: the text is the same however it is read (complete reads it
    whole). ids: an iterator of (n, cfg.num_samples) arrays of the ids drawn after the prime,
    as cfg says (CharModel.generate_ids)."""

    def __init__(self, model, cfg, prime, ids):
        cfg.validate(endless_ok=False)
        self.model, self.cfg, self.prime, self.ids = model, cfg, prime, ids
        self.stop = check_stop(model, cfg.stop)
        self.finish_reasons = [None] * cfg.num_samples

    def __iter__(self):
        n, stop, reasons = self.cfg.num_samples, self.stop, self.finish_reasons
        decoders = [self.model.decoder() for _ in range(n)]
        empty = b"" if self.model.byte_level else ""
        texts, sent = [empty] * n, [0] * n  # sent: how much of each row is given out
        hold = len(stop) - 1 if stop else 0  # the end of a running row may begin the stop string
        row = 0  # the row being given out
        for ids in self.ids:
            for k in range(n):
                if reasons[k] is None:
                    at = max(0, len(texts[k]) - hold)  # search the new part
                    texts[k] += decoders[k](ids[:, k])
                    cut = texts[k].find(stop, at) if stop else -1
                    if cut >= 0:
                        texts[k], reasons[k] = texts[k][: cut + len(stop)], "stop"
            while row < n:
                final = len(texts[row]) - (hold if reasons[row] is None else 0)
                if final > sent[row]:
                    yield row, texts[row][sent[row] : final]
                    sent[row] = final
                if reasons[row] is None:
                    break
                row += 1
            if row == n:
                return
        for k in range(row, n):
            reasons[k] = reasons[k] or "length"
            if len(texts[k]) > sent[k]:
                yield k, texts[k][sent[k] :]


def complete(model, cfg, prime, ids):
    """cfg.num_samples Completions of a Prime, drawn together in one batch (Rows, read whole,
    of ids); each ends at its first stop string or after cfg.length characters. cfg.length
    must be positive."""
    rows = Rows(model, cfg, prime, ids)
    texts = [b"" if model.byte_level else ""] * cfg.num_samples
    for k, piece in rows:
        texts[k] += piece
    return [Completion(t, why) for t, why in zip(texts, rows.finish_reasons)]
