"""What a format's codes mean, as plain data: classes, bit fields, value tables, specials.

These answer the questions ``fpx info`` shows a hardware designer: which codes are NaN, infinity
or zero, what every code of a narrow format decodes to, and which standard formats share the
exponent and mantissa widths but differ in bias or special values (``e4m3``, max 480, is neither
``float8_e4m3fn``, max 448, nor ``float8_e4m3``, max 240).  Everything returns JSON-ready dicts,
lists and strings.
"""

from __future__ import annotations

from .format import MAX_EXP_BITS, FloatFormat
from .names import ALIASES, p3109_member, p3109_name
from .presets import BLOCK_PRESETS, ELEMENT_PRESETS, element_format

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
            "nan_codes": f.nan_codes, "inf": f.inf, "negative_zero": f.negative_zero,
            "has_zero": f.has_zero}


def family_member(fmt: FloatFormat) -> FloatFormat | None:
    """The design-space family member ``[u]e{E}m{M}`` with ``fmt``'s widths and signedness (IEEE
    bias, subnormals, every code finite), named by its spec (``ue8m0fin`` where the bare spec is
    an alias: ``ue8m0`` is E8M0), or None where it cannot exist: E = M = 0, or E = 11, whose top
    binade, finite in the family, lies beyond float64 (``e11m3ieee`` exists, ``e11m3`` does
    not)."""
    if fmt.exp_bits + fmt.man_bits == 0:
        return None
    try:
        member = FloatFormat(fmt.exp_bits, fmt.man_bits, signed=fmt.signed)
    except ValueError:
        return None
    return FloatFormat(fmt.exp_bits, fmt.man_bits, signed=fmt.signed, name=member.spec)


def _p3109_twins(fmt: FloatFormat) -> list[FloatFormat]:
    """The P3109 formats with ``fmt``'s widths and signedness (extended, finite) that
    FloatFormat can hold."""
    out = []
    for extended in (True, False):
        fields = p3109_member(fmt.bits, fmt.man_bits + 1, fmt.signed, extended)
        if fields["exp_bits"] != fmt.exp_bits or not 1 <= fields["exp_bits"] <= MAX_EXP_BITS:
            continue
        try:
            f = FloatFormat(**fields)
        except ValueError:
            continue
        out.append(FloatFormat(**fields, name=p3109_name(f)))
    return out


def look_alikes(fmt: FloatFormat) -> list[dict[str, object]]:
    """Formats easily confused with ``fmt``: the design-space family member ``[u]e{E}m{M}``
    (first, unless it is ``fmt`` or cannot exist, as for E = 11: :func:`family_member`), every
    element preset with the same exponent and mantissa widths, and the P3109 members with the
    same widths and signedness, each unless equal to ``fmt`` or to a row before it.  Each
    row: name, bias, max, min_subnormal, nan_codes, inf, negative_zero, has_zero."""
    candidates: list[tuple[str, FloatFormat]] = []
    family = family_member(fmt)
    if family is not None:
        candidates.append((family.name, family))
    for name in ELEMENT_PRESETS:
        other = element_format(name)
        if (other.exp_bits, other.man_bits) == (fmt.exp_bits, fmt.man_bits):
            candidates.append((name, other))
    candidates += [(f.name, f) for f in _p3109_twins(fmt)]
    rows, seen = [], [fmt]
    for name, other in candidates:
        if other not in seen:
            seen.append(other)
            rows.append(_look_alike_row(name, other))
    return rows


def aliases(fmt: FloatFormat) -> list[str]:
    """Every other name :func:`fpformat.get_format` resolves to a format equal to ``fmt``: preset
    names, :data:`fpformat.names.ALIASES` and the P3109 names (both spellings), sorted
    (``float8_e8m0fnu``: ``e8m0``, ``e8m0fnu``, ``fp8_e8m0``, ``ue8m0``)."""
    names = {name for name in ELEMENT_PRESETS if element_format(name) == fmt}
    names |= {alias for alias, target in ALIASES.items() if element_format(target) == fmt}
    p3109 = p3109_name(fmt)
    if p3109 is not None:
        names |= {p3109, p3109.replace("binary", "p3109_k", 1)}
    names.discard(str(fmt))
    return sorted(names)


def describe(fmt: object) -> dict[str, object]:
    """A JSON-ready description of an element format (its properties, its other names as
    ``"aliases"`` (:func:`aliases`), :func:`special_codes` as ``"specials"`` and
    :func:`look_alikes`) or of a block format (its properties, the element's
    and the scale's descriptions, block size, axis, tiles and scale rule)."""
    if isinstance(fmt, FloatFormat):
        d = fmt.describe()
        d["aliases"] = aliases(fmt)
        d["specials"] = special_codes(fmt)
        d["look_alikes"] = look_alikes(fmt)
        return d
    d = fmt.describe() if hasattr(fmt, "describe") else {"name": str(fmt)}
    d.setdefault("spec", getattr(fmt, "spec", str(fmt)))
    element = getattr(fmt, "element", None)
    if element is not None:                       # a block format: its element and its scale
        d.setdefault("element", element.describe())
        scale = fmt.scale_format
        d.setdefault("scale_format", scale.describe() if scale is not None else "float32 (exact)")
        for attr in ("block_size", "axis", "tile", "scale_rule"):
            if hasattr(fmt, attr):
                d.setdefault(attr, getattr(fmt, attr))
    return d


# ------------------------------------------------------------------------------- the name table
#: The widths the P3109 rows of :func:`names_markdown` cover (K >= 2; wider formats need
#: ``man_bits > 52``).
P3109_TABLE_WIDTHS = range(2, 65)


def _summary(f: FloatFormat) -> str:
    """One line on an element format: width, fields, bias, max and its special codes."""
    parts = [f"{f.bits}-bit {'' if f.signed else 'unsigned '}E{f.exp_bits}M{f.man_bits}",
             f"bias {f.bias}", f"max {f.max:.6g}"]
    if not f.has_zero:
        parts.append("no zero")
    if f.signed and not f.negative_zero:
        parts.append("NaN at the -0 code")
    elif f.nan_codes:
        parts.append(f"{f.nan_codes} NaN code{'s' if f.nan_codes > 1 else ''}")
    else:
        parts.append("no NaN")
    if f.inf:
        parts.append("±inf" if f.signed else "+inf")
    if f.parity == "code":
        parts.append("ties by code parity")
    return ", ".join(parts)


def _p3109_precisions(K: int, signed: bool, extended: bool) -> list[int]:
    """The precisions P of the P3109 members ``binary{K}p{P}`` (given signedness and domain)
    that :func:`fpformat.get_format` builds."""
    out = []
    for P in range(1, K + (0 if signed else 1)):
        fields = p3109_member(K, P, signed, extended)
        if fields["exp_bits"] > MAX_EXP_BITS:
            continue
        try:
            FloatFormat(**fields)
        except ValueError:
            continue
        out.append(P)
    return out


def _ranges(values: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1..3, 5"``; ``"none"`` for an empty list."""
    if not values:
        return "none"
    runs, start = [], values[0]
    for prev, v in zip(values, values[1:] + [None]):
        if v != prev + 1 if v is not None else True:
            runs.append(f"{start}" if start == prev else f"{start}..{prev}")
            start = v
    return ", ".join(runs)


def _p3109_cell(K: int, signed: bool) -> str:
    e, f = _p3109_precisions(K, signed, True), _p3109_precisions(K, signed, False)
    return _ranges(e) if e == f else f"e: {_ranges(e)}; f: {_ranges(f)}"


def names_markdown() -> str:
    """Every name :func:`fpformat.get_format` accepts, as Markdown tables generated from the
    code's tables (element presets, :data:`fpformat.names.ALIASES`, the P3109 family, block
    presets) and its grammars.  docs/names.md holds a copy that a test compares with this."""
    lines = ["| Name | Kind | Meaning |", "|---|---|---|"]
    for name in ELEMENT_PRESETS:
        lines.append(f"| `{name}` | element preset | {_summary(element_format(name))} |")
    for alias in sorted(ALIASES):
        lines.append(f"| `{alias}` | alias | `{ALIASES[alias]}` |")
    lines += [
        "| `binary<K>p<P><s\\|u><e\\|f>`, `p3109_k<K>p<P><s\\|u><e\\|f>` | P3109 family | "
        "K bits, precision P, signed/unsigned, extended (±inf)/finite; the widths and "
        "precisions below |",
        "| `[u]e<E>m<M>[b<BIAS>][fin\\|fn\\|fnuz\\|ieee][_ftz]` | element spec | E exponent "
        "and M mantissa bits, IEEE bias unless `b<BIAS>`; every code finite (`fin` or no "
        "suffix), top code NaN (`fn`), -0 code NaN (`fnuz`) or IEEE inf/NaN (`ieee`); `u` "
        "unsigned, `_ftz` no subnormals. A spec that is also an alias means the alias "
        "(`ue8m0`: E8M0; the family member is `ue8m0fin`) |",
        "| `int<B>` | integer format | two's-complement B-bit integers, B = 2..32 (`int8`: "
        "-128..127, `fpformat.IntFormat`); as the element of a block spec (`int8/32/e8m0`, "
        "`mxint8`) the same codes read as k * 2**(2 - B), a fixed scale the block scale "
        "absorbs |",
    ]
    for name, b in BLOCK_PRESETS.items():
        scale = b.scale_format.spec if b.scale_format is not None else "float32"
        lines.append(f"| `{name}` | block preset | `{b.element}` elements, blocks of "
                     f"{b.block_size}, `{scale}` scales, rule `{b.scale_rule}` |")
    lines += [
        "| `ELEMENT/BLOCK[/SCALE][/RULE][@axisN]` | block spec | BLOCK: an int, `channel`, "
        "`tensor` or `RxC` tiles; SCALE: any element name; RULE: `ocp`, `amax`, `nvfp4` "
        "(`-nearest` for amax scales rounded to nearest); e.g. `e4m3/32/ue8m0` |",
        "| torch, numpy and ml_dtypes dtypes | dtype object | by name: `torch.float8_e4m3fn`, "
        "`torch.bfloat16`, `ml_dtypes.float8_e4m3fn`, `np.dtype(ml_dtypes.float4_e2m1fn)`, "
        "`np.float16` (`torch.float4_e2m1fn_x2` is packed: use `float4_e2m1fn`) |",
        "",
        "P3109 members by width K (the precisions P that exist; e: extended, f: finite where "
        "they differ):",
        "",
        "| K | signed (`s`): P | unsigned (`u`): P |",
        "|---|---|---|",
    ]
    for K in P3109_TABLE_WIDTHS:
        lines.append(f"| {K} | {_p3109_cell(K, True)} | {_p3109_cell(K, False)} |")
    return "\n".join(lines) + "\n"
