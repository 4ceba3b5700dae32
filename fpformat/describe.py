"""What a format's codes mean, as plain data: classes, bit fields, value tables, specials.

These answer the questions ``fpx info`` shows a hardware designer: which codes are NaN, infinity
or zero, what every code of a narrow format decodes to, and which standard formats share the
exponent and mantissa widths but differ in bias or special values (``e4m3``, max 480, is neither
``float8_e4m3fn``, max 448, nor ``float8_e4m3``, max 240).  Everything returns JSON-ready dicts,
lists and strings.
"""

from __future__ import annotations

from .format import FloatFormat
from .presets import ELEMENT_PRESETS, element_format

#: The widest format :func:`value_table` lists (2**12 rows).
VALUE_TABLE_MAX_BITS = 12
#: The widest format :func:`special_codes` scans code by code.
SPECIAL_CODES_MAX_BITS = 16
#: The classes :func:`code_class` returns.
CODE_CLASSES = ("zero", "subnormal", "normal", "inf", "nan")


def code_bits(fmt: FloatFormat, code: int) -> str:
    """The bits of ``code`` as ``sign_exponent_mantissa`` (e.g. ``"1_00_1"``); fields of width 0
    and the sign of an unsigned format are left out."""
    s = format(code, f"0{fmt.bits}b")
    i = int(fmt.signed)
    parts = ([s[:1]] if fmt.signed else []) + [s[i:i + fmt.exp_bits], s[i + fmt.exp_bits:]]
    return "_".join(p for p in parts if p)


def code_hex(fmt: FloatFormat, code: int) -> str:
    """``code`` in hexadecimal with as many digits as the format's width needs (``"0x7F"``)."""
    return f"0x{code:0{(fmt.bits + 3) // 4}X}"


def code_class(fmt: FloatFormat, code: int) -> str:
    """One of :data:`CODE_CLASSES`: what ``code`` decodes to in ``fmt``.  Exponent field 0 is
    ``"subnormal"`` only in formats with a zero (in E8M0-like formats it is an ordinary binade);
    in a flush-to-zero format those codes decode to zero and are classed so."""
    v = fmt.code_value(code)
    if isinstance(v, float):                       # the exact value is a Fraction otherwise
        return "inf" if abs(v) == float("inf") else "nan"
    if v == 0:
        return "zero"
    magnitude = code & ((1 << (fmt.exp_bits + fmt.man_bits)) - 1)
    if magnitude >> fmt.man_bits == 0 and fmt.has_zero:
        return "subnormal"
    return "normal"


def value_table(fmt: FloatFormat, max_bits: int = VALUE_TABLE_MAX_BITS) -> list[dict[str, object]]:
    """One row per code, in code order: ``code``, ``hex``, ``binary`` (:func:`code_bits`),
    ``value`` (float), ``exact`` (the exact value as a fraction string, or nan/inf) and
    ``class`` (:func:`code_class`).  ``ValueError`` for formats wider than ``max_bits``."""
    if fmt.bits > max_bits:
        raise ValueError(f"fmt: a value table lists formats of at most {max_bits} bits; "
                         f"{fmt} has {fmt.bits} bits")
    rows = []
    for code in range(1 << fmt.bits):
        v = fmt.code_value(code)
        rows.append({"code": code, "hex": code_hex(fmt, code), "binary": code_bits(fmt, code),
                     "value": float(v), "exact": str(v), "class": code_class(fmt, code)})
    return rows


def special_codes(fmt: FloatFormat) -> dict[str, list[str]]:
    """The hex codes (:func:`code_hex`) that are ``"nan"``, ``"inf"`` and ``"zero"``.  Formats
    wider than :data:`SPECIAL_CODES_MAX_BITS` bits give empty lists (too many codes to scan)."""
    out: dict[str, list[str]] = {"nan": [], "inf": [], "zero": []}
    if fmt.bits <= SPECIAL_CODES_MAX_BITS:
        for code in range(1 << fmt.bits):
            c = code_class(fmt, code)
            if c in out:
                out[c].append(code_hex(fmt, code))
    return out


def _look_alike_row(name: str, f: FloatFormat) -> dict[str, object]:
    return {"name": name, "bias": f.bias, "max": f.max, "min_subnormal": f.min_subnormal,
            "nan_codes": f.nan_codes, "inf": f.inf, "negative_zero": f.negative_zero}


def family_member(fmt: FloatFormat) -> FloatFormat | None:
    """The design-space family member ``e{E}m{M}`` with ``fmt``'s widths (IEEE bias, subnormals,
    every code finite), or None where it cannot exist: E = M = 0, or E = 11, whose top binade,
    finite in the family, lies beyond float64 (``e11m3ieee`` exists, ``e11m3`` does not)."""
    if fmt.exp_bits + fmt.man_bits == 0:
        return None
    try:
        return FloatFormat(fmt.exp_bits, fmt.man_bits, name=f"e{fmt.exp_bits}m{fmt.man_bits}")
    except ValueError:
        return None


def look_alikes(fmt: FloatFormat) -> list[dict[str, object]]:
    """Formats easily confused with ``fmt``: the design-space family member ``e{E}m{M}`` (first,
    unless it is ``fmt`` or cannot exist, as for E = 11: :func:`family_member`) and every
    element preset with the same exponent and mantissa widths but another bias or other
    special codes.  Each row: name, bias, max, min_subnormal, nan_codes,
    inf, negative_zero."""
    rows = []
    for name in ELEMENT_PRESETS:
        other = element_format(name)
        if (other.exp_bits, other.man_bits) == (fmt.exp_bits, fmt.man_bits) and other != fmt:
            rows.append(_look_alike_row(name, other))
    family = family_member(fmt)
    if family is not None and family != fmt:
        rows.insert(0, _look_alike_row(family.name, family))
    return rows


def describe(fmt: object) -> dict[str, object]:
    """A JSON-ready description of an element format (its properties, :func:`special_codes` as
    ``"specials"`` and :func:`look_alikes`) or of a block format (its properties, the element's
    and the scale's descriptions, block size, axis, tiles and scale rule)."""
    if isinstance(fmt, FloatFormat):
        d = fmt.describe()
        d["specials"] = special_codes(fmt)
        d["look_alikes"] = look_alikes(fmt)
        return d
    d = fmt.describe() if hasattr(fmt, "describe") else {"name": str(fmt)}
    d.setdefault("spec", getattr(fmt, "spec", str(fmt)))
    element = getattr(fmt, "element", None)
    if element is not None and "element" not in d:
        d["element"] = element.describe()
    scale = getattr(fmt, "scale_format", None)
    if "scale_format" not in d:
        d["scale_format"] = scale.describe() if scale is not None else "float32 (exact)"
    for attr in ("block_size", "axis", "tile", "scale_rule"):
        if hasattr(fmt, attr) and attr not in d:
            d[attr] = getattr(fmt, attr)
    return d
