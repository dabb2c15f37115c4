"""The typed configurations of a model and of a training run: each default written once, with
its meaning, and the validation of each field. Both go into every checkpoint (checkpoint.py)."""

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional, Union

from .errors import ConfigError, UsageError

CELLS = ("lstm", "gru", "rnn", "lnlstm")
DROPOUT_MODES = ("standard", "variational")
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")  # of a training window's products (engine/bgemm.py, amx.py)


@dataclass(frozen=True)
class ModelConfig:
    # fmt: off
    cell: str = "lstm"        # recurrent cell: lstm, gru, rnn or lnlstm
    layers: int = 2           # stacked recurrent layers (L)
    hidden: int = 128         # units per layer (H)
    vocab_size: int = 0       # characters known to the model (V), set from the corpus
    dropout: float = 0.0      # inverted dropout between layers and before the decoder
    # fmt: on

    def to_dict(self):
        return asdict(self)

    def validate(self):
        if self.cell not in CELLS:
            raise UsageError(f"unknown cell {self.cell!r}: choose lstm, gru, rnn or lnlstm")
        if self.layers < 1 or self.hidden < 1:
            raise UsageError("layers and hidden size must be at least 1")
        if not 0 <= self.dropout < 1:
            raise UsageError("dropout must be in [0, 1)")
        return self


@dataclass(frozen=True)
class TrainConfig:
    # fmt: off
    batch: int = 16               # B parallel streams of the training text (docs/choosing-defaults.md)
    seq: int = 100                # T characters per window (truncated BPTT length)
    lr: float = 3e-3              # Adam learning rate (peak, with a schedule)
    grad_clip: float = 5.0        # clip the global gradient norm to this (0: off)
    weight_decay: float = 0.0     # decoupled weight decay
    schedule: str = "cosine"      # constant (with optional lr_decay) or cosine (over the budget)
    warmup: int = 0               # linear warm-up steps
    min_lr_frac: float = 0.05     # cosine ends at lr * min_lr_frac
    lr_decay: float = 1.0         # constant schedule: multiply lr by this every epoch ...
    lr_decay_after: int = 10      # ... after this many epochs (char-rnn's scheme)
    steps: int = 0                # stop after this many optimizer steps (0: no limit)
    minutes: float = 0.0          # stop after this much training wall time (0: no limit)
    epochs: float = 0.0           # stop after this many passes over the text (0: no limit)
    val_frac: float = 0.1         # the last fraction of the text is held out for validation
    eval_every: int = 800         # steps between evaluations (and checkpoints); when not given,
                                  # EVAL_EVERY_CHARS characters' worth at the run's batch x seq
    eval_chars: int = 120_000     # validation characters scored per evaluation, spread over the
                                  # held-out text (0: all); 10x at the end, for the best model
    keep: int = 0                 # also keep the last N step-stamped checkpoints
    patience: int = 0             # stop after N evaluations without improvement (0: never)
    seed: int = 1                 # seeds initialisation, dropout and everything random
    log_grad_norms: bool = False  # report |d loss / d h_t| across the window at evaluations
    state_reset: int = 2000       # mean characters between random resets of a stream's carried
                                  # state (0: never); see Trainer.train_step
    dropout_mode: str = "standard"  # standard: a fresh dropout mask at every time step;
                                  # variational: one per window and stream, at all its steps
    weight_drop: float = 0.0      # DropConnect on the recurrent weights, a mask per window
    embed_drop: float = 0.0       # drop whole characters' first-layer input rows, per window
    ema: float = 0.0              # evaluate and save an exponential moving average of the
                                  # weights with this decay, e.g. 0.999 (0: off)
    precision: str = "auto"       # the window's products: fp32 (exact) or bf16 (inputs rounded
                                  # to bf16, float32 sums; weights, Adam and the rest float32);
                                  # auto: bf16 where it trains faster (engine.model.train_precision)
    # fmt: on

    def to_dict(self):
        return asdict(self)

    def validate(self):
        for f in fields(self):  # nan and inf get past every comparison below
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"--{_flag(f.name)} must be a finite number, not {value}")
        check_seed(self.seed)
        for name in ("batch", "seq", "eval_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{_flag(name)} must be at least 1")
        if not self.lr > 0:
            raise UsageError("lr must be a positive number")
        if not 0 <= self.val_frac < 1:
            raise UsageError("val-frac must be in [0, 1)")
        if self.schedule not in ("constant", "cosine"):
            raise UsageError("schedule must be constant or cosine")
        if self.precision not in TRAIN_PRECISIONS:
            raise UsageError(f"--precision of train must be auto, fp32 or bf16, not {self.precision!r}")
        if self.dropout_mode not in DROPOUT_MODES:
            raise UsageError("--dropout-mode must be standard or variational")
        for name in ("weight_drop", "embed_drop", "ema"):
            if not 0 <= getattr(self, name) < 1:
                raise UsageError(f"--{_flag(name)} must be in [0, 1), not {getattr(self, name)}")
        if (
            min(
                self.state_reset,
                self.grad_clip,
                self.steps,
                self.minutes,
                self.epochs,
                self.keep,
                self.patience,
                self.warmup,
                self.eval_chars,
                self.weight_decay,
            )
            < 0
        ):
            raise UsageError("budgets, counts, clipping and decay cannot be negative")
        return self


@dataclass(frozen=True)
class SampleConfig:
    # fmt: off
    length: int = 500             # characters generated per sample (0: without end)
    temp: float = 1.0             # temperature: lower is safer, higher is wilder; 0 is greedy
    top_k: int = 0                # draw only among the K likeliest characters (0: off)
    top_p: float = 1.0            # nucleus: the smallest set of characters holding this much
                                  # probability (1: off)
    num_samples: int = 1          # independent samples, generated together in one batch
    stop: Optional[Union[str, bytes]] = None  # end a sample at the first occurrence of this
    seed: Optional[int] = None    # the same seed gives the same text (None: fresh randomness)
    presence_penalty: float = 0.0   # OpenAI's: logit -= P for each character already generated
    frequency_penalty: float = 0.0  # OpenAI's: logit -= F * the times it was generated
    penalty_window: int = 0       # count only the last W characters generated (0: the whole
                                  # sample); see repetition.py
    no_repeat: int = 0            # never generate an N-character sequence twice (0: off)
    precision: str = "fp32"       # the weights' format while sampling: fp32 (exact), bf16 or
                                  # int8 (fewer bytes a weight, faster; see engine/precision.py)
    # fmt: on

    def to_dict(self):
        return asdict(self)

    def validate(self, endless_ok=True):
        """Raise UsageError for a value no sampler can use, in the command line's words.
        endless_ok: length 0 (without end) is allowed; it is not where the caller wants the
        samples whole."""
        check_int("--length", self.length, 0)
        if self.length == 0 and not endless_ok:
            raise UsageError(
                "--length must be at least 1 for samples returned whole (0, without end, only streams)"
            )
        if not (isinstance(self.temp, (int, float)) and 0 <= self.temp < math.inf):
            raise UsageError("--temp must be 0 (greedy) or a positive number")
        check_int("--top-k", self.top_k, 0)
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise UsageError("--top-p must be in (0, 1]")
        check_int("--num-samples", self.num_samples, 1)
        if self.num_samples > 1 and self.length == 0:  # samples are written when all are done
            raise UsageError("--num-samples above 1 needs a --length")
        if self.stop is not None and not (isinstance(self.stop, (str, bytes)) and self.stop):
            raise UsageError("--stop must be a non-empty string")
        if self.seed is not None:
            check_seed(self.seed)
        for flag, value in (
            ("--presence-penalty", self.presence_penalty),
            ("--frequency-penalty", self.frequency_penalty),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not -PENALTY_MAX <= value <= PENALTY_MAX
            ):  # NaN fails too
                raise UsageError(f"{flag} must be a number in [-2, 2] (as in OpenAI's API), not {value!r}")
        check_int("--penalty-window", self.penalty_window, 0)
        check_int("--no-repeat", self.no_repeat, 0)
        check_precision(self.precision)
        return self


SEED_MAX = 2**63 - 1
PENALTY_MAX = 2.0  # presence and frequency penalties lie in [-2, 2], as in OpenAI's API


def check_int(flag, value, low, high=None):
    """Raise UsageError unless value is an int in [low, high]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"at least {low}" if high is None else f"in [{low}, {high}]"
        raise UsageError(f"{flag} must be a whole number {bound}, not {value!r}")


def _flag(field):
    """A field's command-line option: the same name, with dashes (grad_clip is --grad-clip)."""
    return field.replace("_", "-")


PRECISIONS = ("fp32", "bf16", "int8")  # engine/precision.py's formats


def check_precision(precision):
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be fp32, bf16 or int8, not {precision!r}")
    return precision


def check_seed(seed):
    check_int("--seed", seed, 0, SEED_MAX)


# -- resolving a run's configuration from the options given -----------------------------------

MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig)) - {"vocab_size"}
TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))
# what --resume may change: the budgets and how often the run evaluates and keeps checkpoints
BUDGET_FIELDS = frozenset({"steps", "minutes", "epochs", "eval_every", "eval_chars", "keep", "patience"})
RESUME_FIELDS = BUDGET_FIELDS | {"schedule"}  # what --resume may change (schedule: to constant)
DEFAULT_EPOCHS = 10  # the budget when none of steps, minutes and epochs is given
EVAL_EVERY_CHARS = 1_280_000  # training characters between evaluations, unless --eval-every is given
SMALL_MODEL_LR = (384, 4e-3)  # up to this many hidden units a new model's default rate is this


def budget_preset(minutes):
    """(hidden units, dropout, weight drop, weight decay) of the model that a time budget trains
    best on a 2-core CPU. A short budget wants a small model, which sees more characters per
    parameter in the time; a long one a larger model held back by regularisers, which would
    otherwise memorise the text it reads several times (the runs that chose these: the
    "Figures behind the code" table of docs/benchmarks.md, and docs/choosing-defaults.md).
    Without a time budget (--steps or --epochs) the size is 256.
    """
    if minutes >= 15:
        return 640, 0.3, 0.1, 0.1
    if minutes >= 10:
        return 512, 0.2, 0.0, 0.0
    if minutes >= 5:
        return 384, 0.1, 0.0, 0.0
    return 256, 0.0, 0.0, 0.0


def default_lr(hidden):
    """Adam's peak rate for a new model of `hidden` units when --lr is not given: at batch 16
    the smaller models (up to SMALL_MODEL_LR's size) learn faster at a higher rate than the one
    chosen at batch 64, and the larger ones do not (the runs: docs/benchmarks.md, "Figures
    behind the code")."""
    up_to, lr = SMALL_MODEL_LR
    return lr if hidden <= up_to else TrainConfig.lr


def check_known(options):
    unknown = set(options) - MODEL_FIELDS - TRAIN_FIELDS
    if unknown:
        raise TypeError(f"unknown options: {sorted(unknown)}")


def resolve(options, base=None, size=None):
    """The configuration of a new run: (model fields without vocab_size, TrainConfig).

    options: model and TrainConfig fields as given (run.prepare drops any of None). Precedence,
    written here only: a given option; else, with --init-from (base: its ModelConfig), the base
    model's shape (a given shape that differs is an error; dropout may change); else the size
    and its regularisers (hidden, dropout, weight_drop, weight_decay): `size` when given (what
    sizing.choose measured, a Choice), else the budget preset; for a new model's rate,
    default_lr of its size; else the dataclass defaults, with DEFAULT_EPOCHS when no budget is
    given."""
    check_known(options)
    model = {k: v for k, v in options.items() if k in MODEL_FIELDS and v is not None}
    if base is not None:
        for k, v in model.items():
            if getattr(base, k) != v and k != "dropout":
                raise ConfigError(f"--init-from model has {k}={getattr(base, k)}, not {v}")
        model = dict(base.to_dict(), **{k: v for k, v in model.items() if k == "dropout"})
        del model["vocab_size"]
    train = {k: v for k, v in options.items() if k in TRAIN_FIELDS}
    if base is None and "hidden" not in model:  # size (and its regularisers) by the budget
        chosen = size if size is not None else budget_preset(options.get("minutes") or 0)
        model["hidden"], auto_dropout, *auto = chosen[:4]
        model.setdefault("dropout", auto_dropout)
        for name, value in zip(("weight_drop", "weight_decay"), auto, strict=True):
            if train.get(name) is None:
                train[name] = value
    if base is None and train.get("lr") is None and isinstance(model["hidden"], int):
        train["lr"] = default_lr(model["hidden"])  # a fine-tuning keeps TrainConfig's
    if "eval_every" not in train:  # the same characters between evaluations at any batch x seq
        window = train.get("batch", TrainConfig.batch) * train.get("seq", TrainConfig.seq)
        if isinstance(window, int) and window > 0:
            train["eval_every"] = max(1, round(EVAL_EVERY_CHARS / window))
    cfg = TrainConfig(**train).validate()
    if not cfg.steps and not cfg.minutes and not cfg.epochs:
        cfg = replace(cfg, epochs=DEFAULT_EPOCHS)
    return model, cfg


def resolve_resume(saved_model, saved_train, options):
    """The TrainConfig of a resumed run: the saved one with the budgets given now, and the
    schedule constant if asked (a cosine run then goes on at the rate where it stands, which
    Trainer.resume sets); any other option must agree with the run's."""
    saved = dict(saved_model.to_dict(), **saved_train.to_dict())
    for k, v in options.items():
        if (k not in RESUME_FIELDS and v != saved.get(k)) or (
            k == "schedule" and v not in (saved[k], "constant")
        ):
            raise ConfigError(
                f"--resume keeps the run's {k} ({saved.get(k)}); drop the option "
                f"or start a new run with --init-from"
            )
    return replace(saved_train, **resume_overrides(options))


def resume_overrides(options):
    """The options a resumed run takes from the command line rather than its checkpoint."""
    return {k: v for k, v in options.items() if k in RESUME_FIELDS}
