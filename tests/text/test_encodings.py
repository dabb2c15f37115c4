"""Real people's files: other encodings (named, or found by their byte-order mark), stray bytes
replaced or dropped with a count, and byte-level models end to end (train, sample the raw bytes,
prime, evaluate, report novelty, describe). The streamed (id cache) path must give exactly what
the in-memory path gives, whatever the chunk boundaries cut."""

import json

import numpy as np
import pytest

from charrnn import api, checkpoint
from charrnn.text import data as D
from charrnn.errors import ConfigError, CorpusError
from charrnn.text.vocab import Vocab
from conftest import TINY, invoke, markov_text, streamed, write_bytes

CHUNKS = [1, 2, 3, 5, 4096]
TEXT = "Größe: naïve café, 中文 and 😀.\r\nSecond line\rthird\n"


pytestmark = pytest.mark.usefixtures("cache")
write = write_bytes


def normalised(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ------------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_byte_order_mark_picks_the_encoding(tmp_path, codec):
    raw = TEXT.encode(codec)
    if codec == "utf-16-be":
        raw = b"\xfe\xff" + raw  # big-endian with its mark
    path = write(tmp_path / "t.txt", raw)
    text, _ = D.read_text(str(path))
    assert text == normalised(TEXT)
    for chunk in CHUNKS:
        got = streamed(path, chunk)
        assert got.vocab.decode(got.ids) == text, chunk


def test_named_encoding_reads_latin1_and_the_error_names_the_options(tmp_path):
    content = "café crème, naïve\n" * 3
    path = write(tmp_path / "l1.txt", content.encode("latin-1"))
    with pytest.raises(CorpusError) as e:
        D.read_text(str(path))
    message = str(e.value)
    assert "at byte 3" in message and "\n" not in message
    assert message.index("--encoding") < message.index("--errors") < message.index("--bytes")
    text, _ = D.read_text(str(path), decoding=D.Decoding("latin-1"))
    assert text == content
    for chunk in CHUNKS:
        got = streamed(path, chunk, decoding=D.Decoding("latin-1"))
        assert got.vocab.decode(got.ids) == content
    with pytest.raises(ConfigError, match="unknown encoding"):
        D.Decoding("no-such-codec")
    with pytest.raises(ConfigError, match="--errors"):
        D.Decoding(errors="maybe")


def test_utf16_without_a_mark_is_named_not_called_binary(tmp_path):
    path = write(tmp_path / "t.txt", ("plain ASCII text, " * 20).encode("utf-16-le"))
    for read in (lambda: D.read_text(str(path)), lambda: streamed(path, 7)):
        with pytest.raises(CorpusError, match="--encoding utf-16-le"):
            read()
    text, _ = D.read_text(str(path), decoding=D.Decoding("utf-16-le"))
    assert text == "plain ASCII text, " * 20
    with pytest.raises(CorpusError, match="looks binary"):
        D.read_text(str(write(tmp_path / "b.bin", b"\x7fELF\x02\x01\x01\x00\x00\x00\x00abc")))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_stray_bytes_replaced_or_dropped_and_counted(tmp_path, chunk):
    good = ("All work and no play. " * 40).encode()
    raw = good[:100] + b"\xff" + good[100:300] + b"\xc3(" + good[300:]  # two bad sequences
    path = write(tmp_path / "s.txt", raw)
    expect = {
        "replace": good[:100].decode()
        + D.UNDECODABLE
        + good[100:300].decode()
        + D.UNDECODABLE
        + "("
        + good[300:].decode(),
        "ignore": good[:300].decode() + "(" + good[300:].decode(),
    }
    for errors, text in expect.items():
        mem = D.Decoding(errors=errors)
        assert D.read_text(str(path), decoding=mem)[0] == text
        assert (mem.replaced, mem.first) == (2, (str(path), 100))
        dec = D.Decoding(errors=errors)
        got = streamed(path, chunk, decoding=dec)
        assert got.vocab.decode(got.ids) == text.replace(D.UNDECODABLE, D.UNK)  # written as U+FFFD
        assert (dec.replaced, dec.first) == (2, (str(path), 100))
        assert got.notice.startswith("2 undecodable byte sequences") and "at byte 100" in got.notice
        again = streamed(path, chunk, decoding=D.Decoding(errors=errors))  # a cache hit
        assert again.notice == got.notice and np.array_equal(again.ids, got.ids)


def test_replaced_bytes_are_the_unknown_symbol_never_sampled(tmp_path):
    text, _ = markov_text("ab \n", 3000, seed=2)
    raw = text.encode()
    raw = b"".join(raw[i : i + 50] + b"\xfe" for i in range(0, len(raw), 50))
    path = write(tmp_path / "s.txt", raw)
    out = tmp_path / "run"
    r = invoke("train", path, "--errors", "replace", "-o", out, "--steps", "5", *TINY)
    assert r.exit_code == 0, r.stderr
    assert "undecodable byte sequences replaced by U+FFFD" in r.stderr
    model = api.load(out)
    assert model.vocab.unk_id >= 0
    assert D.UNK not in model.sample(2000, seed=1, temp=2.0)


def test_a_vocabulary_written_before_the_unknown_symbol_was_its_own_keeps_its_meaning():
    """Issue 38: an "unk" entry says which id is the unknown symbol; without one (files written
    before), every U+FFFD was it. A vocabulary an older reader would misread says so."""
    legacy = Vocab.from_json({"kind": "text", "chars": "\nab" + D.UNK})
    assert legacy.unk_id == 3 and D.UNK not in legacy and legacy.old_readers_agree
    assert legacy.encode("ax").tolist() == [1, 3]
    literal = Vocab("\nab" + D.UNK)
    assert literal.unk_id == -1 and not literal.old_readers_agree
    both = Vocab.of("\nab" + D.UNK, unk=True)
    assert (both.symbols, both.unk_id) == ("\nab" + D.UNK + D.UNK, 4) and not both.old_readers_agree
    assert both.encode("a" + D.UNK + "x").tolist() == [1, 3, 4] and both.decode([3, 4]) == D.UNK * 2
    for v in (legacy, literal, both, Vocab(b"ab")):
        assert Vocab.from_json(json.loads(json.dumps(v.to_json()))) == v
    with pytest.raises(ValueError):
        Vocab.from_json({"kind": "text", "chars": "ab", "unk": 1})  # no U+FFFD there


def test_a_ufffd_in_the_text_is_a_character_end_to_end(tmp_path):
    """Issue 38: a model trained on a text holding U+FFFD has no unknown symbol: eval and inspect
    both refuse characters it never saw, --init-from grows its vocabulary, and its checkpoint is
    one an older charrnn refuses rather than misreads; an older checkpoint still means what it
    meant."""
    text, _ = markov_text(["ab", " ", "\n", D.UNK], 3000, seed=3)
    path = write(tmp_path / "t.txt", text.encode())
    out = tmp_path / "run"
    r = invoke("train", path, "-o", out, "--steps", "3", "-q", *TINY)
    assert r.exit_code == 0, r.stderr
    model = api.load(out)
    assert model.vocab.unk_id == -1 and D.UNK in model.vocab
    new = write(tmp_path / "new.txt", ("ab x" + D.UNK + "\n").encode() * 30)
    for command in ("eval", "inspect"):
        extra = ["--find", "line-position"] if command == "inspect" else []
        r = invoke(command, "-c", out, new, *extra)
        assert r.exit_code == 1 and "not in the vocabulary: 'x'" in r.stderr, (command, r.stderr)
    r = invoke("train", new, "-o", tmp_path / "grown", "--init-from", out, "--steps", "1", *TINY)
    assert r.exit_code == 0 and "1 character the --init-from model lacks" in r.stderr, r.stderr
    assert api.load(tmp_path / "grown").vocab == "\n ab" + "x" + D.UNK
    meta, params, train = checkpoint.load(out / checkpoint.LATEST)
    assert meta["version"] == 2  # a charrnn that takes U+FFFD for the unknown symbol refuses it
    # the same file as an older charrnn wrote it: its U+FFFD is the unknown symbol, and reads so
    old = dict(meta.to_json(), version=1, vocab={"kind": "text", "chars": meta.vocab.symbols})
    checkpoint.save(tmp_path / "old.npz", old, [params[k] for k in checkpoint.PARAM_NAMES])
    r = invoke("eval", "-c", tmp_path / "old.npz", new, "--max-unknown", "1")
    assert r.exit_code == 0 and "unknown to the model" in r.stdout, r.stderr
    r = invoke("inspect", "-c", tmp_path / "old.npz", new, "--find", "line-position")
    assert r.exit_code == 0, r.stderr  # read as eval reads it: x as the unknown symbol
    assert api.load(tmp_path / "old.npz").vocab.unk_id == model.vocab.index(D.UNK)


def test_resume_reads_with_the_runs_encoding(tmp_path):
    text, _ = markov_text("aéiöu \n", 4000, seed=5)
    path = write(tmp_path / "l1.txt", text.encode("latin-1"))
    out = tmp_path / "run"
    r = invoke("train", path, "--encoding", "latin-1", "-o", out, "--steps", "4", "-q", *TINY)
    assert r.exit_code == 0, r.stderr
    r = invoke("train", path, "--resume", out, "--steps", "8", "-q")
    assert r.exit_code == 0, r.stderr
    assert json.loads(invoke("info", out, "--json").stdout)["step"] == 8
    r = invoke("train", path, "--resume", out, "--steps", "9", "--encoding", "utf-8")
    assert r.exit_code == 1 and "keeps" not in r.stderr and "--encoding" in r.stderr


# ------------------------------------------------------------------------------- byte mode


def test_vocab_decodes_through_its_symbols():
    """Ids are positions, not byte values: with a partial byte vocabulary decoding ids as bytes
    (the old sampler's bug) shifts every character."""
    v = Vocab(b"\n ABCD\xc3\xa9\xff")
    ids = v.encode(b"A\xff\xc3\xa9 D\n")
    assert ids.tolist() == [2, 8, 6, 7, 1, 5, 0]
    assert v.decode(ids) == b"A\xff\xc3\xa9 D\n"
    assert bytes(ids.astype(np.uint8)) != v.decode(ids)
    assert v.text(v.encode("é".encode())) == "é"
    assert Vocab.from_json(json.loads(json.dumps(v.to_json()))) == v
    t = Vocab("\nab" + D.UNK, 3)
    assert (t.unk_id, t.start_id, Vocab(b"ab").start_id) == (3, 0, 0)
    with pytest.raises(ValueError):
        Vocab.from_json({"kind": "bytes", "ids": [1, 300]})


def test_byte_model_end_to_end(tmp_path):
    """Train on bytes that are not all valid UTF-8; every sampled byte is one the corpus has,
    the CLI writes the raw bytes, primes take raw bytes, eval and info work."""
    text, _ = markov_text(["Gr", "ö", "ße ", "\n", "x", "\xff"], 3000, seed=4)
    raw = text.encode("utf-8").replace("\xff".encode(), b"\xff")  # a lone invalid byte
    path = write(tmp_path / "bin.txt", raw)
    out = tmp_path / "run"
    r = invoke("train", path, "--bytes", "-o", out, "--steps", "30", "-q", *TINY)
    assert r.exit_code == 0, r.stderr
    model = api.load(out)
    assert model.byte_level and set(model.vocab.symbols) == set(raw)
    r = invoke("sample", "-c", out, "-n", "300", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    sample = r.stdout_bytes
    assert len(sample) == 300 and set(sample) <= set(raw)
    assert sample == model.sample(300, seed=3)
    prime = tmp_path / "prime.bin"
    prime.write_bytes(b"Gr\xc3\xb6\xff")
    r = invoke("sample", "-c", out, "-n", "20", "--seed", "3", "--prime-file", prime)
    assert r.exit_code == 0 and r.stdout_bytes.startswith(b"Gr\xc3\xb6\xff")
    assert len(r.stdout_bytes) == 25
    r = invoke("sample", "-c", out, "-n", "20", "--seed", "3", "--prime", "Grö")
    assert r.stdout_bytes.startswith("Grö".encode()) and len(r.stdout_bytes) == 24
    r = invoke("sample", "-c", out, "-n", "20", "--prime", "Q")
    assert r.exit_code == 1 and "0x51" in r.stderr
    r = invoke("eval", "-c", out, path, "--json")
    assert r.exit_code == 0, r.stderr
    assert abs(json.loads(r.stdout)["nats_per_char"] - model.loss(raw)) < 1e-9
    r = invoke("sample", "-c", out, "-n", "40", "--seed", "1", "--novelty")
    assert r.exit_code == 0 and "copied verbatim" in r.stderr, r.stderr
    info = json.loads(invoke("info", out, "--json").stdout)
    assert info["vocab_kind"] == "bytes" and info["vocab_size"] == len(set(raw))


def test_eval_drops_unknown_on_request_and_gives_no_training_advice(tmp_path, cli_run):
    r = invoke("eval", "-c", cli_run, "-", input="abcd xyz ab")
    assert r.exit_code == 1 and "--drop-unknown" in r.stderr
    r = invoke("eval", "-c", cli_run, "-", "--drop-unknown", "--json", input="abcd xyz ab")
    assert r.exit_code == 0, r.stderr
    assert abs(json.loads(r.stdout)["nats_per_char"] - api.load(cli_run).loss("abcd  ab")) < 1e-9
    cut = write(tmp_path / "cut.txt", "abcd ".encode() + "é".encode()[:1])
    r = invoke("eval", "-c", cli_run, cut)
    assert r.exit_code == 1 and "--errors" in r.stderr and "--bytes" not in r.stderr
