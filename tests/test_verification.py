"""The pieces verification engineers need (issue 15): block formats whose scale format has no
NaN, stochastic rounding with the caller's random bits, classify/epsneg/max_code/nan_code,
packing of 4- and 6-bit codes, ``BlockEncoding.from_codes``, two's-complement integer formats
and ``fpx vectors --random-bits``.  Each is held to an exact reference or to published byte
patterns."""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.cli import main
from fpformat import BlockEncoding, BlockFormat, CodeClass, FloatFormat, IntFormat, get_format
from fpformat.packing import pack, unpack
from fpformat.testing import formats, inputs_near
from tests.reference import encode_given_bits, int_encode, reference

# Scale formats without a NaN (explicit, so that renaming presets cannot change them).
UE4M3 = FloatFormat(4, 3, signed=False)                                  # no NaN, no inf
UE5M3 = FloatFormat(5, 3, signed=False)
UE8M0_NO_NAN = FloatFormat(8, 0, signed=False, subnormals=False, has_zero=False)


def _nanless_formats():
    return [
        BlockFormat("e2m1", 16, scale_format=UE4M3),                     # amax rule
        BlockFormat("e2m1", 32, scale_format=UE5M3, scale_rounding="nearest"),
        BlockFormat("e4m3", 32, scale_format=UE8M0_NO_NAN),              # ocp rule
        BlockFormat("float4_e2m1fn", 16, scale_format=UE4M3, scale_rule="nvfp4"),
    ]


# --------------------------------------------------------------------- NaN-less scale formats
@pytest.mark.parametrize("spec", ["e2m1/16/ue4m3", "e2m1/32/ue5m3"])
def test_nanless_scale_specs_encode_finite_data(spec):
    b = get_format(spec)
    assert not b.scale_format.has_nan
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    enc = b.encode(x)
    y = b.quantize(x)
    assert np.array_equal(b.decode(enc).astype(np.float32), y)
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("fmt", _nanless_formats(), ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nanless_scale_fused_and_numpy_paths_agree(fmt, dtype):
    """Blocks along the last axis run through the fused kernel, along axis 0 through the numpy
    path: both encode the same codes and scales on finite data."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 48)) * np.exp2(rng.uniform(-8, 8, (4, 1)))).astype(dtype)
    enc = fmt.encode(x)
    other = BlockFormat(fmt.element, fmt.block_size, axis=0, scale_format=fmt.scale_format,
                        scale_rule=fmt.scale_rule, scale_rounding=fmt.scale_rounding)
    enc_t = other.encode(np.ascontiguousarray(x.T))
    assert np.array_equal(enc.codes, enc_t.codes.T)
    assert np.array_equal(enc.scales, enc_t.scales.T)
    assert np.array_equal(fmt.decode(enc).astype(dtype), fmt.quantize(x))
    assert np.array_equal(other.quantize(np.ascontiguousarray(x.T)), fmt.quantize(x).T)


@pytest.mark.parametrize("fmt", _nanless_formats(), ids=str)
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("axis", [-1, 0])
def test_nanless_scale_nonfinite_block(fmt, special, axis):
    """Documented (docs/block.md): encode raises naming the block; quantize gives NaN for the
    blocks holding NaN/inf (the whole tensor for nvfp4) and the usual values elsewhere."""
    if axis == 0:
        fmt = BlockFormat(fmt.element, fmt.block_size, axis=0, scale_format=fmt.scale_format,
                          scale_rule=fmt.scale_rule, scale_rounding=fmt.scale_rounding)
    x = np.random.default_rng(3).standard_normal((64, 64)).astype(np.float32)
    clean = fmt.quantize(x)
    x[5, 40] = special
    with pytest.raises(ValueError, match="has no NaN to mark it"):
        fmt.encode(x)
    y = fmt.quantize(x)
    bad = np.zeros(x.shape, dtype=bool)
    if fmt.scale_rule == "nvfp4":
        bad[:] = True
    elif axis == -1:
        k = fmt.block_size
        bad[5, 40 // k * k:(40 // k + 1) * k] = True
    else:
        k = fmt.block_size
        bad[5 // k * k:(5 // k + 1) * k, 40] = True
    assert np.isnan(y[bad]).all()
    assert np.array_equal(y[~bad], clean[~bad])


def test_nanless_scale_tiles():
    fmt = BlockFormat("e2m1", tile=(4, 8), scale_format=UE4M3)
    x = np.random.default_rng(4).standard_normal((8, 16))
    assert np.array_equal(fmt.decode(fmt.encode(x)), fmt.quantize(x))
    x[6, 9] = np.nan
    with pytest.raises(ValueError, match=r"scale index \(1, 1\)"):
        fmt.encode(x)
    y = fmt.quantize(x)
    assert np.isnan(y[4:8, 8:16]).all() and not np.isnan(y[:4]).any()


def test_scales_with_nan_still_mark_blocks():
    x = np.ones((1, 32), dtype=np.float32)
    x[0, 3] = np.nan
    enc = get_format("mxfp4").encode(x)
    assert enc.scales[0, 0] == 255


# --------------------------------------------------------------------- SR with given bits
def test_random_bits_rule_is_the_carry_convention():
    """x = 1 + ulp/4 in float8_e4m3fn (ulp 1/8) with k = 2: t = 1; r = 3 carries (up), r = 2
    does not.  (The other convention, up iff r < t, would round up for r = 0 instead.)"""
    f = get_format("float8_e4m3fn")
    x = np.full(4, 1 + 1 / 32, dtype=np.float32)
    r = np.arange(4, dtype=np.uint8)
    y = f.quantize(x, rounding="sr", random_bits=r, sr_bits=2)
    assert y.tolist() == [1.0, 1.0, 1.0, 1.125]
    # fewer discarded bits than k: t is the discarded bits padded with zeros
    x = np.full(2, 1 + 1 / 16, dtype=np.float32)            # t = 0b1000 with k = 4
    y = f.quantize(x, rounding="sr", random_bits=np.array([7, 8], np.uint8), sr_bits=4)
    assert y.tolist() == [1.0, 1.125]


def _check_given_bits(fmt, xs, rs, k, saturate, dtype="float64"):
    x = np.asarray(xs, dtype=dtype)
    r = np.asarray(rs, dtype=np.uint64)
    codes = fmt.encode(x, rounding="sr", saturate=saturate, sr_bits=k, random_bits=r)
    want = [encode_given_bits(fmt, float(v), int(b), k, saturate)
            for v, b in zip(x.astype(np.float64), r)]
    assert codes.tolist() == want, (fmt, x, r, k)
    if fmt.fits(dtype):
        q = fmt.quantize(x, rounding="sr", saturate=saturate, sr_bits=k, random_bits=r)
        assert np.array_equal(q.astype(np.float64), fmt.decode(codes), equal_nan=True)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), fmt=formats(max_bits=10), saturate=st.booleans(),
       k=st.integers(1, 64))
def test_random_bits_match_reference(data, fmt, saturate, k):
    xs = data.draw(st.lists(inputs_near(fmt), min_size=1, max_size=12))
    xs += [0.0, -0.0, math.inf, -math.inf, math.nan, fmt.max * 4]
    rs = data.draw(st.lists(st.integers(0, (1 << k) - 1), min_size=len(xs), max_size=len(xs)))
    _check_given_bits(fmt, xs, rs, k, saturate)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), name=st.sampled_from(["float8_e4m3fn", "float8_e5m2", "float4_e2m1fn",
                                             "bfloat16", "float16", "p3109_k8p1"]),
       dtype=st.sampled_from(["float16", "float32", "float64"]), k=st.integers(1, 24))
def test_random_bits_match_reference_presets(data, name, dtype, k):
    fmt = get_format(name)
    xs = data.draw(st.lists(inputs_near(fmt, dtype=dtype), min_size=1, max_size=16))
    rs = data.draw(st.lists(st.integers(0, (1 << k) - 1), min_size=len(xs), max_size=len(xs)))
    _check_given_bits(fmt, xs, rs, k, False, dtype)


def test_random_bits_default_width_is_the_dtype_width():
    f = get_format("float8_e4m3fn")
    x = np.random.default_rng(5).standard_normal(1000).astype(np.float32)
    for dt, k in ((np.uint8, 8), (np.uint16, 16), (np.uint32, 32), (np.uint64, 64)):
        r = np.random.default_rng(6).integers(0, np.iinfo(dt).max, 1000, dtype=dt,
                                              endpoint=True)
        assert np.array_equal(f.encode(x, rounding="sr", random_bits=r),
                              f.encode(x, rounding="sr", random_bits=r, sr_bits=k))


def _neighbours(fmt, x):
    a = Fraction(abs(x))
    lo, _, hi, _ = reference(fmt)._neighbours(a)
    return lo, hi


@pytest.mark.parametrize("name,x", [("float8_e4m3fn", 1.0 + 0.3 * 0.125),
                                     ("float8_e4m3fn", -3.1e-3), ("float4_e2m1fn", 2.7),
                                     ("bfloat16", 1.0 + 2 ** -9), ("e3m2", 0.0301)])
def test_random_bits_expectation_exact(name, x):
    """Over all 2**k values of r (uniform bits) the mean is exactly lo + (hi - lo) * t / 2**k:
    |E[q] - x| < (hi - lo) * 2**-k (the bits below the k-th are truncated, never rounded)."""
    fmt = get_format(name)
    k = 8
    xs = np.full(1 << k, x)
    q = fmt.quantize(xs, rounding="sr", random_bits=np.arange(1 << k, dtype=np.uint8))
    lo, hi = _neighbours(fmt, x)
    t = math.floor((Fraction(abs(x)) - lo) / (hi - lo) * (1 << k))
    mean = sum(Fraction(float(v)) for v in q) / len(q)
    want = (lo + (hi - lo) * Fraction(t, 1 << k)) * (1 if x > 0 else -1)
    assert mean == want
    assert abs(mean - Fraction(x)) < (hi - lo) / (1 << k)


def test_random_bits_unbiased_with_random_bits():
    """With N uniformly random 16-bit r the sample mean is within the truncation bias
    (hi - lo) * 2**-16 plus 6 standard errors ((hi - lo) / 2 / sqrt(N) at most) of x."""
    fmt = get_format("float8_e4m3fn")
    n = 200_000
    rng = np.random.default_rng(7)
    for x in (1.0 + 0.37 * 0.125, 200.0 + 5.3, -0.0171):
        r = rng.integers(0, 1 << 16, n, dtype=np.uint16)
        q = fmt.quantize(np.full(n, x), rounding="sr", random_bits=r)
        lo, hi = _neighbours(fmt, x)
        ulp = float(hi - lo)
        assert abs(q.mean() - x) <= ulp * 2.0 ** -16 + 6 * ulp / 2 / math.sqrt(n)


class _FakeCuda:
    __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False),
                                "version": 3}
    shape = (2,)


@pytest.mark.parametrize("kw,match", [
    (dict(rounding="rne"), "needs rounding='sr'"),
    (dict(rounding="sr", seed=3), "exclusive"),
    (dict(rounding="sr", random_bits=np.zeros(3, np.uint8)), "x's shape"),
    (dict(rounding="sr", random_bits=np.zeros(4, np.float32)), "integer array"),
    (dict(rounding="sr", random_bits=np.array([0, 1, 2, 256], np.uint16), sr_bits=8),
     r"0\.\.255"),
    (dict(rounding="sr", random_bits=np.array([0, 1, 2, -1], np.int64), sr_bits=8), r"0\.\.255"),
    (dict(rounding="sr", random_bits=np.zeros(4, np.int64)), "needs sr_bits"),
    (dict(rounding="sr", random_bits=np.zeros(4, np.uint8), sr_bits=65), "sr_bits"),
])
def test_random_bits_validation(kw, match):
    kw.setdefault("random_bits", np.zeros(4, np.uint8))
    f = get_format("float8_e4m3fn")
    x = np.ones(4, np.float32)
    for call in (f.encode, f.quantize, get_format("e2m1/2").encode,
                 get_format("e2m1/2").quantize, get_format("int8").encode):
        with pytest.raises(ValueError, match=match):
            call(x, **kw)


def test_random_bits_cuda_arrays_refused_before_routing():
    r = np.zeros(2, np.uint8)
    for call in (get_format("float8_e4m3fn").encode, get_format("float8_e4m3fn").quantize,
                 get_format("mxfp4").encode, get_format("mxfp4").quantize):
        with pytest.raises(ValueError, match="CPU only"):
            call(_FakeCuda(), rounding="sr", random_bits=r)
    with pytest.raises(ValueError, match="CPU only"):
        get_format("float8_e4m3fn").encode(np.ones(2, np.float32), rounding="sr",
                                           random_bits=_FakeCuda())


@pytest.mark.parametrize("name", ["mxfp4", "mxfp8_e4m3", "nvfp4", "e3m2/channel", "mxint8"])
def test_random_bits_blocks(name):
    """Block formats: element i of x / scale is rounded with r[i], by the element rule."""
    fmt = get_format(name)
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((6, 64)) * 3).astype(np.float32)
    r = rng.integers(0, 1 << 12, x.shape).astype(np.uint16)
    enc = fmt.encode(x, rounding="sr", random_bits=r, sr_bits=12)
    ref = fmt.encode(x)                                     # same scales as nearest rounding
    assert np.array_equal(enc.scales, ref.scales)
    s = fmt._broadcast(fmt._scale_values(enc.scales, enc.tensor_scale), x.shape)
    el_codes = fmt.element.encode(x.astype(np.float64) / s, rounding="sr", saturate=True,
                                  random_bits=r, sr_bits=12)
    if fmt.int_codes:
        el_vals = fmt.element.decode(el_codes) + 0.0          # no -0 among integers
        assert np.array_equal(fmt._element_values(enc.codes), el_vals)
    else:
        assert np.array_equal(enc.codes, el_codes)
    q = fmt.quantize(x, rounding="sr", random_bits=r, sr_bits=12)
    assert np.array_equal(q, fmt.decode(enc).astype(np.float32))
    assert not np.array_equal(q, fmt.quantize(x))           # the bits did something


# --------------------------------------------------------------------- classify and friends
ML_DTYPES = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
             "float8_e4m3b11fnuz", "float8_e3m4", "float8_e4m3", "float6_e2m3fn", "float6_e3m2fn",
             "float4_e2m1fn", "float8_e8m0fnu", "bfloat16"]


@pytest.mark.parametrize("name", ML_DTYPES + ["float16", "float32", "float64"])
def test_epsneg_matches_finfo(name):
    f = get_format(name)
    dt = getattr(ml_dtypes, name, None) or getattr(np, name)
    fi = ml_dtypes.finfo(dt) if hasattr(ml_dtypes, name) else np.finfo(dt)
    assert f.epsneg == float(fi.epsneg)


def test_epsneg_undefined_where_one_is_not_a_value():
    assert math.isnan(FloatFormat(3, 2, bias=-2).epsneg)       # values from 8 up


def _class_of_value(fmt, code):
    v = fmt.code_value(code)
    if isinstance(v, float):
        return CodeClass.NAN if math.isnan(v) else CodeClass.INFINITE
    if v == 0:
        return CodeClass.ZERO
    if fmt.has_zero and abs(v) < Fraction(2) ** fmt.emin:
        return CodeClass.SUBNORMAL
    return CodeClass.NORMAL


@pytest.mark.parametrize("name", ML_DTYPES + ["e4m3", "e2m1_ftz", "p3109_k8p1", "p3109_k8p4",
                                              "ue4m3fn", "e0m3"])
def test_classify_every_code(name):
    f = get_format(name)
    codes = np.arange(1 << f.bits, dtype=np.uint64).astype(f.dtype)
    got = f.classify(codes)
    assert got.dtype == np.uint8 and got.shape == codes.shape
    assert got.tolist() == [_class_of_value(f, int(c)) for c in codes]


@settings(max_examples=60, deadline=None)
@given(fmt=formats(max_bits=9))
def test_classify_max_code_nan_code_any_format(fmt):
    codes = np.arange(1 << fmt.bits, dtype=np.uint64).astype(fmt.dtype)
    assert fmt.classify(codes).tolist() == [_class_of_value(fmt, int(c)) for c in codes]
    assert fmt.decode(np.array([fmt.max_code], fmt.dtype))[0] == fmt.max
    if fmt.has_nan:
        assert fmt.nan_code == int(fmt.encode(np.array([np.nan]))[0])
        assert fmt.classify(np.array([fmt.nan_code]))[0] == CodeClass.NAN
    else:
        assert fmt.nan_code is None


def test_classify_rejects_bad_codes():
    f = get_format("float8_e4m3fn")
    with pytest.raises(ValueError, match=r"0\.\.255"):
        f.classify(np.array([256]))
    with pytest.raises(TypeError):
        f.classify(np.array([1.0]))


def test_max_and_nan_codes_of_presets():
    assert (get_format("float8_e4m3fn").max_code, get_format("float8_e4m3fn").nan_code) == \
        (0x7E, 0x7F)
    assert (get_format("float8_e5m2").max_code, get_format("float8_e5m2").nan_code) == (0x7B, 0x7E)
    assert (get_format("float8_e8m0fnu").max_code, get_format("float8_e8m0fnu").nan_code) == \
        (0xFE, 0xFF)
    assert get_format("float8_e4m3fnuz").nan_code == 0x80
    assert get_format("float4_e2m1fn").nan_code is None


# --------------------------------------------------------------------- packing
def test_pack4_known_bytes():
    # torch c10/util/Float4_e2m1fn_x2.h: val1 in bits 7654, val0 in bits 3210
    assert pack(np.array([0x1, 0x2, 0xF, 0x0]), 4).tolist() == [0x21, 0x0F]
    assert pack(np.array([0x1, 0x2, 0xF, 0x0]), 4, order="msb").tolist() == [0x12, 0xF0]
    assert unpack(np.array([0x21], np.uint8), 4).tolist() == [1, 2]


def test_pack4_is_torch_float4_x2_storage():
    torch = pytest.importorskip("torch")
    f = get_format("float4_e2m1fn")
    codes = f.encode(np.array([[0.5, 6.0, -1.0, 0.0]], np.float32))
    packed = torch.from_numpy(pack(codes, 4)).view(torch.float4_e2m1fn_x2)
    assert packed.shape == (1, 2)
    raw = packed.view(torch.uint8).numpy()
    assert raw.tolist() == [[(0x7 << 4) | 0x1, (0x0 << 4) | 0xA]]


@given(st.lists(st.integers(0, 63), min_size=4, max_size=4))
def test_pack6_known_layouts(v):
    a, b, c, d = v
    codes = np.array(v, dtype=np.uint8)
    # CUTLASS MXFP6 operands (torchao's Triton pack_uint6: [b1 b0][a5..a0] ...)
    lsb = [((b << 6) | a) & 0xFF, ((c << 4) | (b >> 2)) & 0xFF, ((d << 2) | (c >> 4)) & 0xFF]
    assert pack(codes, 6).tolist() == lsb
    # AMD rocRoller getFp6, element 1
    p = lsb
    assert ((p[0] & 0xC0) >> 6) | ((p[1] & 0xF) << 2) == b
    # torchao dtypes/uintx pack_uint6: AAAAAABB|BBBBCCCC|CCDDDDDD
    msb = [((a << 2) | (b >> 4)) & 0xFF, (((b & 0xF) << 4) | (c >> 2)) & 0xFF,
           (((c & 0x3) << 6) | d) & 0xFF]
    assert pack(codes, 6, order="msb").tolist() == msb
    assert unpack(np.array(lsb, np.uint8), 6).tolist() == v
    assert unpack(np.array(msb, np.uint8), 6, order="msb").tolist() == v


@settings(max_examples=50, deadline=None)
@given(bits=st.sampled_from([4, 6]), order=st.sampled_from(["lsb", "msb"]),
       rows=st.integers(1, 3), groups=st.integers(0, 5), seed=st.integers(0, 1000))
def test_pack_round_trip(bits, order, rows, groups, seed):
    n = groups * (2 if bits == 4 else 4)
    codes = np.random.default_rng(seed).integers(0, 1 << bits, (rows, n)).astype(np.uint8)
    packed = pack(codes, bits, order)
    assert packed.dtype == np.uint8 and packed.shape == (rows, n * bits // 8)
    assert np.array_equal(unpack(packed, bits, order), codes)


@pytest.mark.parametrize("call,match", [
    (lambda: pack(np.zeros(3, np.uint8), 4), "multiple of 2"),
    (lambda: pack(np.zeros(6, np.uint8), 6), "multiple of 4"),
    (lambda: pack(np.array([16, 0]), 4), r"0\.\.15"),
    (lambda: pack(np.zeros(2, np.uint8), 5), "bits must be 4 or 6"),
    (lambda: pack(np.zeros(2, np.uint8), 4, order="big"), "order"),
    (lambda: pack(np.zeros(2), 4), "integer"),
    (lambda: unpack(np.zeros(4, np.uint8), 6), "multiple of 3"),
    (lambda: unpack(np.array([256]), 4), "bytes"),
])
def test_pack_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------- BlockEncoding.from_codes
@pytest.mark.parametrize("name", ["mxfp4", "mxint8", "nvfp4", "e4m3/channel", "e2m1/4x8",
                                  "e2m1/16/ue4m3fn"])
def test_from_codes_round_trip(name):
    fmt = get_format(name)
    x = np.random.default_rng(9).standard_normal((8, 32))
    enc = fmt.encode(x)
    built = BlockEncoding.from_codes(fmt, enc.codes.astype(np.int64),
                                     enc.scales if fmt.scale_format is None
                                     else enc.scales.astype(np.int32),
                                     enc.tensor_scale)
    assert built.codes.dtype == enc.codes.dtype and built.scales.dtype == enc.scales.dtype
    assert np.array_equal(fmt.decode(built), fmt.decode(enc))


def test_from_codes_validation():
    mx = get_format("mxfp4")
    codes = np.zeros((2, 64), np.uint8)
    scales = np.full((2, 2), 127, np.uint8)
    assert np.array_equal(mx.decode(BlockEncoding.from_codes(mx, codes, scales)), np.zeros((2, 64)))
    cases = [
        (dict(fmt=mx, codes=codes, scales=scales[:, :1]), r"scales must have shape \(2, 2\)"),
        (dict(fmt=mx, codes=codes + 16, scales=scales), r"codes must be in 0\.\.15"),
        (dict(fmt=mx, codes=codes.astype(float), scales=scales), "codes must be an integer"),
        (dict(fmt=mx, codes=codes, scales=scales.astype(np.uint16) + 200),
         r"scales must be in 0\.\.255"),
        (dict(fmt=mx, codes=codes, scales=scales, tensor_scale=1.0), "for scale_rule .nvfp4. only"),
        (dict(fmt=get_format("nvfp4"), codes=codes, scales=np.zeros((2, 4), np.uint8)),
         "tensor_scale must be a float"),
        (dict(fmt=get_format("nvfp4"), codes=codes, scales=np.zeros((2, 4), np.uint8),
              tensor_scale=-1.0), "positive"),
        (dict(fmt=get_format("e4m3/32"), codes=codes, scales=np.full((2, 2), 0.1)),
         "float32 values"),
        (dict(fmt=get_format("e4m3/32"), codes=codes, scales=scales), "float32 values"),
        (dict(fmt=mx, codes=np.uint8(3), scales=scales), "at least one dimension"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            BlockEncoding.from_codes(**kw)
    with pytest.raises(TypeError, match="BlockFormat"):
        BlockEncoding.from_codes(get_format("e4m3"), codes, scales)


# --------------------------------------------------------------------- int8
def test_int8_name_and_values():
    i8 = get_format("int8")
    assert isinstance(i8, IntFormat) and i8 == IntFormat(8) and str(i8) == "int8"
    assert get_format(i8) is i8 and get_format("INT4") == IntFormat(4)
    assert i8.values().tolist() == list(range(-128, 128))
    assert (i8.max, i8.min, i8.max_code, i8.min_code, i8.nan_code) == (127, -128, 0x7F, 0x80, None)
    codes = np.arange(256, dtype=np.uint8)
    vals = i8.decode(codes)
    assert vals.tolist() == [c if c < 128 else c - 256 for c in range(256)]
    assert np.array_equal(i8.encode(vals), codes)
    assert i8.describe()["kind"] == "twos_complement_integer"


@settings(max_examples=100, deadline=None)
@given(data=st.data(), bits=st.integers(2, 12), frac=st.integers(-3, 8), sym=st.booleans(),
       mode=st.sampled_from(["rne", "rna", "rtz", "rtp", "rtn", "rto", "sr"]),
       dtype=st.sampled_from(["float16", "float32", "float64"]))
def test_int_format_matches_reference(data, bits, frac, sym, mode, dtype):
    f = IntFormat(bits, frac, sym)
    lim = 2.0 ** (bits - 1 - frac)
    xs = data.draw(st.lists(st.one_of(
        st.floats(-2 * lim, 2 * lim, width=16 if dtype == "float16" else 32),
        st.integers(-(1 << bits), 1 << bits).map(lambda k: (k + 0.5) * 2.0 ** -frac),
        st.sampled_from([math.nan, math.inf, -math.inf, -0.0])), min_size=1, max_size=12))
    x = np.array(xs, dtype=dtype)
    k = data.draw(st.integers(1, 16))
    r = np.array(data.draw(st.lists(st.integers(0, (1 << k) - 1), min_size=len(xs),
                                    max_size=len(xs))), dtype=np.uint32)
    if mode == "sr":
        codes = f.encode(x, rounding="sr", random_bits=r, sr_bits=k)
        want = [int_encode(bits, frac, sym, v, "sr", sr_bits=k, r=int(b))
                for v, b in zip(x.astype(np.float64), r)]
        assert codes.tolist() == want
        from fpformat.kernels import sr_random_u64
        us = sr_random_u64(11, np.arange(x.size))
        want = [int_encode(bits, frac, sym, v, "sr", u=int(u), sr_bits=k)
                for v, u in zip(x.astype(np.float64), us)]
        assert f.encode(x, rounding="sr", seed=11, sr_bits=k).tolist() == want
    else:
        codes = f.encode(x, rounding=mode)
        want = [int_encode(bits, frac, sym, v, mode) for v in x.astype(np.float64)]
        assert codes.tolist() == want
    if f.fits(dtype):
        kw = dict(random_bits=r, sr_bits=k) if mode == "sr" else {}
        q = f.quantize(x, rounding=mode, **kw)
        assert q.dtype == x.dtype
        assert np.array_equal(q.astype(np.float64), f.decode(codes))
        assert not np.signbit(q[q == 0]).any()                # no -0 among integers


@pytest.mark.parametrize("frac", [-1, -60, -1000])
@pytest.mark.parametrize("mode", ["rne", "rna", "rtz", "rtp", "rtn", "rto"])
def test_int_format_rounds_tiny_inputs_once(frac, mode):
    # scaling by 2**frac_bits < 1 takes these below float64's subnormals: the decision must
    # still be the exact value's (rtp of the smallest subnormal is one quantum, not zero)
    f = IntFormat(8, frac)
    x = np.array([5e-324, -5e-324, 1e-310, -1e-310, 2.0 ** -1000, 0.0, -0.0])
    want = [int_encode(8, frac, False, v, mode) for v in x]
    assert f.encode(x, rounding=mode).tolist() == want


def test_int8_specials_and_saturation():
    i8 = get_format("int8")
    x = np.array([np.nan, np.inf, -np.inf, 1e10, -1e10, -0.3, 127.5, -128.5])
    assert i8.decode(i8.encode(x)).tolist() == [0, 127, -128, 127, -128, 0, 127, -128]
    assert np.array_equal(i8.encode(x, saturate=True), i8.encode(x, saturate=False))
    with pytest.raises(TypeError, match="saturate must be a bool"):
        i8.encode(x, saturate="yes")
    with pytest.raises(ValueError, match="rounding must be one of"):
        i8.encode(x, rounding="up")
    with pytest.raises(ValueError, match=r"bits must be in 2\.\.32"):
        IntFormat(33)
    with pytest.raises(ValueError, match="int<B>"):
        get_format("int64")


def test_mxint8_element_is_int8_with_six_fraction_bits():
    """The mxint8 preset's element (FloatFormat(0, 7, bias=0) read with int_codes) and
    IntFormat(8, 6, symmetric=True) hold the same value on every code and encode alike."""
    mx = get_format("mxint8")
    el = IntFormat(8, frac_bits=6, symmetric=True)
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(mx._element_values(codes), el.decode(codes))
    rng = np.random.default_rng(10)
    x = rng.uniform(-1.99, 1.99, (50, 32))
    x[:, 0] = 1.5                                            # amax in [1, 2): scale 2**0
    enc = mx.encode(x)
    assert (enc.scales == 127).all()
    for mode in ("rne", "rtz", "rtp", "rtn", "rna", "rto"):
        assert np.array_equal(mx.encode(x, rounding=mode).codes, el.encode(x, rounding=mode))
    assert el.min_code == 0x81 and el.max == 127 / 64


# --------------------------------------------------------------------- fpx vectors --random-bits
def _read_csv(path):
    rows = [ln.split(",") for ln in open(path) if not ln.startswith("#")]
    return rows[0], rows[1:]


def test_cli_vectors_random_bits_npy(tmp_path, capsys):
    bits = np.random.default_rng(11).integers(0, 1 << 12, 4000).astype(np.uint16)
    src = tmp_path / "bits.npy"
    np.save(src, bits)
    out = tmp_path / "v.csv"
    assert main(["vectors", "-f", "float8_e4m3fn", "-r", "sr", "--random-bits", str(src),
                 "--sr-bits", "12", "--count", "20", "-o", str(out)]) == 0
    head, rows = _read_csv(out)
    assert head[4] == "random_hex"
    f = get_format("float8_e4m3fn")
    x = np.array([int(r[2], 16) for r in rows], np.uint32).view(np.float32)
    r = np.array([int(r[4], 16) for r in rows], np.uint64)
    assert np.array_equal(r, bits[:len(rows)])
    codes = [int(r[5], 16) for r in rows]
    assert codes == f.encode(x, rounding="sr", random_bits=r, sr_bits=12).tolist()
    assert codes == [encode_given_bits(f, float(v), int(b), 12) for v, b in zip(x, r)]


def test_cli_vectors_random_bits_text_hex(tmp_path):
    src = tmp_path / "bits.txt"
    src.write_text("# from the LFSR\n" + "\n".join(f"0x{v % 256:02x}" for v in range(5000)))
    out = tmp_path / "v.hex"
    assert main(["vectors", "-f", "float4_e2m1fn", "-r", "sr", "--random-bits", str(src),
                 "--sr-bits", "8", "--count", "5", "-o", str(out), "--style", "hex"]) == 0
    lines = [ln.split() for ln in open(out) if not ln.startswith("//")]
    assert all(len(ln) == 3 and len(ln[1]) == 2 for ln in lines)
    f = get_format("float4_e2m1fn")
    x = np.array([int(ln[0], 16) for ln in lines], np.uint32).view(np.float32)
    r = np.array([int(ln[1], 16) for ln in lines], np.uint8)
    assert [int(ln[2], 16) for ln in lines] == f.encode(x, rounding="sr", random_bits=r).tolist()


@pytest.mark.parametrize("args,match", [
    (["-f", "e4m3", "--random-bits", "B.npy"], "needs --rounding sr"),
    (["-f", "mxfp4", "-r", "sr", "--random-bits", "B.npy", "--count", "200"], "need"),
    (["-f", "e4m3", "-r", "sr", "--random-bits", "B.txt"], "needs --sr-bits"),
    (["-f", "e4m3", "-r", "sr", "--random-bits", "B.npy", "--count", "100000"], "need"),
    (["-f", "e4m3", "-r", "sr", "--random-bits", "B.npy", "--sr-bits", "4"], r"0\.\.15"),
    (["-f", "e4m3", "-r", "sr", "--random-bits", "F.npy"], "integers"),
    (["-f", "e4m3", "-r", "sr", "--random-bits", "BAD.txt", "--sr-bits", "8"], "line 2"),
    (["-f", "e4m3", "-r", "sr", "--random-bits", "missing.npy"], "missing.npy"),
])
def test_cli_vectors_random_bits_errors(tmp_path, capsys, args, match):
    np.save(tmp_path / "B.npy", np.arange(4000, dtype=np.uint16) % 200)
    (tmp_path / "B.txt").write_text("1f\n")
    np.save(tmp_path / "F.npy", np.zeros(4000))
    (tmp_path / "BAD.txt").write_text("1f\nzz\n")
    args = [str(tmp_path / a) if a.endswith((".npy", ".txt")) else a for a in args]
    rc = main(["vectors", *args, "-o", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(match, err), err


def test_cli_int8(tmp_path, capsys):
    src = tmp_path / "x.npy"
    np.save(src, np.array([-200.0, -1.5, -0.2, 0.5, 2.5, 300.0], np.float32))
    out = tmp_path / "c.npy"
    assert main(["quantize", "-f", "int8", "--codes", str(src), str(out)]) == 0
    assert np.load(out).tolist() == [0x80, 0xFE, 0x00, 0x00, 0x02, 0x7F]
    assert main(["quantize", "-f", "int8", str(src), str(out)]) == 0
    assert np.load(out).tolist() == [-128, -2, 0, 0, 2, 127]
    assert main(["vectors", "-f", "int8", "-o", str(tmp_path / "v.csv")]) == 2
    assert "int8 is neither" in capsys.readouterr().err
    assert main(["info", "float8_e5m2", "--json"]) == 0
    info = __import__("json").loads(capsys.readouterr().out)
    assert (info["max_code"], info["nan_code"], info["epsneg"]) == (0x7B, 0x7E, 0.125)


def test_cli_block_vectors_random_bits(tmp_path):
    bits = np.random.default_rng(12).integers(0, 1 << 10, 5000).astype(np.uint16)
    np.save(tmp_path / "bits.npy", bits)
    out = tmp_path / "b.csv"
    assert main(["vectors", "-f", "mxfp4", "-r", "sr", "--random-bits",
                 str(tmp_path / "bits.npy"), "--sr-bits", "10", "--count", "4",
                 "-o", str(out)]) == 0
    head, rows = _read_csv(out)
    assert head[4] == "random_hex"
    fmt = get_format("mxfp4")
    x = np.array([int(r[3], 16) for r in rows], np.uint32).view(np.float32).reshape(-1, 32)
    r = np.array([int(r[4], 16) for r in rows], np.uint64).reshape(-1, 32)
    assert np.array_equal(r.reshape(-1), bits[:r.size])
    codes = np.array([int(r[6], 16) for r in rows]).reshape(-1, 32)
    for i in range(x.shape[0]):
        enc = fmt.encode(x[i:i + 1], rounding="sr", random_bits=r[i:i + 1], sr_bits=10)
        assert np.array_equal(enc.codes[0], codes[i])


def test_block_vectors_without_nan_scale_leave_nan_blocks_out(tmp_path):
    from fpformat.vectors import block_vectors
    vec = block_vectors(BlockFormat("e2m1", 16, scale_format=UE4M3), count=2)
    assert not {"nan", "+inf", "-inf"} & set(vec.kinds)
    assert np.isfinite(vec.inputs).all() and len(vec) == 7
    assert {"nan", "+inf", "-inf"} <= set(block_vectors(get_format("mxfp4"), count=2).kinds)
