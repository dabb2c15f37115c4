"""The vocabulary: a model's symbols, turning text into ids and ids back into text, and reading
and writing itself in checkpoints and the id cache. A text held whole is encoded here; a file
going into the id cache is encoded in chunks by idcache.py, through the same lookup table
(data.lookup_table, with the unknown symbol where the vocabulary has one).

A text vocabulary holds characters (a `str` of sorted distinct code points); a byte vocabulary
(`--bytes`) holds byte values (a `bytes` of sorted distinct values). Either way a symbol's id is
its position, so the id of a byte is NOT its value unless all 256 are present: decoding must
go through the symbols, never `bytes(ids)`.

A text vocabulary may also hold the unknown symbol (`unk_id`): what a --max-vocab model reads for
the characters it left out, and what --errors replace makes of bytes that do not decode. It is a
symbol of its own, not a character: a U+FFFD in a text is a character like any other, and only
shows as U+FFFD (data.UNK) at the unknown symbol's place in `symbols`, so that decoding its id
writes U+FFFD. A new vocabulary puts it where U+FFFD sorts, after a U+FFFD character if it has
one. Checkpoints and cache entries written before it was its own symbol have no "unk" entry;
there every U+FFFD was the unknown symbol, and so it is read (from_json).
"""

import codecs

import numpy as np

from . import data


class Vocab:
    """The symbols of a model, with encode and decode."""

    __slots__ = ("symbols", "unk_id")

    def __init__(self, symbols, unk_id=-1):
        """symbols: a str of characters or bytes of byte values, a symbol's id its position;
        unk_id: the position of the unknown symbol (text only; symbols holds U+FFFD there), or
        -1 for none. A Vocab given as symbols is copied, unknown symbol and all."""
        if isinstance(symbols, Vocab):
            symbols, unk_id = symbols.symbols, symbols.unk_id
        if not isinstance(symbols, (str, bytes)):
            raise TypeError(f"a vocabulary is a str or bytes, not {type(symbols).__name__}")
        unk_id = -1 if unk_id is None else int(unk_id)
        if unk_id >= 0 and (
            isinstance(symbols, bytes) or unk_id >= len(symbols) or symbols[unk_id] != data.UNK
        ):
            raise ValueError(f"the unknown symbol cannot be id {unk_id} of this vocabulary")
        self.symbols = symbols
        self.unk_id = max(unk_id, -1)

    @classmethod
    def of(cls, chars, unk=False):
        """The text vocabulary of distinct characters chars (any order), sorted, with the unknown
        symbol if unk."""
        chars = sorted(chars)
        if not unk:
            return cls("".join(chars))
        at = sum(c <= data.UNK for c in chars)  # where U+FFFD sorts, after a U+FFFD character
        return cls("".join(chars[:at]) + data.UNK + "".join(chars[at:]), at)

    @property
    def chars(self):
        """The characters (text) or byte values (bytes), without the unknown symbol."""
        if self.unk_id < 0:
            return self.symbols
        return self.symbols[: self.unk_id] + self.symbols[self.unk_id + 1 :]

    # -- what it holds ------------------------------------------------------------------------

    @property
    def byte_level(self):
        return isinstance(self.symbols, bytes)

    @property
    def kind(self):
        return "bytes" if self.byte_level else "text"

    def __len__(self):
        return len(self.symbols)

    def __iter__(self):
        return iter(self.symbols)

    def __getitem__(self, i):
        return self.symbols[i]

    def __contains__(self, s):
        """Whether s is one of its characters (byte values): the unknown symbol is not one."""
        return self.find(s) >= 0

    def __eq__(self, other):
        """Same symbols and the same unknown symbol; a str or bytes is a vocabulary without one."""
        if isinstance(other, (str, bytes)):
            other = Vocab(other)
        return isinstance(other, Vocab) and (self.symbols, self.unk_id) == (other.symbols, other.unk_id)

    def __hash__(self):
        return hash(self.symbols) if self.unk_id < 0 else hash((self.symbols, self.unk_id))

    def __repr__(self):
        return (
            f"Vocab({self.symbols!r}, unk_id={self.unk_id})"
            if self.unk_id >= 0
            else f"Vocab({self.symbols!r})"
        )

    def find(self, s):
        """The id of the character (byte) s, or -1; never the unknown symbol's."""
        i = self.symbols.find(s)
        if 0 <= i == self.unk_id:
            i = self.symbols.find(s, i + 1)
        return i

    def index(self, s):
        i = self.find(s)
        if i < 0:
            raise ValueError(f"{s!r} is not in the vocabulary")
        return i

    @property
    def old_readers_agree(self):
        """Whether a charrnn from before the unknown symbol was a symbol of its own, which read
        every U+FFFD in a vocabulary as the unknown symbol, reads this one as it is."""
        return self.byte_level or (
            self.symbols.find(data.UNK) == self.unk_id and self.symbols.count(data.UNK) <= 1
        )

    @property
    def start_id(self):
        """The id sampling starts from without a prime: the newline, else the first symbol."""
        return max(self.symbols.find(b"\n" if self.byte_level else "\n"), 0)

    # -- text <-> ids -------------------------------------------------------------------------

    def encode(self, text, unknown="auto"):
        """Ids of text's symbols (see data.encode for `unknown`). A byte vocabulary takes bytes;
        a str given to it is encoded as UTF-8 first (so `--prime "é"` means its two bytes)."""
        if self.byte_level and isinstance(text, str):
            text = text.encode("utf-8", "surrogateescape")
        if not self.byte_level and isinstance(text, (bytes, bytearray)):
            raise TypeError("a text vocabulary encodes str, not bytes")
        return data.encode(text, self, unknown=unknown)

    def length(self, text):
        """How many symbols this vocabulary reads text as (bytes of a str's UTF-8 for a byte
        vocabulary): what encode(text, unknown="drop") leaves out is this less its ids."""
        if self.byte_level and isinstance(text, str):
            return len(text.encode("utf-8", "surrogateescape"))
        return len(text)

    def decode(self, ids):
        """The symbols of ids: a str, or for a byte vocabulary the raw bytes."""
        if self.byte_level:
            return data.decode_bytes(ids, self.symbols)
        return data.decode(ids, self.symbols)

    def text(self, ids):
        """The symbols of ids as a str whatever the kind (bytes decoded as UTF-8, replacing what
        does not decode): for showing, not for writing samples."""
        out = self.decode(ids)
        return out.decode("utf-8", "replace") if isinstance(out, bytes) else out

    def decoder(self):
        """An incremental decode for a stream of id arrays: returns a str for each (a character
        never splits in text mode), or the bytes themselves in byte mode."""
        if self.byte_level:
            return self.decode
        table = np.array(list(self.symbols)) if self.symbols else np.array([""])
        return lambda ids: "".join(table[np.asarray(ids).reshape(-1)])

    def text_decoder(self):
        """Like decoder(), but str in byte mode too: UTF-8 kept whole across calls."""
        if not self.byte_level:
            return self.decoder()
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda ids: dec.decode(self.decode(ids))

    def grown(self, other):
        """(the union of the two vocabularies, the characters of other it adds, the id in the
        union of each of other's ids): how a fine-tuned model keeps its characters and learns
        the new text's. The union has the unknown symbol if either has."""
        if other.byte_level != self.byte_level:
            raise TypeError("a byte and a character vocabulary do not combine")
        added = [s for s in other.chars if s not in self]
        if not added and (self.unk_id >= 0 or other.unk_id < 0):
            union = self
        elif self.byte_level:
            union = Vocab(bytes(sorted(set(self.symbols) | set(other.symbols))))
        else:
            union = Vocab.of(set(self.chars) | set(other.chars), self.unk_id >= 0 or other.unk_id >= 0)
        added = bytes(added) if self.byte_level else "".join(added)
        return union, added, union.ids_of(other)

    def ids_of(self, other):
        """The id in this vocabulary of each of other's ids (its unknown symbol to this one's):
        other's symbols must all be here."""
        if self.byte_level:
            ids = [self.index(bytes([s])) for s in other.symbols]
        else:
            ids = [self.unk_id if i == other.unk_id else self.index(s) for i, s in enumerate(other.symbols)]
        if min(ids, default=0) < 0:
            raise ValueError("the vocabulary lacks an unknown symbol")
        return np.array(ids, data.id_dtype(len(self)))

    # -- (de)serialisation --------------------------------------------------------------------

    def to_json(self):
        if self.byte_level:
            return {"kind": "bytes", "ids": list(self.symbols)}
        return {"kind": "text", "chars": self.symbols, "unk": self.unk_id if self.unk_id >= 0 else None}

    @classmethod
    def from_json(cls, d):
        """The vocabulary of a checkpoint's or cache entry's JSON; ValueError if malformed. Without
        an "unk" entry (written before the unknown symbol was its own), a U+FFFD is it."""
        if not isinstance(d, dict) or d.get("kind") not in ("bytes", "text"):
            raise ValueError("the vocabulary entry has no valid kind")
        if d["kind"] == "bytes":
            values = d.get("ids")
            if not isinstance(values, list) or not all(isinstance(v, int) and 0 <= v < 256 for v in values):
                raise ValueError("a byte vocabulary holds byte values 0-255")
            symbols = bytes(values)
        else:
            symbols = d.get("chars")
            if not isinstance(symbols, str):
                raise ValueError("a text vocabulary holds a string of characters")
        unk = d.get("unk", None) if "unk" in d else (symbols.find(data.UNK) if d["kind"] == "text" else -1)
        if unk is not None and (not isinstance(unk, int) or isinstance(unk, bool)):
            raise ValueError("the unknown symbol's id is not an integer")
        vocab = cls(symbols, unk)
        if len(set(vocab.chars)) != len(vocab.chars):
            raise ValueError("the vocabulary has repeated symbols")
        return vocab
