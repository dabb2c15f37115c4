"""Sources: finding the training text. A source is `None` (the built-in default corpus: this
Python's standard library sources), `"-"` (stdin), a file, a directory (every file under it, in
sorted order, optionally filtered by a glob on the file name; hidden files and directories are
skipped), or a corpus name from the packaged manifest (looked up in the data dir, downloaded once
into the cache and checked by sha256).

read_text holds a whole corpus in memory, decoded by decoding.py; idcache streams a large file
through the same rules into a cached file of ids (corpus_file says which sources it can stream)."""

import fnmatch
import functools
import hashlib
import importlib.resources
import json
import os
import sys
import sysconfig
from pathlib import Path

from ..errors import ConfigError, CorpusError
from ..fsutil import atomic_write
from .decoding import BYTES_HINT, Decoding, prepare_input

DEFAULT_CORPUS = "python-stdlib"
STDLIB_CAP = 4_000_000  # characters (bytes in byte mode) of the default corpus
STDLIB_SKIP = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "turtledemo",
    "pydoc_data",
    "ensurepip",
    "__pycache__",
    "encodings",
}  # codec tables: megabytes of hex, a poor demo of Python
# fmt: off
SEPARATOR = "\n\n"                # between the files of a directory or of the default corpus
DOWNLOAD_TIMEOUT = 20             # seconds
HASH_CHUNK = 1 << 24              # bytes of a file hashed at a time
# fmt: on


def read_text(source=None, *, data_dir=None, glob=None, byte_level=False, stdin=None, decoding=None):
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
        data = prepare_input(_read_named(source, _manifest()[source], data_dir), name, byte_level, decoding)
    else:
        raise CorpusError(
            f"no such file or corpus name: {source} (known corpora: {', '.join(corpus_names())})"
        )
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


def hash_stream(f, h, chunk=HASH_CHUNK):
    """Feed the rest of binary file f to hash object h, chunk bytes at a time; return h."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    while n := f.readinto(buf):
        h.update(view[:n])
    return h


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
    """Sorted relative paths of the files under root, without hidden or skipped directories,
    that match glob (see _matches)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in skip]
        rel = Path(dirpath).relative_to(root)
        found += [
            (rel / f).as_posix()
            for f in filenames
            if not f.startswith(".") and (glob is None or _matches((rel / f).as_posix(), glob))
        ]
    return sorted(found)


def _matches(rel, glob):
    """Whether a file (its path under the directory, with /) matches glob: a pattern without /
    matches the file's name at any depth ('*.md'), one with / its whole path, a level per /
    ('api/*.md': the .md files in api/, not deeper)."""
    if "/" not in glob:
        return fnmatch.fnmatchcase(rel.rpartition("/")[2], glob)
    parts, pattern = rel.split("/"), glob.strip("/").split("/")
    return len(parts) == len(pattern) and all(map(fnmatch.fnmatchcase, parts, pattern))


def _glob_words(glob):
    return f" whose path under it matches {glob}" if "/" in glob else f" whose name matches {glob}"


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
    matching = _glob_words(glob) if glob else ""
    if not rel_paths:
        raise CorpusError(f"{root} has no files{matching}")
    decoding = decoding if decoding is not None else Decoding()
    data, used, skipped = _join_files(root, rel_paths, byte_level, decoding=decoding)
    label = decoding.encoding or "UTF-8"
    if skipped and not used:
        raise CorpusError(
            f"{root} has no {label} text files{matching} ({skipped} skipped as "
            f"binary or undecodable): name their encoding with --encoding, "
            f"or pass --errors replace; or {BYTES_HINT}"
        )
    detail = f"{used} files, " + (f"{skipped} skipped as binary or not {label} text, " if skipped else "")
    return data, str(root), detail


def _read_stdlib(byte_level):
    """The default corpus: the standard library's .py files in sorted order, up to STDLIB_CAP."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rel_paths = _files_under(root, "*.py", STDLIB_SKIP) if root.is_dir() else []
    data, used, _ = _join_files(root, rel_paths, byte_level, cap=STDLIB_CAP)
    if not used:
        raise CorpusError(
            f"no Python standard library sources found in {root}: "
            f"name a text file, a directory or one of {', '.join(corpus_names())}"
        )
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
        raise CorpusError(
            f"{path} is not the expected {name} file (sha256 mismatch): "
            f"replace it with the original, or delete it to download again"
        )


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
