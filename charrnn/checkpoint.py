"""Checkpoint files: one self-describing `.npz` per checkpoint, written atomically.

Layout (format version 1):
    meta            uint8 array holding UTF-8 JSON: format name and version, charrnn version,
                    model config, vocabulary, training config, progress and loss history
    param/<name>    one array per field of kernels.Params (Wx0, Wx, Wh, b, bh, Wy, by)
    train/<name>    optional resume state: Adam moments (flat, in Params order), carried (h, c)

Files are read with allow_pickle=False: a checkpoint never executes code. Any file that is not
such a checkpoint raises CheckpointError with a one-line message naming it.
"""
import json
import os
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .kernels import Params
from .vocab import Vocab

FORMAT = "charrnn-checkpoint"
VERSION = 1
BEST, LATEST = "best.npz", "latest.npz"


def save(path, meta, params, train_arrays=None):
    """Write atomically: a temporary file in the same directory, fsync, then rename over path.
    A failure at any point leaves an existing file at path untouched."""
    path = Path(path)
    arrays = {"meta": np.frombuffer(json.dumps(dict(meta, format=FORMAT, version=VERSION)).encode(),
                                    np.uint8)}
    arrays.update({f"param/{k}": np.asarray(v) for k, v in zip(Params._fields, params)})
    for k, v in (train_arrays or {}).items():
        arrays[f"train/{k}"] = np.asarray(v)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load(path):
    """Returns (meta, params as a dict of arrays, train arrays as a dict)."""
    with _opened(path) as (z, meta):
        params = {k: z[f"param/{k}"] for k in Params._fields}
        train = {k[6:]: z[k] for k in z.files if k.startswith("train/")}
    return meta, params, train


def load_meta(path):
    """The metadata alone, validated as load validates it: no weight is read, so listing many
    runs stays quick however large their models."""
    with _opened(path) as (z, meta):
        return meta


def param_dtype(path):
    """The weights' dtype, from the header of one stored array (no weights are read)."""
    with _opened(path) as (z, meta):
        try:
            with zipfile.ZipFile(path) as zf, zf.open("param/Wx0.npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if major == 1
                        else np.lib.format.read_array_header_2_0)
                return np.dtype(read(f)[2])
        except KeyError:
            raise CheckpointError(f"{path} is incomplete: missing 'param/Wx0'") from None


@contextmanager
def _opened(path):
    """(open NpzFile, validated meta) of a checkpoint; any failure inside the block becomes a
    one-line CheckpointError naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such checkpoint: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f:  # else np.load tries, and refuses, to unpickle any file
            if f.read(4) != b"PK\x03\x04":
                raise CheckpointError(f"{path} is not a charrnn checkpoint (not an .npz file)")
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise CheckpointError(f"{path} is not a charrnn checkpoint (no metadata entry)")
            meta = json.loads(z["meta"].tobytes().decode())
            _check_meta(path, meta)
            yield z, meta
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise CheckpointError(f"{path} holds pickled objects; refusing to load it") from None
        raise CheckpointError(f"{path} is corrupt or truncated ({e})") from None
    except KeyError as e:
        raise CheckpointError(f"{path} is incomplete: missing {e}") from None
    except (zipfile.BadZipFile, EOFError, OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a charrnn checkpoint, or is corrupt or truncated "
                              f"({type(e).__name__})") from None


def _check_meta(path, meta):
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a charrnn checkpoint")
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}, newer than this "
                              f"charrnn reads ({VERSION}); upgrade charrnn to read it")
    for key in ("model", "vocab"):
        if key not in meta:
            raise CheckpointError(f"{path} is incomplete: no {key!r} in its metadata")
    try:
        Vocab.from_json(meta["vocab"])
    except ValueError as e:
        raise CheckpointError(f"{path} has a malformed vocabulary ({e})") from None


def runs_root():
    """Where runs go and are looked for: $CHARRNN_RUNS, else ./runs."""
    return Path(os.environ.get("CHARRNN_RUNS") or "runs").expanduser()


def resolve(path=None, runs_dir=None):
    """A checkpoint file from a file, a run directory (its best, else its latest checkpoint), a
    run's name under the run root (when no such path exists here), or nothing (the best
    checkpoint of the most recently written run under the run root, runs_root())."""
    root = runs_root() if runs_dir is None else Path(runs_dir)
    if path is None:
        runs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
        found = [(_ckpt_in(d).stat().st_mtime, d) for d in runs if _ckpt_in(d)]
        if not found:
            raise CheckpointError(f"no checkpoint given and no trained run under {root}/; "
                                  "train one with `charrnn train`, pass -c PATH, or set "
                                  "CHARRNN_RUNS to where your runs are")
        return _ckpt_in(max(found)[1])
    path = Path(path)
    if not path.exists() and not path.is_absolute() and (root / path).exists():
        path = root / path  # a run's name, as `charrnn runs` lists it
    if path.is_dir():
        found = _ckpt_in(path)
        if found is None:
            raise CheckpointError(f"{path} holds no checkpoint ({BEST} or {LATEST})")
        return found
    if not path.exists():
        where = "" if path.is_absolute() else f", and no run {path} under {root}/"
        raise CheckpointError(f"no such checkpoint or run directory: {path}{where}")
    return path


def _ckpt_in(run_dir):
    for name in (BEST, LATEST):
        if (run_dir / name).is_file():
            return run_dir / name
    return None
