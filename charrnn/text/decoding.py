"""Decoding: how the bytes of one input become text. One incremental decoder reads a whole
input and a file streamed in chunks alike (Decoding.pieces), under the same rules: UTF-8 unless
a UTF-16/UTF-32 byte-order mark or `--encoding` says otherwise; undecodable bytes an error, or
replaced or dropped by `--errors`, and counted; a leading byte-order mark dropped; NUL bytes
refused as binary; CRLF and lone CR folded to LF (fold_newlines), so a model never learns two
kinds of newline.

Under --errors replace an undecodable byte sequence becomes UNDECODABLE in the text: a lone
surrogate, which no strict decoding (UTF-8, UTF-16, UTF-32, a one-byte code) yields, so it is
never taken for a character; the vocabulary reads it as its unknown symbol (vocab.py), and
decoding that symbol writes U+FFFD. A U+FFFD the file holds is a character like any other."""

import codecs
import functools

from ..errors import ConfigError, CorpusError

# fmt: off
UNK = "\ufffd"                    # how the unknown symbol shows in a vocabulary and decoded text
UNDECODABLE = "\udfff"            # what --errors replace makes of bytes that do not decode
BOM = b"\xef\xbb\xbf"             # UTF-8 byte-order mark, dropped at the start of a text
HEAD = 4096                       # bytes of an input looked at to tell binary and UTF-16 apart
BYTES_HINT = "use --bytes to train a byte-level model"
# fmt: on


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


def binary_message(name, hint=BYTES_HINT, head=b""):
    """The error for an input with NUL bytes; `head`, its first bytes, may show it is UTF-16
    without a byte-order mark (every other byte NUL), which --encoding then reads."""
    guess = utf16_guess(head)
    if guess:
        return f"{name} looks like {guess.upper()} text without a byte-order mark: pass --encoding {guess}"
    return f"{name} looks binary (it contains NUL bytes)" + (f": {hint}" if hint else "")


def utf16_guess(head):
    """'utf-16-le' or 'utf-16-be' when the bytes look like mostly-ASCII UTF-16 (NUL in every
    second byte, on one side), else None."""
    head = head[:4096] if len(head) % 2 == 0 else head[: min(4096, len(head) - 1)]
    if len(head) < 8:
        return None
    even, odd = head[0::2].count(0), head[1::2].count(0)
    half = len(head) // 2
    if odd >= 0.8 * half and even <= 0.05 * half:
        return "utf-16-le"
    if even >= 0.8 * half and odd <= 0.05 * half:
        return "utf-16-be"
    return None


def decode_message(name, offset, encoding="utf-8", hint=BYTES_HINT):
    """The error for bytes that do not decode: names --encoding and --errors first."""
    label = "UTF-8" if encoding in ("utf-8", "utf-8-sig") else encoding
    return (
        f"{name} is not valid {label} (at byte {offset:,}): name its encoding with --encoding "
        f"(e.g. --encoding latin-1), or pass --errors replace (or ignore) for stray bytes"
        + (f"; or {hint}" if hint else "")
    )


BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)  # utf-32's marks first: they
ERRORS = ("strict", "replace", "ignore")  # begin with utf-16's


class Decoding:
    """How bytes become text, and a count of what did not decode.

    encoding: a codec Python knows, or None: UTF-8, unless the input starts with a UTF-16 or
    UTF-32 byte-order mark. errors: "strict" (undecodable bytes are a CorpusError naming the
    first one's offset), "replace" (each invalid sequence becomes UNDECODABLE: the unknown
    symbol, which sampling never emits and scores count apart, written as U+FFFD) or "ignore"
    (dropped). A leading byte-order mark is dropped in any encoding. `hint` ends the error
    messages (the CLI's train suggests --bytes).
    """

    def __init__(self, encoding=None, errors="strict", hint=BYTES_HINT):
        if errors not in ERRORS:
            raise ConfigError(f"--errors must be one of {', '.join(ERRORS)}, not {errors!r}")
        if encoding is not None:
            try:
                info = codecs.lookup(encoding)
            except LookupError:
                raise ConfigError(
                    f"unknown encoding {encoding!r} (see Python's codecs: e.g. "
                    "utf-8, latin-1, cp1252, utf-16, shift_jis)"
                ) from None
            if not getattr(info, "_is_text_encoding", True):
                raise ConfigError(f"{encoding!r} is not a text encoding")
            encoding = info.name
        self.encoding, self.errors, self.hint = encoding, errors, hint
        # fmt: off
        self.replaced = 0           # invalid sequences replaced (or dropped) so far
        self.first = None           # (input name, byte offset) of the first of them
        # fmt: on

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
        """The text of the whole input raw (bytes): pieces() over it in one chunk, so a text
        reads the same whole and streamed. CorpusError when it looks binary or (strict) does not
        decode."""
        return "".join(
            p.decode("ascii") if isinstance(p, bytes) else p for p in self.pieces([raw], name, raw[:HEAD])
        )

    def pieces(self, chunks, name, head):
        """The text of one input given as chunks of bytes (head: its first HEAD bytes), in
        pieces: bytes for pure-ASCII chunks of an ASCII-safe codec (their code points are their
        bytes), str otherwise; a leading BOM dropped. CorpusError naming the input (and, for
        bytes that do not decode, the offset of the first) when it looks binary or (strict)
        does not decode; NUL anywhere wins over invalid text."""
        codec = self.codec(head)
        safe = self.ascii_safe(codec)
        decoder = self.incremental(codec, name)
        offset, bad, first = 0, None, True  # bad: offset of the first undecodable byte
        for raw in chunks:
            if safe and b"\0" in raw:
                raise CorpusError(binary_message(name, self.hint, head))
            start, offset = offset, offset + len(raw)
            if bad is not None:
                continue  # only looking for NUL bytes now
            pending = _pending(decoder)  # bytes of a character begun in the last chunk
            if safe and not pending and raw.isascii() and not (first and raw[:1] == b"\xef"):
                first = False
                yield raw
                continue
            try:
                with _counting(self, name, start - len(pending)):
                    text = decoder.decode(raw)
            except UnicodeDecodeError as e:  # e.start counts from the first pending byte
                bad = start - len(pending) + e.start
                continue
            if first and text:
                text, first = text[1:] if text[0] == "\ufeff" else text, False
            if not safe and "\0" in text:
                raise CorpusError(binary_message(name, self.hint))
            if text:
                yield text
        if bad is None:
            pending = _pending(decoder)
            try:
                with _counting(self, name, offset - len(pending)):
                    text = decoder.decode(b"", final=True)
            except UnicodeDecodeError as e:
                bad = offset - len(pending) + e.start
            else:
                if first and text.startswith("\ufeff"):
                    text = text[1:]
                if not safe and "\0" in text:
                    raise CorpusError(binary_message(name, self.hint))
                if text:
                    yield text
        if bad is not None:
            raise CorpusError(decode_message(name, bad, codec, self.hint))

    def notice(self):
        """One line saying what was replaced or dropped, or None."""
        if not self.replaced:
            return None
        name, offset = self.first
        what = "replaced by U+FFFD" if self.errors == "replace" else "dropped"
        return (
            f"{self.replaced:,} undecodable byte sequence{'s' if self.replaced > 1 else ''} "
            f"{what} (the first in {name} at byte {offset:,})"
        )


def _pending(decoder):
    """The bytes an incremental decoder holds of a character not yet complete."""
    try:
        return decoder.getstate()[0]
    except (AttributeError, TypeError, IndexError):
        return b""


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


_COUNTERS = []  # (Decoding, input name, base offset) being decoded now


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


codecs.register_error("charrnn-replace", _error_handler(UNDECODABLE))
codecs.register_error("charrnn-ignore", _error_handler(""))
