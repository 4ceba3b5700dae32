"""A plain-Python reference of the matrix-unit model, with exact rationals and integers.

Written from the model's statement (docs/gemm.md, "Matrix units"; fpformat/unit_core.py's
docstring), not from the kernel's code: values are Fractions, the window is a power of two, a
term's truncation is ``floor`` of its magnitude over that power, and the final rounding is done
here from the exact sum (tests/reference.py's rounding rules), not by fpformat's core.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from reference import floor_log2, reference

from fpformat import FloatFormat


def _split(x: float, man_bits: int, emin: int, keep_subnormals: bool) -> tuple[Fraction, int]:
    """``(significand, exponent)`` with ``x = significand * 2**exponent``, the exponent at least
    ``emin`` (subnormals: significand below 1); subnormals read as zero unless kept."""
    v = Fraction(x)
    if v == 0:
        return Fraction(0), emin
    e = max(floor_log2(abs(v)), emin)
    if abs(v) < Fraction(2) ** emin and not keep_subnormals:
        return Fraction(0), emin
    return v / Fraction(2) ** e, e


def unit_block(a, b, c: float, unit, in_fmt, out_fmt) -> float:
    """One block of ``unit``: ``a``, ``b`` lists of input-format values, ``c`` an output-format
    value (float).  Returns the result as a float."""
    # specials
    nan = math.isnan(c)
    infs = {math.copysign(1, c)} if math.isinf(c) else set()
    for x, y in zip(a, b):
        if math.isnan(x) or math.isnan(y):
            nan = True
        elif math.isinf(x) or math.isinf(y):
            if x == 0 or y == 0:
                nan = True
            else:
                infs.add(math.copysign(1, x) * math.copysign(1, y))
    if nan or len(infs) == 2:
        return math.nan
    if infs:
        return math.inf * infs.pop()
    terms = []                           # (exact value, normalised exponent, raw exponent, P>=2)
    for x, y in zip(a, b):
        sa, ea = _split(x, in_fmt.man_bits, in_fmt.emin, unit.subnormal_inputs)
        sb, eb = _split(y, in_fmt.man_bits, in_fmt.emin, unit.subnormal_inputs)
        p = sa * sb
        if p == 0:
            continue
        big = abs(p) >= 2
        terms.append((p * Fraction(2) ** (ea + eb), ea + eb + int(big), ea + eb, big))
    cv = Fraction(c)
    ec = max(floor_log2(abs(cv)), -126) if cv != 0 else None
    if not terms and cv == 0:
        return 0.0
    if unit.summation == "exact":
        return _exact(sum(t[0] for t in terms) + cv, unit, out_fmt)
    if unit.summation in ("late", "odd-even"):        # by position: odd/even groups
        return _late([(_split(x, in_fmt.man_bits, in_fmt.emin, unit.subnormal_inputs),
                       _split(y, in_fmt.man_bits, in_fmt.emin, unit.subnormal_inputs))
                      for x, y in zip(a, b)], cv, unit, out_fmt)
    if unit.summation == "pairwise":                   # by position: the tree pairs slots
        return _pairwise([_split(x, in_fmt.man_bits, in_fmt.emin, unit.subnormal_inputs)[0]
                          * _split(y, in_fmt.man_bits, in_fmt.emin, unit.subnormal_inputs)[0]
                          * Fraction(2) ** (_split(x, in_fmt.man_bits, in_fmt.emin, True)[1]
                                            + _split(y, in_fmt.man_bits, in_fmt.emin, True)[1])
                          for x, y in zip(a, b)], c, unit)
    # With the carry bit, the published models' own formulation: products stay unnormalised
    # (significand in [1, 4) at the raw exponent) and the window hangs below the largest raw
    # exponent.  Without it, products are normalised and the window hangs below the largest
    # normalised exponent.
    exponent = 2 if unit.carry_bit else 1          # each term's raw or normalised exponent
    placed = [(t[0], t[exponent]) for t in terms] + ([(cv, ec)] if ec is not None else [])
    exps = [e for _, e in placed]
    big_e = max(exps)
    if unit.min_exponent is not None:
        big_e = max(big_e, unit.min_exponent)
    n = unit.extra_bits
    # A term with exponent e and 23 fraction bits, widened or narrowed to 23 + n bits, then
    # truncated to the window: multiples of 2**(big_e - 23 - n).
    total = Fraction(0)
    for value, e in placed:
        own = Fraction(2) ** (e - 23 - n) if n < 0 else None    # narrowing truncates first
        mag = abs(value)
        if own is not None:
            mag = math.floor(mag / own) * own
        quantum = Fraction(2) ** (big_e - 23 - n)
        if unit.sticky:
            kept = math.floor(mag / quantum) * quantum
            t = kept + (quantum / 2 if mag != kept else 0)
        else:
            t = math.floor(mag / quantum) * quantum
        total += t if value > 0 else -t
    if unit.carry_bits is not None:                    # a two's-complement adder that wraps
        step = Fraction(2) ** (big_e - 23 - n) / (2 if unit.sticky else 1)
        width = 23 + n + int(unit.sticky) + 3 + unit.carry_bits      # sign, 2 integer bits
        units = int(total / step) % 2 ** width
        total = (units - 2 ** width if units >= 2 ** (width - 1) else units) * step
    if total == 0:
        return 0.0
    if abs(total) >= Fraction(2) ** (out_fmt.emax + 1):
        return math.copysign(math.inf, total)
    bits = out_fmt.man_bits if unit.result_bits is None else min(unit.result_bits,
                                                                 out_fmt.man_bits)
    result = FloatFormat(out_fmt.exp_bits, bits, bias=out_fmt.bias, nan_codes=(1 << bits) - 1,
                         inf=True)
    ref = reference(result)
    code = ref.encode(float(total) if float(total) == total else _nearest_float(total),
                      unit.rounding, False)
    d = ref.decode(code)
    if not unit.subnormal_outputs and d != 0 and abs(d) < 2.0 ** out_fmt.emin:
        return math.copysign(0.0, d)
    return d


def _nearest_float(v: Fraction) -> float:
    raise AssertionError(f"the exact sum {v} is not a float64: the model keeps it below 2**53")


def unit_gemm_row(a, b, c: float, unit, in_fmt, out_fmt) -> float:
    """A dot product through the unit, block after block (each result the next addend)."""
    d = c
    for k0 in range(0, max(len(a), 1), unit.fma):
        d = unit_block(a[k0:k0 + unit.fma], b[k0:k0 + unit.fma], d, unit, in_fmt, out_fmt)
    return d


def _exact(total: Fraction, unit, out_fmt) -> float:
    """The exact sum rounded once to nearest even into ``out_fmt`` (AMD CDNA1)."""
    assert unit.rounding == "rne"
    if total == 0:
        return 0.0
    if abs(total) >= Fraction(2) ** (out_fmt.emax + 1):
        return math.copysign(math.inf, total)
    e = max(floor_log2(abs(total)), out_fmt.emin)
    quantum = Fraction(2) ** (e - out_fmt.man_bits)
    n = abs(total) / quantum
    low = math.floor(n)
    r = n - low
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and low % 2 == 1):
        low += 1
    v = low * quantum
    if v > Fraction(out_fmt.max):
        return math.copysign(math.inf, total)
    if not unit.subnormal_outputs and v < Fraction(2) ** out_fmt.emin:
        v = Fraction(0)
    return math.copysign(float(v), total)


def _pairwise(products: list[Fraction], c: float, unit) -> float:
    """Products in float32, a binary tree of float32 additions (nearest even) over the ``fma``
    slots with subnormal results flushed, then ``c`` (AMD CDNA2)."""
    def flush(x):
        return np.float32(0.0) * x if abs(x) < np.float32(2.0 ** -126) else x

    with np.errstate(over="ignore"):                 # products beyond float32 are +-inf
        slots = [flush(np.float32(float(p))) for p in products]
    slots += [np.float32(0.0)] * (unit.fma - len(slots))
    with np.errstate(over="ignore", invalid="ignore"):     # float32 overflow: inf, inf-inf: NaN
        while len(slots) > 1:
            slots = [flush(slots[i] + slots[i + 1]) for i in range(0, len(slots), 2)]
        return float(flush(flush(np.float32(c)) + slots[0]))


def _late(splits, cv: Fraction, unit, out_fmt) -> float:
    """AMD CDNA3: products (exact, at their raw exponents ``ea + eb``) truncated to a window of
    ``23 + n`` fraction bits below their largest exponent and summed (whole, or in even and odd
    groups joined below); then ``c``; each join aligns the operand with the smaller exponent to
    the other's and rounds it toward -inf (7 extra bits first when the products are the smaller;
    with odd/even groups an addend more than 25 binades below is truncated instead); one
    rounding to nearest even."""
    prods = [(sa * sb * Fraction(2) ** (ea + eb), ea + eb) if sa * sb != 0 else None
             for (sa, ea), (sb, eb) in splits]
    huge = [v for v, _ in filter(None, prods) if abs(v) >= Fraction(2) ** 128]
    if huge:
        signs = {v > 0 for v in huge}
        return math.nan if len(signs) == 2 else math.copysign(math.inf, huge[0])
    n = unit.extra_bits

    def group(items):
        live = [t for t in items if t is not None]
        e = max((e for _, e in live), default=-1024)
        q = Fraction(2) ** (e - 23 - n)
        return e, sum(math.floor(abs(v) / q) * (1 if v > 0 else -1) for v, _ in live)

    def join(e1, s1, e2, s2, n, extra_1, truncate_far):
        top = max(e1, e2)
        if e1 < top:
            n += extra_1
            s1, s2 = s1 * 2 ** extra_1, s2 * 2 ** extra_1
            s1 = math.floor(Fraction(s1, 2 ** (top - e1)))
        elif e2 < top:
            v = Fraction(s2, 2 ** (top - e2))
            s2 = math.floor(v) if not (truncate_far and e2 < top - 25) else math.trunc(v)
        return top, s1 + s2, n

    if unit.summation == "late":
        e, total = group(prods)
    else:
        e_even, s_even = group(prods[0::2])
        e_odd, s_odd = group(prods[1::2])
        e, total, n = join(e_even, s_even, e_odd, s_odd, n, 0, False)
    ec = max(floor_log2(abs(cv)), -126) if cv != 0 else -126
    sc = cv / Fraction(2) ** (ec - 23 - n)
    assert sc.denominator == 1
    e, total, n = join(e, total, ec, int(sc), n, 7, unit.summation == "odd-even")
    if total == 0:
        return 0.0
    return _exact(total * Fraction(2) ** (e - 23 - n), unit, out_fmt)
