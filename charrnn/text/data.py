"""Corpora: finding the training text, turning it into ids and back, and the train/validation split.

A source is `None` (the built-in default corpus: this Python's standard library sources), `"-"`
(stdin), a file, a directory (every file under it, in sorted order, optionally filtered by a glob on
the file name; hidden files and directories are skipped), or a corpus name from the packaged
manifest (looked up in the data dir, downloaded once into the cache and checked by sha256).

Text mode decodes the bytes (a Decoding: UTF-8 unless a UTF-16/UTF-32 byte-order mark or
`--encoding` says otherwise; undecodable bytes an error, or replaced or dropped by `--errors`),
drops a leading byte-order mark and converts CRLF and lone CR line endings to LF, so a model never
learns two kinds of newline. Byte mode (`byte_level=True`, the CLI's `--bytes`) takes the bytes
unchanged; its vocabulary holds byte values, not characters.

read_text holds a whole corpus in memory; idcache streams a large file through the same rules
into a cached file of ids (corpus_file says which sources it can stream).

A vocabulary is a `str` of sorted distinct characters (or a `bytes` of sorted distinct byte
values); a symbol's id is its position, so the same text always gives the same ids. Encoding is
vectorised: a lookup table indexed by code point, applied chunk by chunk into one preallocated array.
"""
import codecs
import fnmatch
import functools
import hashlib
import importlib.resources
import json
import os
import sys
import sysconfig
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import ConfigError, CorpusError
from ..fsutil import atomic_write

DEFAULT_CORPUS = "python-stdlib"
UNK = "\ufffd"                    # the unknown character of a --max-vocab vocabulary
BOM = b"\xef\xbb\xbf"             # UTF-8 byte-order mark, dropped at the start of a text
STDLIB_CAP = 4_000_000            # characters (bytes in byte mode) of the default corpus
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
               "turtledemo", "pydoc_data", "ensurepip", "__pycache__",
               "encodings"}  # codec tables: megabytes of hex, a poor demo of Python
SEPARATOR = "\n\n"                # between the files of a directory or of the default corpus
DOWNLOAD_TIMEOUT = 20             # seconds
CHUNK = 1 << 22                   # characters encoded or counted at a time
HASH_CHUNK = 1 << 24              # bytes of a file hashed at a time
_CODE_POINTS = 0x110000
_BYTES_HINT = "use --bytes to train a byte-level model"


# ---------------------------------------------------------------------------------------- sources

def read_text(source=None, *, data_dir=None, glob=None, byte_level=False, stdin=None,
              decoding=None):
    """(text, description) of a source; bytes in byte mode. Raises CorpusError. `decoding`
    (a Decoding, default strict UTF-8) decodes text mode and counts what it replaced."""
    decoding = decoding if decoding is not None else Decoding()
    if source is not None:
        source = os.fspath(source)
    path = Path(source) if source not in (None, "-") else None
    if glob is not None and not (path is not None and path.is_dir()):
        raise ConfigError(f"--glob applies only to a directory source, not {source or DEFAULT_CORPUS}")
    if source is None or (source == DEFAULT_CORPUS and not path.exists()):
        data, name, detail = _read_stdlib(byte_level)
    elif source == "-":
        name, detail = "<stdin>", ""
        data = prepare_input(_read_stream(stdin), name, byte_level, decoding)
    elif path.is_dir():
        data, name, detail = _read_dir(path, glob, byte_level, decoding)
    elif path.exists():
        name, detail = source, ""
        data = prepare_input(_read_file(path), name, byte_level, decoding)
    elif source in _manifest():
        name, detail = source, ""
        data = prepare_input(_read_named(source, _manifest()[source], data_dir), name, byte_level,
                        decoding)
    else:
        raise CorpusError(f"no such file or corpus name: {source} "
                          f"(known corpora: {', '.join(corpus_names())})")
    if len(data) == 0:
        raise CorpusError(f"{name} is empty")
    return data, describe(name, len(data), byte_level, detail)


def describe(name, size, byte_level, detail=""):
    """The one-line description of a corpus: 'input.txt (1,115,394 chars)'."""
    return f"{name} ({detail}{size:,} {'bytes' if byte_level else 'chars'})"


def corpus_file(source, data_dir=None):
    """The regular file a source names, for reading in a stream: a path, or a named corpus already
    on disk (its sha256 checked). None for the default corpus, stdin, a directory, anything that
    is not a regular file, and a named corpus still to download: those are read whole."""
    if source is None or os.fspath(source) == "-":
        return None
    source = os.fspath(source)
    path = Path(source)
    if path.exists():
        return path if path.is_file() else None
    entry = _manifest().get(source, {}) if source != DEFAULT_CORPUS else {}
    for d in _search_dirs(data_dir) if "file" in entry else []:
        path = d / entry["file"]
        if path.is_file():
            try:
                with open(path, "rb") as f:
                    digest = hash_stream(f, hashlib.sha256()).hexdigest()
            except OSError as e:
                raise CorpusError(f"cannot read {path}: {e.strerror or e}") from None
            _check_sha256(digest, entry, source, path)
            return path
    return None


def corpus_names():
    """The corpus names a source may be, from the packaged manifest."""
    return list(_manifest())


@functools.lru_cache(maxsize=1)
def _manifest():
    try:
        resource = importlib.resources.files("charrnn.corpora") / "manifest.json"
    except ModuleNotFoundError:  # an editable install may not map the data-only package
        resource = Path(__file__).resolve().parents[2] / "corpora" / "manifest.json"
    return json.loads(resource.read_text(encoding="utf-8"))


def prepare_input(raw, name, byte_level, decoding=None):
    """The bytes of one input as the training text: unchanged bytes, or decoded, normalised text."""
    if byte_level:
        return raw
    return fold_newlines((decoding if decoding is not None else Decoding()).decode(raw, name))


def fold_newlines(text):
    """CRLF and lone CR as LF: how every text is read (corpora, primes, stop strings)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def hash_stream(f, h, chunk=HASH_CHUNK):
    """Feed the rest of binary file f to hash object h, chunk bytes at a time; return h."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    while n := f.readinto(buf):
        h.update(view[:n])
    return h


def binary_message(name, hint=_BYTES_HINT, head=b""):
    """The error for an input with NUL bytes; `head`, its first bytes, may show it is UTF-16
    without a byte-order mark (every other byte NUL), which --encoding then reads."""
    guess = utf16_guess(head)
    if guess:
        return (f"{name} looks like {guess.upper()} text without a byte-order mark: "
                f"pass --encoding {guess}")
    return f"{name} looks binary (it contains NUL bytes)" + (f": {hint}" if hint else "")


def utf16_guess(head):
    """'utf-16-le' or 'utf-16-be' when the bytes look like mostly-ASCII UTF-16 (NUL in every
    second byte, on one side), else None."""
    head = head[:4096] if len(head) % 2 == 0 else head[:min(4096, len(head) - 1)]
    if len(head) < 8:
        return None
    even, odd = head[0::2].count(0), head[1::2].count(0)
    half = len(head) // 2
    if odd >= 0.8 * half and even <= 0.05 * half:
        return "utf-16-le"
    if even >= 0.8 * half and odd <= 0.05 * half:
        return "utf-16-be"
    return None


def decode_message(name, offset, encoding="utf-8", hint=_BYTES_HINT):
    """The error for bytes that do not decode: names --encoding and --errors first."""
    label = "UTF-8" if encoding in ("utf-8", "utf-8-sig") else encoding
    return (f"{name} is not valid {label} (at byte {offset:,}): name its encoding with --encoding "
            f"(e.g. --encoding latin-1), or pass --errors replace (or ignore) for stray bytes"
            + (f"; or {hint}" if hint else ""))


def utf8_message(name, offset):
    return decode_message(name, offset)


# ------------------------------------------------------------------------------------ decoding

BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))  # utf-32's marks first: they
ERRORS = ("strict", "replace", "ignore")                     # begin with utf-16's


class Decoding:
    """How bytes become text, and a count of what did not decode.

    encoding: a codec Python knows, or None: UTF-8, unless the input starts with a UTF-16 or
    UTF-32 byte-order mark. errors: "strict" (undecodable bytes are a CorpusError naming the
    first one's offset), "replace" (each invalid sequence becomes U+FFFD, the unknown symbol,
    which sampling never emits) or "ignore" (dropped). A leading byte-order mark is dropped in
    any encoding. `hint` ends the error messages (the CLI's train suggests --bytes).
    """

    def __init__(self, encoding=None, errors="strict", hint=_BYTES_HINT):
        if errors not in ERRORS:
            raise ConfigError(f"--errors must be one of {', '.join(ERRORS)}, not {errors!r}")
        if encoding is not None:
            try:
                info = codecs.lookup(encoding)
            except LookupError:
                raise ConfigError(f"unknown encoding {encoding!r} (see Python's codecs: e.g. "
                                  "utf-8, latin-1, cp1252, utf-16, shift_jis)") from None
            if not getattr(info, "_is_text_encoding", True):
                raise ConfigError(f"{encoding!r} is not a text encoding")
            encoding = info.name
        self.encoding, self.errors, self.hint = encoding, errors, hint
        self.replaced = 0           # invalid sequences replaced (or dropped) so far
        self.first = None           # (input name, byte offset) of the first of them

    def codec(self, head):
        """The codec for an input that begins with the bytes `head` (at least 4 if it has them)."""
        if self.encoding is not None:
            return self.encoding
        for mark, name in BOMS:
            if head.startswith(mark):
                return name
        return "utf-8"

    def ascii_safe(self, codec):
        """Whether every ASCII byte stands for itself wherever it appears (so a pure-ASCII chunk
        needs no decoding, and a NUL byte is a NUL character)."""
        return _ascii_safe(codec)

    def incremental(self, codec, name):
        """An incremental decoder for one input; offsets reported relative to that input."""
        handler = "strict" if self.errors == "strict" else f"charrnn-{self.errors}"
        return codecs.getincrementaldecoder(codec)(errors=handler)

    def decode(self, raw, name):
        """The text of the whole input raw (bytes), leading BOM dropped. CorpusError when it
        looks binary or (strict) does not decode."""
        codec = self.codec(raw[:4])
        safe = self.ascii_safe(codec)
        if safe and b"\x00" in raw:
            raise CorpusError(binary_message(name, self.hint, raw[:4096]))
        with _counting(self, name, 0):
            try:
                text = raw.decode(codec, "strict" if self.errors == "strict"
                                  else f"charrnn-{self.errors}")
            except UnicodeDecodeError as e:
                raise CorpusError(decode_message(name, e.start, codec, self.hint)) from None
        if text.startswith("\ufeff"):
            text = text[1:]
        if not safe and "\x00" in text:
            raise CorpusError(binary_message(name, self.hint))
        return text

    def notice(self):
        """One line saying what was replaced or dropped, or None."""
        if not self.replaced:
            return None
        name, offset = self.first
        what = "replaced by U+FFFD" if self.errors == "replace" else "dropped"
        return (f"{self.replaced:,} undecodable byte sequence{'s' if self.replaced > 1 else ''} "
                f"{what} (the first in {name} at byte {offset:,})")


@functools.lru_cache(maxsize=None)
def _ascii_safe(codec):
    if codecs.lookup(codec).name == "utf-8":
        return True
    try:
        ascii_ok = bytes(range(128)).decode(codec) == "".join(map(chr, range(128)))
        single = len(bytes(range(256)).decode(codec, "replace")) == 256
    except (UnicodeError, LookupError):
        return False
    return ascii_ok and single


_COUNTERS = []                      # (Decoding, input name, base offset) being decoded now


class _counting:
    """Route the charrnn-replace/-ignore error handlers' counts to a Decoding while decoding."""

    def __init__(self, decoding, name, base):
        self.entry = [decoding, name, base]

    def __enter__(self):
        _COUNTERS.append(self.entry)
        return self.entry

    def __exit__(self, *exc):
        _COUNTERS.remove(self.entry)


def _error_handler(replacement):
    def handle(e):
        if not isinstance(e, UnicodeDecodeError) or not _COUNTERS:
            raise e
        decoding, name, base = _COUNTERS[-1]
        decoding.replaced += 1
        if decoding.first is None:
            decoding.first = (name, base + e.start)
        return replacement, e.end
    return handle


codecs.register_error("charrnn-replace", _error_handler(UNK))
codecs.register_error("charrnn-ignore", _error_handler(""))


def _read_file(path):
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror or e}") from None


def _read_stream(stream):
    stream = stream if stream is not None else getattr(sys.stdin, "buffer", sys.stdin)
    data = stream.read()
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data


def _files_under(root, glob=None, skip=frozenset()):
    """Sorted relative paths of the files under root, without hidden or skipped directories."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in skip]
        rel = Path(dirpath).relative_to(root)
        found += [(rel / f).as_posix() for f in filenames
                  if not f.startswith(".") and (glob is None or fnmatch.fnmatchcase(f, glob))]
    return sorted(found)


def _join_files(root, rel_paths, byte_level, cap=None, decoding=None):
    """(joined text, files used, files skipped): undecodable files are skipped in text mode."""
    pieces, size, skipped = [], 0, 0
    for rel in rel_paths:
        try:
            piece = prepare_input(_read_file(root / rel), rel, byte_level, decoding)
        except CorpusError:
            if byte_level:
                raise
            skipped += 1
            continue
        if not piece:
            continue
        size += len(piece) + (len(SEPARATOR) if pieces else 0)
        if cap is not None and size > cap:
            break
        pieces.append(piece)
    sep = SEPARATOR.encode() if byte_level else SEPARATOR
    return sep.join(pieces) if pieces else sep[:0], len(pieces), skipped


def _read_dir(root, glob, byte_level, decoding=None):
    rel_paths = _files_under(root, glob)
    matching = f" matching {glob}" if glob else ""
    if not rel_paths:
        raise CorpusError(f"{root} has no files{matching}")
    decoding = decoding if decoding is not None else Decoding()
    data, used, skipped = _join_files(root, rel_paths, byte_level, decoding=decoding)
    label = decoding.encoding or "UTF-8"
    if skipped and not used:
        raise CorpusError(f"{root} has no {label} text files{matching} ({skipped} skipped as "
                          f"binary or undecodable): name their encoding with --encoding, "
                          f"or pass --errors replace; or {_BYTES_HINT}")
    detail = f"{used} files, " + (f"{skipped} skipped as binary or not {label} text, "
                                  if skipped else "")
    return data, str(root), detail


def _read_stdlib(byte_level):
    """The default corpus: the standard library's .py files in sorted order, up to STDLIB_CAP."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rel_paths = _files_under(root, "*.py", STDLIB_SKIP) if root.is_dir() else []
    data, used, _ = _join_files(root, rel_paths, byte_level, cap=STDLIB_CAP)
    if not used:
        raise CorpusError(f"no Python standard library sources found in {root}: "
                          f"name a text file, a directory or one of {', '.join(corpus_names())}")
    return data, DEFAULT_CORPUS, f"{used} files from {root}, "


# --------------------------------------------------------------------------------- named corpora

def default_data_dir():
    """Where downloaded corpora are cached."""
    return Path("~/.cache/charrnn/corpora").expanduser()


def _search_dirs(data_dir):
    """The data dir asked for (argument, else CHARRNN_DATA_DIR), then the download cache."""
    first = data_dir if data_dir is not None else os.environ.get("CHARRNN_DATA_DIR")
    dirs = [Path(first).expanduser()] if first else []
    return dirs + [d for d in [default_data_dir()] if d not in dirs]


def _read_named(name, entry, data_dir):
    """The bytes of a manifest corpus: from the first data dir that has it, else downloaded."""
    dirs = _search_dirs(data_dir)
    for d in dirs:
        path = d / entry["file"]
        if path.is_file():
            raw = _read_file(path)
            _check_sha256(hashlib.sha256(raw).hexdigest(), entry, name, path)
            return raw
    return _download(name, entry, cache=dirs[-1], hint_dir=dirs[0])


def _check_sha256(digest, entry, name, path):
    if digest != entry["sha256"]:
        raise CorpusError(f"{path} is not the expected {name} file (sha256 mismatch): "
                          f"replace it with the original, or delete it to download again")


def _download(name, entry, cache, hint_dir):
    import http.client  # here, not at the top: 40 ms of every command's start-up
    import urllib.request
    url, file = entry["url"], entry["file"]
    fix = f"put {file} ({url}) in {hint_dir} or set CHARRNN_DATA_DIR"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            raw = response.read()
    except (OSError, ValueError, http.client.HTTPException) as e:
        reason = " ".join(str(getattr(e, "reason", None) or e or type(e).__name__).split())
        raise CorpusError(f"could not download {name} ({reason}): {fix}") from None
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise CorpusError(f"the download of {name} does not match its sha256: {fix}")
    _save(raw, cache / file)
    return raw


def _save(raw, path):
    """Write atomically (temp file + rename); a cache that cannot be written is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, fsync=False) as f:
            f.write(raw)
    except OSError:
        pass


# ------------------------------------------------------------------------------ vocabulary, ids

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


def _check_kinds(text, vocab):
    vocab = _symbols_of(vocab)
    if isinstance(text, str) != isinstance(vocab, str):
        raise TypeError(f"cannot use a {type(vocab).__name__} vocabulary with {type(text).__name__}")


def build_vocab(text, max_vocab=None):
    """Sorted distinct characters of a str (or byte values of bytes, as bytes).

    With max_vocab K smaller than the number of distinct characters (text mode only), the K-1 most
    frequent characters are kept (ties go to the lower code point) and UNK stands for the rest.
    """
    counts = np.zeros(_CODE_POINTS if isinstance(text, str) else 256, np.int64)
    for start in range(0, len(text), CHUNK):
        counts += np.bincount(_codes(text, start, start + CHUNK), minlength=len(counts))
    return vocab_from_counts(counts, max_vocab)


def vocab_from_counts(counts, max_vocab=None):
    """build_vocab from symbol counts: (0x110000,) by code point for text, (256,) by byte value."""
    present = np.flatnonzero(counts)
    if len(counts) == 256:
        return present.astype(np.uint8).tobytes()
    if max_vocab is not None and max_vocab < len(present):
        if max_vocab < 2:
            raise ConfigError(f"max_vocab must be at least 2, not {max_vocab}")
        present = present[present != ord(UNK)]
        by_frequency = np.lexsort((present, -counts[present]))
        present = np.sort(np.append(present[by_frequency[:max_vocab - 1]], ord(UNK)))
    return "".join(map(chr, present.tolist()))


def id_dtype(vocab_size):
    """The smallest unsigned integer type holding every id."""
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32


def lookup_table(vocab):
    """Table from code point (or byte value) to id, -1 where the vocabulary lacks the symbol."""
    vocab = _symbols_of(vocab)
    codes = _codes(vocab)
    if len(np.unique(codes)) != len(codes):
        raise ValueError("the vocabulary has repeated symbols")
    table = np.full(_CODE_POINTS if isinstance(vocab, str) else 256, -1, np.int32)
    table[codes] = np.arange(len(codes), dtype=np.int32)
    return table


def encode(text, vocab, *, unknown="auto"):
    """Ids of text's characters (bytes) in vocab, as uint8/uint16/uint32 (see id_dtype).

    Symbols missing from vocab are, by `unknown`: "unk" mapped to UNK, "drop" left out, "error" a
    CorpusError; "auto" is "unk" when vocab contains UNK, else "error".
    """
    _check_kinds(text, vocab)
    vocab = _symbols_of(vocab)
    table = lookup_table(vocab)
    unk_id = int(table[ord(UNK)]) if isinstance(vocab, str) else -1
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
        out[n:n + len(ids)] = ids
        n += len(ids)
    return out if n == len(out) else out[:n].copy()


def unknown_message(codes, text_mode):
    """The error for symbols (code points, or byte values) missing from a vocabulary."""
    distinct = np.unique(codes)
    show = [repr(chr(c)) if text_mode else f"0x{c:02x}" for c in distinct[:5].tolist()]
    more = f" and {len(distinct) - 5} more" if len(distinct) > 5 else ""
    return f"the text has characters not in the vocabulary: {', '.join(show)}{more}"


def decode_bytes(ids, vocab):
    """The raw bytes of ids in a byte vocabulary (for streaming through an incremental decoder)."""
    return _codes(vocab)[_valid_ids(ids, len(vocab))].tobytes()


def decode(ids, vocab):
    """The text of ids; a byte vocabulary's bytes are decoded as UTF-8 with replacement."""
    vocab = _symbols_of(vocab)
    if isinstance(vocab, str):
        ids, codes = _valid_ids(ids, len(vocab)), _codes(vocab)
        return "".join(codes[ids[at:at + CHUNK]].tobytes().decode("utf-32-le", "surrogatepass")
                       for at in range(0, len(ids), CHUNK))
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
    return ids[:B * per].reshape(B, per), ids[1:B * per + 1].reshape(B, per)
