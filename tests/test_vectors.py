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
