"""The id cache: a corpus file encoded once into a compact file of ids, then read as a memory map.

A file source (a path, or a named corpus on disk) is hashed, streamed, together with the decoding
mode and the cache format; the key names two files in the cache directory (CHARRNN_CACHE_DIR, else
~/.cache/charrnn/ids): `<key>.npy`, the ids (uint8, uint16 or uint32 by vocabulary size, see
data.id_dtype), and `<key>.json`, the vocabulary and what was cached. On a miss the file is read
twice, a chunk at a time: once to count its symbols (giving build_vocab's vocabulary), once to
encode them into the .npy, written under a temporary name and renamed into place. No pass holds
more than a chunk of the text, so a corpus of gigabytes needs memory for its ids only, and those
are pages of a mapped file. An entry that does not check out (JSON, .npy header, size, dtype, ids
within the vocabulary) is rebuilt, never trusted. The cache keeps itself under a size cap, least
recently used entries leaving first (cachedir.py; `charrnn cache` lists and clears it). A given
vocabulary (a resumed run's) has entries of its own, unless it is the one the file gives: then
the file's own entry serves, and a resume does not store the same ids again.

The streamed decoding follows data.read_text exactly: UTF-8 through an incremental decoder (a
character may straddle two chunks), a leading byte-order mark dropped, CRLF and lone CR made LF
(a CR that ends a chunk waits to see whether the next begins with LF), and the same errors for NUL
bytes and invalid UTF-8. Directories, stdin, the default corpus and small files are read and
encoded in memory, as data.read_text, build_vocab and encode do.
"""

import hashlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple, Optional

import numpy as np

from . import cachedir, data, sources
from ..errors import ConfigError, CorpusError
from ..fsutil import atomic_write
from .decoding import HEAD
from .vocab import Vocab

# fmt: off
FORMAT = 1                  # of the cache files and the decoding rules: a change makes new keys
READ_CHUNK = 1 << 20        # bytes of the file decoded, counted or encoded at a time
MIN_BYTES = 1 << 20         # smaller files are encoded in memory: quick, and no cache litter
STALE = 3600                # seconds after which a temporary file in the cache is a leftover
# fmt: on


class Encoded(NamedTuple):
    # fmt: off
    ids: np.ndarray         # (N,) uint8/uint16/uint32: a read-only np.memmap when from the cache
    vocab: Vocab            # characters, or byte values in byte mode
    description: str        # as data.read_text gives it: "input.txt (1,115,394 chars)"
    notice: Optional[str]   # one line when bytes were replaced or the cache could not be written
    # fmt: on


def cache_dir():
    """Where encoded corpora are kept."""
    return Path(os.environ.get("CHARRNN_CACHE_DIR") or "~/.cache/charrnn/ids").expanduser()


def encoded_corpus(
    source=None,
    *,
    data_dir=None,
    glob=None,
    byte_level=False,
    max_vocab=None,
    vocab=None,
    unknown_hint=None,
    stdin=None,
    chunk_size=READ_CHUNK,
    min_bytes=None,
    decoding=None,
):
    """(ids, vocab, description, notice) of a source (as data.read_text takes it).

    Without `vocab` the vocabulary is build_vocab's, with max_vocab. With one (a resumed or
    initialising model's), the text is encoded in it: a character it lacks becomes its unknown
    symbol if it has one, else is a CorpusError, to which `unknown_hint` is added in
    parentheses; when it is the vocabulary the file gives (with max_vocab), the entry of the
    file's own serves. Files of min_bytes (default MIN_BYTES) or more go through the cache.
    `decoding` (a data.Decoding) says how text mode decodes; the notice says what it replaced."""
    if vocab is not None:
        vocab = Vocab(vocab)
        if vocab.byte_level != byte_level:
            raise ConfigError(
                "a vocabulary of characters cannot encode bytes (drop --bytes)"
                if byte_level
                else "a byte-level vocabulary needs byte mode (--bytes)"
            )
    decoding = decoding if decoding is not None else data.Decoding()
    path = data.corpus_file(source, data_dir) if glob is None else None
    if path is None or _size(path) < (MIN_BYTES if min_bytes is None else min_bytes):
        text, desc = data.read_text(
            source, data_dir=data_dir, glob=glob, byte_level=byte_level, stdin=stdin, decoding=decoding
        )
        vocab = data.build_vocab(text, max_vocab) if vocab is None else vocab
        try:
            return Encoded(vocab.encode(text), vocab, desc, decoding.notice())
        except CorpusError as e:
            raise CorpusError(_with_hint(e, unknown_hint)) from None
    name = os.fspath(source)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CorpusError(f"cannot read {name}: {e.strerror or e}") from None
    with f:
        return _encoded_file(f, name, byte_level, max_vocab, vocab, unknown_hint, chunk_size, decoding)


def _mode(byte_level, max_vocab, given, decoding):
    """How an entry was encoded, in words, so that two entries of one file tell apart."""
    parts = ["bytes" if byte_level else "text"]
    if given:
        parts.append("a given vocabulary")
    elif max_vocab is not None and not byte_level:
        parts.append(f"max-vocab {max_vocab}")
    if not byte_level and (decoding.encoding is not None or decoding.errors != "strict"):
        parts.append(f"{decoding.encoding or 'auto'}/{decoding.errors}")
    return ", ".join(parts)


def _encoded_file(f, name, byte_level, max_vocab, vocab, unknown_hint, chunk_size, decoding):
    stamp = _stamp(f)
    mode = _mode(byte_level, max_vocab, vocab is not None, decoding)
    max_vocab = None if byte_level else max_vocab
    where = cache_dir()
    modes = [_key_mode(byte_level, max_vocab, None, decoding)]  # the file's own vocabulary's
    if vocab is not None:
        modes.append(_key_mode(byte_level, None, vocab, decoding))
    keys = _keys(f, name, modes)
    built, key, hit = keys[0], keys[-1], _load(where, keys[0])
    if vocab is None or (hit is not None and hit[1] == vocab):
        key = built  # a resumed run's vocabulary is mostly its file's own, whose entry serves
    else:
        hit = _load(where, key, given=True)
    if hit is not None:
        ids, vocab, replaced = hit
        cachedir.mark_used(where, key)
        if replaced and not byte_level:  # say again what the first read replaced
            decoding.replaced, decoding.first = replaced["count"], tuple(replaced["first"])
        return Encoded(ids, vocab, data.describe(name, len(ids), byte_level), decoding.notice())
    counts = _count(_symbols(f, name, byte_level, chunk_size, decoding), byte_level)
    n = int(counts.sum())
    if n == 0:
        raise CorpusError(f"{name} is empty")
    if vocab is None:
        vocab = data.vocab_from_counts(counts, max_vocab)
    elif data.vocab_from_counts(counts, max_vocab) == vocab:  # an entry a new run reuses too
        key, mode = built, _mode(byte_level, max_vocab, False, decoding)
    try:
        table = _id_table(vocab, counts)
    except CorpusError as e:
        raise CorpusError(_with_hint(e, unknown_hint)) from None

    def chunks():  # a second pass: its own Decoding, so nothing is counted twice
        again = data.Decoding(decoding.encoding, decoding.errors, decoding.hint)
        yield from _encode(_symbols(f, name, byte_level, chunk_size, again), table)
        if _stamp(f) != stamp:
            raise CorpusError(f"{name} changed while it was being read: try again")

    meta = {
        "format": FORMAT,
        "key": key,
        "length": n,
        "source": name,
        "mode": mode,
        "size": stamp[0],
        "mtime_ns": stamp[1],
        "vocab": vocab.to_json(),
        "replaced": (
            {"count": decoding.replaced, "first": list(decoding.first)} if decoding.replaced else None
        ),
    }
    ids, notice = _store(where, key, chunks, n, table.dtype, meta)
    if notice is None:
        cachedir.evict(where, keep=key)
    notices = [m for m in (decoding.notice(), notice) if m]
    return Encoded(ids, vocab, data.describe(name, n, byte_level), "; ".join(notices) or None)


def _with_hint(error, hint):
    return f"{error} ({hint})" if hint else str(error)


def _size(path):
    try:
        return path.stat().st_size
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror or e}") from None


def _stamp(f):
    st = os.fstat(f.fileno())
    return st.st_size, st.st_mtime_ns, st.st_ino


def _keys(f, name, modes):
    """The key of each mode (_key_mode) for the file: hex blake2b of the mode and the file's
    bytes, all from one read of the file."""
    hashes = [hashlib.blake2b(json.dumps(mode, sort_keys=True).encode(), digest_size=20) for mode in modes]
    fanout = SimpleNamespace(update=lambda b: [h.update(b) for h in hashes])  # one read feeds them all
    f.seek(0)
    try:
        data.hash_stream(f, fanout)
    except OSError as e:
        raise CorpusError(f"cannot read {name}: {e.strerror or e}") from None
    return [h.hexdigest() for h in hashes]


def _key_mode(byte_level, max_vocab, vocab, decoding):
    """What a key says of how the file was encoded: format, bytes or text, max_vocab, given
    vocabulary, encoding and errors."""
    given = None
    if vocab is not None:
        given = hashlib.blake2b(
            vocab.symbols if byte_level else vocab.symbols.encode("utf-8", "surrogatepass")
        )
        if not vocab.old_readers_agree:  # a U+FFFD that is a character: not the entry of
            given.update(json.dumps(vocab.unk_id).encode())  # the same symbols read before
    mode = {
        "format": FORMAT,
        "bytes": byte_level,
        "max_vocab": max_vocab,
        "vocab": given and given.hexdigest(),
    }
    if not byte_level and (decoding.encoding is not None or decoding.errors != "strict"):
        mode.update(encoding=decoding.encoding, errors=decoding.errors)  # else keys as before
    return mode


# ------------------------------------------------------------------------------- the cache files


def _load(where, key, given=False):
    """(ids as a read-only memmap, vocab, what decoding replaced) cached under key, or None if
    absent or not sound. given: the key is of a given vocabulary's entry."""
    try:
        meta = json.loads((where / f"{key}.json").read_text(encoding="utf-8"))
        vocab = Vocab.from_json(meta["vocab"])
        if "unk" not in meta["vocab"] and data.UNK in vocab.symbols and not given:
            return None  # built when every U+FFFD was the unknown symbol: build it again
        ids = np.load(where / f"{key}.npy", mmap_mode="r", allow_pickle=False)
        sound = (
            meta["format"] == FORMAT
            and meta["key"] == key
            and isinstance(ids, np.memmap)
            and ids.shape == (meta["length"],)
            and len(ids) > 0
            and ids.dtype == data.id_dtype(len(vocab))
            and os.path.getsize(where / f"{key}.npy") == ids.offset + ids.nbytes
        )
        if sound and len(vocab) <= np.iinfo(ids.dtype).max:  # an id past the vocabulary would
            sound = _max_id(ids) < len(vocab)  # index outside the embedding
    except (OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    return (ids, vocab, meta.get("replaced")) if sound else None


def _max_id(ids):
    """The largest id of a cached .npy, read in chunks: its pages are not mapped by this check."""
    largest, buf = 0, bytearray(sources.HASH_CHUNK)
    with open(ids.filename, "rb") as f:
        f.seek(ids.offset)
        while n := f.readinto(buf):
            largest = max(largest, int(np.frombuffer(buf, ids.dtype, n // ids.itemsize).max()))
    return largest


def _store(where, key, chunks, n, dtype, meta):
    """Write the ids that chunks() yields (n of them) as <key>.npy and meta as <key>.json, each
    atomically: (ids as a memmap, None); or, if that fails, (ids in memory, a one-line notice)."""
    try:
        where.mkdir(parents=True, exist_ok=True)
        _sweep(where)
        with atomic_write(where / f"{key}.npy", fsync=False) as out:
            np.lib.format.write_array_header_1_0(
                out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
            )
            written = 0
            for ids in chunks():
                written += len(ids)
                out.write(ids)
            if written != n:
                raise CorpusError(f"{meta['source']} changed while it was being read: try again")
        _write_json(where / f"{key}.json", meta)
        return np.load(where / f"{key}.npy", mmap_mode="r", allow_pickle=False), None
    except OSError as e:
        notice = f"cannot write the id cache in {where} ({e.strerror or e}): encoded in memory"
        return _in_memory(chunks, n, dtype, meta["source"]), notice


def _sweep(where):
    """Remove temporary files that a killed process left behind (not touched for STALE seconds)."""
    for tmp in where.glob(".*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > STALE:
                tmp.unlink()
        except OSError:
            pass


def _in_memory(chunks, n, dtype, name):
    out, at = np.empty(n, dtype), 0
    for ids in chunks():
        if at + len(ids) > n:
            break
        out[at : at + len(ids)] = ids
        at += len(ids)
    if at != n:
        raise CorpusError(f"{name} changed while it was being read: try again")
    return out


def _write_json(path, meta):
    with atomic_write(path, "w", fsync=False, encoding="utf-8") as f:
        json.dump(meta, f)


# ------------------------------------------------------------------------ streaming, vectorised


def _read(f, size, name):
    try:
        return f.read(size)
    except OSError as e:
        raise CorpusError(f"cannot read {name}: {e.strerror or e}") from None


def _decoded(f, name, chunk_size, decoding):
    """The text of a file in pieces, as decoding.Decoding.pieces gives it."""
    f.seek(0)
    head = _read(f, HEAD, name)
    f.seek(0)
    return decoding.pieces(iter(lambda: _read(f, chunk_size, name), b""), name, head)


def _symbols(f, name, byte_level, chunk_size, decoding=None):
    """The file's symbols after read_text's rules, in chunks: bytes of byte values (byte mode, or
    ASCII text) or uint32 arrays of code points. CRLF and lone CR become LF across chunks."""
    if byte_level:
        f.seek(0)
        while raw := _read(f, chunk_size, name):
            yield raw
        return
    held_cr = False  # the last piece ended in a CR, not yet given out
    for piece in _decoded(f, name, chunk_size, decoding or data.Decoding()):
        if not piece:
            continue
        if isinstance(piece, str) and piece.isascii():
            piece = piece.encode("ascii")
        cr, lf = (b"\r", b"\n") if isinstance(piece, bytes) else ("\r", "\n")
        if held_cr and not piece.startswith(lf):
            yield b"\n"  # a lone CR; before an LF it is simply dropped
        held_cr = piece.endswith(cr)
        piece = piece[:-1] if held_cr else piece
        if cr in piece:
            piece = piece.replace(cr + lf, lf).replace(cr, lf)
        if isinstance(piece, bytes):
            yield piece
        elif piece:
            yield np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), np.uint32)  # UNDECODABLE
    if held_cr:
        yield b"\n"


def _count(symbols, byte_level):
    """Occurrences of each code point (0x110000,) or byte value (256,) in the chunks."""
    counts = np.zeros(256 if byte_level else 0x110000, np.int64)
    for chunk in symbols:
        c = np.bincount(np.frombuffer(chunk, np.uint8) if isinstance(chunk, bytes) else chunk)
        counts[: len(c)] += c
    return counts


def _id_table(vocab, counts):
    """Id by code point (byte value), in the id dtype. A symbol of the text (counts > 0) missing
    from vocab becomes its unknown symbol if it has one, else is a CorpusError."""
    table = data.lookup_table(vocab)
    text_mode, unk = not vocab.byte_level, vocab.unk_id
    present = np.flatnonzero(counts)
    missing = present[table[present] < 0]
    if len(missing) and unk < 0:
        raise CorpusError(data.unknown_message(missing, text_mode))
    table[table < 0] = max(unk, 0)  # without one, no symbol of the text lands here
    return table.astype(data.id_dtype(len(vocab)))


def _encode(symbols, table):
    """The ids of each chunk of symbols, as arrays of table's dtype."""
    lut = table[:256].tobytes() if table.dtype == np.uint8 else None
    for chunk in symbols:
        if isinstance(chunk, bytes):  # bytes.translate: a C loop, no index array
            yield (
                np.frombuffer(chunk.translate(lut), np.uint8)
                if lut is not None
                else table[np.frombuffer(chunk, np.uint8)]
            )
        else:
            yield table[chunk]
