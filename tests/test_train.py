"""Training runs: quantized GEMMs, model, trainer determinism/resume, the `fpx train` CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from procs import run_cli
from torch import nn

from explorer.train.data import CorpusSpec, load_corpus, train_batch
from explorer.train.model import Decoder, ModelConfig, param_count
from explorer.train.qlinear import (
    OperandSpec,
    QuantConfig,
    QuantLinear,
    dequantize_model,
    parse_targets,
    quantize_model,
)
from explorer.train.trainer import TrainConfig, train

SMALL = CorpusSpec(max_bytes=262144)


pytestmark = pytest.mark.usefixtures("train_env")


def tiny(tokens=24576, **kw) -> TrainConfig:
    return TrainConfig(layers=1, d_model=32, tokens=tokens, seq_len=32, batch_size=8,
                       eval_tokens=4096, eval_points=4, corpus=SMALL, **kw)


def test_param_count_matches_block_linears():
    cfg = ModelConfig(layers=2, d_model=48)
    m = Decoder(cfg)
    assert cfg.heads == 1 and cfg.hidden == 128
    assert (param_count(cfg) == sum(w.numel() for w in m.gemm_weights())
            == 2 * (4 * 48 * 48 + 3 * 48 * 128))
    assert ModelConfig(layers=1, d_model=256).heads == 4       # head dim <= 64
    with pytest.raises(ValueError, match="d_model"):
        ModelConfig(layers=1, d_model=4)


@pytest.mark.parametrize("qcfg", [QuantConfig(), QuantConfig(fmt=None, targets="all")])
def test_quantlinear_without_format_matches_linear(qcfg):
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    q = QuantLinear.from_linear(nn.Linear(12, 7), qcfg)
    q.weight.data.copy_(lin.weight.data)
    q.bias.data.copy_(lin.bias.data)
    x1 = torch.randn(3, 5, 12, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    (lin(x1) ** 2).sum().backward()
    (q(x2) ** 2).sum().backward()
    assert torch.equal(x1.grad, x2.grad)
    assert torch.equal(lin.weight.grad, q.weight.grad)
    assert torch.equal(lin.bias.grad, q.bias.grad)


def test_quantlinear_exact_float32_format_matches_linear_through_custom_gemm():
    """Every one of the six inputs 'quantized' to float32 (identity) through the custom GEMM."""
    torch.manual_seed(1)
    lin = nn.Linear(16, 8)
    q = QuantLinear.from_linear(nn.Linear(16, 8),
                                QuantConfig(fmt="float32", block=None, targets="all"))
    q.load_state_dict(lin.state_dict())
    x1 = torch.randn(10, 16, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    (lin(x1).sin()).sum().backward()
    (q(x2).sin()).sum().backward()
    assert torch.equal(x1.grad, x2.grad)
    assert torch.equal(lin.weight.grad, q.weight.grad)


def test_each_target_uses_quantized_operand():
    from fpformat.torch import quantize_values
    torch.manual_seed(2)
    x = torch.randn(6, 16, requires_grad=True)
    base = nn.Linear(16, 8, bias=False)
    gy = torch.randn(6, 8)
    qf = lambda t: quantize_values(t, "e2m1", saturate=True)   # noqa: E731
    for target in parse_targets("all"):
        q = QuantLinear.from_linear(base, QuantConfig(fmt="e2m1", block=None, targets=(target,)))
        xx = x.detach().clone().requires_grad_(True)
        base.weight.grad = None
        q(xx).backward(gy)
        W, X = base.weight.detach(), x.detach()
        exp_y = {"fwd_x": qf(X) @ W.t(), "fwd_w": X @ qf(W).t()}.get(target, X @ W.t())
        torch.testing.assert_close(q(x.detach()), exp_y)
        exp_gx = {"dgrad_dy": qf(gy) @ W, "dgrad_w": gy @ qf(W)}.get(target, gy @ W)
        exp_gw = {"wgrad_dy": qf(gy).t() @ X, "wgrad_x": gy.t() @ qf(X)}.get(target, gy.t() @ X)
        torch.testing.assert_close(xx.grad, exp_gx, msg=target)
        torch.testing.assert_close(base.weight.grad, exp_gw, msg=target)
        # and it really differs from the unquantized product
        assert (not torch.allclose(xx.grad, gy @ W)
                or not torch.allclose(base.weight.grad, gy.t() @ X)
                or not torch.allclose(q(x.detach()), X @ W.t()))


def test_quantize_model_swaps_and_reverses_user_model():
    class User(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
            self.classifier = nn.Linear(8, 3)

        def forward(self, x):
            return self.classifier(self.body(x))

    m = User()
    w0 = m.body[0].weight
    quantize_model(m, QuantConfig(fmt="e4m3", block=None))
    assert isinstance(m.body[0], QuantLinear) and isinstance(m.body[2], QuantLinear)
    assert type(m.classifier) is nn.Linear                 # classifier unquantized by default
    assert m.body[0].weight is w0                          # parameters shared, not copied
    quantize_model(m, QuantConfig(fmt="e4m3", block=None, include_head=True))
    assert isinstance(m.classifier, QuantLinear)
    dequantize_model(m)
    assert all(type(mod) is nn.Linear for mod in m.modules() if isinstance(mod, nn.Linear))
    assert m.body[0].weight is w0


def test_bad_configs_name_the_parameter():
    with pytest.raises(ValueError, match="targets"):
        QuantConfig(fmt="e2m3", targets="fwd_q")
    with pytest.raises(ValueError, match="rounding"):
        OperandSpec("e2m3", rounding="up")
    with pytest.raises(ValueError, match="block"):
        QuantConfig(fmt="e2m3", block="row")
    with pytest.raises(ValueError, match="tokens"):
        tiny(tokens=0)


def test_corpus_is_deterministic_and_batches_pure():
    a, b = load_corpus(SMALL), load_corpus(SMALL)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64 and a.vocab_size == 256
    assert a.val.size == int(a.n_tokens * SMALL.val_fraction)
    x1, y1 = train_batch(a.train, 4, 16, seed=3, step=7)
    x2, _ = train_batch(a.train, 4, 16, seed=3, step=7)
    x3, _ = train_batch(a.train, 4, 16, seed=3, step=8)
    assert (x1 == x2).all() and not (x1 == x3).all() and (x1[:, 1:] == y1[:, :-1]).all()


def test_training_learns_and_is_deterministic(tmp_path):
    r1 = train(tiny(), progress=False, ckpt_dir=tmp_path / "a", device="cpu")
    r2 = train(tiny(), progress=False, ckpt_dir=tmp_path / "b", device="cpu")
    assert r1.curve[-1][1] < r1.curve[0][1] - 0.3          # it learns
    assert r1.val_loss < math.log(256) - 1.5               # well below the uniform 5.55 nats
    assert r1.val_loss == r2.val_loss and r1.key == r2.key
    assert sorted(p.name for p in (tmp_path / "a" / r1.key).glob("tokens_*.pt")) == \
        sorted(f"tokens_{t}.pt" for t in (6144, 12288, 24576))


def test_killed_run_resumes_to_the_same_result(tmp_path):
    cfg = tiny(tokens=12288, quant=QuantConfig(fmt="e3m2", block=None, rounding="sr",
                                               targets="fwd_x,wgrad_dy"))
    full = train(cfg, progress=False, ckpt_dir=tmp_path / "full", device="cpu")
    part = train(cfg, progress=False, ckpt_dir=tmp_path / "res", device="cpu", stop_after_steps=19)
    assert math.isnan(part.val_loss) and (tmp_path / "res" / full.key / "last.pt").exists()
    resumed = train(cfg, progress=False, ckpt_dir=tmp_path / "res", device="cpu")
    assert resumed.val_loss == full.val_loss
    assert resumed.curve == full.curve
    assert not (tmp_path / "res" / full.key / "last.pt").exists()


class _SetAfter:
    """A stop flag that turns on at its (k+1)-th check (one check per training step)."""

    def __init__(self, k: int):
        self.k = k

    def is_set(self) -> bool:
        self.k -= 1
        return self.k < 0


def test_stop_request_saves_resume_point_and_stays_running(tmp_path):
    """A graceful stop (what sweep workers do on SIGTERM): resume point at a step boundary,
    row 'running' not 'failed', and the resumed run equals an uninterrupted one."""
    from explorer.train import store
    from explorer.train.trainer import RunInterrupted, set_stop_event
    cfg = tiny(tokens=8192, quant=QuantConfig(fmt="e2m3", block=16))
    full = train(cfg, progress=False, ckpt_dir=tmp_path / "full", device="cpu")
    db = tmp_path / "runs.db"
    set_stop_event(_SetAfter(23))
    try:
        with pytest.raises(RunInterrupted):
            train(cfg, db=db, progress=False, device="cpu")
    finally:
        set_stop_event(None)
    last = torch.load(tmp_path / "runs.db.ckpt" / full.key / "last.pt", weights_only=True)
    assert last["step"] == 23 and last["cpu_s"] > 0
    assert store.get_run(db, full.key)["status"] == "running"
    resumed = train(cfg, db=db, progress=False, device="cpu")
    assert resumed.val_loss == full.val_loss and resumed.curve == full.curve
    row = store.load_runs(db)[0]
    assert row["status"] == "finished" and row["env"]["cpu_s"] > 0
    with pytest.raises(TypeError, match="is_set"):
        set_stop_event(object())


COMMON = ["--layers", "1", "--d-model", "32", "--tokens", "24576", "--seq-len", "32",
          "--batch-size", "8", "--eval-tokens", "4096", "--max-bytes", "262144", "--threads", "1",
          "--device", "cpu", "--no-progress", "--json"]


def test_cli_train_learns_persists_and_does_not_repeat(tmp_path, capsys):
    db = str(tmp_path / "runs.db")
    rc, out, _ = run_cli(capsys, "train", *COMMON, "--format", "none", "--db", db)
    assert rc == 0
    r = json.loads(out.strip().splitlines()[-1])
    assert (r["params"] == 1 * (4 * 32 * 32 + 3 * 32 * 88) and r["tokens"] == 24576
            and not r["skipped"])
    assert r["val_loss"] < r["curve"][0][1] < math.log(256)
    rc, out, _ = run_cli(capsys, "train", *COMMON, "--format", "none", "--db", db)
    r2 = json.loads(out.strip().splitlines()[-1])
    assert r2["skipped"] and r2["key"] == r["key"] and r2["val_loss"] == r["val_loss"]
    from explorer.train.store import load_runs
    rows = load_runs(db)
    assert len(rows) == 1 and rows[0]["fmt"] == "none" and rows[0]["exp_bits"] is None
    assert rows[0]["env"]["corpus_sha256"] == load_corpus(SMALL).sha256


def test_cli_coarse_format_costs_loss(tmp_path, capsys):
    db = str(tmp_path / "runs.db")
    losses = {}
    # Activations (RMS-normalised, O(1)) cast without scaling: e2m0 keeps only {0, 1, 2, 4}.
    for fmt in ("none", "e4m3", "e2m0"):
        rc, out, _ = run_cli(capsys, "train", *COMMON, "--format", fmt, "--block", "none",
                             "--targets", "fwd_x", "--db", db)
        assert rc == 0
        losses[fmt] = json.loads(out.strip().splitlines()[-1])["val_loss"]
    assert losses["e2m0"] > losses["none"] + 0.1          # 3-bit GEMM inputs cost loss
    assert abs(losses["e4m3"] - losses["none"]) < (losses["e2m0"] - losses["none"]) / 2
    from explorer.train.store import load_runs
    rows = {r["fmt"]: r for r in load_runs(db)}
    assert (rows["e4m3"]["exp_bits"], rows["e4m3"]["man_bits"]) == (4, 3)
    assert rows["e2m0"]["targets"] == "fwd_x" and rows["e2m0"]["block"] is None


def test_cli_bad_input_exit_2(capsys):
    rc, _, err = run_cli(capsys, "train", *COMMON, "--format", "e9q9")
    assert rc == 2 and "e9q9" in err and "Traceback" not in err
    rc, _, err = run_cli(capsys, "train", *COMMON, "--format", "e2m3", "--targets", "nope")
    assert rc == 2 and "targets" in err
    rc, _, err = run_cli(capsys, "train", *COMMON, "--format", "none", "--ptq", "e2m1")
    assert rc == 2 and "--db" in err


def test_ptq_records_degradation(tmp_path, capsys):
    db = str(tmp_path / "runs.db")
    rc, out, _ = run_cli(capsys, "train", *COMMON, "--format", "none", "--db", db,
                         "--ptq", "e1m0,e4m3", "--ptq-block", "none")
    assert rc == 0
    rows = json.loads(out.strip().splitlines()[-1])["ptq"]
    assert {r["ckpt_tokens"] for r in rows} == {6144, 12288, 24576}
    by = {(r["ckpt_tokens"], r["fmt"]): r for r in rows}
    for t in (6144, 12288, 24576):
        coarse, fine = by[(t, "e1m0")], by[(t, "e4m3")]
        assert coarse["val_loss_after"] - coarse["val_loss_before"] > \
            abs(fine["val_loss_after"] - fine["val_loss_before"])
        assert coarse["bits"] == 2 and fine["bits"] == 8


def test_gptq_beats_rtn_on_layer_output_error():
    from explorer.train.ptq import PTQSpec, _quantize_gptq, _quantize_rtn
    torch.manual_seed(3)
    X = torch.randn(512, 32) @ torch.randn(32, 32) * 0.5       # correlated inputs
    W = torch.randn(16, 32)
    spec = PTQSpec("e2m1", None, "gptq")
    q_rtn = _quantize_rtn(W, spec)
    q_gptq = _quantize_gptq(W, X.double().t() @ X.double(), spec)
    err = lambda Q: float(((X @ W.t() - X @ Q.t()) ** 2).sum())   # noqa: E731
    assert err(q_gptq) < 0.9 * err(q_rtn)
    el_vals = set((q_gptq.abs().unique()).tolist())
    assert el_vals <= {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}     # e2m1 values


def test_block_scaled_operands_run_along_the_reduction_axis():
    from fpformat import BlockFormat, get_format
    from fpformat.torch import quantize_values
    torch.manual_seed(4)
    bf = BlockFormat(element=get_format("e2m1"), block_size=8, axis=-1, scale_format=None,
                     scale_rule="amax")
    base = nn.Linear(16, 24, bias=False)
    x = torch.randn(40, 16, requires_grad=True)
    gy = torch.randn(40, 24)
    q = QuantLinear.from_linear(base, QuantConfig(fmt="e2m1", block=8))   # default targets
    q(x).backward(gy)
    W, X = base.weight.detach(), x.detach()
    # W along in
    torch.testing.assert_close(q(X), X @ quantize_values(W, bf).t())
    # W along out
    torch.testing.assert_close(x.grad, gy @ quantize_values(W.t().contiguous(), bf).t())
    torch.testing.assert_close(base.weight.grad,
                               gy.t() @ quantize_values(X.t().contiguous(), bf).t())


def test_emulated_accumulator_layer_matches_exact_when_wide_and_differs_when_narrow():
    """QuantLinear with an accumulator runs its GEMMs through fpformat.gemm: a float32-like
    accumulator reproduces torch's GEMM closely, a 10-bit-mantissa truncating one does not."""
    import torch

    from explorer.train.qlinear import QuantConfig, QuantLinear
    torch.manual_seed(0)
    x = torch.randn(8, 64, dtype=torch.float64, requires_grad=True)
    plain = torch.nn.Linear(64, 16, dtype=torch.float64)
    q = dict(fmt="e4m3", block=None, targets="all")      # exact products need format inputs
    ref = QuantLinear.from_linear(plain, QuantConfig(**q))(x)
    wide = QuantLinear.from_linear(plain, QuantConfig(**q, accumulator="float32"))
    narrow = QuantLinear.from_linear(plain, QuantConfig(**q, accumulator="e5m4/rtz"))
    yw, yn = wide(x), narrow(x)
    assert torch.allclose(yw, ref, rtol=1e-5, atol=1e-5)
    assert (yn - ref).abs().max() > 1e-3
    yn.sum().backward()                                   # backward GEMMs emulated too
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert QuantConfig(accumulator="e8m13/rtz").to_dict()["accumulator"] == "e8m13/rtz"
    assert "accumulator" not in QuantConfig().to_dict()
    with pytest.raises(ValueError):
        QuantConfig(accumulator="e8m13/bogus")


def test_learning_rate_schedule_known_values():
    """Linear warmup over the first warmup_frac of the steps (step 0 already at peak/warm),
    then a cosine from the peak to min_lr_frac * peak."""
    cfg = tiny(tokens=32 * 8 * 100, lr=1e-3, warmup_frac=0.1, min_lr_frac=0.1)
    assert cfg.steps == 100
    assert cfg.lr_at(0) == pytest.approx(1e-4)
    assert cfg.lr_at(4) == pytest.approx(5e-4)
    assert cfg.lr_at(9) == pytest.approx(1e-3)            # the last warmup step reaches the peak
    assert cfg.lr_at(10) == pytest.approx(1e-3)           # cosine at t = 0
    assert cfg.lr_at(55) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))   # t = 1/2
    assert cfg.lr_at(100) == pytest.approx(1e-4)          # t = 1: the floor
    assert tiny(tokens=32 * 8 * 100, lr=1e-3, warmup_frac=0.0).lr_at(0) == pytest.approx(1e-3)


def test_accumulator_runs_every_gemm_exactly_as_emulated_mm():
    """With an emulated accumulator the forward GEMM and both backward GEMMs equal
    fpformat.gemm_torch.emulated_mm bit for bit (a coarse accumulator makes a bypass visible)."""
    from explorer.accumulation import parse_accumulator
    from fpformat.gemm_torch import emulated_mm
    torch.manual_seed(3)
    spec = "e5m4/rtz"
    acc = parse_accumulator(spec)
    q = QuantLinear.from_linear(nn.Linear(24, 8), QuantConfig(fmt=None, accumulator=spec))
    x = torch.randn(6, 24, requires_grad=True)
    gy = torch.randn(6, 8)
    y = q(x)
    y.backward(gy)
    w = q.weight.detach()
    assert torch.equal(y.detach(), emulated_mm(x.detach(), w.t(), acc) + q.bias.detach())
    assert torch.equal(x.grad, emulated_mm(gy, w, acc))
    assert torch.equal(q.weight.grad, emulated_mm(gy.t(), x.detach(), acc))
    assert not torch.equal(x.grad, gy @ w)                # the accumulator is visible


def test_matrix_unit_runs_every_gemm_exactly_as_mma():
    """With a matrix unit the forward GEMM and both backward GEMMs equal fpformat.gemm.mma (with
    quantize_inputs=True) bit for bit; a coarse unit makes a bypass visible."""
    import numpy as np

    from fpformat.gemm import mma
    from fpformat.gemm_torch import unit_mm
    torch.manual_seed(5)
    spec = "fma4/x-12/rtz"                                 # an 11-bit window: visible
    q = QuantLinear.from_linear(nn.Linear(24, 8), QuantConfig(fmt=None, matrix_unit=spec))
    x = torch.randn(6, 24, requires_grad=True)
    gy = torch.randn(6, 8)
    y = q(x)
    y.backward(gy)
    w = q.weight.detach()

    def ref(a, b):
        d = mma(a.double().numpy(), b.double().numpy(), 0.0, spec, "float16", "float32",
                quantize_inputs=True)
        return torch.from_numpy(np.ascontiguousarray(d))

    assert torch.equal(y.detach(), ref(x.detach(), w.t()) + q.bias.detach())
    assert torch.equal(x.grad, ref(gy, w))
    assert torch.equal(q.weight.grad, ref(gy.t(), x.detach()))
    assert torch.equal(x.grad, unit_mm(gy, w, spec, "float16"))
    assert x.grad.dtype == torch.float32
    assert not torch.equal(x.grad, gy @ w)                # the unit is visible
    with torch.no_grad():                                 # evaluation: the same forward GEMM
        assert torch.equal(q(x), y)


def test_matrix_unit_config_is_validated_and_keyed():
    a = QuantConfig(matrix_unit="H100").to_dict()
    assert a["matrix_unit"] == "h100" and a["matrix_unit_format"] == "float16"
    b = QuantConfig(matrix_unit="b200", matrix_unit_format="float8_e4m3fn")
    assert b.active and QuantConfig.from_dict(b.to_dict()) == b
    assert "matrix_unit" not in QuantConfig().to_dict()
    assert tiny(quant=QuantConfig(matrix_unit="h100")).to_dict() != \
        tiny(quant=QuantConfig(matrix_unit="a100")).to_dict()
    with pytest.raises(ValueError, match="accumulator.*matrix_unit"):
        QuantConfig(accumulator="e8m13/rtz", matrix_unit="h100")
    with pytest.raises(ValueError, match="matrix_unit"):
        QuantConfig(matrix_unit="tpu")
    with pytest.raises(ValueError, match="matrix_unit"):
        QuantConfig(matrix_unit="v100", matrix_unit_format="bfloat16")   # no such preset
    with pytest.raises(ValueError, match="matrix_unit"):
        QuantConfig(matrix_unit="fma4/x0/rtz", matrix_unit_format="float32")  # too wide
    with pytest.raises(ValueError, match="matrix_unit"):
        QuantConfig(matrix_unit="mi300x", matrix_unit_format="float8_e4m3fn")   # FNUZ FP8 only


def test_cli_train_with_a_matrix_unit(tmp_path, capsys):
    db = str(tmp_path / "runs.db")
    small = [a if a != "24576" else "6144" for a in COMMON]
    rc, out, err = run_cli(capsys, "train", *small, "--format", "none", "--matrix-unit", "h100",
                           "--db", db)
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["matrix_unit"] == "h100" and r["matrix_unit_format"] == "float16"
    assert math.isfinite(r["val_loss"]) and r["val_loss"] < math.log(256)
    rc, out, _ = run_cli(capsys, "train", *small, "--format", "none", "--db", db)
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["key"] != r["key"]
    rc, _, err = run_cli(capsys, "train", *small, "--format", "none", "--matrix-unit", "h100",
                         "--accumulator", "e8m13/rtz")
    assert rc == 2 and "accumulator" in err and "matrix_unit" in err and "Traceback" not in err
    rc, _, err = run_cli(capsys, "train", *small, "--format", "none",
                         "--matrix-unit-format", "bfloat16")
    assert rc == 2 and "--matrix-unit" in err
