"""Element format names as plain data: the preset table, the aliases and the spec grammar.

This module knows names and strings only (no `FloatFormat`), so that :mod:`fpformat.format`
can build formats from names and write a format's spec without importing anything above it.
A name resolves to the keyword arguments of ``FloatFormat``:

* every ml_dtypes float type by its ml_dtypes name (``float8_e4m3fn``, ``float8_e5m2``, ...,
  ``float8_e8m0fnu``), ``bfloat16``, ``float16``, ``float32``, ``float64``, with ml_dtypes'
  exact semantics; IEEE P3109 binary8 formats ``p3109_k8p1`` .. ``p3109_k8p7``;
* element spec strings (the design-space family and its variants)::

      [u]e<E>m<M>[b<BIAS>][fn|fnuz|ieee][_ftz]

  ``e4m3``: E=4, M=3, IEEE bias, subnormals, every code finite (Sun et al.'s convention; max 480).
  ``b<BIAS>`` sets the bias (``b-3`` for negative), ``fn`` makes the top code NaN (OCP E4M3FN
  style), ``fnuz`` makes the negative-zero code the only NaN, ``ieee`` reserves the top exponent
  field for inf and NaN, ``u`` drops the sign bit, ``_ftz`` flushes subnormals.  Examples:
  ``e4m3fn`` = ``float8_e4m3fn``; ``e4m3b8fnuz`` = ``float8_e4m3fnuz``; ``e5m2ieee`` =
  ``float8_e5m2``; ``ue4m3fn`` is NVFP4's unsigned E4M3 scale; ``e3m4b5`` is E3M4 with bias 5.

Names are case-insensitive.  Block formats and :func:`fpformat.get_format` live in
:mod:`fpformat.presets`.
"""

from __future__ import annotations

import re
from typing import Any


def _ieee(E: int, M: int) -> dict[str, Any]:
    """IEEE 754 layout: the top exponent field holds infinity and NaNs."""
    return dict(exp_bits=E, man_bits=M, nan_codes=(1 << M) - 1, inf=True)


def _p3109(p: int) -> dict[str, Any]:
    """IEEE P3109 binary8pP: K = 8 bits, precision P (hidden bit included), bias 2**(K-P-1),
    NaN at the negative-zero code 0x80, +-inf at 0x7F/0xFF, subnormals."""
    return dict(exp_bits=8 - p, man_bits=p - 1, bias=1 << (7 - p), inf=True, negative_zero=False)


#: Preset name -> ``FloatFormat`` keyword arguments (the name itself excluded).
ELEMENT_PRESET_FIELDS: dict[str, dict[str, Any]] = {
    "float8_e4m3fn": dict(exp_bits=4, man_bits=3, nan_codes=1),
    "float8_e5m2": _ieee(5, 2),
    "float8_e4m3fnuz": dict(exp_bits=4, man_bits=3, bias=8, negative_zero=False),
    "float8_e5m2fnuz": dict(exp_bits=5, man_bits=2, bias=16, negative_zero=False),
    "float8_e4m3b11fnuz": dict(exp_bits=4, man_bits=3, bias=11, negative_zero=False),
    "float8_e3m4": _ieee(3, 4),
    "float8_e4m3": _ieee(4, 3),
    "float6_e2m3fn": dict(exp_bits=2, man_bits=3),
    "float6_e3m2fn": dict(exp_bits=3, man_bits=2),
    "float4_e2m1fn": dict(exp_bits=2, man_bits=1),
    "float8_e8m0fnu": dict(exp_bits=8, man_bits=0, signed=False, subnormals=False, nan_codes=1,
                           has_zero=False),
    "bfloat16": _ieee(8, 7),
    "float16": _ieee(5, 10),
    "float32": _ieee(8, 23),
    "float64": _ieee(11, 52),
    # NVIDIA TensorFloat-32: float32's exponent and specials, 10 fraction bits (19 bits used)
    "tf32": _ieee(8, 10),
    **{f"p3109_k8p{p}": _p3109(p) for p in range(1, 8)},
}

#: Other spellings people type, mapped to preset names.
ALIASES = {"e8m0": "float8_e8m0fnu", "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2",
           "fp4_e2m1": "float4_e2m1fn", "fp6_e2m3": "float6_e2m3fn", "fp6_e3m2": "float6_e3m2fn",
           "half": "float16", "single": "float32", "double": "float64", "bf16": "bfloat16",
           "fp16": "float16", "fp32": "float32"}

_SPEC = re.compile(r"^(?P<u>u)?e(?P<E>\d+)m(?P<M>\d+)(?:b(?P<bias>-?\d+))?"
                   r"(?P<layout>fnuz|fn|ieee)?(?P<ftz>_ftz)?$")

#: Spec suffix -> the special-code fields it sets (``negative_zero=False``: -0 is the NaN).
_LAYOUTS: dict[str, dict[str, Any]] = {
    "": dict(nan_codes=0, inf=False, negative_zero=True),
    "fn": dict(nan_codes=1, inf=False, negative_zero=True),
    "fnuz": dict(nan_codes=0, inf=False, negative_zero=False),
    "ieee": dict(inf=True, negative_zero=True),          # nan_codes = 2**M - 1, set below
}


def canonical_name(name: str) -> str:
    """The lookup key of a name: stripped, lower case, aliases resolved."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def default_bias(exp_bits: int) -> int:
    """The IEEE bias ``2**(E-1) - 1`` (``1`` for ``E == 0``, so that E0 formats are fixed point
    with quantum ``2**-M``)."""
    return (1 << (exp_bits - 1)) - 1 if exp_bits >= 1 else 1


def element_spec_fields(spec: str) -> dict[str, Any]:
    """``FloatFormat`` keyword arguments (``name`` included) of an element spec
    ``[u]e<E>m<M>[b<BIAS>][fn|fnuz|ieee][_ftz]``; ``ValueError`` naming the grammar otherwise."""
    text = spec.strip().lower()
    m = _SPEC.match(text)
    if not m:
        raise ValueError(f"unknown format {spec!r}: not a preset name and not a spec like "
                         f"'e4m3', 'e3m4b5', 'e4m3fn', 'ue4m3fn', 'e2m1/32/e8m0' "
                         f"(run `fpx info --list` for the names)")
    E, M = int(m["E"]), int(m["M"])
    signed = m["u"] is None
    fields: dict[str, Any] = dict(exp_bits=E, man_bits=M, signed=signed,
                                  subnormals=m["ftz"] is None, name=text)
    if m["bias"] is not None:
        fields["bias"] = int(m["bias"])
    layout = m["layout"]
    if layout == "fnuz" and not signed:
        raise ValueError(f"format {spec!r}: fnuz needs a sign bit (drop the 'u')")
    if layout == "ieee" and E == 0:
        raise ValueError(f"format {spec!r}: ieee layout needs exp_bits >= 1")
    if layout:
        fields.update(_LAYOUTS[layout])
        if layout == "ieee":
            fields["nan_codes"] = (1 << M) - 1
    return fields


def write_element_spec(fmt) -> str | None:
    """The element spec of ``fmt`` (anything with ``FloatFormat``'s fields), or None where the
    grammar cannot express it (no zero, a NaN count other than the layouts', -0 as NaN beside
    other NaNs or an infinity)."""
    E, M = fmt.exp_bits, fmt.man_bits
    if not fmt.has_zero:
        return None
    for suffix, layout in _LAYOUTS.items():
        wanted = dict(layout, nan_codes=(1 << M) - 1) if suffix == "ieee" else layout
        if all(getattr(fmt, k) == v for k, v in wanted.items()):
            if suffix == "ieee" and E == 0:
                return None
            bias = "" if fmt.bias == default_bias(E) else f"b{fmt.bias}"
            return (f"{'' if fmt.signed else 'u'}e{E}m{M}{bias}{suffix}"
                    f"{'' if fmt.subnormals else '_ftz'}")
    return None
