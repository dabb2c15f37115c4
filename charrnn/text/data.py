"""The text-in path's one entry point for a whole corpus, and the vocabulary and ids.

read_text (sources.py) finds a corpus and decodes it (decoding.py); build_vocab, encode and
decode turn text into ids and back; split and streams cut the ids for training. A large file
streams through the same rules into the id cache instead (idcache.encoded_corpus).

A vocabulary (vocab.Vocab) is a `str` of sorted distinct characters (or a `bytes` of sorted
distinct byte values), perhaps with the unknown symbol; a symbol's id is its position, so the same
text always gives the same ids. These functions also take a bare str or bytes: a vocabulary without
the unknown symbol. Encoding is vectorised: a lookup table indexed by code point, applied chunk by
chunk into one preallocated array.
"""

import functools
from fractions import Fraction

import numpy as np

from ..errors import ConfigError, CorpusError
from .decoding import (
    BOM,
    UNDECODABLE,
    UNK,
    Decoding,
    binary_message,
    decode_message,
    fold_newlines,
    prepare_input,
)
from .sources import (
    DEFAULT_CORPUS,
    STDLIB_CAP,
    corpus_file,
    corpus_names,
    default_data_dir,
    describe,
    hash_stream,
    read_text,
)

__all__ = [  # the text-in path's names, from here and from sources.py and decoding.py
    "BOM",
    "UNDECODABLE",
    "UNK",
    "Decoding",
    "binary_message",
    "decode_message",
    "fold_newlines",
    "prepare_input",
    "DEFAULT_CORPUS",
    "STDLIB_CAP",
    "corpus_file",
    "corpus_names",
    "default_data_dir",
    "describe",
    "hash_stream",
    "read_text",
    "CHUNK",
    "build_vocab",
    "vocab_from_counts",
    "id_dtype",
    "lookup_table",
    "encode",
    "unknown_message",
    "decode_bytes",
    "decode",
    "split",
    "streams",
]

CHUNK = 1 << 22  # characters encoded or counted at a time
_CODE_POINTS = 0x110000


def _codes(text, start=0, stop=None):
    """Code points (uint32) of text[start:stop], or byte values (uint8) of a bytes object."""
    text = _symbols_of(text)
    stop = len(text) if stop is None else min(stop, len(text))
    if isinstance(text, str):
        return np.frombuffer(text[start:stop].encode("utf-32-le", "surrogatepass"), np.uint32)
    return np.frombuffer(text, np.uint8, count=stop - start, offset=start)


def _symbols_of(vocab):
    """The str or bytes of a vocabulary given as a Vocab or as its symbols."""
    return getattr(vocab, "symbols", vocab)


def _unk_id(vocab):
    """The id of a vocabulary's unknown symbol, or -1 (a bare str or bytes has none)."""
    return getattr(vocab, "unk_id", -1)


def _check_kinds(text, vocab):
    vocab = _symbols_of(vocab)
    if isinstance(text, str) != isinstance(vocab, str):
        raise TypeError(f"cannot use a {type(vocab).__name__} vocabulary with {type(text).__name__}")


def build_vocab(text, max_vocab=None):
    """The Vocab of a str's sorted distinct characters (or of bytes' byte values).

    Bytes that did not decode (UNDECODABLE, from --errors replace) are no character: the
    vocabulary then has the unknown symbol for them. With max_vocab K smaller than the number of
    symbols (text mode only), the K-1 most frequent characters are kept (ties go to the lower
    code point) and the unknown symbol stands for the rest.
    """
    counts = np.zeros(_CODE_POINTS if isinstance(text, str) else 256, np.int64)
    for start in range(0, len(text), CHUNK):
        counts += np.bincount(_codes(text, start, start + CHUNK), minlength=len(counts))
    return vocab_from_counts(counts, max_vocab)


def vocab_from_counts(counts, max_vocab=None):
    """build_vocab from symbol counts: (0x110000,) by code point for text, (256,) by byte value."""
    from .vocab import Vocab  # (vocab.py builds on this module)

    present = np.flatnonzero(counts)
    if len(counts) == 256:
        return Vocab(present.astype(np.uint8).tobytes())
    unk = bool(counts[ord(UNDECODABLE)])
    present = present[present != ord(UNDECODABLE)]
    if max_vocab is not None and max_vocab < len(present) + unk:
        if max_vocab < 2:
            raise ConfigError(f"max_vocab must be at least 2, not {max_vocab}")
        by_frequency = np.lexsort((present, -counts[present]))
        present, unk = present[by_frequency[: max_vocab - 1]], True
    return Vocab.of(map(chr, present.tolist()), unk)


def id_dtype(vocab_size):
    """The smallest unsigned integer type holding every id."""
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32


def lookup_table(vocab):
    """Table from code point (or byte value) to id, -1 where the vocabulary lacks the symbol.
    UNDECODABLE goes to the unknown symbol, or -1 without one."""
    unk, vocab = _unk_id(vocab), _symbols_of(vocab)
    codes = _codes(vocab)
    ids = np.arange(len(codes), dtype=np.int32)
    if unk >= 0:
        codes, ids = np.delete(codes, unk), np.delete(ids, unk)
    if len(np.unique(codes)) != len(codes):
        raise ValueError("the vocabulary has repeated symbols")
    table = np.full(_CODE_POINTS if isinstance(vocab, str) else 256, -1, np.int32)
    table[codes] = ids
    if unk >= 0:
        table[ord(UNDECODABLE)] = unk
    return table


@functools.lru_cache(maxsize=8)
def _read_only_table(vocab):
    """lookup_table(vocab), kept for the next encode: a text table is 4 MB to fill, and a server
    encodes a prompt per request."""
    table = lookup_table(vocab)
    table.flags.writeable = False
    return table


def encode(text, vocab, *, unknown="auto"):
    """Ids of text's characters (bytes) in vocab, as uint8/uint16/uint32 (see id_dtype).

    Symbols missing from vocab are, by `unknown`: "unk" mapped to the unknown symbol, "drop" left
    out, "error" a CorpusError; "auto" is "unk" when vocab has the unknown symbol, else "error".
    """
    _check_kinds(text, vocab)
    unk_id = _unk_id(vocab)
    table = _read_only_table(vocab)
    vocab = _symbols_of(vocab)
    if unknown == "auto":
        unknown = "unk" if unk_id >= 0 else "error"
    if unknown not in ("unk", "drop", "error") or (unknown == "unk" and unk_id < 0):
        raise ValueError(f"unknown={unknown!r} is not possible with this vocabulary")
    out = np.empty(len(text), id_dtype(len(vocab)))
    n = 0
    for start in range(0, len(text), CHUNK):
        codes = _codes(text, start, min(start + CHUNK, len(text)))
        ids = table[codes]
        missing = ids < 0
        if missing.any():
            if unknown == "error":
                raise CorpusError(unknown_message(codes[missing], isinstance(text, str)))
            if unknown == "unk":
                ids[missing] = unk_id
            else:
                ids = ids[~missing]
        out[n : n + len(ids)] = ids
        n += len(ids)
    return out if n == len(out) else out[:n].copy()


def unknown_message(codes, text_mode):
    """The error for symbols (code points, or byte values) missing from a vocabulary."""
    distinct = np.unique(codes)
    undecodable = text_mode and ord(UNDECODABLE) in distinct
    distinct = distinct[distinct != ord(UNDECODABLE)] if text_mode else distinct
    show = [repr(chr(c)) if text_mode else f"0x{c:02x}" for c in distinct[:5].tolist()]
    more = f" and {len(distinct) - 5} more" if len(distinct) > 5 else ""
    if not undecodable:
        return f"the text has characters not in the vocabulary: {', '.join(show)}{more}"
    also = f"; and characters not in the vocabulary: {', '.join(show)}{more}" if show else ""
    return (
        "the text has undecodable bytes, which --errors replace reads as the unknown symbol, and "
        f"the vocabulary has none (--errors ignore leaves them out){also}"
    )


def decode_bytes(ids, vocab):
    """The raw bytes of ids in a byte vocabulary (for streaming through an incremental decoder)."""
    return _codes(vocab)[_valid_ids(ids, len(vocab))].tobytes()


def decode(ids, vocab):
    """The text of ids; a byte vocabulary's bytes are decoded as UTF-8 with replacement."""
    vocab = _symbols_of(vocab)
    if isinstance(vocab, str):
        ids, codes = _valid_ids(ids, len(vocab)), _codes(vocab)
        return "".join(
            codes[ids[at : at + CHUNK]].tobytes().decode("utf-32-le", "surrogatepass")
            for at in range(0, len(ids), CHUNK)
        )
    return decode_bytes(ids, vocab).decode("utf-8", errors="replace")


def _valid_ids(ids, vocab_size):
    ids = np.asarray(ids).reshape(-1)
    if ids.dtype.kind not in "iu":
        ids = ids.astype(np.intp)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"ids must lie in [0, {vocab_size})")
    return ids


def split(ids, val_frac):
    """(train, val) views: the last val_frac of ids is validation (nanoGPT's 90/10 for 0.1)."""
    if not 0 <= val_frac < 1:
        raise ConfigError(f"the validation fraction must be in [0, 1), not {val_frac}")
    n_train = int(len(ids) * (1 - Fraction(str(val_frac))))  # exact decimal: 0.07 of 1000 is 70
    return ids[:n_train], ids[n_train:]


def streams(ids, B):
    """The stream layout of truncated BPTT: ids cut into B contiguous streams side by side,
    (inputs, targets) as (B, per) views, the targets one character ahead; the few characters
    left over at the end are not read."""
    per = (len(ids) - 1) // B
    return ids[: B * per].reshape(B, per), ids[1 : B * per + 1].reshape(B, per)
