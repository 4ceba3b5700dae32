"""Preset names and the spec grammar."""

import numpy as np
import pytest

from fpformat import FloatFormat, get_format
from fpformat.presets import ELEMENT_PRESETS


@pytest.mark.parametrize("spec,expected", [
    ("e4m3", FloatFormat(4, 3)),
    ("e3m4b5", FloatFormat(3, 4, bias=5)),
    ("e4m3fn", get_format("float8_e4m3fn")),
    ("e4m3b8fnuz", get_format("float8_e4m3fnuz")),
    ("e5m2ieee", get_format("float8_e5m2")),
    ("ue4m3fn", FloatFormat(4, 3, signed=False, nan_codes=1)),
    ("e3m2_ftz", FloatFormat(3, 2, subnormals=False)),
    ("e2m1b-2", FloatFormat(2, 1, bias=-2)),
    ("E4M3", FloatFormat(4, 3)),
])
def test_spec_grammar(spec, expected):
    assert get_format(spec) == expected


@pytest.mark.parametrize("name", list(ELEMENT_PRESETS) + ["e3m4b5", "ue4m3fn", "e3m2_ftz", "e0m7"])
def test_spec_round_trips(name):
    f = get_format(name)
    assert get_format(f.spec) == f


def test_family_and_lookalikes_differ():
    assert get_format("e4m3").max == 480
    assert get_format("float8_e4m3fn").max == 448
    assert get_format("float8_e4m3").max == 240
    assert get_format("e5m2").max == 114688 and get_format("float8_e5m2").max == 57344


@pytest.mark.parametrize("p", range(1, 8))
def test_p3109_layout(p):
    f = get_format(f"p3109_k8p{p}")
    assert f.bits == 8 and f.man_bits == p - 1 and f.bias == 2 ** (7 - p)
    codes = np.arange(256, dtype=np.uint8)
    v = f.decode(codes)
    assert np.isnan(v[0x80]) and np.isnan(v).sum() == 1
    assert v[0x7F] == np.inf and v[0xFF] == -np.inf
    assert v[0x00] == 0 and v[0x7E] == f.max


def test_e8m0_has_no_zero():
    f = get_format("float8_e8m0fnu")
    v = f.decode(np.arange(256, dtype=np.uint8))
    assert v[0] == 2.0 ** -127 and v[254] == 2.0 ** 127 and np.isnan(v[255])
    assert f.encode(np.array([0.0, -1.0, 3.0])).tolist() == [255, 255, 129]


@pytest.mark.parametrize("bad,match", [
    ("e4m3x", "unknown format"), ("float7", "unknown format"), ("ue4m3fnuz", "fnuz"),
    ("e0m3ieee", "ieee"), ("e12m3", "exp_bits"), ("e4m53", "man_bits"),
])
def test_bad_specs(bad, match):
    with pytest.raises(ValueError, match=match):
        get_format(bad)


def test_get_format_type_errors():
    with pytest.raises(TypeError, match="format"):
        get_format(3)
    with pytest.raises(TypeError, match="exp_bits"):
        FloatFormat(4.0, 3)
    with pytest.raises(ValueError, match="nan_codes"):
        FloatFormat(2, 1, nan_codes=16)
    with pytest.raises(ValueError, match="bias"):
        FloatFormat(11, 52, bias=-5)


def test_properties():
    f = get_format("float8_e4m3fn")
    assert f.bits == 8 and f.min_normal == 2 ** -6 and f.min_subnormal == 2 ** -9
    assert f.epsilon == 0.125 and f.num_finite == 253 and f.has_nan and not f.has_inf
    assert len(f.values()) == f.num_finite
    assert f.dynamic_range == pytest.approx(np.log2(448 / 2 ** -9))
    g = get_format("e3m2_ftz")
    assert g.min_subnormal == g.min_normal == 0.25 and len(g.values()) == g.num_finite
    u = get_format("ue4m3fn")
    assert u.bits == 7 and u.values().min() == 0 and u.num_finite == 127
