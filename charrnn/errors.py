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
