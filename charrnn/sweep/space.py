"""The search space of a sweep: which training options a sweep varies, and over which values.

A space maps an option (named as on `charrnn train`'s command line) to one of:

    a value                               fixed:                   cell = "lstm"
    [low, high], two numbers              a range:                 hidden = [128, 512]
    {low, high, log = true, step = 32}    a range, with options:   lr = {low = 1e-3, high = 1e-2}
    {choices = [...]}, or a list of       choices:                 layers = {choices = [1, 3]}
      strings or of three numbers or more                          cell = ["lstm", "gru"]

A --space file (TOML or JSON) overrides DEFAULT name by name; options it does not name keep
their default range (the seven searched ones) or `charrnn train`'s default (the others).
Optuna is not imported here: a trial object is passed in.
"""

import json
from pathlib import Path

from ..errors import ConfigError

# The searched options and their default ranges: sizes a 2-core CPU trains in minutes.
DEFAULT = {
    "cell": {"choices": ["lstm", "gru"]},
    "layers": {"low": 1, "high": 3},
    "hidden": {"low": 64, "high": 512, "log": True},
    "dropout": {"low": 0.0, "high": 0.3},
    "lr": {"low": 1e-3, "high": 1e-2, "log": True},
    "seq": {"low": 50, "high": 150},
    "batch": {"low": 16, "high": 128, "log": True},
}
# Every option a space may name, with its type; the last five are fixed at train's default
# unless a space file names them.
TYPES = {
    "cell": str,
    "layers": int,
    "hidden": int,
    "dropout": float,
    "lr": float,
    "seq": int,
    "batch": int,
    "grad_clip": float,
    "weight_decay": float,
    "warmup": int,
    "state_reset": int,
    "schedule": str,
}
LOG_BY_DEFAULT = {"hidden", "lr", "batch"}  # a [low, high] range of these is on a log scale
WORDS = {"cell": ("lstm", "gru", "rnn", "lnlstm"), "schedule": ("constant", "cosine")}


def load(path):
    """The space in a TOML or JSON file (JSON when the name ends in .json), as a dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the space file {path}: {e.strerror or e}") from None
    try:
        if path.suffix.lower() == ".json":
            user = json.loads(text)
        else:
            user = _toml(text)
    except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError both are
        raise ConfigError(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}"
        ) from None
    if not isinstance(user, dict):
        raise ConfigError(f"{path} must map option names to values, ranges or choices")
    return user


def _toml(text):
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(
                "reading TOML needs Python 3.11 or `pip install tomli`; "
                "or write the space as JSON (a .json file)"
            ) from None
    return tomllib.loads(text)


def build(user=None):
    """DEFAULT with the user's entries, each checked and put in one of three forms:
    {"fixed": v}, {"choices": [...]} or {"low", "high", "log", "step"}."""
    space = {name: normalize(name, spec) for name, spec in DEFAULT.items()}
    for name, spec in (user or {}).items():
        if name not in TYPES:
            raise ConfigError(
                f"the space names {name!r}, which a sweep does not know; it knows {', '.join(TYPES)}"
            )
        space[name] = normalize(name, spec)
    return {name: space[name] for name in TYPES if name in space}


def normalize(name, spec):
    if isinstance(spec, dict):
        if set(spec) == {"choices"}:
            return _choices(name, spec["choices"])
        if not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log", "step"}:
            raise ConfigError(
                f"space: {name} = {spec!r}: a range is {{low = ..., high = ...}} "
                "with optional log = true and step = ...; choices are "
                "{choices = [...]}"
            )
        return _range(
            name, spec["low"], spec["high"], spec.get("log", name in LOG_BY_DEFAULT), spec.get("step")
        )
    if isinstance(spec, list):
        if len(spec) == 2 and TYPES[name] is not str and all(_number(v) for v in spec):
            return _range(name, spec[0], spec[1], name in LOG_BY_DEFAULT, None)
        return _choices(name, spec)
    return {"fixed": _value(name, spec)}


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _choices(name, values):
    if not isinstance(values, list) or not values:
        raise ConfigError(f"space: {name}: choices must be a non-empty list")
    return {"choices": [_value(name, v) for v in values]}


def _range(name, low, high, log, step):
    kind = TYPES[name]
    if kind is str:
        raise ConfigError(f"space: {name} takes a value or choices, not a range")
    low, high = _value(name, low), _value(name, high)
    if low > high:
        raise ConfigError(f"space: {name}: low {low} is above high {high}")
    if not isinstance(log, bool):
        raise ConfigError(f"space: {name}: log must be true or false")
    if log and low <= 0:
        raise ConfigError(f"space: {name}: a log-scale range must start above 0")
    if step is not None:
        if not _number(step) or step <= 0 or (kind is int and step != int(step)):
            raise ConfigError(
                f"space: {name}: step must be a positive {'whole ' if kind is int else ''}number"
            )
        if log:
            raise ConfigError(f"space: {name}: a range has log or step, not both")
        step = kind(step)
    return {"low": low, "high": high, "log": log, "step": step}


def _value(name, v):
    kind = TYPES[name]
    if kind is str:
        if v not in WORDS[name]:
            raise ConfigError(f"space: {name} {v!r} is not one of {', '.join(WORDS[name])}")
        return v
    if not _number(v) or (kind is int and v != int(v)):
        raise ConfigError(f"space: {name} needs {'whole ' if kind is int else ''}numbers, not {v!r}")
    v = kind(v)
    if name == "dropout" and not 0 <= v < 1:
        raise ConfigError(f"space: dropout {v} is outside [0, 1)")
    if name == "lr" and not v > 0:
        raise ConfigError(f"space: lr {v} must be above 0")
    if name in ("layers", "hidden", "seq", "batch") and v < 1:
        raise ConfigError(f"space: {name} {v} must be at least 1")
    if v < 0:
        raise ConfigError(f"space: {name} {v} cannot be negative")
    return v


def suggest(trial, space):
    """Ask an Optuna trial for a value of every option in the space: {name: value}. A fixed
    option is a choice of one, so it is recorded with the trial's parameters too."""
    params = {}
    for name, spec in space.items():
        if "fixed" in spec:
            params[name] = trial.suggest_categorical(name, [spec["fixed"]])
        elif "choices" in spec:
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif TYPES[name] is int:
            params[name] = trial.suggest_int(
                name, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"]
            )
        else:
            params[name] = trial.suggest_float(
                name, spec["low"], spec["high"], step=spec["step"], log=spec["log"]
            )
    return params
