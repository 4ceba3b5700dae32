"""Element format names as plain data: the preset table, the aliases and the spec grammar.

This module knows names and strings only (no `FloatFormat`), so that :mod:`fpformat.format`
can build formats from names and write a format's spec without importing anything above it.
A name resolves to the keyword arguments of ``FloatFormat``:

* every ml_dtypes float type by its ml_dtypes name (``float8_e4m3fn``, ``float8_e5m2``, ...,
  ``float8_e8m0fnu``), ``bfloat16``, ``float16``, ``float32``, ``float64``, with ml_dtypes'
  exact semantics; IEEE P3109 binary8 formats ``p3109_k8p1`` .. ``p3109_k8p7`` (signed,
  extended: ``binary8p1se`` .. ``binary8p7se``);
* the aliases of :data:`ALIASES` (``e8m0`` and ``ue8m0`` are OCP's E8M0, ``float8_e8m0fnu``);
* the IEEE P3109 family by the interim report's names ``binary<K>p<P><s|u><e|f>`` (also
  spelled ``p3109_k<K>p<P><s|u><e|f>``): K bits, precision P (hidden bit included), signed or
  unsigned, extended (with ±inf) or finite (:func:`p3109_member` gives the encoding);
* element spec strings (the design-space family and its variants)::

      [u]e<E>m<M>[b<BIAS>][fin|fn|fnuz|ieee][_ftz]

  ``e4m3``: E=4, M=3, IEEE bias, subnormals, every code finite (Sun et al.'s convention; max 480).
  ``b<BIAS>`` sets the bias (``b-3`` for negative), ``fn`` makes the top code NaN (OCP E4M3FN
  style), ``fnuz`` makes the negative-zero code the only NaN, ``ieee`` reserves the top exponent
  field for inf and NaN, ``fin`` says "every code finite" explicitly (the default layout), ``u``
  drops the sign bit, ``_ftz`` flushes subnormals.  Examples: ``e4m3fn`` = ``float8_e4m3fn``;
  ``e4m3b8fnuz`` = ``float8_e4m3fnuz``; ``e5m2ieee`` = ``float8_e5m2``; ``ue4m3fn`` is NVFP4's
  unsigned E4M3 scale; ``e3m4b5`` is E3M4 with bias 5.  A spec that is also an alias means the
  alias: ``ue8m0`` is E8M0; the family member (zero at code 0, ``2**128`` at 0xFF, no NaN) is
  ``ue8m0fin``.

Names are case-insensitive.  :func:`dtype_name` reads torch, numpy and ml_dtypes dtype objects
and scalar types (``torch.float8_e4m3fn``, ``np.dtype(ml_dtypes.float4_e2m1fn)``,
``np.float16``) as names, without importing torch.  Block formats and
:func:`fpformat.get_format` live in :mod:`fpformat.presets`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np


def _ieee(E: int, M: int) -> dict[str, Any]:
    """IEEE 754 layout: the top exponent field holds infinity and NaNs."""
    return dict(exp_bits=E, man_bits=M, nan_codes=(1 << M) - 1, inf=True)


def p3109_member(K: int, P: int, signed: bool, extended: bool) -> dict[str, Any]:
    """Every ``FloatFormat`` field (the name excluded) of the P3109 format ``binary{K}p{P}`` with
    the given signedness and domain (interim report section 3.1 and the decoding of section 4.7.2).

    K bits, precision P (hidden bit included), so ``M = P - 1`` and ``E = K - P`` (signed) or
    ``K - P + 1`` (unsigned); bias ``2**(K-P-1)`` (signed) or ``2**(K-P)`` (unsigned), i.e.
    ``2**(E-1)`` either way; subnormals (none exist for P = 1: the trailing significand is
    empty); one zero.  Signed: NaN is the negative-zero code ``2**(K-1)``; extended adds +inf
    at ``2**(K-1) - 1`` and -inf at ``2**K - 1``.  Unsigned: NaN is the top code ``2**K - 1``;
    extended adds +inf at ``2**K - 2``.  Ties: the parity of the code (``parity="code"``; it
    differs from the significand's only for P = 1).  No range check here: ``P`` must be in
    ``1..K-1`` (signed) or ``1..K`` (unsigned)."""
    E = K - P + (0 if signed else 1)
    return dict(exp_bits=E, man_bits=P - 1, bias=1 << (E - 1), signed=signed, subnormals=True,
                nan_codes=0 if signed else 1, inf=extended, negative_zero=not signed,
                has_zero=True, parity="code" if P == 1 else "significand")


def _p3109(p: int) -> dict[str, Any]:
    """IEEE P3109 binary8pP signed extended (``binary8p{P}se``): the ``p3109_k8p{P}`` presets."""
    return p3109_member(8, p, True, True)


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
#: ``e8m0``/``ue8m0`` are OCP's E8M0 (as in OCP MX, PTX, cuBLAS and torch), not the spec grammar's
#: family member, which is spelled ``ue8m0fin``.  The ``p3109_k8p{P}`` presets are
#: ``binary8p{P}se`` (P3109 names are read by :func:`p3109_fields`, not listed here).
ALIASES = {"e8m0": "float8_e8m0fnu", "ue8m0": "float8_e8m0fnu", "e8m0fnu": "float8_e8m0fnu",
           "fp8_e8m0": "float8_e8m0fnu",
           "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2",
           "fp4": "float4_e2m1fn", "fp4_e2m1": "float4_e2m1fn",
           "fp6_e2m3": "float6_e2m3fn", "fp6_e3m2": "float6_e3m2fn",
           "half": "float16", "single": "float32", "double": "float64", "bf16": "bfloat16",
           "fp16": "float16", "fp32": "float32", "fp64": "float64",
           "binary16": "float16", "binary32": "float32", "binary64": "float64"}

_SPEC = re.compile(r"^(?P<u>u)?e(?P<E>\d+)m(?P<M>\d+)(?:b(?P<bias>-?\d+))?"
                   r"(?P<layout>fin|fnuz|fn|ieee)?(?P<ftz>_ftz)?$")

#: Spec suffix -> the special-code fields it sets (``negative_zero=False``: -0 is the NaN).
_LAYOUTS: dict[str, dict[str, Any]] = {
    "": dict(nan_codes=0, inf=False, negative_zero=True),
    "fin": dict(nan_codes=0, inf=False, negative_zero=True),      # "" spelled out
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
    ``[u]e<E>m<M>[b<BIAS>][fin|fnuz|fn|ieee][_ftz]``; ``ValueError`` naming the grammar
    otherwise."""
    text = spec.strip().lower()
    m = _SPEC.match(text)
    if not m:
        raise ValueError(f"unknown format {spec!r}: not a preset name and not a spec like "
                         f"'e4m3', 'e3m4b5', 'e4m3fn', 'ue4m3fn', 'binary8p3se', 'e2m1/32/e8m0' "
                         f"(every name: docs/names.md)")
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
    other NaNs or an infinity, code parity).  A spec that an alias would take over gets the
    explicit ``fin`` layout (``ue8m0fin``)."""
    E, M = fmt.exp_bits, fmt.man_bits
    if not fmt.has_zero or getattr(fmt, "parity", "significand") != "significand":
        return None
    for suffix, layout in _LAYOUTS.items():
        wanted = dict(layout, nan_codes=(1 << M) - 1) if suffix == "ieee" else layout
        if all(getattr(fmt, k) == v for k, v in wanted.items()):
            if suffix == "ieee" and E == 0:
                return None
            bias = "" if fmt.bias == default_bias(E) else f"b{fmt.bias}"
            ftz = "" if fmt.subnormals else "_ftz"
            spec = f"{'' if fmt.signed else 'u'}e{E}m{M}{bias}{suffix}{ftz}"
            return spec + "fin" if spec in ALIASES else spec
    return None


_P3109 = re.compile(r"^(?:binary|p3109_k)(?P<K>\d+)p(?P<P>\d+)(?P<sign>[su])(?P<domain>[ef])$")


def p3109_fields(name: str) -> dict[str, Any] | None:
    """``FloatFormat`` keyword arguments (``name`` included) of a P3109 name
    ``binary<K>p<P><s|u><e|f>`` or ``p3109_k<K>p<P><s|u><e|f>`` (case-insensitive), None for
    other names; ``ValueError`` naming the range for K < 2 or P outside ``1..K-1`` (signed) /
    ``1..K`` (unsigned).  The interim report defines K >= 3; K = 2 follows the same formulas
    (``binary2p1se``, with no finite nonzero value, is refused by ``FloatFormat``)."""
    key = name.strip().lower()
    m = _P3109.match(key)
    if not m:
        return None
    K, P, signed = int(m["K"]), int(m["P"]), m["sign"] == "s"
    if K < 2:
        raise ValueError(f"format {name!r}: the P3109 width K must be at least 2, got {K}")
    top = K - 1 if signed else K
    if not 1 <= P <= top:
        raise ValueError(f"format {name!r}: P3109 precision P must be in 1..{top} for a "
                         f"{'signed' if signed else 'unsigned'} {K}-bit format, got {P}")
    return dict(p3109_member(K, P, signed, m["domain"] == "e"), name=key)


def p3109_name(fmt) -> str | None:
    """The P3109 name ``binary{K}p{P}{s|u}{e|f}`` of ``fmt`` (anything with ``FloatFormat``'s
    fields), or None where it is not a member of the family."""
    if fmt.exp_bits < 1:
        return None
    P = fmt.man_bits + 1
    fields = p3109_member(fmt.bits, P, fmt.signed, fmt.inf)
    if any(getattr(fmt, k, None) != v for k, v in fields.items()):
        return None
    return f"binary{fmt.bits}p{P}{'s' if fmt.signed else 'u'}{'e' if fmt.inf else 'f'}"


def dtype_name(obj) -> str | None:
    """The name of a dtype object: a torch dtype (``torch.float8_e4m3fn`` -> ``float8_e4m3fn``,
    recognised by its type's module, so torch is not imported), a numpy or ml_dtypes dtype
    (``np.dtype(ml_dtypes.float4_e2m1fn)``) or scalar type (``np.float16``,
    ``ml_dtypes.float8_e4m3fn``); None for anything else."""
    kind = type(obj)
    if kind.__module__ == "torch" and kind.__name__ == "dtype":
        return str(obj).removeprefix("torch.")
    if isinstance(obj, np.dtype):
        return obj.name
    if isinstance(obj, type) and issubclass(obj, np.generic):
        return np.dtype(obj).name
    return None
