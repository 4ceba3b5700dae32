"""The kernels' plumbing: generic and specialised compilations agree, dtypes and shapes travel,
the torch face is straight-through.  (Numeric correctness: test_reference*.py, test_mldtypes.py.)"""


import os
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fpformat
from fpformat import FloatFormat, core, get_format, kernels
from fpformat.dispatch import seed_key
from fpformat.rounding import call_tuple

FORMATS = ["float8_e4m3fn", "float8_e5m2", "e2m1", "e3m2_ftz", "float8_e8m0fnu", "ue4m3fn",
           "float8_e4m3fnuz", "e5m10b3", "e0m7", "bfloat16"]
MODES = ["rne", "rna", "rtz", "rtp", "rtn", "rto", "sr"]


def _inputs(n=4096, seed=0):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32).copy()
    x[: n // 2] = (rng.standard_normal(n // 2)
                   * np.exp2(rng.uniform(-20, 20, n // 2))).astype(np.float32)
    return x


def _check_specialized_equals_generic(name, mode, saturate, src_dtype, monkeypatch):
    fmt = get_format(name)
    src = _inputs().astype(src_dtype)
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "never")
    c0 = fmt.encode(src, mode, saturate, seed=5)
    q0 = fmt.quantize(src, mode, saturate, seed=5) if fmt.fits(src.dtype) else None
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "always")
    c1 = fmt.encode(src, mode, saturate, seed=5)
    assert np.array_equal(c0, c1), (name, mode, src.dtype)
    if q0 is not None:
        q1 = fmt.quantize(src, mode, saturate, seed=5)
        assert np.array_equal(q0.view(np.uint8), q1.view(np.uint8)), (name, mode)
        # quantize == decode(encode) bit for bit, NaNs included (canonical NaN, same sign)
        d = fmt.decode(c0).astype(src.dtype)
        assert np.array_equal(d.view(np.uint8), q0.view(np.uint8)), (name, mode)


# Each specialised combination costs a compilation (~1 s): a representative set by default,
# the whole matrix with -m slow.
@pytest.mark.parametrize("name,mode,saturate,src", [
    ("float8_e4m3fn", "rne", False, "float32"), ("float8_e4m3fn", "sr", True, "float32"),
    ("float8_e5m2", "rtp", False, "float64"), ("float8_e8m0fnu", "rne", False, "float32"),
    ("e3m2_ftz", "rto", False, "float32"), ("float8_e4m3fnuz", "rtn", True, "float64"),
])
def test_specialized_equals_generic(name, mode, saturate, src, monkeypatch):
    _check_specialized_equals_generic(name, mode, saturate, np.dtype(src), monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("src", ["float32", "float64"])
def test_specialized_equals_generic_matrix(name, mode, saturate, src, monkeypatch):
    _check_specialized_equals_generic(name, mode, saturate, np.dtype(src), monkeypatch)


def test_generic_quantize_equals_decode_encode_everywhere():
    x = _inputs()
    for name in FORMATS:
        fmt = get_format(name)
        for src in (x, x.astype(np.float64)):
            if not fmt.fits(src.dtype):
                continue
            for mode in MODES:
                for saturate in (False, True):
                    q = fmt.quantize(src, mode, saturate, seed=2)
                    d = fmt.decode(fmt.encode(src, mode, saturate, seed=2)).astype(src.dtype)
                    assert np.array_equal(d.view(np.uint8), q.view(np.uint8)), (
                        name, mode, saturate)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtype_shape_and_layout_travel(dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(1)
    base = rng.standard_normal((20, 30)) * np.exp2(rng.uniform(-12, 12, (20, 30)))
    x = np.clip(base, -1e4, 1e4).astype(dt)
    xt = x.T                                               # non-contiguous
    fmt = get_format("float8_e4m3fn")
    y = fmt.quantize(xt)
    assert y.dtype == x.dtype and y.shape == xt.shape
    ref = fmt.quantize(np.ascontiguousarray(xt).astype(np.float64))
    assert np.array_equal(y.astype(np.float64), ref, equal_nan=True)
    assert fmt.encode(xt).shape == xt.shape and fmt.encode(xt).dtype == np.uint8


def test_quantize_refuses_dtype_that_cannot_hold_the_values():
    with pytest.raises(ValueError, match="float16"):
        get_format("e8m3").quantize(np.ones(3, np.float16))
    with pytest.raises(ValueError, match="float32"):
        get_format("e5m30").quantize(np.ones(3, np.float32))
    # float64 holds every format; float32 inputs can still be encoded
    assert get_format("e5m30").encode(np.ones(3, np.float32)).dtype == np.uint64


@pytest.mark.parametrize("bad", [np.arange(3), np.array([1 + 2j]), np.array(["a"]),
                                 np.array([None])])
def test_non_float_inputs_raise_type_error(bad):
    with pytest.raises(TypeError, match="x must be"):
        get_format("e4m3").encode(bad)


def test_python_scalars_and_lists():
    f = get_format("e2m1")
    assert f.quantize([0.3, 2.6, 7]).tolist() == [0.5, 3.0, 6.0]
    assert f.encode(2.5).dtype == np.uint8


def test_stochastic_rounding_prefix_and_seed():
    f = get_format("e3m2")
    x = _inputs(5000)
    x = x[np.isfinite(x)]
    a = f.encode(x, "sr", seed=11)
    assert np.array_equal(a, f.encode(x, "sr", seed=11))
    assert np.array_equal(a[:1000], f.encode(x[:1000], "sr", seed=11))
    assert not np.array_equal(a, f.encode(x, "sr", seed=12))


def test_decode_validates_codes():
    f = get_format("e2m1")
    with pytest.raises(ValueError, match="codes must be in 0..15"):
        f.decode(np.array([16]))
    with pytest.raises(TypeError, match="codes must be an integer array"):
        f.decode(np.array([1.0]))


def test_sr_random_u64_matches_kernel_stream():
    # element i rounds up iff u_i < floor(r * 2**64): with r = 1/2 exactly, up iff top bit clear
    f = FloatFormat(2, 1)
    x = np.full(256, 1.25, dtype=np.float64)          # halfway between 1.0 and 1.5
    codes = f.encode(x, "sr", seed=3)
    u = kernels.sr_random_u64(3, np.arange(256))
    assert np.array_equal(codes == 3, (u >> np.uint64(63)) == 0)


def test_torch_face_straight_through_and_dtypes():
    torch = pytest.importorskip("torch")
    from fpformat.torch import quantize
    x = torch.linspace(-600, 600, 101, dtype=torch.float32, requires_grad=True)
    y = quantize(x, "float8_e4m3fn")
    assert torch.equal(y.detach(), torch.from_numpy(get_format("float8_e4m3fn").quantize(
        x.detach().numpy(), saturate=True)))
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.ones_like(x))
    x.grad = None
    quantize(x, "float8_e4m3fn", zero_grad_saturated=True).sum().backward()
    assert torch.equal(x.grad, (x.detach().abs() <= 448).float())
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        t = x.detach().to(dt)
        q = quantize(t, "e2m3")
        assert q.dtype == dt and q.shape == t.shape
        assert torch.equal(q.double(), torch.from_numpy(get_format("e2m3").quantize(
            t.double().numpy(), saturate=True)))


def test_torch_face_block_formats():
    torch = pytest.importorskip("torch")
    from fpformat.torch import quantize
    x = torch.randn(4, 64, dtype=torch.float32, requires_grad=True)
    y = quantize(x, "mxfp4")
    assert torch.equal(y.detach(),
                       torch.from_numpy(get_format("mxfp4").quantize(x.detach().numpy())))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert quantize(x.detach().to(torch.bfloat16), "e4m3/channel").dtype == torch.bfloat16


def test_numba_cache_is_dropped_when_the_core_changes(tmp_path, monkeypatch):
    """numba checks only the kernel file's timestamp; fpformat._cache drops cached kernels when
    any numeric source (the inlined core included) changes."""
    from fpformat._cache import invalidate_stale_cache
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    (tmp_path / "core.py").write_text("x = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "kernels.f-1.nbi").write_bytes(b"stale")
    assert invalidate_stale_cache(tmp_path) is True          # no stamp yet: dropped
    assert not (cache / "kernels.f-1.nbi").exists()
    (cache / "kernels.f-1.nbc").write_bytes(b"fresh")
    assert invalidate_stale_cache(tmp_path) is False         # unchanged sources: kept
    assert (cache / "kernels.f-1.nbc").exists()
    (tmp_path / "core.py").write_text("x = 2\n")
    assert invalidate_stale_cache(tmp_path) is True          # edited core: dropped
    assert not (cache / "kernels.f-1.nbc").exists()


def test_edited_core_is_recompiled_under_numba_cache_dir(tmp_path):
    """With ``NUMBA_CACHE_DIR`` set, numba keeps the kernels outside the package; an edit to the
    inlined core must still reach the next process (not the cached machine code)."""
    # a copy under another name: the installed (editable) fpformat would shadow one on the path
    pkg = tmp_path / "src" / "fpcopy"
    shutil.copytree(Path(fpformat.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(pkg.parent), NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               FPFORMAT_SPECIALIZE="never")
    # 2.5 and 0.25 are ties in e2m1: nearest-even gives 2 (code 4) and 0 (code 0)
    script = ("import numpy as np, fpcopy; "
              "print(fpcopy.get_format('e2m1').encode(np.array([2.5, 0.25])).tolist())")

    def codes() -> str:
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    assert codes() == "[4, 0]"
    core = pkg / "core.py"
    rne = "up = rem + odd > half"
    assert rne in core.read_text()
    core.write_text(core.read_text().replace(rne, "up = rem >= half"))   # ties away instead
    assert codes() == "[5, 1]"


# --- per-tensor scaled quantize (delayed scaling's fused pass) --------------------------------

def _scaled_reference(fmt, x, scale, rounding, seed, saturate=True):
    """The same computation op by op in numpy float32: fl32(x * s), fpformat's quantize,
    fl32(q * fl32(1 / s)); amax of |x| with NaN winning."""
    s = np.float32(scale)
    with np.errstate(over="ignore"):
        xs = (x * s).astype(np.float32)
    q = fmt.quantize(xs, rounding=rounding, saturate=saturate, seed=seed)
    out = (q * (np.float32(1) / s)).astype(np.float32)
    mag = np.abs(x.astype(np.float64))
    amax = float("nan") if np.isnan(mag).any() else (float(mag.max()) if x.size else 0.0)
    return out, amax


@pytest.mark.parametrize("policy", ["never", "always"])
@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "e4m3", "e3m4", "e2m1"])
@pytest.mark.parametrize("rounding", ["rne", "sr", "rtz"])
def test_quantize_scaled_equals_op_by_op(name, rounding, policy, monkeypatch):
    """One fused pass (generic and specialised) equals the three float32 operations bit for
    bit, over several chunks, with scales that overflow, underflow and are not powers of two,
    and NaN/inf/-0 in the data."""
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", policy)
    fmt = get_format(name)
    rng = np.random.default_rng(5)
    n = 3 * kernels._SCALED_CHUNK + 77
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n))).astype(np.float32)
    x[:4] = [0.0, -0.0, np.float32(1e-45), -np.float32(3e38)]
    for scale in (1.0, 448.0 / 3.7, 2.0 ** -20, 3.1e25):
        got, amax = kernels.quantize_scaled(fmt, x, scale, rounding, seed=9)
        want, want_amax = _scaled_reference(fmt, x, scale, rounding, 9)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (name, scale)
        assert amax == want_amax
    for special in (np.inf, -np.inf, np.nan):
        y = x.copy()
        y[2 * kernels._SCALED_CHUNK + 5] = special
        got, amax = kernels.quantize_scaled(fmt, y, 3.0, rounding, seed=9)
        want, want_amax = _scaled_reference(fmt, y, 3.0, rounding, 9)
        assert np.array_equal(got, want, equal_nan=True) and np.array_equal(
            got[~np.isnan(got)].view(np.uint32), want[~np.isnan(want)].view(np.uint32))
        assert (amax == want_amax) or (amax != amax and want_amax != want_amax)


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "e4m3", "e2m1"])
@pytest.mark.parametrize("saturate", [True, False])
def test_quantize_scaled_ties_and_overflow(name, saturate):
    """Round to nearest even in the fused pass (by float32 additions) on every value of the
    format, every midpoint between neighbours (the ties), a float32 step either side of each,
    values past the max up to float32's largest binades, zeros, NaN and infinities, both signs:
    equal to the op by op reference bit for bit, saturating or not."""
    fmt = get_format(name)
    F, C = fmt.params, call_tuple(fmt, "rne", saturate, None)
    assert kernels._scaled_by_addition(F, C)                  # the path under test runs
    pos = fmt.values()
    pos = pos[pos >= 0]
    mids = (pos[:-1] + pos[1:]) / 2
    past = pos[-1] * np.array([1.03, 1.5, 2.0, 7.0, 2.0 ** 90])
    x = np.concatenate([pos, mids, past]).astype(np.float32)
    top = 2.0 ** np.arange(100, 128)                          # every binade up to float32's
    x = np.concatenate([x, np.nextafter(x, np.float32(0)), np.nextafter(x, np.float32(np.inf)),
                        top, [np.inf, np.nan, 1e-45, 3e38]]).astype(np.float32)
    x = np.concatenate([x, -x])
    for scale in (1.0, 2.0 ** -3, 2.0 ** 7):                   # powers of two keep the ties
        with np.errstate(over="ignore"):
            y = x / np.float32(scale)
        got, _ = kernels.quantize_scaled(fmt, y, scale, "rne", saturate)
        want, _ = _scaled_reference(fmt, y, scale, "rne", None, saturate)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (name, scale)


@pytest.mark.parametrize("bad, match", [
    (dict(x=np.ones(4)), "float32 numpy array"), (dict(scale=0.0), "finite float32 > 0"),
    (dict(scale=float("inf")), "finite float32 > 0"), (dict(fmt="e5m30"), "float32 values")])
def test_quantize_scaled_refuses(bad, match):
    args = dict(fmt="float8_e4m3fn", x=np.ones(4, np.float32), scale=2.0) | bad
    with pytest.raises(ValueError, match=match):
        kernels.quantize_scaled(get_format(args["fmt"]), args["x"], args["scale"])


@numba.njit
def _stream_by_counter(key, first, n):
    """Elements ``first .. first + n - 1`` of stream ``key``, the counter advanced by addition
    (as the block kernels' element loops do)."""
    out = np.empty(n, dtype=np.uint64)
    z = core.sr_counter(key, first)
    for j in range(n):
        out[j] = core.sr_from_counter(z)
        z += core.SR_STEP
    return out


@numba.njit
def _stream_by_index(key, first, n):
    out = np.empty(n, dtype=np.uint64)
    for j in range(n):
        out[j] = core.sr_random(key, first + np.uint64(j))
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(-2 ** 63, 2 ** 63 - 1), first=st.integers(0, 2 ** 64 - 70),
       n=st.integers(0, 64))
def test_sr_counter_steps_equal_sr_random(seed, first, n):
    """A loop that advances the counter by ``SR_STEP`` draws element ``i``'s bits as
    ``sr_random(key, i)`` does (the counter's uint64 arithmetic wraps), and as
    ``sr_random_u64`` draws them on arrays."""
    key = seed_key(seed, core.SR)
    a = _stream_by_counter(key, np.uint64(first), n)
    assert np.array_equal(a, _stream_by_index(key, np.uint64(first), n))
    want = kernels.sr_random_u64(seed, np.arange(first, first + n, dtype=np.uint64))
    assert np.array_equal(a, want)


def test_hashed_key_is_its_tuple(monkeypatch):
    """A :class:`fpformat.dispatch.HashedKey` is equal to, and hashed like, the plain tuple of
    its items, so that either finds the other's specialisation decision."""
    from fpformat import dispatch
    items = ("test-key", (1, 2, 3), (0.5, float("inf")), True)
    key = dispatch.HashedKey(items)
    assert key == items and hash(key) == hash(items) and {key: 1}[items] == 1
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "auto")
    monkeypatch.setattr(dispatch, "_seen", {})
    monkeypatch.setattr(dispatch, "_ready", set())
    assert not dispatch.want_specialized(items, 10)
    assert not dispatch.want_specialized(key, dispatch.SPECIALIZE_AFTER - 11)
    assert dispatch.want_specialized(items, 1)             # the count reached the threshold
    assert dispatch.want_specialized(key, 1)
    other = ("test-key", (1, 2, 4), (0.5, float("inf")), True)
    dispatch.prefer_specialized(dispatch.HashedKey(other))
    assert dispatch.want_specialized(other, 1)
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "never")
    assert not dispatch.want_specialized(key, 1)


def test_identity_cache_makes_once_per_object_and_flags():
    """:class:`fpformat.dispatch.IdentityCache` makes a value once per object and flags, tells
    equal but distinct objects apart, and remakes the value where an entry's id belongs to
    another object (an id is reused once its object is gone)."""
    from fpformat.dispatch import IdentityCache
    made = []
    cache = IdentityCache(lambda obj, *flags: made.append((obj, flags)) or (len(made), flags))
    a, b = (1, 2, 3), tuple([1, 2, 3])
    assert a == b and a is not b
    assert cache.get(a, (True,)) == (1, (True,)) and cache.get(a, (True,)) == (1, (True,))
    assert cache.get(a, (False,)) == (2, (False,))
    assert cache.get(b, (True,)) == (3, (True,))
    assert len(made) == 3 and cache.get(a, (True,)) == (1, (True,))
    cache._entries[(id(a), ("reused",))] = (object(), "stale")    # another object held that id
    assert cache.get(a, ("reused",)) == (4, ("reused",))
