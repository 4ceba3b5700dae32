"""`fpx info NAME|SPEC`: a format's properties, special codes and (optionally) its value table."""

from __future__ import annotations

import json

from fpformat import FloatFormat, get_format
from fpformat.describe import VALUE_TABLE_MAX_BITS, describe, value_table
from fpformat.presets import BLOCK_PRESETS, ELEMENT_PRESETS


def add_parser(sub):
    p = sub.add_parser("info", help="show a format's properties, specials and value table",
                       description="Show a format's properties, special codes, the standard "
                                   "formats it could be confused with, and optionally every "
                                   "code's value.")
    p.add_argument("format", nargs="?", help="preset name, alias or spec, e.g. e4m3, "
                                              "float8_e4m3fn, e3m4b5, ue4m3fn, binary8p3se, "
                                              "mxfp4, e2m1/32/e8m0 (every name: docs/names.md; "
                                              "e8m0 and ue8m0 are OCP E8M0, the family "
                                              "member is ue8m0fin)")
    p.add_argument("--values", action="store_true",
                   help=f"print every code (formats of at most {VALUE_TABLE_MAX_BITS} bits)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--list", action="store_true", help="list the preset names")
    return p


def run(args) -> int:
    if args.list:
        names = list(ELEMENT_PRESETS) + list(BLOCK_PRESETS)
        print(json.dumps(names) if args.json else "\n".join(names))
        return 0
    if not args.format:
        raise ValueError("give a format name or spec (or --list)")
    fmt = get_format(args.format)
    info = describe(fmt)
    if args.values:
        if not isinstance(fmt, FloatFormat):
            hint = (f"a block format's element: fpx info {fmt.element.spec} --values"
                    if hasattr(fmt, "element") else
                    f"{fmt.spec} is a two's-complement integer format: code k, read as a "
                    f"signed integer, is the value k * 2**-{fmt.frac_bits}")
            raise ValueError(f"--values lists the codes of a floating-point format ({hint})")
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
        if isinstance(v, list):
            v = ", ".join(map(str, v)) or "(none)"
        elif isinstance(v, dict) and "spec" in v:
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
                  f"-0 {'yes' if r['negative_zero'] else 'no (NaN)'}"
                  f"{'' if r.get('has_zero', True) else ' zero no'}")
    if "values" in info:
        print(f"  {'code':>6s} {'hex':>6s} {'binary':>16s} {'value':>16s}  class")
        for r in info["values"]:
            print(f"  {r['code']:6d} {r['hex']:>6s} {r['binary']:>16s} {r['value']:16.10g}  "
                  f"{r['class']}")
