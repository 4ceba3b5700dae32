"""Training recipes (issue 16): each preset's quantizers held to a plain reference.

* the random Hadamard transform: Sylvester matrix, orthogonality, the fast block rotation against
  the dense block-diagonal matrix, the fast Walsh-Hadamard transform against its butterflies
  written out in numpy (``rtol=0, atol=0``), and the exact product unchanged;
* every GEMM input of every preset, captured at the GEMM, against the reference built from
  fpformat's quantizers directly: block direction (each GEMM's reduction axis), tiles, copies
  (own / requantize / reuse), transforms, stochastic-rounding seeds -- ``rtol=0, atol=0``;
* delayed scaling against a numpy float32 reference over many steps, and its state across a
  checkpoint and resume;
* recipe files: the presets, user TOML, and the errors that name the table and key.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.train import hadamard, qlinear
from explorer.train.data import CorpusSpec
from explorer.train.hadamard import (
    hadamard_matrix,
    random_signs,
    rotate,
    rotation,
    sylvester,
)
from explorer.train.qlinear import (
    COPY_SOURCES,
    GEMMS,
    TARGETS,
    DelayedScaling,
    OperandSpec,
    QuantConfig,
    QuantLinear,
    load_quant_state,
    quant_state,
)
from explorer.train.recipes import get_recipe, parse_recipe, preset_names, presets
from explorer.train.trainer import TrainConfig, train
from fpformat import get_format
from fpformat.gemm import mma
from fpformat.kernels import sr_random_u64
from fpformat.torch import quantize_values
from fpformat.units import get_unit

pytestmark = pytest.mark.usefixtures("train_env")
PRESETS = ("deepseek-v3", "fp8-delayed", "mxfp4-sr", "sun2025", "te-mxfp8", "te-nvfp4")


# --- the random Hadamard transform ---------------------------------------------------------


@pytest.mark.parametrize("b", [2, 4, 16, 64, 256])
def test_sylvester_rows_are_orthogonal_and_signs_are_seeded(b):
    h = sylvester(b)
    assert torch.equal(h @ h.t(), b * torch.eye(b, dtype=torch.float64))
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    s = random_signs(b, 7)
    assert torch.equal(s, random_signs(b, 7)) and set(s.unique().tolist()) <= {-1.0, 1.0}
    assert not torch.equal(s, random_signs(b, 8)) or b == 2
    r = hadamard_matrix(b, 7)
    assert torch.allclose(r @ r.t(), torch.eye(b, dtype=torch.float64), rtol=0, atol=1e-14)


def _dense(k: int, r: torch.Tensor) -> torch.Tensor:
    """The K x K block-diagonal matrix :func:`rotate` multiplies by (tail: powers of two)."""
    b = r.shape[0]
    out = torch.zeros((k, k), dtype=torch.float64)
    pos, n = 0, b
    while pos < k:
        while n > k - pos:
            n //= 2
        blk = torch.ones((1, 1), dtype=torch.float64) if n == 1 else \
            r[:n, :n].double() * math.sqrt(b / n)
        out[pos:pos + n, pos:pos + n] = blk
        pos += n
    return out


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 200), rows=st.integers(1, 5), logb=st.integers(1, 6),
       seed=st.integers(0, 2**32))
def test_rotation_is_the_block_diagonal_orthogonal_matrix(k, rows, logb, seed):
    r = hadamard_matrix(2 ** logb, seed)
    t = torch.from_numpy(np.random.default_rng(seed).standard_normal((rows, k)))
    dense = _dense(k, r)
    assert torch.allclose(dense @ dense.t(), torch.eye(k, dtype=torch.float64), atol=1e-13)
    assert torch.allclose(rotate(t, r, 1), t @ dense, rtol=0, atol=1e-12)
    assert torch.allclose(rotate(t.t(), r, 0), (t @ dense).t(), rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 8), k=st.integers(1, 130), n=st.integers(1, 8), seed=st.integers(0, 99))
def test_rotating_both_operands_leaves_the_product(m, k, n, seed):
    g = np.random.default_rng(seed)
    a = torch.from_numpy(g.standard_normal((m, k)))
    b = torch.from_numpy(g.standard_normal((k, n)))
    r = hadamard_matrix(16, seed)
    assert torch.allclose(rotate(a, r, 1) @ rotate(b, r, 0), a @ b, rtol=0, atol=1e-11)


def _butterflies_reference(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``H_b (weights * x)`` down the columns of float32 ``x`` (rows a multiple of ``b``),
    stage by stage in numpy float32: ``(u, v) -> (u + v, u - v)`` at distances 1, 2, 4, ..."""
    b = weights.size
    rows, cols = x.shape
    y = x * np.tile(weights, rows // b)[:, None]
    h = 1
    while h < b:
        y = y.reshape(rows // (2 * h), 2, h, cols)
        y = np.stack([y[:, 0] + y[:, 1], y[:, 0] - y[:, 1]], axis=1)
        h *= 2
    return y.reshape(rows, cols)


@pytest.mark.parametrize("b", [2, 4, 8, 16, 32, 64, 128, 256])
def test_fast_transform_is_the_butterflies(b):
    """A :class:`Rotation` on a float32 CPU tensor down the columns: every piece (the whole
    blocks, then the tail's powers of two) equals the butterflies in numpy bit for bit (strips
    of 64 columns and a narrower last one), a tail piece's weights its matrix corner's first
    column, so that ``corner = diag(weights) H`` exactly; a last single row stays as it is
    (columns by vectors of 16 and through the tile for the rest, rows of 512 through the tile
    for blocks over 16).  Along the rows every piece comes out as the transposed tensor's fast
    transform, transposed, bit for bit (vectors of 8 to 64, longer blocks 64 at a time then
    in place, pieces of 2 and 4 by butterflies)."""
    r = rotation(b, 11)
    g = np.random.default_rng(b)
    for rows, cols in ((b, 1), (3 * b, 7), (2 * b, 130), (2 * b + 5, 65), (b, 77),
                       (3 * b - 1, 9), (2 * b + 1, 48),  # the tail: every power of two below b
                       (b, 512)):                         # rows a multiple of 512 long
        x = torch.from_numpy((g.standard_normal((rows, cols)) *
                              np.exp2(g.integers(-20, 20, (rows, cols)))).astype(np.float32))
        got = rotate(x, r, 0)
        rows_fast = rotate(x.t(), r, 1)
        for lo, n, c in hadamard._pieces(rows, b):
            if c == 1:
                assert torch.equal(got[lo:lo + n], x[lo:lo + n])
                continue
            corner = r.matrix if c == b else r.matrix[:c, :c] * math.sqrt(b / c)
            weights = corner[:, 0].numpy()
            assert torch.equal(corner, torch.from_numpy(weights)[:, None] *
                               sylvester(c).to(torch.float32))
            want = _butterflies_reference(x[lo:lo + n].numpy(), weights)
            assert np.array_equal(got[lo:lo + n].numpy().view(np.uint32), want.view(np.uint32))
            assert torch.equal(rows_fast[:, lo:lo + n], got[lo:lo + n].t())
        dense = rotate(x.double(), hadamard_matrix(b, 11), 0)
        assert torch.allclose(got.double(), dense, rtol=1e-5, atol=1e-6 * float(x.abs().max()))


@pytest.mark.parametrize("b", [16, 64])
def test_fast_transform_one_thread_twins(b):
    """The one-thread compilations of both butterfly loops give the threaded ones' bits (a
    tensor of a training step's size, with several strips per run)."""
    w = rotation(b, 5).weights
    x = np.random.default_rng(b).standard_normal((2048, 176)).astype(np.float32)
    xf = x.reshape(-1)
    outs = [np.empty_like(xf) for _ in range(4)]
    columns, rows = hadamard._fast_plan(b, 2048, 176, 0), hadamard._fast_plan(b, 2048, 176, 1)
    for out, kernel, plan, threads in (
            (outs[0], hadamard._fwht_down_columns, columns, 2),
            (outs[1], hadamard._fwht_down_columns_serial, columns, 1),
            (outs[2], hadamard._fwht_along_rows, rows, 2),
            (outs[3], hadamard._fwht_along_rows_serial, rows, 1)):
        kernel(xf, w, plan.blocks, plan.factors, out, plan.cols, np.int64(threads))
    assert np.array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))
    assert np.array_equal(outs[2].view(np.uint32), outs[3].view(np.uint32))


def test_transform_alone_keeps_the_layer_function():
    """Hadamard transforms with nothing quantized: output and gradients as nn.Linear's (float32
    rounding only) -- so the rotation sits on both operands of each GEMM."""
    torch.manual_seed(0)
    cfg = QuantConfig(transforms=(("fwd", 16, "fixed"), ("dgrad", 32, "step"),
                                  ("wgrad", 64, "fixed")))
    lin = torch.nn.Linear(48, 40)
    q = QuantLinear.from_linear(lin, cfg)
    x = torch.randn(100, 48, requires_grad=True)
    xq = x.detach().clone().requires_grad_(True)
    gy = torch.randn(100, 40)
    lin(x).backward(gy)
    w_grad = lin.weight.grad.clone()
    lin.weight.grad = None
    yq = q(xq)
    yq.backward(gy)
    assert torch.allclose(yq, lin(x), atol=1e-5)
    assert torch.allclose(xq.grad, x.grad, atol=1e-5)
    assert torch.allclose(q.weight.grad, w_grad, atol=1e-4)


# --- every GEMM input of every preset, against the reference -------------------------------


def _q(spec: OperandSpec | None, t: torch.Tensor, axis: int, seed: int) -> torch.Tensor:
    """fpformat's quantizer with blocks along ``axis``; for axis 0 the transposed tensor
    quantized along its last axis, stochastic rounding with each element's bits from its flat
    index in ``t`` (fpformat's seeded bits given as ``random_bits``: the plain numpy path)."""
    if spec is None:
        return t
    f, sd = spec.build(), seed if spec.rounding == "sr" else None
    if axis == 1:
        return quantize_values(t.contiguous(), f, spec.rounding, True, sd)
    tt = t.t().contiguous().numpy()
    if sd is None:
        return torch.from_numpy(f.quantize(tt, spec.rounding, True)).t()
    index = np.arange(t.numel(), dtype=np.uint64).reshape(t.shape)
    bits = ~sr_random_u64(sd, index)          # random_bits r gives the core u = 2**64 - 1 - r
    return torch.from_numpy(f.quantize(tt, "sr", True, random_bits=bits.T.copy())).t()


def _reference(qcfg: QuantConfig, x, w, gy, layer_id: int, step: int):
    """The six GEMM inputs a recipe prescribes, written out plainly: ``[(a, b)]`` of the
    forward, input-gradient and weight-gradient GEMMs, each as ``a @ b``."""
    seeds = qlinear._Seeds(qcfg.seed, layer_id, step)
    rot = {}
    for g, b, signs in qcfg.transforms:
        rot[g] = qlinear._rotation(b, qcfg.seed, GEMMS.index(g), step if signs == "step" else -1)
    spec = {t: qcfg.spec(t) for t in TARGETS}

    def own(t, tensor, axis, gemm):
        return _q(spec[t], rotate(tensor, rot.get(gemm), axis), axis, getattr(seeds, t))

    def backward(t, tensor, source_copy, gemm):
        s = spec[t]
        if s is not None and s.copy == "reuse":
            return source_copy
        if s is not None and s.copy == "requantize":
            return _q(s, source_copy, 0, getattr(seeds, t))
        return own(t, tensor, 0, gemm)

    qx, qw = own("fwd_x", x, 1, "fwd"), own("fwd_w", w, 1, "fwd")
    gd = own("dgrad_dy", gy, 1, "dgrad")
    wd = backward("dgrad_w", w, qw, "dgrad")
    gw = backward("wgrad_dy", gy, gd, "wgrad")
    xw = backward("wgrad_x", x, qx, "wgrad")
    return [(qx, qw.t()), (gd, wd), (gw.t(), xw)]


def _captured(monkeypatch, qcfg: QuantConfig, x, w, gy, layer_id: int, step: int):
    seen = []
    real = qlinear._mm

    def record(a, b, acc, bias=None):
        seen.append((a.clone(), b.clone()))
        return real(a, b, acc, bias)

    monkeypatch.setattr(qlinear, "_mm", record)
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    layer = QuantLinear.from_linear(lin, qcfg, layer_id=layer_id)
    layer.step = step
    xr = x.clone().requires_grad_(True)
    layer(xr).backward(gy)
    monkeypatch.undo()
    return seen


@pytest.mark.parametrize("name", PRESETS)
def test_every_gemm_input_of_a_preset_equals_the_reference(monkeypatch, name):
    """Tokens 160 (a ragged 1x128 / 128x128 tile and Hadamard tail), 128 in-features, 96 out."""
    recipe = get_recipe(name)
    # The matrix unit sums the products; the inputs are what is compared here.
    qcfg = recipe.quantizers_only().quant_config(seed=11)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(160, 128, generator=g) * torch.logspace(-2, 2, 128)
    w = torch.randn(96, 128, generator=g) * 0.1
    gy = torch.randn(160, 96, generator=g) * 1e-3
    got = _captured(monkeypatch, qcfg, x, w, gy, layer_id=4, step=9)
    want = _reference(qcfg, x, w, gy, layer_id=4, step=9)
    assert len(got) == 3
    for gemm, (a, b), (ra, rb) in zip(GEMMS, got, want):
        torch.testing.assert_close(a, ra, rtol=0, atol=0, msg=f"{name} {gemm} first input")
        torch.testing.assert_close(b, rb, rtol=0, atol=0, msg=f"{name} {gemm} second input")


class _ThreeReaders(torch.nn.Module):
    """Three linear layers reading one activation, as q, k and v do."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.a, self.b, self.c = (torch.nn.Linear(128, 96, bias=False) for _ in range(3))

    def forward(self, x):
        return self.a(x) + 2 * self.b(x) + 3 * self.c(x)


def _three_readers_step(monkeypatch, name: str, shared: bool):
    """Output, input gradient and weight gradients of :class:`_ThreeReaders` under preset
    ``name``, and how many quantizer and rotation calls the step made."""
    qcfg = get_recipe(name).quantizers_only().quant_config(seed=11)
    model = _ThreeReaders(0)
    qlinear.quantize_model(model, qcfg)
    for m in (model.a, model.b, model.c):
        m.step = 9
    calls = {"quantize": 0, "rotate": 0}

    def counted(fn, kind):
        def wrapper(*args, **kw):
            if kind == "quantize" or args[1] is not None:    # rotate(t, None, axis): none
                calls[kind] += 1
            return fn(*args, **kw)
        return wrapper

    monkeypatch.setattr(qlinear, "SHARED_TARGETS", qlinear.SHARED_TARGETS if shared else ())
    # float32 data: an operand's quantizer, or delayed scaling's (fused or not), never both
    for attr, kind in (("quantize_values", "quantize"), ("quantize_scaled_values", "quantize"),
                       ("rotate", "rotate")):
        monkeypatch.setattr(qlinear, attr, counted(getattr(qlinear, attr), kind))
    monkeypatch.setattr(qlinear._Operand, "__call__",
                        counted(qlinear._Operand.__call__, "quantize"))
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(160, 128, generator=g) * torch.logspace(-2, 2, 128)).requires_grad_(True)
    y = model(x)
    y.backward(torch.randn(160, 96, generator=g) * 1e-3)
    monkeypatch.undo()
    return [y, x.grad] + [m.weight.grad for m in (model.a, model.b, model.c)], calls


#: Quantizer and rotation calls saved when three layers read one activation: its copies are
#: made once instead of three times, except stochastically rounded or delayed-scaled ones.
SHARED_SAVINGS = {"deepseek-v3": (4, 0), "fp8-delayed": (0, 0), "mxfp4-sr": (0, 2),
                  "sun2025": (2, 0), "te-mxfp8": (4, 0), "te-nvfp4": (4, 2)}


@pytest.mark.parametrize("name", PRESETS)
def test_layers_reading_one_activation_share_its_copies_bit_for_bit(monkeypatch, name):
    """quantize_model's layers rotate and quantize an activation they all read once (q, k and
    v; gate and up): the step's values equal those of layers that each make their own copies
    (which the reference test above holds to fpformat), stochastic rounding (each layer's own
    seed) and delayed scaling (each layer's own scale) included, which are not shared."""
    own, own_calls = _three_readers_step(monkeypatch, name, shared=False)
    got, got_calls = _three_readers_step(monkeypatch, name, shared=True)
    for what, a, b in zip(("output", "x.grad", "a.grad", "b.grad", "c.grad"), got, own):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name}: {what}")
    saved = (own_calls["quantize"] - got_calls["quantize"],
             own_calls["rotate"] - got_calls["rotate"])
    assert saved == SHARED_SAVINGS[name], (own_calls, got_calls)


@pytest.mark.parametrize("name", PRESETS)
def test_only_stochastically_rounded_inputs_derive_a_seed(monkeypatch, name):
    """A layer derives the seed of a GEMM input (a hash) only for an input that rounds
    stochastically: once per layer and step, forward and backward sharing it."""
    derived = []
    seed_of = qlinear._seed

    def counted(base, layer, target, step):
        if layer >= 0:                                   # -1: a Hadamard rotation's signs
            derived.append((layer, qlinear.TARGETS[target]))
        return seed_of(base, layer, target, step)

    monkeypatch.setattr(qlinear, "_seed", counted)
    _three_readers_step(monkeypatch, name, shared=True)
    qcfg = get_recipe(name).quantizers_only().quant_config(seed=11)
    sr = {t for t in qlinear.TARGETS if (s := qcfg.spec(t)) is not None and s.rounding == "sr"}
    assert sorted(derived) == sorted((layer, t) for layer in (0, 1, 2) for t in sr)


def test_a_shared_copy_is_not_served_after_its_tensor_changed():
    """An in-place change between two readers advances the tensor's version: the second
    reader quantizes the new values; another tensor at another address is another source;
    under ``torch.inference_mode`` (tensors without a version counter) nothing is shared."""
    qcfg = get_recipe("te-mxfp8").quant_config()
    model = _ThreeReaders(0)
    qlinear.quantize_model(model, qcfg)
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.a(x)
        x.mul_(3.0)
        got = model.b(x)
        alone = QuantLinear.from_linear(torch.nn.Linear(128, 96, bias=False), qcfg)
        alone.weight = model.b.weight
        torch.testing.assert_close(got, alone(x), rtol=0, atol=0)
        other = x * 0.5                                   # same shape, another tensor
        got = model.c(other)
        shared = model.a._shared
        assert shared is model.b._shared is model.c._shared
        assert len(shared._held) <= shared.SOURCES
        model.c._shared = qlinear._SharedInputs()         # c's copies of its own
        torch.testing.assert_close(got, model.c(other), rtol=0, atol=0)
    with torch.inference_mode():                  # no version counter: nothing is shared
        torch.testing.assert_close(model(x.clone()), model(x), rtol=0, atol=0)


def test_block_direction_is_each_gemms_reduction_axis():
    """te-mxfp8's weight-gradient input X has its 1x32 blocks along the tokens: it equals the
    quantization of X^T along its last axis and differs from the forward copy (blocks along
    the features) -- the reference above would catch a swapped axis."""
    spec = get_recipe("te-mxfp8").operands.wgrad_x
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, 64)
    along_tokens = _q(spec, x, 0, 0)
    along_features = _q(spec, x, 1, 0)
    assert torch.equal(along_tokens, quantize_values(x.t().contiguous(), spec.build()).t())
    assert not torch.equal(along_tokens, along_features)
    op = qlinear._Operand(spec)                   # the layer's own: blocks down the columns
    assert torch.equal(op(x, 0, None), along_tokens)
    assert torch.equal(op(x, 1, None), along_features)


def test_two_d_weight_tiles_serve_both_gemms_and_requantize_differs_from_reuse():
    """A 16x16 (NVFP4) or 128x128 (DeepSeek) weight tile quantizes W and W^T alike, so reusing
    the forward copy in the input-gradient GEMM is exact; DeepSeek's 1x128 -> 128x1
    requantization of X is not the forward copy."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, 80, generator=g)
    for name in ("te-nvfp4", "deepseek-v3"):
        spec = get_recipe(name).operands.dgrad_w
        assert spec.copy == "reuse"
        torch.testing.assert_close(_q(spec, w, 0, 0), _q(spec, w, 1, 0), rtol=0, atol=0)
    spec = get_recipe("deepseek-v3").operands.wgrad_x
    x = torch.randn(256, 128, generator=g) * torch.logspace(-2, 2, 128)
    fwd = _q(get_recipe("deepseek-v3").operands.fwd_x, x, 1, 0)
    assert spec.copy == "requantize" and not torch.equal(_q(spec, fwd, 0, 0), fwd)
    assert not torch.equal(_q(spec, fwd, 0, 0), _q(spec, x, 0, 0))


def test_deepseek_promotes_every_128_products_and_te_nvfp4_rotates_wgrad_only():
    layer = QuantLinear(32, 32, qcfg=get_recipe("deepseek-v3").quant_config())
    acc = layer._acc
    assert acc.promotion == 128 and acc.in_format == get_format("float8_e4m3fn")
    assert acc.unit == get_unit("h100", "float8_e4m3fn") and acc.unit.result_bits == 13
    nv = get_recipe("te-nvfp4")
    assert nv.transforms == (("wgrad", 16, "fixed"),)
    assert nv.operands.dgrad_dy.rounding == nv.operands.wgrad_dy.rounding == "sr"
    assert {nv.operands.fwd_x.rounding, nv.operands.fwd_w.rounding,
            nv.operands.wgrad_x.rounding} == {"rne"}


def _encoded(spec: OperandSpec, t: torch.Tensor):
    """The element values and scales of ``t`` quantized by ``spec`` along its last axis."""
    f = spec.build()
    enc = f.encode(t.contiguous().numpy(), rounding=spec.rounding, saturate=True)
    return f.element.decode(enc.codes), np.asarray(enc.scales, np.float64)


def test_deepseek_gemms_run_through_the_fp8_unit_with_the_block_scales_at_each_promotion():
    """The three GEMMs of a deepseek-v3 layer against fpformat.gemm.mma fed with each input's
    E4M3 elements and float32 scales, encoded here from the same tensors (256 tokens: two
    promotions in the weight-gradient GEMM; 256 in, 128 out): ``rtol=0, atol=0``."""
    ops = get_recipe("deepseek-v3").operands
    g = torch.Generator().manual_seed(5)
    x = torch.randn(256, 256, generator=g) * torch.logspace(-2, 2, 256)
    w = torch.randn(128, 256, generator=g) * 0.1
    gy = torch.randn(256, 128, generator=g) * 1e-3
    lin = torch.nn.Linear(256, 128, bias=False)
    lin.weight.data = w.clone()
    layer = QuantLinear.from_linear(lin, get_recipe("deepseek-v3").quant_config())
    xr = x.clone().requires_grad_(True)
    y = layer(xr)
    y.backward(gy)

    def unit(a, sa, b, sb):
        return torch.from_numpy(mma(a, b, 0.0, "h100", "float8_e4m3fn", a_scale=sa, b_scale=sb,
                                    block_k=128))

    ex, sx = _encoded(ops.fwd_x, x)                  # (256, 256), scales (256 tokens, 2)
    ew, sw = _encoded(ops.fwd_w, w)                  # 128x128 tiles: scales (1, 2)
    want_y = unit(ex, sx, ew.T, np.repeat(sw.T, 128, axis=1))
    edy, sdy = _encoded(ops.dgrad_dy, gy)            # along out: scales (256, 1)
    want_gx = unit(edy, sdy, ew, np.repeat(sw, 128, axis=1))
    edyt, sdyt = _encoded(ops.wgrad_dy, gy.t())      # along tokens: scales (128, 2)
    qx = torch.from_numpy(ops.fwd_x.build().quantize(x.numpy(), saturate=True))
    ext, sxt = _encoded(ops.wgrad_x, qx.t())         # the forward copy, along tokens
    want_gw = unit(edyt, sdyt, ext.T, sxt.T)
    for got, want, what in ((y, want_y, "forward"), (xr.grad, want_gx, "input gradient"),
                            (layer.weight.grad, want_gw, "weight gradient")):
        torch.testing.assert_close(got.detach(), want.to(torch.float32), rtol=0, atol=0,
                                   msg=what)


@pytest.mark.parametrize("spec", [OperandSpec("float8_e4m3fn/1x128", None),
                                  OperandSpec("float8_e4m3fn/128x128", None),
                                  OperandSpec("nvfp4", None, "sr"), OperandSpec("e4m3", 32),
                                  OperandSpec("e2m1", None, "sr")], ids=lambda s: s.label())
@pytest.mark.parametrize("axis", [0, 1])
def test_factored_copies_are_the_quantizers_copies_bit_for_bit(spec, axis):
    op = qlinear._Operand(spec)
    t = torch.randn(96, 160, generator=torch.Generator().manual_seed(2)) * 3
    f = op.factors(t, axis, 7)
    torch.testing.assert_close(f.values, op(t, axis, 7), rtol=0, atol=0)
    prod = f.elements if f.scales is None else f.elements * f.scales
    torch.testing.assert_close(prod.to(torch.float32), f.values, rtol=0, atol=0)
    element = getattr(op.fmt, "element", op.fmt)          # the unit reads element values
    assert np.array_equal(element.quantize(f.elements.numpy()), f.elements.numpy())


@pytest.mark.parametrize("kwargs, message", [
    (dict(promotion=128), "promotion .128. needs a matrix_unit"),
    (dict(matrix_unit="h100", promotion=0), "promotion must be None or an int >= 1"),
    (dict(matrix_unit="h100", promotion=True), "promotion must be None or an int >= 1"),
    (dict(matrix_unit="h100", promotion=64, fmt="e4m3", block=32, targets="all"),
     "fwd_x: blocks of e4m3@32 are 32 long along the reduction axis, not a multiple of "
     "promotion .64."),
    (dict(matrix_unit="h100", promotion=32,
          overrides=(("fwd_w", OperandSpec("e4m3", "tensor", delayed=DelayedScaling())),)),
     "fwd_w: delayed scaling is not supported with promotion"),
    (dict(matrix_unit="h100", promotion=16, fmt="nvfp4", block=None, targets="all"),
     "fwd_x: nvfp4 has two-level scales"),
])
def test_promotion_errors_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantConfig(**kwargs)
    # Channel, tensor and unscaled inputs have one scale along the whole reduction axis; MX
    # blocks of 32 hold power-of-two scales.
    QuantConfig(fmt="e4m3", block="channel", targets="all", matrix_unit="h100", promotion=64)
    QuantConfig(fmt="e4m3", block=None, targets="all", matrix_unit="h100", promotion=64)
    QuantConfig(fmt="mxfp4", block=None, targets="all", matrix_unit="h100", promotion=32)


def test_a_reused_copy_needs_its_rows_to_span_a_promotion():
    """dgrad_w reusing the forward's 1x128 copy would read it down the columns, one scale per
    row: no promotion of 128 products shares one scale."""
    w = OperandSpec("float8_e4m3fn/1x128", None)
    with pytest.raises(ValueError, match="dgrad_w: blocks of .* are 1 long"):
        QuantConfig(overrides=(("fwd_w", w), ("dgrad_w", dataclasses.replace(w, copy="reuse"))),
                    matrix_unit="h100", matrix_unit_format="float8_e4m3fn", promotion=128)


# --- delayed scaling -----------------------------------------------------------------------


def _delayed_reference(xs, fmt, d: DelayedScaling):
    """Transformer Engine's delayed scaling in numpy float32: the scale of step t from the
    amaxes of steps t-history..t-1."""
    hist = np.zeros(d.history, np.float32)
    scale = np.float32(1)
    fmax = np.float32(fmt.max)
    out = []
    for x in xs:
        q = fmt.quantize(x.astype(np.float32) * scale, saturate=True).astype(np.float32)
        out.append(q * (np.float32(1) / scale))
        hist = np.roll(hist, 1)
        hist[0] = np.abs(x).max()
        a = hist.max() if d.reduce == "max" else hist[0]
        if np.isfinite(a) and a > 0:
            new = (fmax / a) / np.float32(2.0 ** d.margin)
            scale = np.float32(np.finfo(np.float32).max) if np.isinf(new) else new
    return out


@pytest.mark.parametrize("d", [DelayedScaling(3, "max", 0), DelayedScaling(4, "most_recent", 1),
                               DelayedScaling(1, "max", 2)])
@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "float8_e5m2"])
def test_delayed_scaling_equals_the_float32_reference(monkeypatch, d, fmt):
    spec = OperandSpec(fmt, "tensor", "rne", d)
    qcfg = QuantConfig(overrides=(("fwd_x", spec),))
    lin = torch.nn.Linear(16, 8, bias=False)
    layer = QuantLinear.from_linear(lin, qcfg)
    g = np.random.default_rng(5)
    # magnitudes that rise, fall, vanish (an all-zero step keeps the scale) and reach 1e-30
    mags = [1.0, 30.0, 0.5, 0.0, 2e3, 1e-30, 1e-2, 7.0, 7.0, 0.1]
    xs = [(g.standard_normal((12, 16)) * m).astype(np.float32) for m in mags]
    seen = []
    real = qlinear._mm
    monkeypatch.setattr(qlinear, "_mm", lambda a, b, acc, bias=None: seen.append(a.clone())
                        or real(a, b, acc, bias))
    for step, x in enumerate(xs):
        layer.step = step
        layer(torch.from_numpy(x).requires_grad_(True)).sum().backward()
    got = seen[0::3]                                    # the forward GEMM's first input
    for step, (a, r) in enumerate(zip(got, _delayed_reference(xs, get_format(fmt), d))):
        np.testing.assert_array_equal(a.numpy(), r, err_msg=f"step {step}")
    # evaluation reads the scale without recording an amax
    state = quant_state(layer)
    with torch.no_grad():
        layer(torch.from_numpy(xs[0]) * 100)
    assert all(torch.equal(v, quant_state(layer)[k]) for k, v in state.items())


@pytest.mark.parametrize("d", [DelayedScaling(3, "max", 0), DelayedScaling(2, "most_recent", 5)])
def test_delayed_state_updates_the_same_from_a_number_and_from_a_tensor(d):
    """The CPU update from the fused pass's amax (numpy float32 on the state's views) and the
    tensor update (any device) give the same history and scale, bit for bit, through zero,
    NaN, infinite, tiny (scale overflows to the largest float32) and ordinary amaxes."""
    from explorer.train.qlinear import _DelayedScale
    fmt = get_format("float8_e4m3fn")
    by_number, by_tensor = _DelayedScale(d, fmt), _DelayedScale(d, fmt)
    amaxes = [3.0, 0.0, 1e-38, 2e-45, float("nan"), 0.5, float("inf"), 448.0, 7.25, 1e30, 0.0,
              6e4, 1.5]
    for step, a in enumerate(amaxes):
        a32 = float(np.float32(a))
        by_number._record_value(a32)
        by_tensor._record(torch.tensor(a32, dtype=torch.float32))
        assert np.array_equal(by_number.history.numpy(), by_tensor.history.numpy(),
                              equal_nan=True), f"step {step}"
        assert by_number.scale.numpy().tobytes() == by_tensor.scale.numpy().tobytes(), \
            f"step {step}: {by_number.scale} != {by_tensor.scale}"
    assert by_number.scale.dtype == torch.float32 and by_number.scale.shape == ()


def test_quant_state_round_trips_and_refuses_a_foreign_state():
    qcfg = get_recipe("fp8-delayed").quant_config()
    a = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    qlinear.quantize_model(a, qcfg)
    for m in a:
        m._delayed["fwd_x"]._record(torch.tensor(3.0))
    st_ = quant_state(a)
    assert len(st_) == 2 * 2 * 3                        # 2 layers x (fwd_x, fwd_w, dgrad_dy)
    b = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    qlinear.quantize_model(b, qcfg)
    load_quant_state(b, st_)
    assert all(torch.equal(v, quant_state(b)[k]) for k, v in st_.items())
    with pytest.raises(ValueError, match="no delayed-scaling state for 1:dgrad_dy"):
        load_quant_state(b, {k: v for k, v in st_.items() if not k.startswith("1:dgrad_dy")})
    with pytest.raises(ValueError, match="amax history: expected 1024"):
        load_quant_state(b, {**st_, "0:fwd_x:amax_history": torch.zeros(3)})
    with pytest.raises(ValueError, match="belongs to no delayed-scaled"):
        load_quant_state(b, {**st_, "9:fwd_x:scale": torch.ones(())})


SMALL = CorpusSpec(max_bytes=262144)


def _tiny(recipe: str, tokens: int = 8192, **kw) -> TrainConfig:
    return TrainConfig(layers=1, d_model=32, tokens=tokens, seq_len=32, batch_size=8,
                       eval_tokens=2048, eval_points=2, corpus=SMALL,
                       quant=get_recipe(recipe).quant_config(seed=kw.pop("seed", 0)), **kw)


def test_delayed_scaling_state_survives_a_checkpoint_and_resume(tmp_path, capsys):
    cfg = _tiny("fp8-delayed", tokens=12288)
    full = train(cfg, progress=False, ckpt_dir=tmp_path / "full", device="cpu")
    part = train(cfg, progress=False, ckpt_dir=tmp_path / "res", device="cpu", stop_after_steps=29)
    assert math.isnan(part.val_loss)
    last = tmp_path / "res" / full.key / "last.pt"
    state = torch.load(last, weights_only=True)
    assert any(k.endswith(":amax_history") for k in state["quant_state"])
    resumed = train(cfg, progress=False, ckpt_dir=tmp_path / "res", device="cpu")
    assert resumed.val_loss == full.val_loss and resumed.curve == full.curve
    # A resume point without the amax histories cannot resume this run: it trains afresh
    # (warned) to the same result, never with scales restarted mid-run.
    train(cfg, progress=False, ckpt_dir=tmp_path / "bad", device="cpu", stop_after_steps=29)
    bad = tmp_path / "bad" / full.key / "last.pt"
    state = torch.load(bad, weights_only=True)
    del state["quant_state"]
    torch.save(state, bad)
    capsys.readouterr()
    again = train(cfg, progress=False, ckpt_dir=tmp_path / "bad", device="cpu")
    assert "no delayed-scaling state" in capsys.readouterr().err
    assert again.val_loss == full.val_loss


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_trains_and_records_its_recipe(tmp_path, name):
    from explorer.train.trainer import load_checkpoint
    cfg = _tiny(name, tokens=4096)
    r = train(cfg, progress=False, ckpt_dir=tmp_path, device="cpu")
    assert math.isfinite(r.val_loss) and r.val_loss < math.log(256)
    ckpt = sorted((tmp_path / r.key).glob("tokens_*.pt"))[-1]
    model, state = load_checkpoint(ckpt)
    assert state["quant"]["recipe"] == name
    assert state["quant"]["recipe_hash"] == get_recipe(name).content_hash
    assert QuantConfig.from_dict(state["quant"]) == cfg.quant


# --- recipe files --------------------------------------------------------------------------


def test_presets_are_the_six_and_round_trip_through_their_configs():
    assert preset_names() == PRESETS
    hashes = set()
    for r in presets():
        q = r.quant_config(seed=3)
        assert QuantConfig.from_dict(q.to_dict()) == q
        assert q.recipe == r.name and q.recipe_hash == r.content_hash
        assert r.reference and r.summary
        hashes.add(r.content_hash)
    assert len(hashes) == len(PRESETS)


def test_content_hash_is_what_the_recipe_does_not_what_it_is_called():
    text = get_recipe("te-nvfp4").text
    renamed = parse_recipe(text.replace('name = "te-nvfp4"', 'name = "mine"')
                           .replace("NVFP4 (E2M1", "Mine (E2M1"), "x")
    assert renamed.name == "mine" and renamed.content_hash == get_recipe("te-nvfp4").content_hash
    changed = parse_recipe(text.replace("hadamard = 16", "hadamard = 32"), "x")
    assert changed.content_hash != renamed.content_hash


def test_a_user_recipe_file(tmp_path):
    p = tmp_path / "my-fp6.toml"
    p.write_text('summary = "fp6 everywhere"\n'
                 '[fwd_x]\nformat = "e3m2/32/ue8m0"\n'
                 '[fwd_w]\nformat = "e3m2/32/ue8m0"\n'
                 '[wgrad_x]\nformat = "e3m2/32/ue8m0"\ncopy = "requantize"\n')
    r = get_recipe(p)
    assert r.name == "my-fp6" and r.quantized == ("fwd_x", "fwd_w", "wgrad_x")
    assert r.operands.wgrad_x.copy == "requantize"
    assert get_recipe(str(p)) == r


@pytest.mark.parametrize("text, match", [
    ('[fwd_x]\nformat = "e4m3"\nfromat = 1\n', r"\[fwd_x\] unknown key 'fromat'"),
    ('[fwd_y]\nformat = "e4m3"\n', "unknown key or table 'fwd_y'"),
    ('[fwd_x]\nblock = 32\n', r"\[fwd_x\] needs format"),
    ('[fwd_x]\nformat = "e9m9x"\n', r"\[fwd_x\] .*e9m9x"),
    ('[fwd_x]\nformat = "e4m3"\ncopy = "reuse"\n', "applies to the backward inputs"),
    ('[wgrad_x]\ncopy = "reuse"\n', r"\[wgrad_x\] copy = \"reuse\" needs \[fwd_x\] quantized"),
    ('[fwd_x]\nformat = "e4m3"\n[wgrad_x]\nformat = "e4m3"\ncopy = "requantize"\n'
     '[wgrad]\nhadamard = 16\n', "cannot be combined with the Hadamard"),
    ('[fwd_x]\nformat = "e4m3"\n[wgrad_x]\nformat = "e2m3"\ncopy = "reuse"\n',
     "its spec must be fwd_x's"),
    ('[fwd_x]\nformat = "e4m3"\nscaling = "delayed"\n', "block must be 'tensor'"),
    ('[fwd_x]\nformat = "e4m3"\namax_history = 4\n', "applies to scaling = \"delayed\" only"),
    ('[fwd_x]\nformat = "e4m3"\nblock = "tensor"\nscaling = "delayed"\namax_history = 0\n',
     "amax_history: must be an int"),
    ('[fwd_x]\nformat = "e4m3"\n[wgrad]\nhadamard = 12\n', "power of two"),
    ('[fwd_x]\nformat = "e4m3"\n[wgrad]\nhadamard = 16\nsigns = "often"\n', "signs of the wgrad"),
    ('[fwd_x]\nformat = "none"\n', "quantizes no GEMM input"),
    ('name = "a b"\n[fwd_x]\nformat = "e4m3"\n', "name must be a non-empty word"),
    ('[fwd_x\n', "not valid TOML"),
])
def test_bad_recipes_name_the_table_and_key(text, match):
    with pytest.raises(ValueError, match=match):
        parse_recipe(text, "bad.toml", default_name="bad")


def test_unknown_preset_names_the_presets(tmp_path):
    with pytest.raises(ValueError, match="presets: deepseek-v3, fp8-delayed"):
        get_recipe("te-fp8")
    with pytest.raises(FileNotFoundError, match="recipe file not found"):
        get_recipe(tmp_path / "nope.toml")


def test_copy_sources_pair_each_backward_input_with_a_gemm_input_of_another_gemm():
    for t, src in COPY_SOURCES.items():
        assert qlinear.gemm_of(t) != qlinear.gemm_of(src) and t.split("_")[1] == src.split("_")[1]
