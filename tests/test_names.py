"""Format names: E8M0 by its usual names, the P3109 family, aliases, dtype objects, the range
check and the documentation's name table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from explorer.cli import main
from fpformat import FloatFormat, get_format
from fpformat.describe import aliases, describe, look_alikes, names_markdown
from fpformat.names import ALIASES, p3109_fields, p3109_name

E8M0 = get_format("float8_e8m0fnu")
DOC = Path(__file__).resolve().parent.parent / "docs" / "names.md"


# --------------------------------------------------------------------------------------- E8M0
@pytest.mark.parametrize("name", ["e8m0", "ue8m0", "E8M0", "e8m0fnu", "UE8M0", "fp8_e8m0"])
def test_e8m0_names_mean_ocp_e8m0(name):
    f = get_format(name)
    assert f == E8M0 and str(f) == "float8_e8m0fnu"
    v = f.decode(np.array([0, 127, 254, 255], dtype=np.uint8))
    assert v[0] == 2.0 ** -127 and v[1] == 1 and v[2] == 2.0 ** 127 and np.isnan(v[3])


@pytest.mark.parametrize("spec", ["e4m3/32/ue8m0", "e2m1/32/e8m0", "e4m3/32/e8m0fnu"])
def test_e8m0_names_in_block_specs(spec):
    b = get_format(spec)
    assert b.scale_format == E8M0 and b.scale_rule == "ocp"


def test_the_family_member_is_ue8m0fin():
    fam = get_format("ue8m0fin")
    assert fam == FloatFormat(8, 0, signed=False) and fam != E8M0
    v = fam.decode(np.array([0, 1, 255], dtype=np.uint8))
    assert v.tolist() == [0.0, 2.0 ** -126, 2.0 ** 128] and not fam.has_nan
    assert fam.spec == "ue8m0fin" and FloatFormat(8, 0, signed=False).spec == "ue8m0fin"
    assert get_format("e8m0fin") == FloatFormat(8, 0) and FloatFormat(8, 0).spec == "e8m0fin"
    assert get_format("e4m3fin") == get_format("e4m3")          # fin: the default, spelled out
    assert get_format("e8m0/32/ue8m0fin").scale_format == fam
    assert get_format("ue8m0b127") == fam                        # any other spelling: the spec


def test_info_tells_e8m0_from_the_family_member(capsys):
    assert main(["info", "ue8m0", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "float8_e8m0fnu" and "ue8m0" in d["aliases"] and "e8m0" in d["aliases"]
    rows = {r["name"]: r for r in d["look_alikes"]}
    assert rows["ue8m0fin"]["max"] == 2.0 ** 128 and rows["ue8m0fin"]["has_zero"]
    assert main(["info", "ue8m0fin"]) == 0
    out = capsys.readouterr().out
    assert "float8_e8m0fnu" in out and "zero no" in out
    assert look_alikes(get_format("ue8m0fin"))[0]["name"] == "float8_e8m0fnu"


# --------------------------------------------------------------------------------------- P3109
def test_p3109_names_and_their_encodings():
    se = get_format("binary8p3se")
    assert se == get_format("p3109_k8p3") == get_format("p3109_k8p3se") == get_format("Binary8p3SE")
    assert (se.exp_bits, se.man_bits, se.bias, se.signed) == (5, 2, 16, True)
    uf = get_format("binary6p2uf")                               # E = K - P + 1 = 5, bias 2**4
    assert (uf.exp_bits, uf.man_bits, uf.bias, uf.signed, uf.inf) == (5, 1, 16, False, False)
    v = uf.decode(np.arange(64, dtype=np.uint8))
    assert np.isnan(v[63]) and np.isnan(v).sum() == 1 and v[62] == uf.max == 2.0 ** 15
    ue = get_format("binary6p2ue")
    v = ue.decode(np.arange(64, dtype=np.uint8))
    assert v[62] == np.inf and np.isnan(v[63]) and v[61] == ue.max
    sf = get_format("binary5p1sf")                               # P = 1: no subnormals
    v = sf.decode(np.arange(32, dtype=np.uint8))
    assert np.isnan(v[16]) and v[15] == sf.max == 2.0 ** (15 - 8) and v[1] == 2.0 ** -7
    assert sf.parity == "code" and not sf.has_inf


@pytest.mark.parametrize("K", range(2, 17))
def test_every_p3109_name_round_trips(K):
    for sign, top in (("s", K - 1), ("u", K)):
        for P in range(1, top + 1):
            for domain in "ef":
                name = f"binary{K}p{P}{sign}{domain}"
                try:
                    f = get_format(name)
                except ValueError as err:
                    # only where the report's format leaves float64 or has no finite value
                    assert "float64" in str(err) or "no finite nonzero" in str(err), name
                    continue
                assert p3109_name(f) == name and get_format(f.spec) == f
                assert f.bits == K and f.man_bits == P - 1 and f.bias == 2 ** (f.exp_bits - 1)


def test_p3109_k8_presets_keep_their_meaning():
    """p3109_k8pP: signed extended binary8pP, NaN at 0x80, ±inf at 0x7F/0xFF, bias 2**(7-P);
    only P = 1's ties moved (to the even code)."""
    for p in range(1, 8):
        f = get_format(f"p3109_k8p{p}")
        old = FloatFormat(8 - p, p - 1, bias=1 << (7 - p), inf=True, negative_zero=False,
                          parity="code" if p == 1 else "significand")
        assert f == old == get_format(f"binary8p{p}se") and f.spec == f"p3109_k8p{p}"


@pytest.mark.parametrize("bad,match", [
    ("binary8p8se", r"1\.\.7"), ("binary8p9ue", r"1\.\.8"), ("binary8p0se", r"1\.\.7"),
    ("binary1p1uf", "at least 2"), ("binary2p1se", "no finite nonzero"),
    ("binary16p1se", "15 exponent bits.*float64"), ("binary13p1ue", "13 exponent bits"),
])
def test_bad_p3109_names(bad, match):
    with pytest.raises(ValueError, match=match):
        get_format(bad)


def test_binary11p1_unsigned_is_accepted():
    """Its smallest value 2**-1023 is a float64 subnormal: accepted, and exact."""
    for d in "ef":
        f = get_format(f"binary11p1u{d}")
        assert f.bias == 1024 and f.min_subnormal == 2.0 ** -1023
        x = np.array([2.0 ** -1023, 3 * 2.0 ** -1024, 2.0 ** -1024, 1.0, 2.0 ** 1000])
        assert f.encode(x).tolist() == [1, 2, 0, 1024, 2024]
        assert f.decode(f.encode(x)).tolist() == [2.0 ** -1023, 2.0 ** -1022, 0, 1, 2.0 ** 1000]
    s = get_format("binary13p2se")                               # E = 11, M = 1: 2**-1024 too
    assert s.decode(np.array([1, 2, 3], dtype=np.uint16)).tolist() == \
        [2.0 ** -1024, 2.0 ** -1023, 1.5 * 2.0 ** -1023]


@pytest.mark.parametrize("kwargs,match", [
    (dict(exp_bits=11, man_bits=3, bias=1025), r"smallest normal at 2\*\*-1024.*2\*\*-1023"),
    (dict(exp_bits=11, man_bits=52, bias=1024), r"2\*\*-1075.*2\*\*-1074"),
    (dict(exp_bits=11, man_bits=0, bias=1024, subnormals=False), r"2\*\*-1022 without"),
    (dict(exp_bits=11, man_bits=2, bias=1000), r"largest binade at 2\*\*1047.*2\*\*1023"),
    (dict(exp_bits=3, man_bits=0, parity="odd"), "parity"),
])
def test_range_check_names_the_limit(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FloatFormat(**kwargs)


def test_parity_is_a_field_only_where_it_matters():
    assert FloatFormat(4, 3, parity="code") == FloatFormat(4, 3)       # same rule for M >= 1
    assert FloatFormat(3, 0, parity="code") != FloatFormat(3, 0)
    assert FloatFormat(3, 0, parity="code").spec.startswith("FloatFormat(")  # no spec grammar
    x = np.array([1.5, 3.0])                                   # e3m0 bias 3: 1.0 is code 3
    assert FloatFormat(3, 0).quantize(x).tolist() == [2.0, 4.0]                 # every tie up
    assert FloatFormat(3, 0, parity="code").quantize(x).tolist() == [2.0, 2.0]  # to even code


# --------------------------------------------------------------------------------------- aliases
@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias_resolves_to_its_target(alias):
    assert get_format(alias) == get_format(ALIASES[alias])
    assert alias in aliases(get_format(ALIASES[alias]))


@pytest.mark.parametrize("alias,target", [
    ("fp4", "float4_e2m1fn"), ("fp8_e4m3", "float8_e4m3fn"), ("binary16", "float16"),
    ("binary32", "float32"), ("binary64", "float64"), ("e8m0fnu", "float8_e8m0fnu"),
    ("BFloat16", "bfloat16"), ("p3109_k8p3se", "p3109_k8p3"), ("binary8p3se", "p3109_k8p3"),
])
def test_the_issues_aliases(alias, target):
    assert get_format(alias) == get_format(target)


def test_describe_lists_the_aliases():
    d = describe(get_format("p3109_k8p3"))
    assert {"binary8p3se", "p3109_k8p3se"} <= set(d["aliases"])
    assert aliases(get_format("e2m1")) == ["float4_e2m1fn", "fp4", "fp4_e2m1"]


def test_p3109_fields_ignores_other_names():
    assert p3109_fields("e4m3") is None and p3109_fields("binary16") is None


# --------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype,name", [
    (ml_dtypes.float8_e4m3fn, "float8_e4m3fn"), (np.dtype(ml_dtypes.float4_e2m1fn),
                                                 "float4_e2m1fn"),
    (ml_dtypes.float8_e8m0fnu, "float8_e8m0fnu"), (ml_dtypes.bfloat16, "bfloat16"),
    (np.float16, "float16"), (np.dtype("float32"), "float32"), (np.float64, "float64"),
    (ml_dtypes.float6_e3m2fn, "float6_e3m2fn"), (ml_dtypes.float8_e4m3b11fnuz,
                                                 "float8_e4m3b11fnuz"),
])
def test_numpy_and_ml_dtypes_objects(dtype, name):
    assert get_format(dtype) == get_format(name)


def test_torch_dtype_objects():
    torch = pytest.importorskip("torch")
    for dt, name in [(torch.float8_e4m3fn, "float8_e4m3fn"), (torch.float8_e5m2, "float8_e5m2"),
                     (torch.bfloat16, "bfloat16"), (torch.float16, "float16"),
                     (torch.float32, "float32"), (torch.float64, "float64"),
                     (torch.float8_e4m3fnuz, "float8_e4m3fnuz"),
                     (torch.float8_e8m0fnu, "float8_e8m0fnu")]:
        assert get_format(dt) == get_format(name), dt
    with pytest.raises(ValueError, match="packed.*float4_e2m1fn"):
        get_format(torch.float4_e2m1fn_x2)
    with pytest.raises(ValueError, match="unknown format 'uint8'"):
        get_format(torch.uint8)


def test_other_objects_are_refused():
    with pytest.raises(TypeError, match="dtype"):
        get_format(object())
    with pytest.raises(TypeError, match="dtype"):
        get_format(3)


def test_reading_a_dtype_does_not_import_torch():
    code = ("import sys, numpy as np, fpformat; fpformat.get_format(np.float16); "
            "fpformat.get_format('binary8p3se'); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------- docs
def test_the_doc_table_is_the_codes_table():
    text = DOC.read_text()
    start, end = "<!-- names-table:start -->\n", "<!-- names-table:end -->"
    table = text[text.index(start) + len(start):text.index(end)]
    assert table == names_markdown(), "docs/names.md is stale: regenerate it (see the doc)"


def test_the_doc_table_names_everything():
    table = names_markdown()
    from fpformat.presets import BLOCK_PRESETS, ELEMENT_PRESETS
    for name in list(ELEMENT_PRESETS) + list(ALIASES) + list(BLOCK_PRESETS):
        assert f"| `{name}` |" in table, name
    assert "binary<K>p<P>" in table and "| 8 | 1..7 | 1..8 |" in table


def test_readme_links_the_names():
    readme = (DOC.parent.parent / "README.md").read_text()
    assert "docs/names.md" in readme and "ue8m0fin" in readme
