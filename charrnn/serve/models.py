"""The models a server serves: each loaded from its checkpoint with a Batcher of its own, named
by its run, and (with reload) replaced by a newer checkpoint between requests.

A checkpoint is written to a temporary file and moved into place (os.replace), so a load reads
either the old file or the new one, whole. The replaced model's batcher finishes the rows it is
writing and ends; new requests go to the new one. A file that fails to load leaves the old
model serving.
"""

import logging
import os
import threading
import time
from pathlib import Path

from .. import checkpoint as ck
from ..charmodel import model_from_checkpoint
from ..errors import CharrnnError
from ..training import discovery
from .batcher import Batcher

log = logging.getLogger("charrnn.serve")
RELOAD_EVERY = 1.0  # seconds between two looks at a model's checkpoint file


def run_name(path):
    """A model's id: its run directory's name (a checkpoint inside a run), else the file's."""
    path = Path(path)
    if path.name in (ck.BEST, ck.LATEST) and path.parent.name:
        return path.parent.name
    return path.stem


def _stamp(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class Served:
    """One model: where it comes from, and the model and batcher serving it now."""

    def __init__(self, spec, options):
        """spec: what -c names (a checkpoint, a run, a directory of runs), or (name, model)
        for a model already in memory (never reloaded)."""
        self.spec, self.options = spec, options
        if isinstance(spec, tuple):
            (self.name, self.model), self.path, self.note, self.stamp = spec, None, None, None
        else:
            self.path, self.note = discovery.resolve_explained(spec)
            self.name = run_name(self.path)
            self.stamp = _stamp(self.path)
            self.model = model_from_checkpoint(self.path)[0]
        self.batcher = Batcher(self.model, **options)
        self.loaded_at = time.time()
        self.checked = time.monotonic()
        self.lock = threading.Lock()

    def describe(self):
        cfg = self.model.config
        return {
            "id": self.name,
            "object": "model",
            "created": int(self.loaded_at),
            "owned_by": "charrnn",
            "cell": cfg.cell,
            "layers": cfg.layers,
            "hidden": cfg.hidden,
            "vocab_size": cfg.vocab_size,
            "checkpoint": str(self.path),
        }

    def loaded(self):
        """What is loaded: the file and its validation loss, for the log."""
        return f"{self.path or 'a model in memory'} ({describe_loss(self.model)})"

    def maybe_reload(self):
        """Load a newer checkpoint if there is one (at most once a RELOAD_EVERY); True when
        the model changed. Runs in a worker thread: loading reads the whole file."""
        now = time.monotonic()
        if self.path is None or now - self.checked < RELOAD_EVERY or not self.lock.acquire(blocking=False):
            return False
        try:
            self.checked = now
            path, _ = discovery.resolve_explained(self.spec)
            stamp = _stamp(path)
            if path == self.path and stamp == self.stamp:
                return False
            model = model_from_checkpoint(path)[0]
            old, was = self.batcher, describe_loss(self.model)
            self.batcher = Batcher(model, **self.options)
            self.model, self.path, self.stamp = model, path, stamp
            self.loaded_at = time.time()
            old.close(wait=False)
            now_loss = describe_loss(model)
            log.info("charrnn: %s reloaded from %s (%s; it replaced %s)", self.name, path, now_loss, was)
            return True
        except (OSError, CharrnnError) as e:
            log.warning("charrnn: %s: kept the loaded model (%s)", self.name, e)
            return False
        finally:
            self.lock.release()


def describe_loss(model):
    """ "validation loss 1.5510" of a loaded model (its final larger evaluation if it had one)."""
    meta = getattr(model, "meta", None)
    loss = None if meta is None else (meta.val_loss_full or meta.val_loss)
    return "no validation loss" if loss is None else f"validation loss {loss:.4f}"


class Registry:
    """The models by id, in the order given."""

    def __init__(self, specs, reload=False, **options):
        self.reload = reload
        self.models = {}
        for spec in specs:
            s = Served(spec, options)
            name, i = s.name, 2
            while s.name in self.models:
                s.name = f"{name}-{i}"
                i += 1
            self.models[s.name] = s

    def notes(self):
        return [s.note for s in self.models.values() if s.note]

    def get(self, name):
        """The Served of an id (None: the only one, when one is served); KeyError if none."""
        if name is None and len(self.models) == 1:
            return next(iter(self.models.values()))
        return self.models[name]

    def close(self):
        for s in self.models.values():
            s.batcher.close(wait=False)
        for s in self.models.values():
            s.batcher.thread.join(timeout=30)
