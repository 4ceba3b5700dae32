"""`fpx info NAME|SPEC`: a format's properties, special codes and (optionally) its value table."""

from __future__ import annotations

import json

from fpformat import FloatFormat, get_format
from fpformat.presets import ELEMENT_PRESETS

VALUE_TABLE_MAX_BITS = 12


def add_parser(sub):
    p = sub.add_parser("info", help="show a format's properties, specials and value table",
                       description="Show a format's properties, special codes, the standard formats "
                                   "it could be confused with, and optionally every code's value.")
    p.add_argument("format", nargs="?", help="preset name or spec, e.g. e4m3, float8_e4m3fn, "
                                              "e3m4b5, ue4m3fn, mxfp4, e2m1/32/e8m0")
    p.add_argument("--values", action="store_true",
                   help=f"print every code (formats of at most {VALUE_TABLE_MAX_BITS} bits)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--list", action="store_true", help="list the preset names")
    return p


def _bin(fmt: FloatFormat, code: int) -> str:
    s = format(code, f"0{fmt.bits}b")
    i = int(fmt.signed)
    parts = ([s[:1]] if fmt.signed else []) + [s[i:i + fmt.exp_bits], s[i + fmt.exp_bits:]]
    return "_".join(p for p in parts if p)


def _classify(fmt: FloatFormat, code: int) -> str:
    v = fmt.code_value(code)
    if isinstance(v, float):
        return "nan" if v != v else "inf"
    if v == 0:
        return "zero"
    mag = code & ((1 << (fmt.exp_bits + fmt.man_bits)) - 1)
    if mag >> fmt.man_bits == 0 and fmt.has_zero:
        return "subnormal"
    return "normal"


def value_table(fmt: FloatFormat) -> list[dict]:
    """One row per code: code, hex, binary (sign_exponent_mantissa), value, class."""
    if fmt.bits > VALUE_TABLE_MAX_BITS:
        raise ValueError(f"--values lists at most {VALUE_TABLE_MAX_BITS}-bit formats; "
                         f"{fmt} has {fmt.bits} bits")
    width = (fmt.bits + 3) // 4
    rows = []
    for code in range(1 << fmt.bits):
        v = fmt.code_value(code)
        rows.append({"code": code, "hex": f"0x{code:0{width}X}", "binary": _bin(fmt, code),
                     "value": float(v), "exact": str(v), "class": _classify(fmt, code)})
    return rows


def specials(fmt: FloatFormat) -> dict:
    """Which codes are NaN, infinity and zero."""
    width = (fmt.bits + 3) // 4
    out: dict[str, list[str]] = {"nan": [], "inf": [], "zero": []}
    if fmt.bits <= 16:
        for code in range(1 << fmt.bits):
            c = _classify(fmt, code)
            if c in out:
                out[c].append(f"0x{code:0{width}X}")
    return out


def look_alikes(fmt: FloatFormat) -> list[dict]:
    """Presets with the same exponent and mantissa widths but other bias or special codes."""
    rows = []
    for name in ELEMENT_PRESETS:
        other = get_format(name)
        if (other.exp_bits, other.man_bits) == (fmt.exp_bits, fmt.man_bits) and other != fmt:
            rows.append({"name": name, "bias": other.bias, "max": other.max,
                         "min_subnormal": other.min_subnormal, "nan_codes": other.nan_codes,
                         "inf": other.inf, "negative_zero": other.negative_zero})
    fam = FloatFormat(fmt.exp_bits, fmt.man_bits, name=f"e{fmt.exp_bits}m{fmt.man_bits}")
    if fam != fmt and fmt.exp_bits + fmt.man_bits > 0:
        rows.insert(0, {"name": fam.name, "bias": fam.bias, "max": fam.max,
                        "min_subnormal": fam.min_subnormal, "nan_codes": 0, "inf": False,
                        "negative_zero": True})
    return rows


def describe_any(fmt) -> dict:
    """JSON-ready description of an element or block format."""
    if isinstance(fmt, FloatFormat):
        d = fmt.describe()
        d["specials"] = specials(fmt)
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


def run(args) -> int:
    if args.list:
        names = list(ELEMENT_PRESETS)
        try:
            from fpformat.block import BLOCK_PRESETS
            names += list(BLOCK_PRESETS)
        except ImportError:
            pass
        print(json.dumps(names) if args.json else "\n".join(names))
        return 0
    if not args.format:
        raise ValueError("give a format name or spec (or --list)")
    fmt = get_format(args.format)
    info = describe_any(fmt)
    if args.values:
        if not isinstance(fmt, FloatFormat):
            raise ValueError("--values needs an element format (a block format's element: "
                             f"fpx info {fmt.element.spec} --values)")
        info["values"] = value_table(fmt)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    _print_text(fmt, info)
    return 0


def _print_text(fmt, info: dict) -> None:
    skip = {"specials", "look_alikes", "values"}
    print(f"{info.get('name')}:")
    for k, v in info.items():
        if k in skip or k == "name":
            continue
        if isinstance(v, float):
            v = f"{v:.10g}"
        if isinstance(v, dict) and "spec" in v:
            v = f"{v.get('name')} ({v['spec']}, {v.get('bits')} bits, max {v.get('max'):.6g})"
        elif isinstance(v, dict):
            v = json.dumps(v, default=str)
        print(f"  {k:22s} {v}")
    sp = info.get("specials")
    if sp:
        for k in ("nan", "inf", "zero"):
            codes = sp[k]
            shown = ", ".join(codes[:8]) + (f", ... ({len(codes)} codes)" if len(codes) > 8 else "")
            print(f"  {k + ' codes':22s} {shown or '(none)'}")
    la = info.get("look_alikes")
    if la:
        print("  not to be confused with:")
        for r in la:
            print(f"    {r['name']:22s} bias {r['bias']:<4d} max {r['max']:<12.6g} "
                  f"min {r['min_subnormal']:<12.6g} nan_codes {r['nan_codes']} inf {r['inf']} "
                  f"-0 {'yes' if r['negative_zero'] else 'no (NaN)'}")
    if "values" in info:
        print(f"  {'code':>6s} {'hex':>6s} {'binary':>16s} {'value':>16s}  class")
        for r in info["values"]:
            print(f"  {r['code']:6d} {r['hex']:>6s} {r['binary']:>16s} {r['value']:16.10g}  {r['class']}")
