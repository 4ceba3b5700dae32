"""Golden vectors held to the independent references, not to the encoder that wrote them:
element vectors to tests/reference.py (exact rationals), MX block vectors to tests/mx_reference.py
(the OCP rules written from the specification)."""

from __future__ import annotations

import mx_reference as mxref
import numpy as np
import pytest
from reference import reference, same_float

from fpformat import get_format
from fpformat.kernels import sr_random_u64
from fpformat.vectors import block_vectors, element_vectors


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "e2m1", "float8_e8m0fnu",
                                  "p3109_k8p3", "e3m4b5_ftz"])
@pytest.mark.parametrize("rounding, saturate", [("rne", False), ("rtz", True), ("rna", False),
                                                ("rto", True), ("sr", False)])
def test_element_vectors_match_the_reference(name, rounding, saturate):
    fmt = get_format(name)
    vec = element_vectors(fmt, rounding, saturate, count=200, seed=5, sr_bits=None)
    ref = reference(fmt)
    us = sr_random_u64(5, np.arange(len(vec))) if rounding == "sr" else None
    with np.errstate(invalid="ignore"):                  # signalling NaNs quieten
        want = ref.encode_many(vec.inputs.astype(np.float64), rounding, saturate, us, None)
    assert np.array_equal(vec.codes.astype(np.uint64), want)
    assert same_float(vec.values, ref.decode_all()[want.astype(np.int64)]).all()


@pytest.mark.parametrize("preset", sorted(mxref.PRESET_ELEMENT))
def test_block_vectors_match_the_mx_reference(preset):
    fmt = get_format(preset)
    vec = block_vectors(fmt, "rne", True, count=20, seed=2)
    for r, enc in enumerate(vec.encodings):
        want = mxref.ref_mx(vec.inputs[r:r + 1], mxref.PRESET_ELEMENT[preset])
        specified = want.codes >= 0                 # element codes of NaN blocks: unspecified
        assert np.array_equal(enc.codes.astype(np.int64)[specified], want.codes[specified]), \
            vec.kinds[r]
        assert np.array_equal(enc.scales.astype(np.int64), want.scales), vec.kinds[r]
        assert np.array_equal(vec.values[r:r + 1], want.values, equal_nan=True), vec.kinds[r]


# ------------------------------------------------------------------ matrix-unit (mma) vectors
MMA_CASES = [("h100", "float8_e4m3fn", "float32"), ("h100", "float16", "float32"),
             ("v100", "float16", "float16"), ("b200", "float8_e5m2", "float32"),
             ("fma4/x3/rne/sticky", "bfloat16", "float32")]


@pytest.mark.parametrize("unit, fin, fout", MMA_CASES, ids=["-".join(c) for c in MMA_CASES])
def test_mma_vectors_match_mma_and_the_exact_reference(unit, fin, fout):
    import math

    from unit_reference import unit_gemm_row

    from fpformat.gemm import mma
    from fpformat.units import get_unit
    from fpformat.vectors import mma_vectors
    fi, fo = get_format(fin), get_format(fout)
    u = get_unit(unit, fi, fo)
    k = 2 * u.fma if u.fma <= 8 else u.fma + 3                 # more than one block
    vecs = mma_vectors(unit, fin, fout, k=k, count=12, seed=3)
    kinds = {v.kind for v in vecs}
    assert {"edge", "carry", "zero", "cancel", "below-window", "subnormal", "overflow",
            "special", "random", "gaussian"} <= kinds
    for v in vecs:
        a = fi.decode(np.array(v.a_codes, dtype=np.uint64).astype(fi.dtype))
        b = fi.decode(np.array(v.b_codes, dtype=np.uint64).astype(fi.dtype))
        c = float(fo.decode(np.array([v.c_code], dtype=np.uint64).astype(fo.dtype))[0])
        d = float(fo.decode(np.array([v.d_code], dtype=np.uint64).astype(fo.dtype))[0])
        want = unit_gemm_row(list(a), list(b), c, u, fi, fo)
        got = float(mma(a, b, c, u, fi, fo))
        for x in (d, v.d_value, got):
            assert (math.isnan(x) and math.isnan(want)) or (
                x == want and math.copysign(1, x) == math.copysign(1, want)), (v, want)
    zeros = [v for v in vecs if v.kind == "zero"]
    assert all(v.d_value == 0 and math.copysign(1, v.d_value) == 1 for v in zeros)


def test_mma_vectors_tell_units_apart():
    """The edge vectors written for h100's FP8 path give other results on B200's (a 25-bit
    window instead of 13) and on a rounding unit."""
    from fpformat.gemm import mma
    from fpformat.vectors import mma_vectors
    fi = get_format("float8_e4m3fn")
    vecs = [v for v in mma_vectors("h100", fi, "float32", k=32, count=0) if v.kind == "edge"]
    A = fi.decode(np.array([v.a_codes for v in vecs], dtype=np.uint8))
    B = fi.decode(np.array([v.b_codes for v in vecs], dtype=np.uint8))
    h = np.array([v.d_value for v in vecs])
    for other in ("b200", "fma32/x2/rne"):
        d = mma(A[:, None, :], B[:, :, None], 0.0, other, fi)[:, 0, 0]
        assert (d != h).sum() >= 3, other


def test_mma_vectors_refuse_oversized_sets():
    from fpformat.vectors import MAX_VECTOR_INPUTS, mma_vectors
    with pytest.raises(ValueError, match="MAX_VECTOR_INPUTS"):
        mma_vectors("h100", "float16", k=1024, count=MAX_VECTOR_INPUTS // 1024)
    with pytest.raises(ValueError, match="k must be"):
        mma_vectors("h100", "float16", k=1)
    with pytest.raises(ValueError, match="no preset"):
        mma_vectors("v100", "bfloat16")
