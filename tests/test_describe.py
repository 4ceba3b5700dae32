"""fpformat.describe: code classes, bit fields, value tables, special codes and look-alikes."""

import pytest

from fpformat import get_format
from fpformat.describe import (
    CODE_CLASSES,
    code_bits,
    code_class,
    code_hex,
    describe,
    look_alikes,
    special_codes,
    value_table,
)


def test_e4m3fn_code_classes():
    f = get_format("float8_e4m3fn")
    assert code_class(f, 0x7F) == code_class(f, 0xFF) == "nan"      # S.1111.111: the one NaN
    assert code_class(f, 0x7E) == "normal"                           # 448, the max
    assert code_class(f, 0x01) == "subnormal" and code_class(f, 0x07) == "subnormal"
    assert code_class(f, 0x08) == "normal"                           # 2**-6, smallest normal
    assert code_class(f, 0x00) == code_class(f, 0x80) == "zero"      # +0 and -0
    assert special_codes(f) == {"nan": ["0x7F", "0xFF"], "inf": [], "zero": ["0x00", "0x80"]}


def test_ieee_and_fnuz_specials():
    e5m2 = special_codes(get_format("float8_e5m2"))
    assert e5m2["inf"] == ["0x7C", "0xFC"]
    assert e5m2["nan"] == ["0x7D", "0x7E", "0x7F", "0xFD", "0xFE", "0xFF"]
    fnuz = special_codes(get_format("float8_e4m3fnuz"))
    assert fnuz == {"nan": ["0x80"], "inf": [], "zero": ["0x00"]}    # no -0: it is the NaN
    assert code_class(get_format("float8_e5m2"), 0x7C) == "inf"


def test_e8m0_has_no_zero_code():
    f = get_format("float8_e8m0fnu")
    assert special_codes(f) == {"nan": ["0xFF"], "inf": [], "zero": []}
    assert code_class(f, 0x00) == "normal"                           # 2**-127, not a subnormal
    assert code_bits(f, 0xFF) == "11111111"                          # no sign, no mantissa


def test_code_bits_and_hex():
    f = get_format("float4_e2m1fn")
    assert code_bits(f, 0b1001) == "1_00_1" and code_hex(f, 9) == "0x9"
    assert code_bits(get_format("e4m3"), 0x7F) == "0_1111_111"
    assert code_hex(get_format("bfloat16"), 0x7F80) == "0x7F80"
    assert code_bits(get_format("ue4m3fn"), 0x7F) == "1111_111"      # unsigned: no sign field


def test_value_table_every_code():
    f = get_format("float4_e2m1fn")
    rows = value_table(f)
    assert [r["code"] for r in rows] == list(range(16))
    assert [r["value"] for r in rows[:8]] == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert [r["class"] for r in rows[:3]] == ["zero", "subnormal", "normal"]
    assert rows[1]["exact"] == "1/2" and rows[9]["value"] == -0.5
    assert {r["class"] for r in value_table(get_format("float8_e5m2"))} == set(CODE_CLASSES)
    with pytest.raises(ValueError, match="fmt: .* at most 12 bits"):
        value_table(get_format("float16"))
    assert len(value_table(get_format("float16"), max_bits=16)) == 1 << 16


def test_look_alikes_tell_e4m3_variants_apart():
    rows = {r["name"]: r for r in look_alikes(get_format("e4m3"))}
    assert rows["float8_e4m3fn"]["max"] == 448 and rows["float8_e4m3"]["max"] == 240
    assert "e4m3" not in rows                                        # not its own look-alike
    first = look_alikes(get_format("float8_e4m3fn"))[0]
    assert first["name"] == "e4m3" and first["max"] == 480 and first["nan_codes"] == 0


def test_describe_element_and_block():
    d = describe(get_format("float8_e4m3fn"))
    assert d["max"] == 448 and d["specials"]["nan"] == ["0x7F", "0xFF"]
    assert {r["name"] for r in d["look_alikes"]} >= {"e4m3", "float8_e4m3"}
    b = describe(get_format("mxfp4"))
    assert b["block_size"] == 32 and b["element"]["max"] == 6
    assert b["scale_format"]["name"] == "float8_e8m0fnu"
