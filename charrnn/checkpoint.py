"""Checkpoint files and their schema: one self-describing `.npz` per checkpoint, written atomically.
This module alone writes and reads the metadata; every other module asks it, through `Meta`.

Layout (format version 1, or 2 when a version-1 reader would misread the vocabulary):
    meta            uint8 array holding UTF-8 JSON: format name and version, charrnn version,
                    model config, vocabulary, training config, run info, progress and loss history;
                    vocabulary "unk": its unknown symbol's id (null: none; older version-1 files
                    lack it, their U+FFFD is that symbol); a vocabulary with a U+FFFD character
                    is version 2, which older readers refuse rather than misread
    param/<name>    one array per field of kernels.Params (PARAM_NAMES, in that order)
    train/<name>    optional resume state: Adam moments (flat, in Params order), carried (h, c);
                    with --ema, param/ holds the averaged weights and train/weights the trained
                    ones (flat)

Files are read with allow_pickle=False: a checkpoint never executes code. Any file that is not
such a checkpoint raises CheckpointError with a one-line message naming it.
"""

import json
import zipfile
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np

from ._version import __version__
from .config import ModelConfig, TrainConfig
from .errors import CheckpointError
from .fsutil import atomic_write
from .text.vocab import Vocab

FORMAT = "charrnn-checkpoint"
VERSION = 2  # the newest this reads; a file is written in the oldest that holds it (Meta.to_json)
BEST, LATEST = "best.npz", "latest.npz"
# the fields of kernels.Params, in order (a test checks that they agree): this module reads and
# writes files, and has no need of the compiled kernels
PARAM_NAMES = ("Wx0", "Wx", "Wh", "b", "bh", "Wy", "by", "ln")


@dataclass(frozen=True)
class RunInfo:
    """Where a run's text came from and how it was read: what resume and --novelty read again."""

    # fmt: off
    corpus: Optional[str] = None      # a description of the text, for people
    source: Optional[str] = None      # the corpus argument as given ("-": stdin; None: default)
    glob: Optional[str] = None        # the file pattern of a directory corpus
    bytes: bool = False               # a byte-level vocabulary
    max_vocab: Optional[int] = None   # the vocabulary was capped at this many symbols
    init_from: Optional[str] = None   # the checkpoint the weights started from
    encoding: Optional[str] = None    # the text's encoding (None: detected)
    errors: str = "strict"            # what undecodable bytes became
    data_hash: Optional[str] = None   # of the training ids: resume must see the same text
    # fmt: on


@dataclass(frozen=True)
class Progress:
    """Everything about where a run stands that resume needs to continue it exactly."""

    # fmt: off
    step: int = 0                     # optimizer steps taken
    epoch: int = 0                    # whole passes over the training text
    pos: int = 0                      # window within the epoch
    elapsed: float = 0.0              # training seconds (evaluations and saves included)
    setup: float = 0.0                # seconds before the first step counted in --minutes
    chars_seen: int = 0
    best_val: float = float("inf")    # the best score so far (on the validation sample)
    best_step: int = 0                # ... and its step (0: none yet)
    stale: int = 0                    # evaluations since the best
    rng: Optional[dict] = None        # the generator's bit_generator.state
    val_sample: Optional[dict] = None  # evaluation.ValSample.spec() the scores were taken on
    val_full: Optional[dict] = None   # the final larger evaluation: {"step", "loss", "chars"}
    timing: dict = field(default_factory=dict)  # evaluation.Timing's fields
    recent_losses: list = field(default_factory=list)  # the last steps' losses (the "train" figure)
    unigram: Optional[float] = None   # the unigram baseline on val_sample (Record.unigram)
    # fmt: on


@dataclass(frozen=True)
class HistoryRow(Mapping):
    """One evaluation of a run (Trainer.evaluate writes it, `charrnn info` shows it). Read as a
    mapping too (row["val_loss"]), as the JSON rows of earlier versions were."""

    # fmt: off
    step: int = 0                     # optimizer steps taken
    epoch: float = 0.0                # passes over the training text, fractional
    elapsed: float = 0.0              # training seconds
    chars: int = 0                    # training characters seen
    train_loss: Optional[float] = None  # mean over the last 50 steps (trainer.TRAIN_MEAN_STEPS)
    val_loss: Optional[float] = None  # on the validation sample (nan when there is none)
    lr: Optional[float] = None        # the learning rate at this step
    # fmt: on

    @classmethod
    def of_event(cls, event):
        """The row of an evaluation event (a dict with at least these fields)."""
        return cls(**{k: event[k] for k in _ROW_FIELDS})

    def __getitem__(self, key):
        if key not in _ROW_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(_ROW_FIELDS)

    def __len__(self):
        return len(_ROW_FIELDS)


_ROW_FIELDS = tuple(f.name for f in fields(HistoryRow))


@dataclass(frozen=True, eq=True)
class Meta(Mapping):
    """A checkpoint's metadata. Reading it as a mapping (meta["progress"]["step"]) gives the JSON
    form, as scripts written against earlier versions read it."""

    # fmt: off
    model: ModelConfig
    vocab: Vocab
    train: Optional[TrainConfig] = None   # None: a file saved without a training run
    info: RunInfo = RunInfo()
    progress: Optional[Progress] = None
    history: list = field(default_factory=list)  # a HistoryRow per evaluation
    num_params: Optional[int] = None
    val_loss: Optional[float] = None        # of the last evaluation
    val_loss_full: Optional[float] = None   # the larger final evaluation of these weights ...
    val_chars_full: Optional[int] = None    # ... and how many characters it scored
    charrnn: str = __version__              # the version that wrote the file
    version: int = VERSION                  # the format version it was written in
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept
    # fmt: on

    def to_json(self):
        d = dict(
            self.extra,
            format=FORMAT,
            version=VERSION if not self.vocab.old_readers_agree else 1,
            charrnn=self.charrnn,
            model=self.model.to_dict(),
            vocab=self.vocab.to_json(),
            info=asdict(self.info),
            history=[dict(r) for r in self.history],
        )
        if self.train is not None:
            d["train"] = self.train.to_dict()
        if self.progress is not None:
            d["progress"] = asdict(self.progress)
        for k in ("num_params", "val_loss", "val_loss_full", "val_chars_full"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_json(cls, d, path="checkpoint"):
        """Validated: CheckpointError naming path for anything that is not a known schema."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a charrnn checkpoint")
        version = d.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise CheckpointError(
                f"{path} has checkpoint format version {version}, newer than "
                f"this charrnn reads ({VERSION}); upgrade charrnn to read it"
            )
        for key in ("model", "vocab"):
            if key not in d:
                raise CheckpointError(f"{path} is incomplete: no {key!r} in its metadata")
        try:
            vocab = Vocab.from_json(d["vocab"])
        except ValueError as e:
            raise CheckpointError(f"{path} has a malformed vocabulary ({e})") from None
        try:
            return cls(
                model=ModelConfig(**_renamed(d["model"])),
                vocab=vocab,
                train=_known(TrainConfig, {**OLD_TRAIN, **_renamed(d["train"])}) if "train" in d else None,
                info=_known(RunInfo, d.get("info") or {}),
                progress=_known(Progress, d["progress"]) if "progress" in d else None,
                history=[_known(HistoryRow, r) for r in d.get("history", [])],
                num_params=d.get("num_params"),
                val_loss=d.get("val_loss"),
                val_loss_full=d.get("val_loss_full"),
                val_chars_full=d.get("val_chars_full"),
                charrnn=d.get("charrnn"),
                version=version,
                extra={k: v for k, v in d.items() if k not in _KNOWN},
            )
        except TypeError as e:
            raise CheckpointError(f"{path} has malformed metadata ({e})") from None

    # the mapping view, over the JSON form
    def __getitem__(self, key):
        return self.to_json()[key]

    def __iter__(self):
        return iter(self.to_json())

    def __len__(self):
        return len(self.to_json())


_KNOWN = {f.name for f in fields(Meta)} | {"format"}


# Fields that files written by charrnn 0.1.0 spelled otherwise, read under today's names (the
# configurations took their command-line options' names). The marked lines keep the old names.
# fmt: off
OLD_NAMES = {"num_layers": "layers", "hidden_size": "hidden",  # old names
             "batch_size": "batch", "seq_len": "seq"}  # old names
# fmt: on


def _renamed(d):
    return {OLD_NAMES.get(k, k): v for k, v in d.items()}


OLD_TRAIN = {"precision": "fp32"}  # a training saved before --precision took fp32 products


def _known(cls, d):
    """cls from the fields of d it has: a file from an older or newer version keeps loading."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def save(path, meta, params, train_arrays=None):
    """Write atomically: a temporary file in the same directory, fsync, then rename over path.
    A failure at any point leaves an existing file at path untouched. meta: a Meta (or its JSON
    form as a mapping); params: arrays in PARAM_NAMES order (e.g. a kernels.Params)."""
    path = Path(path)
    if not isinstance(meta, Meta):
        meta = Meta.from_json(dict(meta, format=FORMAT, version=VERSION), path)
    arrays = {"meta": np.frombuffer(json.dumps(meta.to_json()).encode(), np.uint8)}
    arrays.update({f"param/{k}": np.asarray(v) for k, v in zip(PARAM_NAMES, params)})
    for k, v in (train_arrays or {}).items():
        arrays[f"train/{k}"] = np.asarray(v)
    try:
        with atomic_write(path) as f:
            np.savez(f, **arrays)
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}") from None
    return path


def load(path):
    """Returns (Meta, params as a dict of arrays, train arrays as a dict)."""
    with _opened(path) as (z, meta):
        params = {k: z[f"param/{k}"] for k in PARAM_NAMES if k != "ln" or "param/ln" in z.files}
        if "ln" not in params:  # saved before the lnlstm: no normalisation's weights, none needed
            params["ln"] = np.zeros((meta.model.layers, 0), np.float32)
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
                read = (
                    np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                )
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
            meta = Meta.from_json(json.loads(z["meta"].tobytes().decode()), path)
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
        raise CheckpointError(
            f"{path} is not a charrnn checkpoint, or is corrupt or truncated ({type(e).__name__})"
        ) from None
