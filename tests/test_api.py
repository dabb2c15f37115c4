"""The Python interface speaks the command line's language: charrnn.train takes `charrnn
train`'s option names, CharModel.sample returns what `charrnn sample` prints, and a value the
command line refuses the library refuses too, with the same words."""

import pytest

import charrnn
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import UsageError
from conftest import error_line, invoke, markov_text


def test_train_takes_the_cli_option_names(tmp_path):
    text, _ = markov_text("abc \n", 3000, seed=1)
    path = tmp_path / "c.txt"
    path.write_text(text)
    model = charrnn.train(
        path, tmp_path / "r", layers=1, hidden=12, batch=4, seq=8, steps=3, grad_clip=1.0, eval_every=3
    )
    assert (model.config.layers, model.config.hidden) == (1, 12)
    assert charrnn.load(tmp_path / "r").meta["train"]["batch"] == 4
    with pytest.raises(TypeError, match="hidden"):  # the error lists the names it takes
        charrnn.train(path, tmp_path / "q", hiden=12)
    s = model.sample(10, prime="ab", seed=1)
    assert s.startswith("ab") and len(s) == 12


def test_a_bad_value_is_a_value_error_as_python_callers_catch_it(tmp_path):
    """Issue 38: `except ValueError` catches the library's errors for bad values, which are
    still CharrnnErrors (the command line's one-line message)."""
    from charrnn.config import ModelConfig
    from charrnn.errors import CharrnnError, ConfigError, UsageError

    assert issubclass(UsageError, ValueError) and issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError) as e:
        ModelConfig(cell="lstn", vocab_size=5).validate()
    assert isinstance(e.value, UsageError) and isinstance(e.value, CharrnnError)
    text, _ = markov_text("abc \n", 500, seed=1)
    (tmp_path / "c.txt").write_text(text)
    with pytest.raises(ValueError, match="val-frac"):
        charrnn.train(tmp_path / "c.txt", tmp_path / "r", val_frac=1.5, steps=1)


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(length=0), "--length must be at least 1"),
        (dict(length=-5), "--length must be a whole number"),
        (dict(temp=-1), "--temp must be 0 (greedy) or a positive number"),
        (dict(temp=float("nan")), "--temp"),
        (dict(temp=float("inf")), "--temp"),
        (dict(top_p=2), "--top-p must be in (0, 1]"),
        (dict(top_p=0), "--top-p"),
        (dict(top_k=-1), "--top-k"),
        (dict(seed=-1), "--seed"),
    ],
)
def test_library_sampling_refuses_what_the_command_line_refuses(cli_run, options, words):
    model = charrnn.load(cli_run)
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
        model.sample(**options)
    flag, value = next(iter(options.items()))
    if options == dict(length=0):
        return  # without end: the command line streams it
    flag = {"length": "-n"}.get(flag, "--" + flag.replace("_", "-"))
    r = invoke("sample", "-c", cli_run, flag, value)
    assert words.split(" must")[0] in error_line(r, 2)


@pytest.mark.parametrize(
    "field, value",
    [("minutes", float("inf")), ("epochs", float("nan")), ("lr", float("nan")), ("seed", -1), ("batch", 0)],
)
def test_the_library_refuses_the_same(field, value):
    with pytest.raises(UsageError):
        TrainConfig(**{field: value}).validate()


def test_model_config_refuses_nan_dropout():
    with pytest.raises(UsageError):
        ModelConfig(dropout=float("nan"), vocab_size=3).validate()


def test_charrnn_train_refuses_infinite_minutes(corpus_file, tmp_path):
    with pytest.raises(UsageError):
        charrnn.train(
            corpus_file, out=tmp_path / "r", minutes=float("inf"), layers=1, hidden=8, batch=4, seq=8
        )
