"""The vocabulary: a model's symbols, and the one place that turns text into ids and ids back
into text, and reads and writes itself in checkpoints and the id cache.

A text vocabulary holds characters (a `str` of sorted distinct code points); a byte vocabulary
(`--bytes`) holds byte values (a `bytes` of sorted distinct values). Either way a symbol's id is
its position, so the id of a byte is NOT its value unless all 256 are present: decoding must
go through the symbols, never `bytes(ids)`.
"""

import codecs

import numpy as np

from . import data


class Vocab:
    """The symbols of a model, with encode and decode."""

    __slots__ = ("symbols", "_table")

    def __init__(self, symbols):
        if isinstance(symbols, Vocab):
            symbols = symbols.symbols
        if not isinstance(symbols, (str, bytes)):
            raise TypeError(f"a vocabulary is a str or bytes, not {type(symbols).__name__}")
        self.symbols = symbols
        self._table = None

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
        return s in self.symbols

    def __eq__(self, other):
        if isinstance(other, Vocab):
            other = other.symbols
        return isinstance(other, (str, bytes)) and self.symbols == other

    def __hash__(self):
        return hash(self.symbols)

    def __repr__(self):
        return f"Vocab({self.symbols!r})"

    def index(self, s):
        return self.symbols.index(s)

    @property
    def unk_id(self):
        """The id of the unknown symbol (text mode with --max-vocab or --errors replace), or -1.
        Sampling never draws it."""
        return -1 if self.byte_level else self.symbols.find(data.UNK)

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
        return data.encode(text, self.symbols, unknown=unknown)

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
        """(the union of the two vocabularies, the symbols of other it adds, the id in the
        union of each of other's ids): how a fine-tuned model keeps its characters and learns
        the new text's."""
        if other.byte_level != self.byte_level:
            raise TypeError("a byte and a character vocabulary do not combine")
        added = [s for s in other.symbols if s not in self.symbols]
        if not added:
            union = self
        elif self.byte_level:
            union = Vocab(bytes(sorted(set(self.symbols) | set(other.symbols))))
        else:
            union = Vocab("".join(sorted(set(self.symbols) | set(other.symbols))))
        where = {s: i for i, s in enumerate(union.symbols)}
        remap = np.array([where[s] for s in other.symbols], data.id_dtype(len(union)))
        added = bytes(added) if self.byte_level else "".join(added)
        return union, added, remap

    # -- (de)serialisation --------------------------------------------------------------------

    def to_json(self):
        if self.byte_level:
            return {"kind": "bytes", "ids": list(self.symbols)}
        return {"kind": "text", "chars": self.symbols}

    @classmethod
    def from_json(cls, d):
        """The vocabulary of a checkpoint's or cache entry's JSON; ValueError if malformed."""
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
        if len(set(symbols)) != len(symbols):
            raise ValueError("the vocabulary has repeated symbols")
        return cls(symbols)
