"""Hypothesis strategies for property-testing code that models a floating-point format.

Use them to test your own model of a format (an RTL model, a C library, a different emulator)
against :mod:`fpformat`, or to test code that consumes quantized values::

    from hypothesis import given
    from fpformat.testing import formats, inputs_near

    @given(formats(max_bits=8), st.data())
    def test_my_model(fmt, data):
        x = data.draw(inputs_near(fmt))
        assert my_round(fmt, x) == int(fmt.encode(np.float64(x)))

* :func:`formats` draws valid :class:`~fpformat.FloatFormat` objects (filters fix or restrict any
  parameter);
* :func:`values_of` draws the finite values of one format (exactly representable inputs);
* :func:`inputs_near` draws the inputs where rounding goes wrong: exact values, ties (midpoints of
  neighbouring values), their float neighbours, the overflow threshold, the subnormal and zero
  boundaries, ±0, ±inf, NaN, and random values across the range.

Every strategy returns Python floats (or FloatFormat objects); hypothesis shrinks them toward
simple cases.  hypothesis is a test dependency; this module is imported only on request.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

try:
    from hypothesis import reject
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - hypothesis is in the dev extra
    raise ImportError("fpformat.testing needs hypothesis (pip install hypothesis)") from exc

from .arrays import FLOAT_KINDS
from .format import FloatFormat

__all__ = ["formats", "values_of", "inputs_near", "overflow_threshold"]


def _float_type(dtype: str):
    """The scalar type of ``dtype`` (bfloat16 from ml_dtypes, imported only when asked for)."""
    if dtype == "bfloat16":
        import ml_dtypes  # a test dependency, needed for bfloat16 inputs only
        return ml_dtypes.bfloat16
    return np.dtype(dtype).type


def _next_toward(v, up: bool, ft):
    """The neighbour of the finite ``ft`` scalar ``v`` toward +inf (``up``) or toward zero."""
    if ft is np.float16 or ft is np.float32 or ft is np.float64:
        return np.nextafter(v, ft(math.inf) if up else ft(0), dtype=ft)
    # bfloat16: step the bit pattern (sign-magnitude: +1 moves away from zero)
    bits = int(np.array(v, dtype=ft).view(np.uint16))
    mag, sign = bits & 0x7FFF, bits & 0x8000
    if mag == 0:
        return ft(0) if not up else np.array(1, dtype=np.uint16).view(ft)[()]
    away = up != bool(sign)            # toward +inf from a positive value is away from zero
    mag = mag + 1 if away else mag - 1
    return np.array(sign | mag, dtype=np.uint16).view(ft)[()]


def _choices(name: str, value: Any, default: Iterable) -> list:
    """A filter is a single value or a collection of allowed values."""
    if value is None:
        return list(default)
    if isinstance(value, (list, tuple, range, set, frozenset)):
        out = sorted(value) if not isinstance(value, (list, tuple)) else list(value)
        if not out:
            raise ValueError(f"{name} filter must allow at least one value")
        return out
    return [value]


@st.composite
def formats(draw, exp_bits=None, man_bits=None, bias_offset=range(-3, 4), signed=None,
            subnormals=None, nan_codes=range(0, 4), inf=None, negative_zero=None,
            has_zero=None, max_bits: int | None = None) -> FloatFormat:
    """Valid :class:`~fpformat.FloatFormat` objects.

    Each filter is a single value (``signed=True``) or a collection of allowed values
    (``exp_bits=range(2, 6)``); the defaults cover E 0..6, M 0..7, biases within ±3 of the
    default (``bias_offset``), signed/unsigned, subnormals on/off, 0..3 NaN codes, inf on/off,
    fnuz layouts and zero-less (E8M0-like) formats.  ``max_bits`` bounds ``fmt.bits``.
    Invalid combinations (e.g. more special codes than codes) are never returned.

    >>> from hypothesis import given
    >>> @given(formats(exp_bits=4, man_bits=3, signed=True))
    ... def check(fmt):
    ...     assert fmt.bits == 8
    >>> check()
    """
    E = draw(st.sampled_from(_choices("exp_bits", exp_bits, range(0, 7))))
    M = draw(st.sampled_from(_choices("man_bits", man_bits, range(0, 8))))
    if E + M == 0 or (max_bits is not None and E + M > max_bits):
        reject()                          # no magnitude bit, or too wide even unsigned
    default_bias = (1 << (E - 1)) - 1 if E >= 1 else 1
    bias = default_bias + draw(st.sampled_from(_choices("bias_offset", bias_offset, [0])))
    sgn = draw(st.sampled_from(_choices("signed", signed, [True, False])))
    if max_bits is not None and E + M + int(sgn) > max_bits:
        sgn = False
    hz = draw(st.sampled_from(_choices("has_zero", has_zero, [True, True, True, False])))
    if E == 0:
        hz = True
    sub = False if not hz else draw(st.sampled_from(_choices("subnormals", subnormals,
                                                             [True, False])))
    nz = True
    if sgn and hz:
        nz = draw(st.sampled_from(_choices("negative_zero", negative_zero, [True, False])))
    has_inf = draw(st.sampled_from(_choices("inf", inf, [False, True])))
    nc = draw(st.sampled_from(_choices("nan_codes", nan_codes, [0])))
    try:
        fmt = FloatFormat(E, M, bias=bias, signed=sgn, subnormals=sub, nan_codes=nc,
                          inf=has_inf, negative_zero=nz, has_zero=hz)
    except ValueError:
        # too many special codes for this width (or a bias out of float64's range): shrink them
        try:
            fmt = FloatFormat(E, M, bias=bias, signed=sgn, subnormals=sub, nan_codes=0,
                              inf=False, negative_zero=nz, has_zero=hz)
        except ValueError:
            reject()
    for pname, value in (("exp_bits", exp_bits), ("man_bits", man_bits), ("signed", signed),
                         ("subnormals", subnormals), ("nan_codes", nan_codes), ("inf", inf),
                         ("negative_zero", negative_zero), ("has_zero", has_zero)):
        if value is not None and getattr(fmt, pname) not in _choices(pname, value, []):
            reject()                                    # a filter excluded the repaired format
    return fmt


def _max_mag_code(fmt: FloatFormat) -> int:
    return (1 << (fmt.exp_bits + fmt.man_bits)) - 1 - fmt.nan_codes - int(fmt.inf)


def _mag_value(fmt: FloatFormat, code: int) -> float:
    return float(fmt.decode(np.array([code], dtype=np.uint64).astype(fmt.dtype))[0])


def overflow_threshold(fmt: FloatFormat) -> float:
    """The next value above ``fmt.max`` of the same format with an unbounded exponent range:
    ``max + 2**(max(floor(log2 max), emin) - M)``.  Inputs at or beyond it overflow in every
    rounding mode; inputs between ``max`` and it overflow when they round up."""
    mx = fmt.max
    k = math.frexp(mx)[1] - 1
    return mx + math.ldexp(1.0, max(k, fmt.emin) - fmt.man_bits)


def _neighbours(fmt: FloatFormat, c: int) -> tuple[float, float]:
    """Magnitude ``c``'s value and the next larger rounding candidate."""
    top = _max_mag_code(fmt)
    lo = _mag_value(fmt, c)
    hi = _mag_value(fmt, c + 1) if c < top else overflow_threshold(fmt)
    if hi == lo:                          # flushed subnormal codes: the set is {0, min_normal}
        hi = fmt.min_normal
    return lo, hi


@st.composite
def values_of(draw, fmt: FloatFormat, include_special: bool = False) -> float:
    """Finite values of ``fmt`` (as Python floats, including ``-0.0`` where the format has a
    negative zero); with ``include_special`` also its ±inf and NaN.

    >>> from hypothesis import given
    >>> from fpformat import get_format
    >>> f = get_format("float8_e4m3fn")
    >>> @given(values_of(f))
    ... def check(v):
    ...     assert f.quantize(np.float64(v)) == v
    >>> check()
    """
    if include_special and draw(st.integers(0, 9)) == 0:
        specials = ([math.inf] if fmt.inf else []) + ([math.nan] if fmt.has_nan else [])
        if fmt.inf and fmt.signed:
            specials.append(-math.inf)
        if specials:
            return draw(st.sampled_from(specials))
    c = draw(st.integers(0, _max_mag_code(fmt)))
    v = _mag_value(fmt, c)
    if fmt.signed and draw(st.booleans()):
        if v != 0.0 or (fmt.negative_zero and fmt.has_zero):
            v = -v
    return v


@st.composite
def inputs_near(draw, fmt: FloatFormat, dtype="float64", negative: bool | None = None) -> float:
    """Inputs that stress rounding into ``fmt``, exactly representable in ``dtype``
    (``"float16"``, ``"bfloat16"`` (needs ml_dtypes), ``"float32"`` or ``"float64"``; returned as
    Python floats).

    Kinds: exact values, ties (midpoints of neighbouring values, including ``min_normal/2`` and
    the midpoint between ``max`` and :func:`overflow_threshold`), the float neighbours of those
    ties in ``dtype``, random points between neighbours, ``±0``, ``±inf``, NaN, huge and tiny
    values.  ``negative``: ``None`` draws both signs (negative inputs exercise unsigned formats'
    underflow too), ``True``/``False`` fixes the sign.

    >>> from hypothesis import given
    >>> from fpformat import get_format
    >>> f = get_format("e2m1")
    >>> @given(inputs_near(f, dtype="float32"))
    ... def check(x):
    ...     assert np.float32(x) == x or math.isnan(x)
    >>> check()
    """
    if str(dtype) not in FLOAT_KINDS:
        raise ValueError(f"dtype must be one of {', '.join(FLOAT_KINDS)}, got {dtype!r}")
    ft = _float_type(str(dtype))
    if str(dtype) == "bfloat16":
        import ml_dtypes  # a test dependency, needed for bfloat16 inputs only
        finfo = ml_dtypes.finfo(ft)
    else:
        finfo = np.finfo(ft)
    kind = draw(st.sampled_from(["exact", "tie", "tie", "near_tie", "near_tie", "between",
                                 "top", "bottom", "special"]))
    top = _max_mag_code(fmt)
    if kind == "top":
        c = draw(st.integers(max(0, top - 2), top))
        kind = draw(st.sampled_from(["exact", "tie", "near_tie", "between", "beyond"]))
    elif kind == "bottom":
        c = draw(st.integers(0, min(top, (1 << fmt.man_bits) + 1)))
        kind = draw(st.sampled_from(["exact", "tie", "near_tie", "between"]))
    else:
        c = draw(st.integers(0, top))
    lo, hi = _neighbours(fmt, c)
    if kind == "exact":
        v = lo
    elif kind in ("tie", "near_tie"):
        v = lo + (hi - lo) / 2
    elif kind == "between":
        v = lo + (hi - lo) * draw(st.floats(0.0, 1.0, exclude_max=True))
    elif kind == "beyond":
        v = overflow_threshold(fmt) * draw(st.sampled_from([1.0, 1.5, 2.0, 1e3]))
    else:
        v = draw(st.sampled_from([0.0, math.inf, math.nan, float(finfo.max),
                                  float(finfo.smallest_subnormal), float(finfo.tiny)]))
    with np.errstate(over="ignore"):
        v = ft(v)
        if kind == "near_tie":
            if np.isfinite(v):
                v = _next_toward(v, draw(st.booleans()), ft)
    v = float(v)
    if negative is None:
        neg = draw(st.booleans())
    else:
        neg = negative
    return -v if neg else v
