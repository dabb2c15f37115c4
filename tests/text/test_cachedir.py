"""The id cache's housekeeping: `charrnn cache` shows and clears it, and it keeps itself under its
cap by removing the least recently used entries first, never the one just stored."""

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from charrnn.text import cachedir, idcache
from charrnn.cli import app
from charrnn.errors import ConfigError
from charrnn.training.memory import fmt_bytes


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CHARRNN_CACHE_MAX", raising=False)
    return tmp_path / "cache"


def encode(path):
    """Through the cache whatever the file's size."""
    return idcache.encoded_corpus(str(path), min_bytes=0)


def corpus(tmp_path, name, n, symbols="abc\n"):
    rng = np.random.default_rng(sum(map(ord, name)))  # different files, different keys
    path = tmp_path / name
    path.write_text("".join(rng.choice(list(symbols), n)))
    return path


def keys(cache):
    return {e.source.rsplit("/", 1)[-1] for e in cachedir.entries(cache)}


def age(cache, source, seconds_ago):
    """Set an entry's last use into the past, so the order does not depend on clock ticks."""
    (e,) = [e for e in cachedir.entries(cache) if e.source.endswith(source)]
    t = e.last_used - seconds_ago
    for f in e.files:
        os.utime(f, (t, t))


def test_least_recently_used_entries_leave_first(tmp_path, cache, monkeypatch):
    a, b, c = (corpus(tmp_path, f"{n}.txt", 3000) for n in "abc")
    encode(a)
    encode(b)
    entry_size = max(e.size for e in cachedir.entries(cache))
    monkeypatch.setenv("CHARRNN_CACHE_MAX", str(int(2.5 * entry_size)))  # room for two
    age(cache, "a.txt", 200)
    age(cache, "b.txt", 100)
    encode(a)  # a hit marks a as just used: now b is the least recently used
    assert cachedir.entries(cache)[-1].source.endswith("a.txt")
    encode(c)
    assert keys(cache) == {"a.txt", "c.txt"}
    age(cache, "a.txt", 300)
    encode(b)  # b again, a rebuild: a leaves now
    assert keys(cache) == {"b.txt", "c.txt"}
    assert sum(e.size for e in cachedir.entries(cache)) <= 2.5 * entry_size


def test_the_entry_just_stored_stays_even_above_the_cap(tmp_path, cache, monkeypatch):
    encode(corpus(tmp_path, "old.txt", 500))
    monkeypatch.setenv("CHARRNN_CACHE_MAX", "10")  # bytes: smaller than any entry
    got = encode(corpus(tmp_path, "new.txt", 2000))
    assert keys(cache) == {"new.txt"}
    assert isinstance(got.ids, np.memmap) and len(got.ids) == 2000


def test_no_cap(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE_MAX", "0")
    for n in "abc":
        encode(corpus(tmp_path, f"{n}.txt", 500))
    assert keys(cache) == {"a.txt", "b.txt", "c.txt"}


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("", cachedir.DEFAULT_MAX),
        ("123", 123),
        ("500M", 500 * 10**6),
        ("2G", 2 * 10**9),
        ("1.5GB", 15 * 10**8),
        ("2GiB", 2 * 2**30),
        ("64kib", 65536),
        ("0", 0),
    ],
)
def test_cap_sizes(monkeypatch, raw, expected):
    monkeypatch.setenv("CHARRNN_CACHE_MAX", raw)
    assert cachedir.max_bytes() == expected


def test_a_bad_cap_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE_MAX", "lots")
    with pytest.raises(ConfigError, match="CHARRNN_CACHE_MAX"):
        cachedir.max_bytes()
    r = CliRunner().invoke(app, ["cache"])
    assert r.exit_code == 1 and r.stderr.startswith("charrnn: error: CHARRNN_CACHE_MAX='lots'")


def test_cache_command_shows_and_clears(tmp_path, cache):
    runner = CliRunner()
    r = runner.invoke(app, ["cache"])
    assert r.exit_code == 0 and r.stdout == f"{cache}: 0 entries, 0 B of a 4.0 GB cap\n"
    encode(corpus(tmp_path, "small.txt", 1000))
    encode(corpus(tmp_path, "wide.txt", 2000, symbols="абвгд\n"))
    age(cache, "small.txt", 60)
    (cache / ".stale.tmp").write_bytes(b"x" * 10)
    os.utime(cache / ".stale.tmp", (1, 1))

    r = runner.invoke(app, ["cache", "--json"])
    assert r.exit_code == 0, r.stderr
    shown = json.loads(r.stdout)
    files = [p for p in cache.iterdir() if p.suffix in (".npy", ".json")]
    assert shown["dir"] == str(cache) and shown["bytes"] == sum(p.stat().st_size for p in files)
    assert shown["max_bytes"] == cachedir.DEFAULT_MAX
    by = {e["source"].rsplit("/", 1)[-1]: e for e in shown["entries"]}
    assert by["small.txt"]["vocab_size"] == 4 and by["small.txt"]["length"] == 1000
    assert by["wide.txt"]["vocab_size"] == 6 and by["wide.txt"]["length"] == 2000

    r = runner.invoke(app, ["cache"])
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{cache}: 2 entries, ")
    assert lines[1].split() == ["last", "used", "size", "vocab", "length", "key", "read", "as", "source"]
    assert lines[2].endswith("small.txt") and " 1,000 " in lines[2]  # least recently used first
    assert lines[3].endswith("wide.txt") and " 2,000 " in lines[3]

    assert runner.invoke(app, ["cache", "show"]).stdout == r.stdout  # `cache` is `cache show`
    r = runner.invoke(app, ["cache", "clear"])
    assert r.exit_code == 0 and r.stdout == ""
    freed = shown["bytes"] + 10
    assert r.stderr == f"charrnn: removed 2 entries, freed {fmt_bytes(freed)} in {cache}\n"
    assert list(cache.iterdir()) == []
    assert runner.invoke(app, ["cache"]).stdout.startswith(f"{cache}: 0 entries, 0 B")


def test_the_old_spelling_cache_clear_still_clears_with_a_note(tmp_path, cache):
    encode(corpus(tmp_path, "one.txt", 500))
    r = CliRunner().invoke(app, ["cache", "--clear"])
    assert r.exit_code == 0 and r.stdout == "" and list(cache.iterdir()) == []
    note, done = r.stderr.splitlines()
    assert note == (
        "charrnn: note: `charrnn cache --clear` is now `charrnn cache clear`; the old "
        "spelling still works in this release"
    )
    assert done.startswith("charrnn: removed 1 entry, freed ")


def test_two_entries_of_one_file_tell_apart_and_a_changed_file_is_stale(tmp_path, cache):
    """One file read as text, as bytes and with --max-vocab is three entries: the listing says
    how each was read, and marks the ones whose file has changed since."""
    path = corpus(tmp_path, "one.txt", 3000, symbols="abcdefg\n")
    encode(path)
    idcache.encoded_corpus(str(path), min_bytes=0, byte_level=True)
    idcache.encoded_corpus(str(path), min_bytes=0, max_vocab=3)
    modes = sorted(e.mode for e in cachedir.entries(cache))
    assert modes == ["bytes", "text", "text, max-vocab 3"]
    assert all(e.current for e in cachedir.entries(cache))
    path.write_text("changed")
    assert not any(e.current for e in cachedir.entries(cache))
    r = CliRunner().invoke(app, ["cache"])
    rows = r.stdout.splitlines()[2:]
    assert len(rows) == 3 and all("stale entry" in row for row in rows)
    keys = {e.key[:8] for e in cachedir.entries(cache)}
    assert len(keys) == 3 and all(sum(k in row for k in keys) == 1 for row in rows)
