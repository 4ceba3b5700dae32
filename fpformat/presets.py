"""Named formats and the spec-string grammar.

``get_format(name)`` accepts:

* every ml_dtypes float type by its ml_dtypes name (``float8_e4m3fn``, ``float8_e5m2``, ...,
  ``float8_e8m0fnu``), ``bfloat16``, ``float16``, ``float32``, ``float64``, with ml_dtypes'
  exact semantics;
* IEEE P3109 binary8 formats ``p3109_k8p1`` .. ``p3109_k8p7``;
* block formats (``mxfp8_e4m3``, ``mxfp8_e5m2``, ``mxfp6_e2m3``, ``mxfp6_e3m2``, ``mxfp4``,
  ``mxint8``, ``nvfp4``) and block specs ``ELEMENT/BLOCK[/SCALE]`` (see :mod:`fpformat.block`);
* element spec strings (the design-space family and its variants)::

      [u]e<E>m<M>[b<BIAS>][fn|fnuz|ieee][_ftz]

  ``e4m3``: E=4, M=3, IEEE bias, subnormals, every code finite (Sun et al.'s convention; max 480).
  ``b<BIAS>`` sets the bias (``b-3`` for negative), ``fn`` makes the top code NaN (OCP E4M3FN
  style), ``fnuz`` makes the negative-zero code the only NaN, ``ieee`` reserves the top exponent
  field for inf and NaN, ``u`` drops the sign bit, ``_ftz`` flushes subnormals.  Examples:
  ``e4m3fn`` = ``float8_e4m3fn``; ``e4m3b8fnuz`` = ``float8_e4m3fnuz``; ``e5m2ieee`` =
  ``float8_e5m2``; ``ue4m3fn`` is NVFP4's unsigned E4M3 scale; ``e3m4b5`` is E3M4 with bias 5.

Names are case-insensitive.  ``fpx info NAME`` shows any of them.
"""

from __future__ import annotations

import re

from .format import FloatFormat


def _ieee(E: int, M: int, name: str) -> FloatFormat:
    return FloatFormat(E, M, nan_codes=(1 << M) - 1, inf=True, name=name)


def _p3109(p: int) -> FloatFormat:
    # IEEE P3109 binary8pP: K = 8 bits, precision P (hidden bit included), bias 2**(K-P-1),
    # NaN at the negative-zero code 0x80, +-inf at 0x7F/0xFF, subnormals.
    E, M = 8 - p, p - 1
    return FloatFormat(E, M, bias=1 << (7 - p), inf=True, negative_zero=False,
                       name=f"p3109_k8p{p}")


_ELEMENT_PRESETS: dict[str, FloatFormat] = {
    "float8_e4m3fn": FloatFormat(4, 3, nan_codes=1, name="float8_e4m3fn"),
    "float8_e5m2": _ieee(5, 2, "float8_e5m2"),
    "float8_e4m3fnuz": FloatFormat(4, 3, bias=8, negative_zero=False, name="float8_e4m3fnuz"),
    "float8_e5m2fnuz": FloatFormat(5, 2, bias=16, negative_zero=False, name="float8_e5m2fnuz"),
    "float8_e4m3b11fnuz": FloatFormat(4, 3, bias=11, negative_zero=False, name="float8_e4m3b11fnuz"),
    "float8_e3m4": _ieee(3, 4, "float8_e3m4"),
    "float8_e4m3": _ieee(4, 3, "float8_e4m3"),
    "float6_e2m3fn": FloatFormat(2, 3, name="float6_e2m3fn"),
    "float6_e3m2fn": FloatFormat(3, 2, name="float6_e3m2fn"),
    "float4_e2m1fn": FloatFormat(2, 1, name="float4_e2m1fn"),
    "float8_e8m0fnu": FloatFormat(8, 0, signed=False, subnormals=False, nan_codes=1,
                                  has_zero=False, name="float8_e8m0fnu"),
    "bfloat16": _ieee(8, 7, "bfloat16"),
    "float16": _ieee(5, 10, "float16"),
    "float32": _ieee(8, 23, "float32"),
    "float64": _ieee(11, 52, "float64"),
    **{f"p3109_k8p{p}": _p3109(p) for p in range(1, 8)},
}
_ALIASES = {"e8m0": "float8_e8m0fnu", "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2",
            "fp4_e2m1": "float4_e2m1fn", "fp6_e2m3": "float6_e2m3fn", "fp6_e3m2": "float6_e3m2fn",
            "half": "float16", "single": "float32", "double": "float64", "bf16": "bfloat16",
            "fp16": "float16", "fp32": "float32"}

_SPEC = re.compile(r"^(?P<u>u)?e(?P<E>\d+)m(?P<M>\d+)(?:b(?P<bias>-?\d+))?"
                   r"(?P<layout>fnuz|fn|ieee)?(?P<ftz>_ftz)?$")

ELEMENT_PRESETS = tuple(_ELEMENT_PRESETS)


def parse_element_spec(spec: str) -> FloatFormat:
    """Parse ``[u]e<E>m<M>[b<BIAS>][fn|fnuz|ieee][_ftz]`` (see the module docstring)."""
    m = _SPEC.match(spec.strip().lower())
    if not m:
        raise ValueError(f"unknown format {spec!r}: not a preset name and not a spec like "
                         f"'e4m3', 'e3m4b5', 'e4m3fn', 'ue4m3fn', 'e2m1/32/e8m0' "
                         f"(run `fpx info --list` for the names)")
    E, M = int(m["E"]), int(m["M"])
    signed = m["u"] is None
    kw: dict = dict(signed=signed, subnormals=m["ftz"] is None, name=spec.strip().lower())
    if m["bias"] is not None:
        kw["bias"] = int(m["bias"])
    layout = m["layout"]
    if layout == "fn":
        kw["nan_codes"] = 1
    elif layout == "fnuz":
        if not signed:
            raise ValueError(f"format {spec!r}: fnuz needs a sign bit (drop the 'u')")
        kw["negative_zero"] = False
    elif layout == "ieee":
        if E == 0:
            raise ValueError(f"format {spec!r}: ieee layout needs exp_bits >= 1")
        kw["nan_codes"], kw["inf"] = (1 << M) - 1, True
    return FloatFormat(E, M, **kw)


def format_spec(fmt: FloatFormat) -> str:
    """A spec string for ``fmt`` that :func:`get_format` parses back to an equal format, or a
    preset name where the grammar cannot express it."""
    E, M = fmt.exp_bits, fmt.man_bits
    default_bias = (1 << (E - 1)) - 1 if E >= 1 else 1
    s = ("" if fmt.signed else "u") + f"e{E}m{M}"
    if fmt.bias != default_bias:
        s += f"b{fmt.bias}"
    layouts = {
        "": dict(nan_codes=0, inf=False, negative_zero=True),
        "fn": dict(nan_codes=1, inf=False, negative_zero=True),
        "fnuz": dict(nan_codes=0, inf=False, negative_zero=False),
        "ieee": dict(nan_codes=(1 << M) - 1, inf=True, negative_zero=True),
    }
    for suffix, attrs in layouts.items():
        if all(getattr(fmt, k) == v for k, v in attrs.items()) and fmt.has_zero:
            s += suffix + ("" if fmt.subnormals else "_ftz")
            try:
                if parse_element_spec(s) == fmt:
                    return s
            except ValueError:
                pass
            break
    for name, preset in _ELEMENT_PRESETS.items():
        if preset == fmt:
            return name
    return repr(fmt)


def element_format(name: str) -> FloatFormat:
    """An element format by preset name or element spec (no block formats)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _ELEMENT_PRESETS:
        return _ELEMENT_PRESETS[key]
    return parse_element_spec(key)


def get_format(name):
    """A `FloatFormat` or `BlockFormat` by preset name or spec string (instances pass through).

    Raises ``ValueError`` naming the unknown format.
    """
    from .block import BlockFormat, get_block_format
    if isinstance(name, (FloatFormat, BlockFormat)):
        return name
    if not isinstance(name, str):
        raise TypeError(f"format must be a name string, FloatFormat or BlockFormat, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _ELEMENT_PRESETS:
        return _ELEMENT_PRESETS[key]
    block = get_block_format(key)
    if block is not None:
        return block
    return parse_element_spec(key)
