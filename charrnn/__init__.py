"""charrnn: character-level recurrent language models, trained and sampled from the command line.

The heavy modules (NumPy, Numba kernels) load on first use, so the command line starts fast.
"""

from ._version import __version__

__all__ = ["load", "train", "ModelConfig", "TrainConfig", "__version__"]


def __getattr__(name):
    if name in ("load",):
        from . import api

        return getattr(api, name)
    if name == "train":
        from .training.run import train

        return train
    if name == "ModelConfig":
        from .config import ModelConfig

        return ModelConfig
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
