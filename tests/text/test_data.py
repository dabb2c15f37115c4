"""Corpora: sources (files, directories, stdin, named and default corpora), decoding rules, the
vocabulary, encode/decode round trips and the train/validation split. Never touches the network."""

import hashlib
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from charrnn.text import data as D, sources
from charrnn.text.vocab import Vocab
from charrnn.errors import ConfigError, CorpusError

SHARED_CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
SHAKESPEARE = SHARED_CORPORA / "tinyshakespeare.txt"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home (so an empty download cache) and no CHARRNN_DATA_DIR."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CHARRNN_DATA_DIR", raising=False)
    return tmp_path / "home"


@pytest.fixture
def fake_corpus(monkeypatch, home):
    """A manifest with one small corpus 'tiny' whose download is never attempted for real."""
    content = b"to be or not to be\n"
    entry = {
        "file": "tiny.txt",
        "url": "https://example.invalid/tiny.txt",
        "sha256": hashlib.sha256(content).hexdigest(),
        "chars": len(content),
    }
    monkeypatch.setattr(sources, "_manifest", lambda: {"tiny": entry})

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return content


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "text",
    [
        "hello, world\nthe quick brown fox",
        "汉字与标点：你好，世界！\nemoji 😀🎉👍🏽 and é (e + combining) e\u0301 ñ ß",
    ],
)
def test_text_round_trip(text):
    vocab = D.build_vocab(text)
    ids = D.encode(text, vocab)
    assert len(ids) == len(text)
    assert D.decode(ids, vocab) == text
    assert [vocab[i] for i in ids[:5]] == list(text[:5])


def test_bytes_round_trip():
    raw = bytes(range(256)) + "naïve 😀".encode() + b"\xff\xfe broken utf-8"
    vocab = D.build_vocab(raw)
    assert vocab == bytes(range(256))
    ids = D.encode(raw, vocab)
    assert ids.dtype == np.uint8 and len(ids) == len(raw)
    assert D.decode_bytes(ids, vocab) == raw
    assert D.decode(D.encode("naïve 😀".encode(), vocab), vocab) == "naïve 😀"
    assert D.decode(D.encode(b"a\xffb", vocab), vocab) == "a\ufffdb"


def test_vocab_sorted_and_deterministic():
    assert D.build_vocab("hello world") == " dehlorw"
    assert D.build_vocab("world hello") == D.build_vocab("hello world")
    assert D.build_vocab("b😀a中") == "ab中😀"
    assert D.build_vocab(b"cab\x00") == b"\x00abc"
    vocab = D.build_vocab("abcabc")
    assert D.encode("cab", vocab).tolist() == [2, 0, 1]


def test_id_dtype_follows_vocab_size():
    small = "".join(map(chr, range(32, 32 + 256)))
    large = "".join(map(chr, range(32, 32 + 257)))
    assert D.encode(small, D.build_vocab(small)).dtype == np.uint8
    ids = D.encode(large, D.build_vocab(large))
    assert ids.dtype == np.uint16 and ids.max() == 256
    assert D.id_dtype(65536) == np.uint16 and D.id_dtype(65537) == np.uint32


def test_max_vocab_maps_rare_characters_to_unk():
    text = "a" * 5 + "b" * 4 + "c" * 3 + "d" * 3 + "e"
    vocab = D.build_vocab(text, max_vocab=4)
    assert (vocab.symbols, vocab.unk_id) == ("abc" + D.UNK, 3)  # c beats d on the tie: lower code point
    ids = D.encode(text, vocab)
    assert D.decode(ids, vocab) == "aaaaabbbbccc" + D.UNK * 4
    assert D.build_vocab(text, max_vocab=5) == "abcde"  # fits: no unknown symbol
    assert D.build_vocab(text, max_vocab=99) == "abcde"
    assert D.build_vocab("zzz" + D.UNK + "yy", max_vocab=2) == Vocab("z" + D.UNK, 1)
    with pytest.raises(ConfigError):
        D.build_vocab(text, max_vocab=1)


def test_unknown_characters_error_drop_or_unk():
    vocab = D.build_vocab("abc")
    with pytest.raises(CorpusError, match=r"'x', 'y'") as e:
        D.encode("abxcy", vocab)
    assert "'z'" not in str(e.value)
    assert D.decode(D.encode("abxcy", vocab, unknown="drop"), vocab) == "abc"
    with pytest.raises(ValueError):
        D.encode("abx", vocab, unknown="unk")  # no UNK in this vocabulary
    with pytest.raises(CorpusError, match="and 2 more"):
        D.encode("1234567", vocab)
    with_unk = Vocab("a" + D.UNK, 1)
    assert D.decode(D.encode("ax", with_unk), with_unk) == "a" + D.UNK


def test_a_ufffd_in_the_text_is_a_character_not_the_unknown_symbol():
    """Issue 38: a U+FFFD of the text is a character; the unknown symbol is a symbol of its own,
    for what --max-vocab leaves out and what --errors replace could not decode."""
    vocab = D.build_vocab("ab" + D.UNK)
    assert vocab == "ab" + D.UNK and vocab.unk_id == -1 and D.UNK in vocab
    with pytest.raises(CorpusError, match="'x'"):
        D.encode("abx", vocab)  # not folded into U+FFFD
    text = "z" * 3 + D.UNK * 4 + "y" * 2 + "w"
    capped = D.build_vocab(text, max_vocab=3)  # U+FFFD and z are the most frequent
    assert (capped.symbols, capped.unk_id) == ("z" + D.UNK + D.UNK, 2)
    assert D.encode(text, capped).tolist() == [0] * 3 + [1] * 4 + [2] * 3
    assert capped.chars == "z" + D.UNK
    replaced = D.build_vocab("ab" + D.UNDECODABLE + D.UNK)  # --errors replace: bytes, no character
    assert (replaced.symbols, replaced.unk_id) == ("ab" + D.UNK + D.UNK, 3)
    assert D.encode(D.UNDECODABLE + D.UNK, replaced).tolist() == [3, 2]
    with pytest.raises(CorpusError, match="undecodable bytes"):
        D.encode("a" + D.UNDECODABLE, vocab)


def test_encode_large_text_in_chunks():
    rng = np.random.default_rng(0)
    n = 20_000_000
    text = rng.integers(32, 127, n, dtype=np.uint8).tobytes().decode("ascii") + "é中😀"
    vocab = D.build_vocab(text)
    ids = D.encode(text, vocab)
    assert ids.dtype == np.uint8 and len(ids) == len(text)
    assert len(vocab) == 95 + 3
    for at in [0, D.CHUNK - 1, D.CHUNK, 3 * D.CHUNK + 7, n - 5]:  # across chunk boundaries
        assert D.decode(ids[at : at + 8], vocab) == text[at : at + 8]
    counts = np.bincount(ids, minlength=len(vocab))
    assert counts[vocab.index("A")] == text.count("A")
    assert D.decode(ids[-3:], vocab) == "é中😀"


def test_decode_rejects_out_of_range_ids():
    with pytest.raises(ValueError):
        D.decode([0, 3], "abc")


# ----------------------------------------------------------------------------- decoding rules


def test_line_endings_normalised_in_text_mode_only(tmp_path):
    path = write(tmp_path / "crlf.txt", b"one\r\ntwo\rthree\n\r\nfour")
    text, desc = D.read_text(str(path))
    assert text == "one\ntwo\nthree\n\nfour"
    assert str(path) in desc and "19 chars" in desc
    raw, _ = D.read_text(str(path), byte_level=True)
    assert raw == b"one\r\ntwo\rthree\n\r\nfour"


def test_bom_dropped(tmp_path):
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbfhi \xef\xbb\xbf")
    assert D.read_text(str(path))[0] == "hi \ufeff"  # only the leading mark is a BOM


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"", "is empty"),
        ("image.bin", b"GIF89a\x00\x01text", "use --bytes"),
        ("latin1.txt", "café".encode("latin-1"), "not valid UTF-8.*use --bytes"),
    ],
)
def test_unusable_files_name_the_file(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(CorpusError, match=message) as e:
        D.read_text(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_invalid_utf8_offset_counts_the_bom(tmp_path):
    path = write(tmp_path / "bom.txt", D.BOM + b"ab\xffcd")
    with pytest.raises(CorpusError, match=r"at byte 5\)"):
        D.read_text(str(path))
    path = write(tmp_path / "plain.txt", b"ab\xffcd")
    with pytest.raises(CorpusError, match=r"at byte 2\)"):
        D.read_text(str(path))


def test_byte_mode_takes_binary_files(tmp_path):
    content = b"GIF89a\x00\x01" + "café".encode("latin-1")
    path = write(tmp_path / "image.bin", content)
    data, desc = D.read_text(str(path), byte_level=True)
    assert data == content and "12 bytes" in desc


def test_unknown_source_lists_known_corpora(home):
    with pytest.raises(CorpusError, match="no such file or corpus name: nowhere.txt") as e:
        D.read_text("nowhere.txt")
    assert "tinyshakespeare" in str(e.value) and D.DEFAULT_CORPUS in str(e.value)


# ----------------------------------------------------------------------- directories and stdin


def test_directory_sorted_with_glob(tmp_path):
    write(tmp_path / "b.py", b"B = 2\n")
    write(tmp_path / "a.py", b"A = 1\r\n")
    write(tmp_path / "sub" / "c.py", b"C = 3\n")
    write(tmp_path / "notes.txt", b"notes\n")
    write(tmp_path / "empty.py", b"")
    write(tmp_path / ".hidden" / "d.py", b"D = 4\n")
    write(tmp_path / "blob.bin", b"\x00\x01\x02")
    text, desc = D.read_text(str(tmp_path), glob="*.py")
    assert text == "A = 1\n\n\nB = 2\n\n\nC = 3\n"
    assert "3 files" in desc
    text, desc = D.read_text(str(tmp_path))
    assert text == "A = 1\n\n\nB = 2\n\n\nnotes\n\n\nC = 3\n"
    assert "1 skipped" in desc
    raw, _ = D.read_text(str(tmp_path), byte_level=True)
    assert raw == b"A = 1\r\n\n\nB = 2\n\n\n\x00\x01\x02\n\nnotes\n\n\nC = 3\n"


def test_a_glob_with_a_slash_matches_paths_under_the_directory(tmp_path):
    """Issue 38: --glob 'api/*.md' found nothing, as only names were matched."""
    write(tmp_path / "api" / "a.md", b"A\n")
    write(tmp_path / "api" / "deep" / "b.md", b"B\n")
    write(tmp_path / "guide" / "c.md", b"C\n")
    assert D.read_text(str(tmp_path), glob="api/*.md")[0] == "A\n"
    assert D.read_text(str(tmp_path), glob="*/*/*.md")[0] == "B\n"
    assert D.read_text(str(tmp_path), glob="*.md")[0] == "A\n\n\nB\n\n\nC\n"  # names, at any depth
    with pytest.raises(CorpusError, match="no files whose path under it matches api/\\*.txt"):
        D.read_text(str(tmp_path), glob="api/*.txt")


def test_directory_without_usable_files(tmp_path):
    write(tmp_path / "blob.bin", b"\x00\x01")
    with pytest.raises(CorpusError, match="no files whose name matches"):
        D.read_text(str(tmp_path), glob="*.py")
    with pytest.raises(CorpusError, match="no UTF-8 text files.*use --bytes"):
        D.read_text(str(tmp_path))
    with pytest.raises(ConfigError, match="glob"):
        D.read_text(str(tmp_path / "blob.bin"), glob="*.py")


def test_stdin():
    text, desc = D.read_text("-", stdin=io.BytesIO("héllo\r\nwörld".encode()))
    assert text == "héllo\nwörld" and desc.startswith("<stdin>")
    raw, _ = D.read_text("-", stdin=io.BytesIO(b"\x00\xff"), byte_level=True)
    assert raw == b"\x00\xff"
    with pytest.raises(CorpusError, match="<stdin> is empty"):
        D.read_text("-", stdin=io.BytesIO(b""))


# ------------------------------------------------------------------------------ named corpora


def test_manifest():
    names = D.corpus_names()
    assert names[0] == D.DEFAULT_CORPUS and "tinyshakespeare" in names
    entry = sources._manifest()["tinyshakespeare"]
    assert entry["file"] == "tinyshakespeare.txt" and entry["chars"] == 1115394
    assert len(entry["sha256"]) == 64 and entry["url"].startswith("https://")
    source = Path(D.__file__).resolve().parents[2] / "corpora" / "manifest.json"
    assert json.loads(source.read_text()) == sources._manifest()


def test_named_corpus_from_data_dir(tmp_path, fake_corpus, monkeypatch):
    write(tmp_path / "data" / "tiny.txt", fake_corpus)
    text, desc = D.read_text("tiny", data_dir=str(tmp_path / "data"))
    assert text == fake_corpus.decode() and desc == f"tiny ({len(fake_corpus)} chars)"
    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path / "data"))
    assert D.read_text("tiny")[0] == text


def test_named_corpus_wrong_hash(tmp_path, fake_corpus):
    path = write(tmp_path / "tiny.txt", fake_corpus + b"tampered")
    with pytest.raises(CorpusError, match="sha256") as e:
        D.read_text("tiny", data_dir=str(tmp_path))
    assert str(path) in str(e.value)


def test_download_failure_says_what_to_do(tmp_path, fake_corpus):
    with pytest.raises(CorpusError) as e:
        D.read_text("tiny", data_dir=str(tmp_path / "offline"))
    message = str(e.value)
    assert message.startswith("could not download tiny (network is unreachable)")
    assert "put tiny.txt" in message and str(tmp_path / "offline") in message
    assert "CHARRNN_DATA_DIR" in message and "\n" not in message


def test_corpus_file_for_streaming(tmp_path, fake_corpus):
    path = write(tmp_path / "data" / "tiny.txt", fake_corpus)
    assert D.corpus_file("tiny", data_dir=str(tmp_path / "data")) == path
    assert D.corpus_file(str(path)) == path and D.corpus_file(path) == path
    assert D.corpus_file("tiny", data_dir=str(tmp_path / "elsewhere")) is None  # to download
    for source in (None, "-", D.DEFAULT_CORPUS, str(tmp_path / "data"), "nowhere.txt"):
        assert D.corpus_file(source) is None
    path.write_bytes(fake_corpus + b"tampered")
    with pytest.raises(CorpusError, match="sha256"):
        D.corpus_file("tiny", data_dir=str(tmp_path / "data"))


def test_download_is_verified_and_cached(home, fake_corpus, monkeypatch):
    served = [fake_corpus + b"corrupted"]
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served[0]))
    with pytest.raises(CorpusError, match="does not match its sha256"):
        D.read_text("tiny")
    cached = D.default_data_dir() / "tiny.txt"
    assert not cached.exists()
    served[0] = fake_corpus
    assert D.read_text("tiny")[0] == fake_corpus.decode()
    assert cached.read_bytes() == fake_corpus and list(cached.parent.iterdir()) == [cached]
    served[0] = b"the cache is used, not the network"
    assert D.read_text("tiny")[0] == fake_corpus.decode()


def test_tinyshakespeare_from_shared_dir(home):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} is not here")
    text, desc = D.read_text("tinyshakespeare", data_dir=str(SHARED_CORPORA))
    assert desc == "tinyshakespeare (1,115,394 chars)" and text.startswith("First Citizen:\n")
    vocab = D.build_vocab(text)
    assert len(vocab) == 65
    train, val = D.split(D.encode(text, vocab), 0.1)
    assert (len(train), len(val)) == (1003854, 111540)  # nanoGPT's int(n * 0.9)


# ---------------------------------------------------------------------- default corpus, split


def test_default_corpus_is_the_stdlib_deterministically():
    text, desc = D.read_text(None)
    again, _ = D.read_text(D.DEFAULT_CORPUS)
    assert text == again
    assert 100_000 < len(text) <= D.STDLIB_CAP
    assert "def " in text and "\r" not in text and desc.startswith(D.DEFAULT_CORPUS)
    raw, _ = D.read_text(None, byte_level=True)
    assert isinstance(raw, bytes) and 100_000 < len(raw) <= D.STDLIB_CAP


def test_split_fractions():
    ids = np.arange(1000, dtype=np.uint16)
    train, val = D.split(ids, 0.1)
    assert len(train) == 900 and len(val) == 100 and val[0] == 900
    train, val = D.split(ids, 0.0)
    assert len(train) == 1000 and len(val) == 0 and val.dtype == np.uint16
    train, val = D.split(np.arange(1000), 0.07)  # float 1 - 0.07 would give 929/71
    assert (len(train), len(val)) == (930, 70)
    train, val = D.split(np.arange(90), 0.3)
    assert (len(train), len(val)) == (63, 27)
    assert np.array_equal(np.concatenate(D.split(ids, 0.33)), ids)
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError):
            D.split(ids, bad)
