"""The id cache: streamed, chunked encoding gives exactly the ids, vocabulary and errors of the
in-memory path (read_text + build_vocab + encode), whatever the chunk boundaries cut; a second
read is a hit; a changed file or mode is a new key; a damaged entry is rebuilt, never trusted."""

import hashlib
import io
import os

import numpy as np
import pytest

from charrnn.text.vocab import Vocab
from charrnn.text import data as D, sources
from charrnn.text import idcache
from charrnn.training import run
from charrnn.errors import ConfigError, CorpusError
from conftest import markov_text

CHUNKS = [1, 2, 3, 4, 7, 4096]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """An empty cache directory of the test's own."""
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write(path, content):
    path.write_bytes(content)
    return path


def streamed(path, chunk_size=3, **kwargs):
    """The cached path, whatever the file's size."""
    return idcache.encoded_corpus(str(path), chunk_size=chunk_size, min_bytes=0, **kwargs)


def in_memory(path, byte_level=False, max_vocab=None):
    text, desc = D.read_text(str(path), byte_level=byte_level)
    vocab = D.build_vocab(text, max_vocab)
    return D.encode(text, vocab), vocab, desc


def assert_same(got, path, **kwargs):
    ids, vocab, desc = in_memory(path, **kwargs)
    assert got.vocab == vocab and got.description == desc
    assert got.ids.dtype == ids.dtype and np.array_equal(got.ids, ids)


def entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


class Spy:
    """Counts the first (counting) pass over a file: a rebuild is exactly one more."""

    def __init__(self, monkeypatch):
        self.calls, real = 0, idcache._count

        def count(*args):
            self.calls += 1
            return real(*args)

        monkeypatch.setattr(idcache, "_count", count)


# --------------------------------------------------------------- streamed == in memory

CONTENTS = {
    "crlf": b"ab\r\ncd\r\n\r\nef\rg\r\r\nh\r\n\r\r\ri\r",
    "bom": b"\xef\xbb\xbf\r\nhi\r\nthere \xef\xbb\xbf\xef\xbb\xbf",
    "multibyte": "汉字😀é\r\nñ x\r😀\r\n€".encode() * 3 + b"\r",
    "mixed": b"ascii\r" + "caf\u00e9\r\n".encode() + b"\nmore ascii\r\n" * 3 + "😀".encode(),
}


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("name", CONTENTS)
def test_streamed_equals_in_memory(tmp_path, cache, name, chunk_size):
    path = write(tmp_path / f"{name}.txt", CONTENTS[name])
    got = streamed(path, chunk_size)
    assert_same(got, path)
    assert isinstance(got.ids, np.memmap) and got.notice is None
    assert len(entries(cache)) == 2


def test_streamed_equals_in_memory_on_random_texts(tmp_path):
    """Seeded random texts built from the troublesome pieces, cut at random chunk sizes."""
    rng = np.random.default_rng(0)
    pieces = [b"a", b"Z", b" ", b"\r", b"\n", b"\r\n", "é".encode(), "中".encode(), "😀".encode(), D.BOM]
    for i in range(60):
        content = b"".join(pieces[j] for j in rng.integers(0, len(pieces), rng.integers(1, 40)))
        if rng.random() < 0.3:
            content = D.BOM + content
        path = write(tmp_path / f"r{i}.txt", content)
        try:
            expected = in_memory(path)
        except CorpusError as e:  # e.g. only a BOM: empty
            with pytest.raises(CorpusError) as got:
                streamed(path, int(rng.integers(1, 9)))
            assert str(got.value) == str(e)
            continue
        got = streamed(path, int(rng.integers(1, 9)))
        assert got.vocab == expected[1] and np.array_equal(got.ids, expected[0]), content


def test_max_vocab_and_wide_ids(tmp_path):
    text = "a" * 50 + "b" * 40 + "c" * 30 + "d" * 30 + "e" + D.UNK + "\r\n" * 5
    path = write(tmp_path / "rare.txt", text.encode())
    for max_vocab in (3, 4, 5, 99):
        got = streamed(path, max_vocab=max_vocab)
        assert_same(got, path, max_vocab=max_vocab)
    assert streamed(path, max_vocab=4).vocab.unk_id == 3  # the U+FFFD of the text is rare: left out
    wide = "".join(map(chr, range(0x400, 0x400 + 300))) * 2  # 300 symbols: uint16 ids
    path = write(tmp_path / "wide.txt", wide.encode())
    got = streamed(path, chunk_size=5)
    assert got.ids.dtype == np.uint16
    assert_same(got, path)


def test_bytes_mode_keeps_every_byte(tmp_path):
    content = b"\xef\xbb\xbfGIF\x00\x01\xff\xfe\r\n\r" + "naïve".encode()
    path = write(tmp_path / "blob.bin", content)
    got = streamed(path, 2, byte_level=True)
    assert_same(got, path, byte_level=True)
    assert D.decode_bytes(got.ids, got.vocab) == content
    assert got.description.endswith(f"({len(content)} bytes)")


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "content",
    [
        b"abc\x00def",
        b"ab\xffcd\x00",  # NUL wins over invalid UTF-8 before it
        b"ab\xffcd",
        b"abcdef\xe4\xb8",  # truncated at the end of the file
        b"abc\xe4\xb8Xdef",  # a broken character across chunk boundaries
        D.BOM + "汉字".encode() + b"\xc3(",  # offsets count the BOM
        b"\xed\xa0\x80 surrogate",
        b"",
        D.BOM,
    ],
)
@pytest.mark.parametrize("chunk_size", [1, 2, 4, 4096])
def test_errors_match_read_text(tmp_path, content, chunk_size):
    path = write(tmp_path / "bad.txt", content)
    with pytest.raises(CorpusError) as expected:
        D.read_text(str(path))
    with pytest.raises(CorpusError) as got:
        streamed(path, chunk_size)
    assert str(got.value) == str(expected.value)


# -------------------------------------------------------------------------- given vocabulary


def test_given_vocabulary(tmp_path):
    path = write(tmp_path / "t.txt", b"abcab\r\nxyz")
    got = streamed(path, vocab="\nabcxyz")
    assert np.array_equal(got.ids, D.encode("abcab\nxyz", "\nabcxyz"))
    with_unk = Vocab("\nab" + D.UNK, 3)  # the unknown symbol
    assert np.array_equal(streamed(path, vocab=with_unk).ids, D.encode("abcab\nxyz", with_unk))
    with pytest.raises(CorpusError) as expected:
        D.encode("abcab\nxyz", "\nab")
    with pytest.raises(CorpusError) as e:
        streamed(path, vocab="\nab", unknown_hint="the model lacks them")
    assert str(e.value) == f"{expected.value} (the model lacks them)"
    with pytest.raises(ConfigError, match="--bytes"):
        streamed(path, vocab=b"abc")
    with pytest.raises(ConfigError, match="--bytes"):
        streamed(path, vocab="abc", byte_level=True)


# ------------------------------------------------------------------------------ the cache


def test_second_read_is_a_hit(tmp_path, cache, monkeypatch):
    path = write(tmp_path / "t.txt", "héllo\r\nwörld\n".encode() * 10)
    first = streamed(path)
    names = entries(cache)
    assert len(names) == 2 and not [n for n in names if n.startswith(".")]

    def fail(*args):
        raise AssertionError("encoded again")

    monkeypatch.setattr(idcache, "_count", fail)
    monkeypatch.setattr(idcache, "_encode", fail)
    again = streamed(path)
    assert again.vocab == first.vocab and again.description == first.description
    assert isinstance(again.ids, np.memmap) and np.array_equal(again.ids, first.ids)
    assert entries(cache) == names


def test_changed_file_or_mode_gets_a_new_key(tmp_path, cache, monkeypatch):
    path = write(tmp_path / "t.txt", b"abcabc\n" * 10)
    streamed(path)
    path.write_bytes(b"abcabd\n" * 10)  # same size
    assert_same(streamed(path), path)
    streamed(path, byte_level=True)
    streamed(path, max_vocab=3)
    streamed(path, vocab="\nabcd")  # the file's own vocabulary: its entry, not a copy (issue 38)
    streamed(path, vocab="\nabcdz")
    assert len(entries(cache)) == 2 * 5
    spy = Spy(monkeypatch)
    streamed(path, max_vocab=3)
    assert spy.calls == 0


def _truncate(npy):
    npy.write_bytes(npy.read_bytes()[:-1])


def _append(npy):
    npy.write_bytes(npy.read_bytes() + b"\0")


def _header(npy):
    npy.write_bytes(b"garbage!" + npy.read_bytes()[8:])


def _empty(npy):
    npy.write_bytes(b"")


def _out_of_range(npy):
    raw = bytearray(npy.read_bytes())
    raw[-3] = 200  # the vocabulary has 4 symbols
    npy.write_bytes(bytes(raw))


def _json(npy):
    npy.with_suffix(".json").write_text("{not json")


def _json_length(npy):
    meta = npy.with_suffix(".json")
    text = meta.read_text()
    assert '"length": 70' in text
    meta.write_text(text.replace('"length": 70', '"length": 69'))


def _json_gone(npy):
    npy.with_suffix(".json").unlink()


@pytest.mark.parametrize(
    "damage", [_truncate, _append, _header, _empty, _out_of_range, _json, _json_length, _json_gone]
)
def test_damaged_entry_is_rebuilt(tmp_path, cache, monkeypatch, damage):
    path = write(tmp_path / "t.txt", b"abcabc\n" * 10)
    streamed(path)
    [npy] = cache.glob("*.npy")
    damage(npy)
    spy = Spy(monkeypatch)
    got = streamed(path)
    assert spy.calls == 1
    assert_same(got, path)
    streamed(path)
    assert spy.calls == 1  # sound again: a hit
    assert len(entries(cache)) == 2


def test_named_corpus_on_disk_is_streamed(tmp_path, cache, monkeypatch):
    content = b"to be or not to be\r\n" * 5
    entry = {
        "file": "tiny.txt",
        "url": "https://example.invalid/tiny.txt",
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    monkeypatch.setattr(sources, "_manifest", lambda: {"tiny": entry})
    path = write(tmp_path / "tiny.txt", content)
    got = idcache.encoded_corpus("tiny", data_dir=str(tmp_path), min_bytes=0)
    assert isinstance(got.ids, np.memmap) and got.description == "tiny (95 chars)"
    assert np.array_equal(got.ids, in_memory(path)[0])


def test_unwritable_cache_falls_back_to_memory(tmp_path, monkeypatch):
    blocker = write(tmp_path / "not-a-dir", b"")
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(blocker / "ids"))
    path = write(tmp_path / "t.txt", "héllo\r\n".encode() * 10)
    got = streamed(path)
    assert_same(got, path)
    assert not isinstance(got.ids, np.memmap)
    assert "cannot write the id cache" in got.notice and "\n" not in got.notice


def test_failed_write_falls_back_and_leaves_no_temporary_file(tmp_path, cache, monkeypatch):
    path = write(tmp_path / "t.txt", b"abc\r\n" * 10)

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(idcache.os, "replace", disk_full)
    got = streamed(path)
    assert_same(got, path)
    assert "No space left on device" in got.notice and entries(cache) == []


def test_leftover_temporary_files_are_swept(tmp_path, cache):
    cache.mkdir()
    old, fresh = write(cache / ".abc.1.tmp", b"x"), write(cache / ".abc.2.tmp", b"x")
    os.utime(old, (0, 0))
    streamed(write(tmp_path / "t.txt", b"abc"))
    assert fresh.exists() and not old.exists()


def test_small_files_directories_and_stdin_stay_in_memory(tmp_path, cache):
    path = write(tmp_path / "small.txt", b"abc\r\n")
    got = idcache.encoded_corpus(str(path))  # under MIN_BYTES
    assert_same(got, path)
    (tmp_path / "dir").mkdir()
    write(tmp_path / "dir" / "a.txt", b"x" * 100)
    got = idcache.encoded_corpus(str(tmp_path / "dir"), min_bytes=0)
    assert got.vocab == "x" and len(got.ids) == 100
    got = idcache.encoded_corpus("-", stdin=io.BytesIO(b"ab\r\n"), min_bytes=0)
    assert got.vocab == "\nab" and got.description.startswith("<stdin>")
    with pytest.raises(ConfigError, match="glob"):
        idcache.encoded_corpus(str(path), glob="*.txt", min_bytes=0)
    assert entries(cache) == []


# -------------------------------------------------------------------------- training from it


def test_training_resumes_from_the_cache(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(idcache, "MIN_BYTES", 0)
    path = write(tmp_path / "c.txt", markov_text("abcdef", 3000, seed=5)[0].encode())
    opts = dict(layers=1, hidden=8, batch=4, seq=10, eval_every=5, seed=7)
    t = run.prepare(path, tmp_path / "r", steps=5, **opts).trainer
    assert isinstance(t.val_ids, np.memmap) and np.shares_memory(t.xs, t.ys)
    assert len(entries(cache)) == 2
    with run.run_directory(t.run_dir):
        t.run()
    t2 = run.prepare(resume=tmp_path / "r", steps=10).trainer
    assert t2.step == 5 and isinstance(t2.val_ids, np.memmap)
    assert len(entries(cache)) == 2  # the run's entry, not a copy keyed by its vocabulary (issue 38)
    path.write_bytes(markov_text("abcdef", 3000, seed=6)[0].encode())
    with pytest.raises(ConfigError, match="different text"):
        run.prepare(resume=tmp_path / "r", steps=10)
    path.write_bytes(b"abcdefg" * 100)  # a character the model lacks: its vocabulary grows
    grown = run.prepare(path, tmp_path / "r2", init_from=tmp_path / "r", steps=1, batch=4, seq=10)
    assert "'g'" in grown.notice and grown.trainer.model.vocab == "abcdefg"
    assert grown.trainer.model.vocab.decode(grown.trainer.xs[0, :7]) == "abcdefg"
