"""Checkpoint files: a round trip keeps everything, anything that is not a good checkpoint is a
CheckpointError naming the file, and a failed save leaves the previous checkpoint as it was."""

import io
import json
import os
import stat
from dataclasses import asdict

import numpy as np
import pytest

from charrnn import api, checkpoint
from charrnn.training import discovery, run
from charrnn.errors import CheckpointError
from charrnn.fsutil import atomic_write
from conftest import markov_text


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trainer after 12 steps of a 1x8 LSTM, and its run directory."""
    root = tmp_path_factory.mktemp("ckpt")
    text, _ = markov_text("abcd \n", 1500, seed=4)
    (root / "c.txt").write_text(text)
    t = run.prepare(
        root / "c.txt", root / "run", layers=1, hidden=8, batch=4, seq=10, steps=12, eval_every=6, seed=2
    ).trainer
    with run.run_directory(t.run_dir):
        t.run()
    return t


def arrays_of(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def meta_array(meta):
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


# ------------------------------------------------------------------------------------ round trip


def test_round_trip_keeps_weights_vocab_config_and_samples(trained):
    path = trained.run_dir / checkpoint.LATEST
    loaded = api.load(path)
    before = trained.model
    for name, a, b in zip(before.params._fields, before.params, loaded.params):
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, b), name
    assert loaded.vocab == before.vocab == "\n abcd"
    assert loaded.config == before.config
    assert loaded.meta["train"] == asdict(trained.cfg)
    assert loaded.meta["progress"]["step"] == 12
    for kwargs in (dict(seed=3), dict(seed=3, prime="ab", top_k=3), dict(temp=0)):
        text = before.sample(60, **kwargs)
        prime = kwargs.get("prime", "")
        assert len(text) == len(prime) + 60 and text.startswith(prime)  # as the CLI prints it
        assert before.sample(60, include_prime=False, **kwargs) == text[len(prime) :]
        assert loaded.sample(60, **kwargs) == text
    assert loaded.sample(60, seed=3) != loaded.sample(60, seed=4)


def test_run_directory_resolves_to_best_then_latest(trained, tmp_path):
    assert discovery.resolve(trained.run_dir) == trained.run_dir / checkpoint.BEST
    only_latest = tmp_path / "r"
    only_latest.mkdir()
    latest = (trained.run_dir / checkpoint.LATEST).read_bytes()
    (only_latest / checkpoint.LATEST).write_bytes(latest)
    assert discovery.resolve(only_latest) == only_latest / checkpoint.LATEST
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        discovery.resolve(tmp_path)


# ------------------------------------------------------------------------------------- bad files


def truncated(good, path):
    raw = good.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def empty(good, path):
    path.write_bytes(b"")


def random_bytes(good, path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def foreign_npz(good, path):
    np.savez(path, weights=np.arange(10.0), labels=np.arange(3))


def newer_version(good, path):
    arrays = arrays_of(good)
    meta = json.loads(arrays["meta"].tobytes())
    meta["version"] = 99
    arrays["meta"] = meta_array(meta)
    np.savez(path, **arrays)


def pickled_weights(good, path):
    arrays = arrays_of(good)
    arrays["param/Wy"] = np.array([{"not": "numbers"}, None], dtype=object)
    np.savez(path, allow_pickle=True, **arrays)


def pickled_meta(good, path):
    arrays = arrays_of(good)
    arrays["meta"] = np.array([json.loads(arrays["meta"].tobytes())], dtype=object)
    np.savez(path, allow_pickle=True, **arrays)


def meta_not_json(good, path):
    arrays = arrays_of(good)
    arrays["meta"] = np.frombuffer(b"\xff\xfe{not json", np.uint8)
    np.savez(path, **arrays)


def missing_weights(good, path):
    arrays = arrays_of(good)
    del arrays["param/Wh"]
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "make",
    [
        truncated,
        empty,
        random_bytes,
        foreign_npz,
        newer_version,
        pickled_weights,
        pickled_meta,
        meta_not_json,
        missing_weights,
    ],
)
def test_a_file_that_is_not_a_good_checkpoint_is_refused(trained, tmp_path, make):
    path = tmp_path / f"bad-{make.__name__}.npz"
    make(trained.run_dir / checkpoint.LATEST, path)
    for load in (checkpoint.load, api.load):
        with pytest.raises(CheckpointError) as e:
            load(path)
        message = str(e.value)
        assert path.name in message and "\n" not in message
    if make is newer_version:
        assert "99" in message and "upgrade" in message
    assert ("pickle" in message) == (make in (pickled_weights, pickled_meta))


def test_a_file_of_0_1_0_with_the_old_field_names_loads_under_the_new_ones(trained, tmp_path):
    """charrnn 0.1.0 wrote layers, hidden, batch and seq: the loader's rename
    table reads them as layers, hidden, batch and seq, and the samples are the same."""
    arrays = arrays_of(trained.run_dir / checkpoint.LATEST)
    meta = json.loads(arrays["meta"].tobytes())
    old = {v: k for k, v in checkpoint.OLD_NAMES.items()}
    meta["model"] = {old.get(k, k): v for k, v in meta["model"].items()}
    meta["train"] = {old.get(k, k): v for k, v in meta["train"].items()}
    assert {"num_layers", "hidden_size"} <= set(meta["model"])  # old names
    assert {"batch_size", "seq_len"} <= set(meta["train"])  # old names
    np.savez(tmp_path / "old.npz", **dict(arrays, meta=meta_array(meta)))
    then, now = api.load(tmp_path / "old.npz"), api.load(trained.run_dir / checkpoint.LATEST)
    assert then.config == now.config and then.meta.train == now.meta.train
    assert then.sample(80, seed=3) == now.sample(80, seed=3)


def test_a_training_saved_before_precision_existed_resumes_in_fp32(trained, tmp_path):
    """--precision's default is now auto (bf16 on AMX): a checkpoint without the field was
    trained in fp32 products, and its resume must take them again, bit for bit, on any machine."""
    arrays = arrays_of(trained.run_dir / checkpoint.LATEST)
    meta = json.loads(arrays["meta"].tobytes())
    assert meta["train"].pop("precision") == "fp32"  # the tiny model's 8 units: auto took fp32
    np.savez(tmp_path / "old.npz", **dict(arrays, meta=meta_array(meta)))
    assert checkpoint.load(tmp_path / "old.npz")[0].train.precision == "fp32"
    assert api.load(tmp_path / "old.npz").meta.train.precision == "fp32"


def test_weights_that_do_not_fit_the_model_are_refused(trained, tmp_path):
    arrays = arrays_of(trained.run_dir / checkpoint.LATEST)
    meta = json.loads(arrays["meta"].tobytes())
    meta["model"]["hidden"] = 16  # the arrays are for 8
    np.savez(tmp_path / "shape.npz", **dict(arrays, meta=meta_array(meta)))
    arrays = arrays_of(trained.run_dir / checkpoint.LATEST)
    arrays["param/Wy"] = np.full_like(arrays["param/Wy"], np.nan)
    np.savez(tmp_path / "nan.npz", **arrays)
    for name, expect in (("shape.npz", "valid model"), ("nan.npz", "non-finite")):
        with pytest.raises(CheckpointError, match=expect) as e:
            api.load(tmp_path / name)
        assert name in str(e.value)


def test_missing_file_and_directory_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        checkpoint.load(tmp_path)


# ---------------------------------------------------------------------------------- atomic saves


def test_a_failed_save_leaves_the_previous_checkpoint_intact(trained, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = trained.save(checkpoint.LATEST)
    assert path.parent == trained.run_dir
    target = run_dir / checkpoint.LATEST
    target.write_bytes(path.read_bytes())
    previous = target.read_bytes()

    def disk_full(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(CheckpointError, match="No space left") as e:
        checkpoint.save(target, trained.meta(), trained.model.params)
    assert checkpoint.LATEST in str(e.value)
    assert target.read_bytes() == previous
    assert os.listdir(run_dir) == [checkpoint.LATEST]

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(target, trained.meta(), trained.model.params)
    assert target.read_bytes() == previous
    assert os.listdir(run_dir) == [checkpoint.LATEST]
    monkeypatch.undo()

    def rename_fails(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", rename_fails)
    with pytest.raises(CheckpointError, match="could not write"):
        checkpoint.save(target, trained.meta(), trained.model.params)
    assert target.read_bytes() == previous
    assert os.listdir(run_dir) == [checkpoint.LATEST]
    monkeypatch.undo()
    assert api.load(target).config == trained.model.config


def test_atomic_write_uses_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f") as f:
            f.write(b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o644
    finally:
        os.umask(old)


def test_save_writes_a_file_np_load_reads_without_pickle(trained, tmp_path):
    path = checkpoint.save(
        tmp_path / "x.npz", dict(trained.meta(), hello="world"), trained.model.params, {"h": trained.h}
    )
    meta, params, train = checkpoint.load(path)
    assert meta["hello"] == "world" and meta["version"] == 1  # what any version reads alike
    assert set(train) == {"h"} and np.array_equal(train["h"], trained.h)
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_the_stored_parameter_names_are_the_kernels_fields():
    from charrnn.engine.kernels import Params

    assert checkpoint.PARAM_NAMES == Params._fields
