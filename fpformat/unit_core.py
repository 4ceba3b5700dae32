"""The scalar core of a matrix unit: one block fused multiply-add, in integers.

Every function is ``register_jitable``: plain Python, inside the CPU kernels of
:mod:`fpformat.gemm` and inside CUDA kernels alike.  The model (docs/gemm.md, "Matrix units") is
the block FMA of NVIDIA tensor cores measured by Khattak and Mikaitis (arXiv 2512.07004):

1. Operands arrive decomposed (:func:`decompose`): a signed integer significand ``S`` with
   ``M_in`` fraction bits and an exponent ``e`` (subnormals: the format's ``emin``), so that
   ``x = S * 2**(e - M_in)``.  Specials are marked by exponents ``EXP_INF``/``EXP_NAN``.
2. Each product's significand ``P = Sa*Sb`` is exact, held with 23 fraction bits at the raw
   exponent ``ea + eb``; ``P`` lies in [1, 4) for normal inputs.  Without the carry bit a
   product with ``P >= 2`` is normalised: one bit right (the bit dropped is zero for inputs of
   at most 11 significant bits) and its exponent up by one.
3. The block's largest exponent ``E`` (over the products' exponents, the addend ``c``, which
   enters as a float32 significand with 23 fraction bits, and the unit's lowest anchor)
   anchors a window of ``23 + n`` fraction bits, ``n`` the unit's extra alignment bits.  With
   the carry bit (NVIDIA; the published models' formulation) products stay unnormalised and
   ``E`` is taken over their raw exponents: a product with ``P >= 2`` at the top then brings
   one more bit into the window than a normalised one would.  Each term, narrowed to ``23 + n``
   bits at its own exponent when ``n < 0``, is shifted to the window and truncated
   (magnitude), optionally with a sticky bit for what fell out.
4. The aligned terms are added exactly as signed integers (or, with a finite number of carry
   bits, in a two's-complement adder of a sign bit, 2 integer bits and the carry bits above the
   window's fraction bits, which wraps around); a zero sum is +0.
5. The sum is rounded once into the result format (the output format with the unit's result
   precision) by :func:`fpformat.core.quantize_bits`; a sum of ``2**(emax + 1)`` or more is
   ±inf whatever the rounding mode, as the model has it.

NaN or ±inf among the products or ``c`` (an infinity times zero is NaN): NaN if any is NaN or
both infinities occur, else that infinity.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.extending import register_jitable

from . import core, gemm_core

#: Exponent markers of special operands in decomposed form (far outside any finite exponent).
EXP_INF = 1 << 20
EXP_NAN = 1 << 21
#: Fraction bits of the product and addend significands inside the unit (float32's).
ACC_FRACTION_BITS = 23
#: Exponent of the smallest normal float32: the addend's significand is read in float32 layout.
ACC_EMIN = -126

# Unit tuple U (int64), built on the host by fpformat.units.MatrixUnit.tuple().
U_FMA = 0          # products per block
U_EXTRA = 1        # extra alignment bits n (may be negative)
U_CARRY = 2        # 1: the carry bit rule of step 3
U_STICKY = 3       # 1: a sticky bit below the window
U_IN_M = 4         # fraction bits of the input format
U_OUT_EMAX = 5     # exponent of the output format's largest binade
U_OUT_EMIN = 6     # exponent of its smallest normal binade
U_OUT_SUB = 7      # 1: subnormal results kept; 0: flushed to zero (sign kept)
U_MIN_EXP = 8      # lowest exponent the window is anchored at
U_SUM = 9          # how the block is summed: SUM_ALIGNED, SUM_EXACT or SUM_PAIRWISE
U_CARRY_BITS = 10  # integer bits of the adder above the window's top binade; -1: unbounded
U_LEN = 11

#: Block sums (``U_SUM``): NVIDIA's aligned window (steps 2-5 above); the exact sum rounded once
#: (AMD CDNA1); a binary tree of float32 additions, each rounded to nearest even with subnormal
#: results flushed, the addend added last (AMD CDNA2); the products' aligned sum and then the
#: addend, the smaller of the two aligned to the other rounding toward -inf (AMD CDNA3, "late
#: partial sum"); the same with the even- and odd-indexed products summed apart first (CDNA3
#: FP8).
SUM_ALIGNED, SUM_EXACT, SUM_PAIRWISE, SUM_LATE, SUM_ODD_EVEN = 0, 1, 2, 3, 4
#: Extra bits both operands of the late addition get when the products' sum is the smaller.
LATE_EXTRA_BITS = 7
#: With odd/even groups, an addend more than this many binades below the sum is truncated.
LATE_TRUNCATE_BELOW = 25
#: Exponent of a group without a nonzero product.
EMPTY_GROUP_EXP = -1024


@register_jitable
def decompose(x, m, emin, keep_subnormals):
    """``(S, e)`` with ``x = S * 2**(e - m)`` for a float64 ``x`` that is a value of a format with
    ``m`` fraction bits and smallest normal exponent ``emin`` (``S`` signed; 0 for zeros, and for
    subnormals unless kept); specials get ``e = EXP_INF`` or ``EXP_NAN`` and ``S = ±1``."""
    b = np.int64(np.float64(x).view(np.int64))
    negative = b < 0
    field = (b >> 52) & 0x7FF
    frac = b & ((np.int64(1) << 52) - 1)
    sign = np.int64(-1) if negative else np.int64(1)
    if field == 0x7FF:
        return sign, np.int64(EXP_NAN if frac != 0 else EXP_INF)
    if field == 0:                                   # zero (inputs are float64 normals or 0)
        return np.int64(0), np.int64(emin)
    e = field - 1023
    sig53 = frac | (np.int64(1) << 52)
    if e < emin:
        if not keep_subnormals:
            return np.int64(0), np.int64(emin)
        return sign * (sig53 >> (52 - m + emin - e)), np.int64(emin)
    return sign * (sig53 >> (52 - m)), np.int64(e)


@register_jitable
def _shifted(s, shift, sticky):
    """``s >> shift`` (``s >= 0``), with the OR of the dropped bits appended as a new last bit
    when ``sticky``."""
    if shift >= 62:
        kept = np.int64(0)
        lost = s != 0
    else:
        kept = s >> shift
        lost = (s & ((np.int64(1) << shift) - 1)) != 0
    if sticky:
        return kept * 2 + np.int64(lost)
    return kept


@register_jitable
def _specials(sa, ea, sb, eb, sc, ec):
    """The block's result when an operand or ``c`` is NaN or infinite: NaN, +inf or -inf."""
    pinf = False
    ninf = False
    nan = False
    for k in range(len(sa)):
        ka, kb = ea[k], eb[k]
        if ka >= EXP_INF or kb >= EXP_INF:
            if ka == EXP_NAN or kb == EXP_NAN or sa[k] == 0 or sb[k] == 0:
                nan = True                           # NaN, or infinity times zero
            elif sa[k] * sb[k] > 0:
                pinf = True
            else:
                ninf = True
    if ec == EXP_NAN:
        nan = True
    elif ec == EXP_INF:
        pinf = pinf or sc > 0
        ninf = ninf or sc < 0
    if nan or (pinf and ninf):
        return np.nan
    return np.inf if pinf else -np.inf


LOWEST = -(1 << 30)                 # below every exponent: zero products, empty maxima


@register_jitable
def _scan(sa, ea, sb, eb, c, U):
    """``(sc, ec, top, max_raw, max_exp)``: ``c`` decomposed, the largest operand exponent
    (``>= EXP_INF`` when an operand is special) and the largest raw and normalised exponents of
    the nonzero products (``LOWEST`` when there is none)."""
    big_p = np.int64(2) << (2 * U[U_IN_M])          # |Sa*Sb| from here on: P >= 2
    lowest = np.int64(LOWEST)
    sc, ec = decompose(c, ACC_FRACTION_BITS, ACC_EMIN, True)
    top = lowest
    max_raw = lowest
    max_exp = lowest
    for k in range(len(sa)):
        ka, kb = ea[k], eb[k]
        top = max(top, max(ka, kb))
        p = sa[k] * sb[k]
        big = np.int64(abs(p) >= big_p)
        raw = ka + kb if p != 0 else lowest
        max_raw = max(max_raw, raw)
        max_exp = max(max_exp, raw + big)
    return sc, ec, top, max_raw, max_exp


@numba.njit(inline="always")
def block_any(sa, ea, sb, eb, c, U, F, C, V):
    """:func:`block_fma` for every summation, the CPU's: the exact and pairwise summations use
    scratch arrays, which GPU device code cannot allocate.  Inlined into the caller's numba IR,
    so that the CPU kernels call :func:`block_fma` directly (an extra call level per block
    costs about a third of the kernel's speed)."""
    if U[U_SUM] != SUM_EXACT and U[U_SUM] != SUM_PAIRWISE:
        return block_fma(sa, ea, sb, eb, c, U, F, C, V)
    sc, ec, top, max_raw, _ = _scan(sa, ea, sb, eb, c, U)
    if top >= EXP_INF or ec >= EXP_INF:
        return _specials(sa, ea, sb, eb, sc, ec)
    if max_raw == LOWEST and sc == 0:
        return 0.0
    if U[U_SUM] == SUM_EXACT:
        return _exact_block(sa, ea, sb, eb, c, U, F, C, V)
    return _pairwise_block(sa, ea, sb, eb, c, U)


@register_jitable
def block_fma(sa, ea, sb, eb, c, U, F, C, V):
    """One block of the unit: ``round(sum_k a[k]*b[k] + c)`` over the block's operands, for the
    aligned, late and odd/even summations (allocation-free: numba.cuda compiles it too; the
    CPU kernels call :func:`block_any`).

    ``sa``/``ea`` and ``sb``/``eb``: the block's decomposed operands (:func:`decompose`; equal
    lengths, at most the unit's ``fma``); ``c`` a float64
    value of the output format; ``U`` the unit tuple; ``F``, ``C``, ``V`` the result format's
    format, call and value tuples (:mod:`fpformat.core`).  Returns the float64 result.

    The loops are branch-free selects over the block so that they vectorise (they index from 0:
    a loop from an offset of unknown sign makes numba wrap negative indices, which turns every
    load into a gather); zero products take the lowest exponent and add nothing."""
    size = len(sa)
    up = ACC_FRACTION_BITS - 2 * U[U_IN_M]          # product fraction bits -> 23
    sc, ec, top, max_raw, max_exp = _scan(sa, ea, sb, eb, c, U)
    if top >= EXP_INF or ec >= EXP_INF:
        return _specials(sa, ea, sb, eb, sc, ec)
    found = max_raw > LOWEST
    if not found and sc == 0:
        return 0.0
    if U[U_SUM] == SUM_LATE or U[U_SUM] == SUM_ODD_EVEN:
        return _late_block(sa, ea, sb, eb, sc, ec, max_exp, U, F, C, V)
    # 2. The window: 23 + n fraction bits below the anchor.  With the carry bit (the published
    # models' formulation) products stay unnormalised, P in [1, 4) at the raw exponent, and the
    # anchor is the largest raw exponent; without it products are normalised first.
    raw_products = U[U_CARRY] != 0
    anchor = max_raw if raw_products else max_exp
    if sc != 0:
        anchor = max(anchor, ec)
    anchor = max(anchor, U[U_MIN_EXP])
    n = U[U_EXTRA]
    sticky = U[U_STICKY] != 0
    # 3. Align, truncate and add.
    total = np.int64(0)
    for k in range(size):
        p = sa[k] * sb[k]
        mag = abs(p) << up
        big = np.int64(0) if raw_products else \
            np.int64(mag >= (np.int64(2) << ACC_FRACTION_BITS))
        mag >>= big
        e = ea[k] + eb[k] + big
        mag = mag << n if n >= 0 else mag >> -n
        if sticky:
            t = _shifted(mag, max(anchor - e, 0), True)
        else:
            t = mag >> min(max(anchor - e, 0), 63)
        total += t if p > 0 else -t
    if sc != 0:
        mag = abs(sc)
        mag = mag << n if n >= 0 else mag >> -n
        t = _shifted(mag, anchor - ec, sticky)
        total += t if sc > 0 else -t
    if U[U_CARRY_BITS] >= 0:
        # A two's-complement adder of a sign bit, 2 integer bits (a product is below 4) and the
        # carry bits wraps around beyond them.
        width = ACC_FRACTION_BITS + n + np.int64(sticky) + 3 + U[U_CARRY_BITS]
        total = _wrap(total, width)
    if total == 0:
        return 0.0
    # 4. Round the exact sum once, through a float64 that rounds like it (round to odd).
    s = _odd_float(total) * 2.0 ** (anchor - ACC_FRACTION_BITS - n - np.int64(sticky))
    return _round_result(s, False, U, F, C, V)


@register_jitable
def _wrap(total, width):
    """``total`` as a two's-complement integer of ``width`` bits (sign bit included) holds it:
    the bits above are lost."""
    if width >= 63:
        return total
    m = total & ((np.int64(1) << width) - 1)
    return m - (np.int64(1) << width) if m >= (np.int64(1) << (width - 1)) else m


@register_jitable
def _odd_float(total):
    """``total`` as a float64: exact below 2**53, else its round-to-odd neighbour (rounding
    that float into a format of at most 50 fraction bits gives the exact value's rounding;
    :mod:`fpformat.gemm_core`)."""
    mag = abs(total)
    shift = np.int64(0)
    lost = np.int64(0)
    while mag >= (np.int64(1) << 53):
        lost |= mag & 1
        mag >>= 1
        shift += 1
    v = np.float64(mag | lost) * 2.0 ** shift
    return v if total > 0 else -v


@register_jitable
def _round_result(s, overflow, U, F, C, V):
    """The float64 ``s`` (or its float64 round-to-odd representative, ``overflow`` when the
    exact value is beyond float64) rounded into the result format; ±inf from ``2**(emax+1)``."""
    if overflow or abs(s) >= 2.0 ** (U[U_OUT_EMAX] + 1):
        return np.inf if s > 0 else -np.inf
    bits = core.quantize_bits(np.int64(np.float64(s).view(np.int64)), core.SRC_FLOAT64, F, C, V,
                              np.uint64(0))
    d = np.int64(bits).view(np.float64)
    if U[U_OUT_SUB] == 0 and abs(d) < 2.0 ** U[U_OUT_EMIN]:
        return 0.0 * d
    return d


@register_jitable
def _product(sa, ea, sb, eb, k, m2):
    """The exact product of operands ``k`` as a float64 (at most 24 significant bits)."""
    return np.float64(sa[k] * sb[k]) * 2.0 ** (ea[k] + eb[k] - m2)


@register_jitable
def _exact_block(sa, ea, sb, eb, c, U, F, C, V):
    """SUM_EXACT: the products and ``c`` added exactly, rounded once (round-to-odd
    representative of the long sum, :func:`fpformat.gemm_core.ro_exact_sum`)."""
    size = len(sa)
    terms = np.empty(size + 1, np.float64)
    for k in range(size):
        terms[k] = _product(sa, ea, sb, eb, k, 2 * U[U_IN_M])
    terms[size] = c
    digits = np.empty(gemm_core.digits_for_window(-1100, 1100), np.int64)
    y, overflow = gemm_core.ro_exact_sum(terms, size + 1, digits)
    if y == 0.0 and not overflow:
        return 0.0
    return _round_result(y, overflow, U, F, C, V)


@register_jitable
def _group(sa, ea, sb, eb, start, step, up, n):
    """``(E, S)``: the products ``start, start+step, ...`` (unnormalised, 23 fraction bits)
    widened by ``n >= 0`` bits, aligned to their largest raw exponent ``E`` and truncated; ``S``
    their signed integer sum (units of ``2**(E - 23 - n)``).  No nonzero product: E = -1024."""
    anchor = np.int64(EMPTY_GROUP_EXP)
    for k in range(start, len(sa), step):
        if sa[k] * sb[k] != 0:
            anchor = max(anchor, ea[k] + eb[k])
    total = np.int64(0)
    for k in range(start, len(sa), step):
        p = sa[k] * sb[k]
        t = ((abs(p) << up) << n) >> min(max(anchor - ea[k] - eb[k], 0), 63)
        total += t if p > 0 else -t
    return anchor, total


@register_jitable
def _add_late(e1, s1, e2, s2, n, extra_1, truncate_far):
    """AMD CDNA3's addition of two aligned sums ``s1 * 2**(e1 - 23 - n)`` and ``s2 * 2**(e2 -
    23 - n)``: the one with the smaller exponent is shifted to the other's, its magnitude
    truncated and one unit added when it is negative and bits were lost (rounding toward -inf);
    when the first is the smaller, both first gain ``extra_1`` bits.  With ``truncate_far`` a
    second operand more than ``LATE_TRUNCATE_BELOW`` binades below is only truncated.
    Returns ``(E, S, n)`` of the signed sum."""
    anchor = max(e1, e2)
    shift = abs(e1 - e2)
    m1, m2 = abs(s1), abs(s2)
    if e1 < anchor:
        n += extra_1
        m1 <<= extra_1
        m2 <<= extra_1
        kept = m1 >> min(shift, 63)
        m1 = kept + np.int64((kept << min(shift, 63)) != m1 and s1 < 0)
    elif e2 < anchor:
        kept = m2 >> min(shift, 63)
        lost = (kept << min(shift, 63)) != m2
        if truncate_far and e2 < anchor - LATE_TRUNCATE_BELOW:
            lost = False
        m2 = kept + np.int64(lost and s2 < 0)
    return anchor, (-m1 if s1 < 0 else m1) + (-m2 if s2 < 0 else m2), n


@register_jitable
def _late_block(sa, ea, sb, eb, sc, ec, max_exp, U, F, C, V):
    """SUM_LATE / SUM_ODD_EVEN (AMD CDNA3): products (unnormalised) summed in one aligned group
    or in even and odd groups joined by :func:`_add_late`, then the addend ``c`` (its float32
    significand widened to ``23 + n`` bits; exponent -126 when zero) joined the same way, with
    7 extra bits when the products are the smaller; one rounding.  A product of 2**128 or more
    makes the block ±inf (NaN with both signs)."""
    if max_exp >= 128:
        pos = False
        neg = False
        big_p = np.int64(2) << (2 * U[U_IN_M])
        for k in range(len(sa)):
            p = sa[k] * sb[k]
            huge = p != 0 and ea[k] + eb[k] + np.int64(abs(p) >= big_p) >= 128
            pos = pos or (huge and p > 0)
            neg = neg or (huge and p < 0)
        if pos or neg:
            return np.nan if pos and neg else (np.inf if pos else -np.inf)
    up = ACC_FRACTION_BITS - 2 * U[U_IN_M]
    n = U[U_EXTRA]
    if U[U_SUM] == SUM_LATE:
        e, s = _group(sa, ea, sb, eb, 0, 1, up, n)
    else:
        e_even, s_even = _group(sa, ea, sb, eb, 0, 2, up, n)
        e_odd, s_odd = _group(sa, ea, sb, eb, 1, 2, up, n)
        e, s, n = _add_late(e_even, s_even, e_odd, s_odd, n, 0, False)
    if sc == 0:
        ec = np.int64(ACC_EMIN)
    e, s, n = _add_late(e, s, ec, sc << n, n, LATE_EXTRA_BITS, U[U_SUM] == SUM_ODD_EVEN)
    if s == 0:
        return 0.0
    return _round_result(_odd_float(s) * 2.0 ** (e - ACC_FRACTION_BITS - n), False, U, F, C, V)


@register_jitable
def _flush32(x):
    """A float32 below float32's normal range flushed to zero (sign kept)."""
    return np.float32(0.0) * x if abs(x) < np.float32(1.1754943508222875e-38) else x


@register_jitable
def _pairwise_block(sa, ea, sb, eb, c, U):
    """SUM_PAIRWISE: products in float32 (flushed below the normal range), added as a binary
    tree over the ``fma`` slots (missing ones are zero), every addition rounded to nearest even
    and flushed; then ``c`` (flushed) added with one more rounding."""
    fma = U[U_FMA]
    vals = np.zeros(fma, np.float32)
    for k in range(len(sa)):
        vals[k] = _flush32(np.float32(_product(sa, ea, sb, eb, k, 2 * U[U_IN_M])))
    step = 1
    while step < fma:
        for i in range(0, fma, 2 * step):
            vals[i] = _flush32(vals[i] + vals[i + step])
        step *= 2
    d = _flush32(_flush32(np.float32(c)) + vals[0])
    return np.float64(d)
