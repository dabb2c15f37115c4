"""--precision of a training run: bf16 products resume bit for bit within the precision, the run
keeps its precision on --resume, and a machine or model that cannot take bf16 is refused in one
line before anything is trained."""

import numpy as np
import pytest
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.engine import bgemm
from charrnn.training import run
from charrnn.errors import ConfigError, UsageError
from conftest import markov_text

needs_bf16 = pytest.mark.skipif(not bgemm.available(), reason="this CPU has no AVX512-BF16 (vdpbf16ps)")
OPTS = dict(layers=2, hidden=32, dropout=0.2, batch=4, seq=10, eval_every=5, val_frac=0.1, seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    text, _ = markov_text("abcdef", 500, seed=5, peaked_rows=(1,))
    path = tmp_path_factory.mktemp("small") / "small.txt"
    path.write_text(text)
    return path


def train(corpus, out, should_stop=lambda: False, **options):
    trainer = run.prepare(corpus, out, **options).trainer
    with run.run_directory(trainer.run_dir):
        trainer.status = trainer.run(None, should_stop)
    return trainer


@needs_bf16
def test_a_bf16_run_resumes_bit_for_bit(tmp_path, corpus):
    """16 steps in one go == 7, stop, resume, the rest: in bf16 too the step is a function of
    the checkpoint alone (the weights are rounded as they are packed, each step)."""
    whole = train(corpus, tmp_path / "whole", steps=16, precision="bf16", **OPTS)
    t1 = run.prepare(corpus, tmp_path / "split", steps=16, precision="bf16", **OPTS).trainer
    with run.run_directory(t1.run_dir):
        assert t1.run(should_stop=lambda: t1.step >= 7) == "interrupted"
    meta, _, _ = checkpoint.load(tmp_path / "split" / checkpoint.LATEST)
    assert meta.train.precision == "bf16"
    t2 = run.prepare(resume=tmp_path / "split", steps=16).trainer
    assert t2.cfg.precision == "bf16"
    with run.run_directory(t2.run_dir):
        assert t2.run() == "done"
    assert np.array_equal(t2.model.flat, whole.model.flat)
    assert np.array_equal(t2.opt.m, whole.opt.m) and np.array_equal(t2.opt.v, whole.opt.v)
    fp32 = train(corpus, tmp_path / "fp32", steps=16, **OPTS)
    assert fp32.cfg.precision == "fp32" and not np.array_equal(fp32.model.flat, whole.model.flat)
    with pytest.raises(ConfigError, match="precision"):
        run.prepare(resume=tmp_path / "split", steps=20, precision="fp32")


def test_bf16_is_refused_where_it_cannot_run(tmp_path, corpus, monkeypatch):
    with pytest.raises(UsageError, match="fp32 or bf16"):
        run.check_new(dict(OPTS, precision="int8"))
    with pytest.raises(UsageError, match="float64"):
        run.check_new(dict(OPTS, precision="bf16"), np.float64)
    if bgemm.available():
        with pytest.raises(UsageError, match="multiple of 32"):
            run.check_new(dict(OPTS, hidden=40, precision="bf16"))
    monkeypatch.setattr(bgemm, "_available", False)  # a CPU without the instruction
    from charrnn.cli import app

    r = CliRunner().invoke(
        app, ["train", str(corpus), "-o", str(tmp_path / "r"), "--steps", "2", "--precision", "bf16"]
    )
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "AVX512-BF16" in lines[0] and "--precision fp32" in lines[0], r.stderr
    assert not (tmp_path / "r").exists()


def test_the_memory_estimate_counts_the_bf16_buffers():
    from charrnn.engine.buffers import grad_block_size, part_slices
    from charrnn.engine.model import ModelConfig
    from charrnn.training import memory

    mcfg = ModelConfig("lstm", 2, 512, 65)
    fp32, bf16 = (memory.training(mcfg, 16, 100, precision=p) for p in ("fp32", "bf16"))
    packed = 2 * 3 * 512 * 2048 * 2  # W and W^T of three matrices, two bytes a weight
    assert bf16.held["bf16 packed weights"] == packed
    # without the float32 windows' packed dG blocks (Work.Gp), which bf16's windows do without
    gp = sum(4 * grad_block_size(mcfg, 100, s.stop - s.start, np.float32) for s in part_slices(16))
    assert bf16.peak >= fp32.peak - gp + packed + 2 * 100 * 16 * 2048  # each part's inputs too


def test_auto_takes_bf16_only_where_amx_runs_it(monkeypatch):
    """auto: bf16 on AMX tiles, in float32, from 128 units in whole strips of 32; fp32 anywhere
    else (vdpbf16ps alone trained no faster); fp32 and bf16 as asked."""
    from charrnn.config import ModelConfig
    from charrnn.engine import amx, precision

    def of(hidden, dtype=np.float32, asked="auto"):
        return precision.train_precision(ModelConfig(hidden=hidden, vocab_size=5), dtype, asked)

    monkeypatch.setattr(bgemm, "available", lambda: True)
    monkeypatch.setattr(amx, "available", lambda: True)
    assert [of(h) for h in (64, 96, 128, 144, 384)] == ["fp32", "fp32", "bf16", "fp32", "bf16"]
    assert of(256, np.float64) == "fp32" and of(256, asked="fp32") == "fp32"
    assert of(64, asked="bf16") == "bf16"
    monkeypatch.setattr(amx, "available", lambda: False)
    assert of(512) == "fp32"


def test_a_run_records_the_precision_auto_took(tmp_path, corpus):
    """The checkpoint holds fp32 or bf16, never auto: a resume on another machine keeps it."""
    from charrnn.engine import precision

    t = train(corpus, tmp_path / "auto", steps=2, **OPTS)
    meta, _, _ = checkpoint.load(t.run_dir / checkpoint.LATEST)
    expected = precision.train_precision(t.model.config, np.float32, "auto")
    assert t.cfg.precision == meta.train.precision == expected == "fp32"  # 32 units: below 128
