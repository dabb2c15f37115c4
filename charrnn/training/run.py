"""A training run from start to finish: read the corpus, prepare the run directory (checked
writable, locked against a second trainer), build or restore the trainer, and run it."""

import contextlib
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from .. import checkpoint
from ..text import data, idcache
from . import discovery, dist, memory, runs, sizing
from ..charmodel import from_arrays, grown
from ..checkpoint import RunInfo
from ..engine.model import check_train_precision, train_precision
from ..config import (
    MODEL_FIELDS,
    TRAIN_FIELDS,
    ModelConfig,
    check_known,
    resolve,
    resolve_resume,
    resume_overrides,
)
from ..config import budget_preset  # noqa: F401  (its home is config.py)
from ..errors import CharrnnError, ConfigError
from .runs import ANY, default_run_dir, run_directory
from .notices import LARGE_ALPHABET, _added_notice, alphabet_notice, unknown_notice  # noqa: F401
from .trainer import PATIENCE_NEEDS_VALIDATION, Trainer, check_fits


class Prepared(NamedTuple):
    """What prepare() returns: the trainer (not yet run), and what the caller should know."""

    # fmt: off
    trainer: Trainer
    notice: Optional[str] = None       # e.g. the id cache could not be written; the CLI says so
    size_notice: Optional[str] = None  # the model takes more than half the free memory
    dir_seen: object = ANY             # what the run directory held: pass to run_directory
    unknown_notice: Optional[str] = None  # much of the text is the unknown symbol
    # fmt: on


def prepare(
    corpus=None,
    out=None,
    *,
    resume=None,
    init_from=None,
    data_dir=None,
    glob=None,
    byte_level=False,
    max_vocab=None,
    force=False,
    dtype=np.float32,
    stdin=None,
    encoding=None,
    errors="strict",
    auto_size=True,
    warm=None,
    started=None,
    evaluations=None,
    **options,
):
    """Build a Trainer (not yet run), with its run directory, from user options: model fields
    (cell, layers, hidden, dropout) and TrainConfig fields, None meaning not given
    (the command line passes those it was not given so). auto_size: with minutes and no
    hidden, size the model from the characters the budget buys (sizing.py), measured here,
    and say so in the notice. warm(cell, dtype, precision): compiles the kernels (precision:
    of the training's products) once the text is read
    and checked (warm.py); started: perf_counter() at the command's start, for sizing from the
    minutes left. evaluations(cell, dtype): makes the float32 evaluation's kernels ready; given,
    a --minutes run with bf16 products (new, or resumed before its first evaluation) calls it at
    its first evaluation and fits its validation sample to the budget then, so that its first
    step waits for none of them (they compile beside the first steps: warm.py's train-bf16
    plan). Returns a Prepared."""
    check_known(options)
    options = {k: v for k, v in options.items() if v is not None}
    if resume is not None:
        decoding_given = encoding is not None or errors != "strict"
        prepared = _prepare_resume(
            resume, corpus, data_dir, glob, stdin, options, decoding_given, byte_level, max_vocab
        )
        if _evaluations_later(prepared.trainer, evaluations):  # fitted at the next evaluation
            prepared.trainer.fit_evaluations(later=True)  # if none has read the sample yet
        return prepared
    base = _base_model(init_from, dtype)
    mopts, cfg = resolve(options, base and base.config)
    at_least = ModelConfig(**dict(mopts, vocab_size=1)).validate()
    sized = auto_size and base is None and cfg.minutes and "hidden" not in options
    # auto decided now, for the size the run has or sizing measures at: the kernels to compile
    # and the rate to size by are those of the products it will train with
    at = replace(at_least, hidden=sizing.SIZES[1]) if sized else at_least
    cfg = replace(cfg, precision=train_precision(at, dtype, cfg.precision))
    check_train_precision(at_least, dtype, cfg.precision)  # before sizing measures with it
    if base is None:  # a model far too large is refused before the corpus is read
        _check_memory(at_least, cfg, 0, dtype)
    # a file is encoded once into the id cache and mapped, never held whole as text
    decoding = data.Decoding(encoding, errors)
    grow = base is not None and base.vocab.unk_id < 0 and base.vocab.byte_level == byte_level
    ids, vocab, desc, notice = idcache.encoded_corpus(
        corpus,
        data_dir=data_dir,
        glob=glob,
        byte_level=byte_level,
        max_vocab=max_vocab,
        vocab=base.vocab if base and not grow else None,
        stdin=stdin,
        decoding=decoding,
        unknown_hint="the --init-from model's vocabulary lacks them",
    )
    if grow:  # fine-tuning keeps the model's characters and learns the new text's
        base, vocab, ids, added = _grow(base, vocab, ids, cfg.seed)
        notice = _joined(notice, added)
    train_ids, val_ids = data.split(ids, cfg.val_frac)
    check_fits(len(train_ids), cfg.batch, cfg.seq)  # before anything slow
    if warm is not None:
        warm(mopts.get("cell", ModelConfig.cell), dtype, cfg.precision)
    if sized:
        choice, measured_at = _size_from_budget(mopts, cfg, len(train_ids), len(vocab), dtype, started)
        mopts, cfg = resolve(options, size=choice)  # the measured size in the preset's place
        notice = _joined(notice, choice.reason(mopts.get("layers", ModelConfig.layers), measured_at))
    mcfg = ModelConfig(**mopts, vocab_size=len(vocab)).validate()
    cfg = replace(cfg, precision=train_precision(mcfg, dtype, cfg.precision))
    size_notice = _check_memory(mcfg, cfg, len(val_ids), dtype, base_model=base is not None)
    if base is None and max_vocab is None and len(vocab) > LARGE_ALPHABET:
        notice = _joined(notice, alphabet_notice(mcfg, ids))
    run_dir = _new_run_dir(out, corpus, force)
    source = None if corpus is None else os.fspath(corpus)  # JSON-able, also for a Path
    if source not in (None, "-") and Path(source).exists():
        source = os.path.abspath(source)  # --resume from another directory finds it
    info = RunInfo(
        corpus=desc,
        source=source,
        glob=glob,
        bytes=byte_level,
        max_vocab=max_vocab,
        init_from=str(init_from) if init_from else None,
        encoding=decoding.encoding,
        errors=errors,
    )
    trainer = Trainer.new(
        mcfg,
        vocab,
        train_ids,
        val_ids,
        cfg,
        run_dir,
        info,
        dtype,
        weights=None if base is None else base.flat,
    )
    later = _evaluations_later(trainer, evaluations)
    notice = _joined(notice, trainer.fit_evaluations(later=later)) or None
    return Prepared(
        trainer, notice, size_notice, ANY if force else None, unknown_notice(vocab, train_ids, val_ids)
    )


def _joined(*notices):
    """The notices given, in one line ("; " between them)."""
    return "; ".join(filter(None, notices))


def _base_model(init_from, dtype):
    """The --init-from model (a CharModel), or None for a new one."""
    if init_from is None:
        return None
    path = discovery.resolve(init_from)
    base_meta, params, _ = checkpoint.load(path)
    return from_arrays(base_meta, params, dtype, path)


def _grow(base, vocab, ids, seed):
    """(base, vocab, ids, notice): a fine-tuning's base model and vocabulary grown by the new
    text's characters (vocab: the text's own), the ids renumbered to match, and the line
    saying what was added (None: nothing)."""
    vocab, added, remap = base.vocab.grown(vocab)
    if not np.array_equal(remap, np.arange(len(remap))) or remap.dtype != ids.dtype:
        ids = remap[ids]
    if len(vocab) == len(base.vocab):
        return base, vocab, ids, None
    unk = vocab.unk_id >= 0 > base.vocab.unk_id
    base = grown(base, vocab, np.random.default_rng([seed, 1]))
    return base, vocab, ids, _added_notice(base.vocab, added, unk)


def _new_run_dir(out, corpus, force):
    """A new run's directory: out, or one named after the corpus and the time; refused while
    a training holds it, or when it holds a run and not force."""
    # under MPI every rank takes rank 0's name: the clock may tick between them
    run_dir = dist.world().bcast(Path(out) if out is not None else default_run_dir(corpus))
    _refuse_if_live(run_dir)
    if (run_dir / checkpoint.LATEST).exists() and not force:
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
            "or pass --force to start over there"
        )
    return run_dir


def check_new(options, dtype=np.float32):
    """A new run's checks that need no text, for the command line to make before it speaks."""
    mopts, cfg = resolve({k: v for k, v in options.items() if v is not None})
    at_least = ModelConfig(**dict(mopts, vocab_size=1)).validate()
    check_train_precision(at_least, dtype, cfg.precision)
    _check_memory(at_least, cfg, 0, dtype)
    if cfg.patience and not cfg.val_frac:
        raise ConfigError(PATIENCE_NEEDS_VALIDATION)


def _refuse_if_live(run_dir):
    """Say at once that a live training holds run_dir (run_directory's lock decides, later)."""
    pid = runs.holder(run_dir)
    if pid is not None:
        raise ConfigError(runs.in_use(run_dir, pid))


def _size_from_budget(mopts, cfg, train_chars, vocab_size, dtype, started=None):
    """sizing.choose from a rate measured here (on rank 0, shared: every rank must build the
    same model) at the middle size, for the minutes left since `started` (perf_counter)."""
    if started is not None:
        cfg = replace(cfg, minutes=max(cfg.minutes - (time.perf_counter() - started) / 60, 0.01))
    cell = mopts.get("cell", ModelConfig.cell)
    layers = mopts.get("layers", ModelConfig.layers)
    world, at = dist.world(), sizing.SIZES[1]
    rate = (
        sizing.measure(cell, layers, at, vocab_size, cfg.batch, cfg.seq, dtype, precision=cfg.precision)
        if world.rank == 0
        else None
    )
    rate = sizing.Rate(*world.bcast(rate and tuple(rate)))
    rate_of = sizing.scaled_rates(rate.chars_per_sec, at, cell, layers, vocab_size)
    shape = (cell, layers, vocab_size)
    window, mask_seconds = cfg.batch * cfg.seq, rate.weight_drop_seconds
    dropped = sizing.weight_dropped_rates(rate_of, mask_seconds, at, window, *shape)
    choice = sizing.choose(cfg.minutes, train_chars, rate_of, *shape, weight_dropped=dropped)
    return choice, f"{at} units{', beside other work' if rate.busy else ''}"


def _check_memory(mcfg, cfg, val_len, dtype, **kw):
    """memory.check of this training: ConfigError if it cannot fit, a warning line if tight."""
    est = memory.training(
        mcfg,
        cfg.batch,
        cfg.seq,
        val_len,
        cfg.eval_chars,
        dtype,
        weight_drop=cfg.weight_drop,
        embed_drop=cfg.embed_drop,
        ema=cfg.ema,
        precision=cfg.precision,
        **kw,
    )
    what = f"training a {mcfg.cell} {mcfg.layers} x {mcfg.hidden} model with batch {cfg.batch} x {cfg.seq}"
    return memory.check(est, what, "try a smaller --hidden, --layers, --batch or --seq")


def _prepare_resume(
    resume, corpus, data_dir, glob, stdin, options, decoding_given=False, byte_level=False, max_vocab=None
):
    run_dir = Path(resume)
    if not run_dir.exists() and not run_dir.is_absolute() and (discovery.runs_root() / run_dir).exists():
        run_dir = discovery.runs_root() / run_dir  # a run's name under the run root
    path = run_dir / checkpoint.LATEST if run_dir.is_dir() else run_dir
    if not path.exists():
        raise ConfigError(f"nothing to resume: {path} does not exist")
    _refuse_if_live(path.parent)
    seen = runs.checkpoint_stamp(path.parent)  # before reading: a later save is then noticed
    loaded = checkpoint.load(path)  # the one read of the checkpoint
    meta = loaded[0]
    if meta.train is None:
        raise ConfigError(f"{path} holds no training state to resume from")
    info = meta.info
    cfg = resolve_resume(meta.model, meta.train, options)
    source = corpus if corpus is not None else info.source
    given = dict(corpus=corpus, decoding=decoding_given, byte_level=byte_level, max_vocab=max_vocab)
    for refused, why in _resume_keeps(meta, resume, source, **given):
        if refused:
            raise ConfigError(why)
    decoding = data.Decoding(info.encoding, info.errors or "strict")
    ids = idcache.encoded_corpus(
        source,
        data_dir=data_dir,
        glob=glob or info.glob,
        byte_level=bool(info.bytes),
        max_vocab=info.max_vocab,  # which entry of the cache its vocabulary may be
        vocab=meta.vocab,
        stdin=stdin,
        decoding=decoding,
        unknown_hint=(
            "the corpus changed since the run read it, and --resume keeps the run's vocabulary; "
            f"to learn the new characters, start a new run from this one: --init-from {resume}"
        ),
    ).ids
    train_ids, val_ids = data.split(ids, meta.train.val_frac)
    size_notice = _check_memory(meta.model, cfg, len(val_ids), loaded[1]["Wx0"].dtype, resume=True)
    overrides = resume_overrides(options)
    trainer = Trainer.resume(path, train_ids, val_ids, overrides, run_dir=path.parent, loaded=loaded)
    notice = "; ".join(filter(None, [trainer.rate_notice, trainer.resync_best()]))
    return Prepared(trainer, notice or None, size_notice, seen)


def _evaluations_later(trainer, evaluations):
    """With bf16 products (and the hook): evaluations(cell, dtype) before the first evaluation,
    whose float32 kernels compile beside the first steps; returns whether it was set."""
    if evaluations is None or trainer.cfg.precision != "bf16":
        return False
    m = trainer.model
    trainer.before_evaluations = lambda: evaluations(m.config.cell, m.dtype)
    return True


def _resume_keeps(meta, resume, source, corpus, decoding, byte_level, max_vocab):
    """What --resume keeps of the run as its checkpoint stored it (its RunInfo and vocabulary;
    config.resolve_resume checks the model and training options), against what was given now:
    (refused, why) in the order they are checked."""
    info = meta.info
    elsewhere = corpus is None and source not in (None, "-") and not Path(source).exists()
    return (
        (
            source == "-" and corpus is None,
            "this run read its text from stdin; pass it again: charrnn train - --resume",
        ),
        (
            decoding,
            f"--resume reads the text as the run did (encoding {info.encoding or 'auto'}, "
            f"errors {info.errors or 'strict'}); drop --encoding/--errors",
        ),
        (
            byte_level and not info.bytes,
            "this run models characters, not bytes, and --resume keeps that: drop --bytes",
        ),
        (
            max_vocab is not None and max_vocab != info.max_vocab,
            f"--resume keeps the run's vocabulary ({len(meta.vocab)} symbols); drop --max-vocab",
        ),
        (
            elsewhere and source not in data.corpus_names(),
            f"this run read its text from {source}, which is not there from {os.getcwd()}; "
            f"pass the file again: charrnn train FILE --resume {resume}",
        ),
    )


def execute(prepared, callback=None, should_stop=lambda: False):
    """A prepared run's one lifecycle, for the command line, charrnn.train, the sweep and the
    tests alike: hold its run directory (rank 0 creates it, proves it writable and locks it;
    if it cannot, every rank stops with its error), train until the budget, patience or
    should_stop() ends it, and let the directory go. callback(event) hears of every
    evaluation (Trainer.run). Returns the trainer's status. Warming the kernels up first is
    the caller's (api.compile_kernels, which may say that it compiles)."""
    trainer, world = prepared.trainer, dist.world()
    with contextlib.ExitStack() as stack:
        error = None
        if world.rank == 0:  # rank 0 holds the run directory and writes in it
            try:
                stack.enter_context(run_directory(trainer.run_dir, seen=prepared.dir_seen))
            except CharrnnError as e:
                error = e
        world.all_ok(error)
        return trainer.run(callback, should_stop)


def train(corpus=None, out=None, *, callback=None, should_stop=lambda: False, force=False, **options):
    """Train a model as `charrnn train` does and return it:

        model = charrnn.train("input.txt", "runs/mine", minutes=2, hidden=256)

    corpus: a file, a directory, a corpus name, or None (the default corpus); out: the run
    directory (default runs/<corpus>-<date>-<time>). The options are `charrnn train`'s, with
    dashes as underscores (`charrnn train --help` gives each one's meaning and default):
    cell, layers, hidden, dropout, batch, seq, lr, grad_clip, schedule, warmup, lr_decay,
    lr_decay_after, weight_decay, steps, minutes, epochs, val_frac, eval_every, eval_chars,
    keep, patience, seed, state_reset, log_grad_norms, resume, init_from, byte_level, max_vocab,
    encoding, errors, glob, data_dir, auto_size. callback(event) hears of every evaluation."""
    extra = "resume init_from byte_level max_vocab encoding errors glob data_dir dtype auto_size"
    known = MODEL_FIELDS | TRAIN_FIELDS | set(extra.split())
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; charrnn.train takes {', '.join(sorted(known))}")
    prepared = prepare(corpus, out, force=force, **options)
    execute(prepared, callback, should_stop)
    return prepared.trainer.model


__all__ = ["train", "prepare", "execute", "Prepared", "run_directory", "CharrnnError"]
