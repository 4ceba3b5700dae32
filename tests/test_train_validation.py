"""`fpx train` refuses what it cannot do honestly, before anything is written (issue 14).

Defect 2: a format with no GEMM input to apply it to is an error (it used to record an e2m1 run
that was really unquantized).  Defect 3: every TrainConfig field is checked on construction, the
stored config is plain JSON, options with no effect are errors or warnings that say so.
Defect 4: a diverging run ends with one line and is recorded as failed.
"""

from __future__ import annotations

import json
import math
import types

import pytest
import torch
from procs import run_cli

from explorer.train import store
from explorer.train.data import CorpusSpec
from explorer.train.qlinear import QuantConfig
from explorer.train.trainer import TrainConfig, TrainingDiverged, run_identity, train

BASE = ["train", "--layers", "1", "--d-model", "32", "--tokens", "4096", "--seq-len", "32",
        "--batch-size", "8", "--eval-tokens", "2048", "--max-bytes", "262144", "--threads", "1",
        "--device", "cpu", "--no-progress", "--json"]


pytestmark = pytest.mark.usefixtures("train_env")


# (extra arguments, a fragment the one-line error must contain)
REFUSED = [
    (["--format", "e2m1", "--targets", ""], "targets"),
    (["--format", "e2m1", "--targets", " , "], "targets"),
    (["--format", "mxfp4", "--block", "none", "--targets", ""], "targets"),
    (["--seed", "-1"], "seed"),
    (["--lr", "inf"], "lr"),
    (["--lr=-inf"], "lr"),
    (["--lr", "nan"], "lr"),
    (["--lr", "0"], "lr"),
    (["--lr", "-0.001"], "lr"),
    (["--tokens", "0"], "tokens"),
    (["--seq-len", "0"], "seq_len"),
    (["--batch-size", "-2"], "batch_size"),
    (["--eval-tokens", "100000000"], "eval_tokens"),
    (["--max-bytes", "10"], "max_bytes"),
    (["--precision", "bf16"], "bf16"),
    (["--ptq-method", "gptq"], "--ptq"),
    (["--ptq-block", "32"], "--ptq"),
    (["--ptq", ","], "--ptq"),
    (["--capture", "{tmp}/ops.dat"], ".npz"),
    (["--capture", "{tmp}/no/such/folder/ops.npz"], "folder not found"),
    (["--capture", "{tmp}"], "is a folder"),
]


@pytest.mark.parametrize("extra,fragment", REFUSED, ids=[" ".join(e) for e, _ in REFUSED])
def test_refused_before_anything_is_written(tmp_path, capsys, extra, fragment):
    work = tmp_path / "work"
    work.mkdir()
    db = work / "runs.db"
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    rc, out, err = run_cli(capsys, *BASE, "--db", str(db), *extra)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert "Traceback" not in err
    assert list(work.iterdir()) == []               # no database, no checkpoint folder


def test_format_without_targets_is_refused_by_the_library():
    with pytest.raises(ValueError, match="^targets: empty, so format 'e2m1' would quantize"):
        QuantConfig(fmt="e2m1", targets="")
    with pytest.raises(ValueError, match="^targets"):
        QuantConfig(fmt="e4m3", targets=())
    assert not QuantConfig(fmt=None, targets="").active      # no format: nothing to apply
    with pytest.raises(ValueError, match="^seed"):
        QuantConfig(seed=-1)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(layers=1, d_model=32, tokens=4096, seq_len=32, batch_size=8,
                       eval_tokens=2048, corpus=CorpusSpec(max_bytes=262144), **kw)


BAD_FIELDS = [
    ("lr", math.inf), ("lr", math.nan), ("lr", -1.0), ("lr", True),
    ("seed", -1), ("seed", 2**64), ("seed", True), ("seed", 1.5),
    ("grad_clip", math.inf), ("grad_clip", 0.0), ("weight_decay", math.nan),
    ("weight_decay", -0.1), ("betas", (1.0, 0.9)), ("betas", (0.9,)), ("betas", (math.nan, 0.9)),
    ("ckpt_fracs", ()), ("ckpt_fracs", (0.0,)), ("ckpt_fracs", (math.nan,)),
    ("min_lr_frac", 1.5), ("min_lr_frac", math.nan), ("warmup_frac", math.nan),
    ("warmup_frac", 1.0), ("n_heads", 0), ("eval_points", 0),
]


@pytest.mark.parametrize("name,value", BAD_FIELDS, ids=[f"{n}={v!r}" for n, v in BAD_FIELDS])
def test_train_config_names_the_bad_field(name, value):
    with pytest.raises(ValueError, match=f"^{name}"):
        _cfg(**{name: value})


def test_run_identity_refuses_a_config_that_is_not_plain_json():
    cfg = _cfg(lr=1e-3)
    object.__setattr__(cfg, "lr", math.inf)      # bypassing __post_init__, as a bug might
    corpus = types.SimpleNamespace(sha256="0" * 64, vocab_size=256)
    with pytest.raises(ValueError, match="not plain JSON"):
        run_identity(cfg, corpus, "bytes")


def _no_constants(name):
    raise AssertionError(f"stored config holds {name}, which is not JSON")


def test_options_with_no_effect_warn_and_do_not_make_another_run(tmp_path, capsys):
    """--block/--targets/--rounding with --format none do nothing: a warning says so and the
    run is the plain baseline (same key, found finished, not trained twice)."""
    db = str(tmp_path / "runs.db")
    rc, out, err = run_cli(capsys, *BASE, "--format", "none", "--db", db, "--lr", "2e-3")
    assert rc == 0 and "warning" not in err
    base = json.loads(out.strip().splitlines()[-1])
    rc, out, err = run_cli(capsys, *BASE, "--format", "none", "--db", db, "--lr", "2e-3",
                           "--block", "none", "--targets", "fwd_x", "--rounding", "sr")
    again = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and again["key"] == base["key"] and again["skipped"]
    assert err.count("\n") == 1 and "--block, --targets, --rounding have no effect" in err
    rows = store.load_runs(db)
    assert len(rows) == 1
    # the stored config is plain JSON (no NaN/Infinity) and holds what was asked
    row = store.get_run(db, base["key"])
    config = json.loads(row["config_json"], parse_constant=_no_constants)
    assert config["train"]["lr"] == 2e-3 and config["train"]["quant"]["fmt"] is None


def test_diverging_run_is_one_line_and_recorded_failed(tmp_path, capsys):
    db = str(tmp_path / "runs.db")
    rc, out, err = run_cli(capsys, *BASE, "--db", db, "--lr", "1e6")
    assert rc == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "training diverged at step" in err and "--lr" in err
    rows = store.load_runs(db, status=None)
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert "diverged" in rows[0]["env"]["error"]
    assert store.finished_keys(db) == set()


def test_non_finite_gradient_norm_stops_before_the_optimizer_step(tmp_path, monkeypatch):
    """Clipping an infinite gradient norm would write NaN into every weight: the run stops at
    that step with TrainingDiverged (a ValueError) instead."""
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm: torch.tensor(math.inf))
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 0/16 \(gradient "
                                               r"norm inf\)") as info:
        train(_cfg(), ckpt_dir=tmp_path, device="cpu", progress=False)
    assert isinstance(info.value, ValueError)
