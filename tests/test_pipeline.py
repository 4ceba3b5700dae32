"""explorer.train.pipeline: train -> PTQ of every checkpoint -> capture, as `fpx train` runs it."""

from __future__ import annotations

import pytest

from explorer.metrics import load_tensors
from explorer.train.data import CorpusSpec
from explorer.train.pipeline import CAPTURE_SEQUENCES, train_ptq_capture
from explorer.train.ptq import PTQSpec
from explorer.train.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("train_env")


def _tiny() -> TrainConfig:
    return TrainConfig(layers=1, d_model=32, tokens=8192, seq_len=32, batch_size=8,
                       eval_tokens=2048, eval_points=2, corpus=CorpusSpec(max_bytes=262144))


def test_train_ptq_capture(tmp_path):
    db, npz = tmp_path / "runs.db", tmp_path / "ops.npz"
    cfg = _tiny()
    out = train_ptq_capture(cfg, db=db, device="cpu", progress=False,
                            ptq=[PTQSpec("e1m0", None), PTQSpec("e4m3", None)], capture=npz)
    assert not out.run.skipped and out.capture == npz
    assert {(r["ckpt_tokens"], r["fmt"]) for r in out.ptq} == \
        {(t, f) for t in (2048, 4096, 8192) for f in ("e1m0", "e4m3")}
    assert all(r["run_key"] == out.run.key for r in out.ptq)
    tensors = load_tensors(npz)
    assert {"blocks.0.attn.q.weight", "blocks.0.attn.q.grad_output", "head.input"} <= set(tensors)
    # one held-out batch of CAPTURE_SEQUENCES sequences feeds the captured activations
    assert tensors["blocks.0.attn.q.input"].size == CAPTURE_SEQUENCES * cfg.seq_len * cfg.d_model
    again = train_ptq_capture(cfg, db=db, device="cpu", progress=False,
                              ptq=[PTQSpec("e1m0", None)])
    assert again.run.skipped and again.capture is None
    assert len(again.ptq) == len(out.ptq)        # nothing redone; the run's rows are all listed


def test_ptq_without_database_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="^ptq: needs db"):
        train_ptq_capture(_tiny(), ckpt_dir=tmp_path, device="cpu", progress=False,
                          ptq=[PTQSpec("e2m1", None)])
    assert not any(tmp_path.iterdir())
