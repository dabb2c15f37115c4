"""The exceptions a user can cause. The library raises them; only the CLI turns them into a
one-line message and an exit code."""


class CharrnnError(Exception):
    """A problem the user can fix; str(e) is the one-line message."""


class CorpusError(CharrnnError):
    """The training or evaluation text cannot be used."""


class CheckpointError(CharrnnError):
    """A checkpoint file is missing, corrupt, foreign or of an unknown format version."""


class ConfigError(CharrnnError, ValueError):
    """An option value is out of range, or conflicts with a checkpoint. A ValueError too, as a
    Python caller catches a bad argument (so is UsageError)."""


class UsageError(ConfigError):
    """An option's value is one no run could use (out of range, NaN, infinite): the command
    line's usage error, exit 2."""


class TrainingDiverged(CharrnnError):
    """The loss became NaN or infinite."""


def install_hint(extra):
    """The command that installs an extra as this copy of charrnn was installed. From a source
    tree (a checkout, installed with `pip install -e .` or not at all): the tree with the extra,
    as the README installs it (`pip install -e '.[serve]'` from inside it); `pip install
    'charrnn[serve]'` names a package on the index, not this checkout. Else the package's name."""
    import shlex
    from pathlib import Path

    tree = Path(__file__).resolve().parents[1]
    if not (tree / "pyproject.toml").is_file():  # in site-packages
        return f"pip install 'charrnn[{extra}]'"
    try:
        where = "." if Path.cwd().resolve() == tree else str(tree)
    except OSError:  # the working directory was removed
        where = str(tree)
    return f"pip install -e {shlex.quote(f'{where}[{extra}]')}"
