"""Scalar pieces of the dot-product emulator: round an *exact* sum into a format.

The element core (:func:`fpformat.core.encode_bits`) rounds one float64 correctly.  A
multiply-accumulate unit has to round ``acc + p`` (or ``acc + p_1 + ... + p_W`` for a fused unit),
whose exact value is in general not a float64.  The functions here reduce that to one call of
``encode_bits`` on a single float64 *representative* of the exact sum, chosen so that every
rounding mode gives the same result as rounding the exact sum itself.  All are
``register_jitable``: they run as Python and inside the numba kernels of :mod:`fpformat.gemm`.

The representative is the exact sum rounded *to odd* at float64 precision
---------------------------------------------------------------------------------------------

Let ``x`` be the exact sum (a finite multiple of 2**-1074) and ``F`` the target format with
``M <= 50`` mantissa bits.  Let ``ro(x)`` be ``x`` if ``x`` is a float64, else the one of the two
float64 neighbours of ``x`` whose last significand bit is 1.

Claim: ``round_F(ro(x)) == round_F(x)`` for every rounding mode of the core (rne, rna, rtz, rtp,
rtn, rto) and every overflow setting.

Proof.  Every rounding decision of the core depends only on where ``x`` lies relative to the set
``G`` of the format's values and of the midpoints between neighbouring values (the overflow
threshold ``max + ulp/2`` included): which open interval between consecutive points of ``G``
holds ``x``, or which point of ``G`` it equals.  If ``x`` is a float64, ``ro(x) = x``.  Otherwise
``x`` lies strictly between adjacent float64s ``h_lo < x < h_hi``, and ``|x| >= 2**-1022`` (below
that every multiple of 2**-1074 is a float64).  A point of ``G`` in binade ``[2**k, 2**(k+1))``
(``k >= -1022``) is a multiple of ``2**(k - M - 1)`` (the format's quantum there is at least
``2**(k - M)``; subnormal or flushed quanta are coarser still), i.e. of ``2 * 2**(k - 52)`` since
``M <= 50``: an *even* multiple of the float64 ulp.  So (i) no point of ``G`` lies strictly
between ``h_lo`` and ``h_hi`` (they are adjacent float64s), and (ii) the odd one of ``h_lo, h_hi``
is not in ``G``.  Hence ``x`` and ``ro(x)`` lie in the same open interval between consecutive
points of ``G``, and every mode rounds them alike.  (At a binade boundary the spacing below
``h_hi = 2**k`` halves; the argument only uses adjacency, not the spacing.)  For stochastic
rounding the decision compares the top ``b`` bits of the remainder, which ``x`` and ``ro(x)``
share whenever ``b <= 51 - M`` (the remainder of ``x`` lies strictly between two consecutive
float64 remainders ``R, R+1``; truncating ``R`` or the odd one of ``R, R+1`` by at least one bit
gives ``floor(R / 2**j)``); with more random bits SR draws with the float64 resolution.  ∎

Overflow of float64 itself: if the exact sum of finite terms reaches ``2**1024`` it is beyond every
format's overflow threshold (``max + ulp/2 < 2**1024 - 2**971`` for ``M <= 50``), so the result is
the format's overflow code for the sum's sign (``C_OVF_*``), not its ``inf``-input code.

Two ways to obtain ``ro(x)``:

* :func:`ro_two_sum` for ``x = a + b`` (two float64s): Knuth's TwoSum gives ``s = fl(a + b)`` and
  ``err`` with ``s + err == a + b`` exactly (no overflow).  If ``err == 0``, ``ro = s``.  Else ``x``
  lies strictly between ``s`` and its float64 neighbour on ``err``'s side (``|err|`` is at most
  half the spacing of the interval holding ``x``), so ``ro`` is ``s`` if ``s`` is odd, else that
  neighbour (the neighbour of an even float64 is odd, also across a binade boundary).
* :func:`ro_exact_sum` for any number of terms: a fixed-point long accumulator (base-2**30
  digits in int64, the window spanning the terms' bits) holds the sum exactly; its top 53 bits,
  with the OR of the bits below in the last place, are ``ro(x)``.

Zero: an exact zero sum is ``+0`` (the accumulator's initial value and the result of
cancellation; IEEE's ``-0 + -0 = -0`` is not modelled).
"""

from __future__ import annotations

import math

import numpy as np
from numba.extending import register_jitable

from . import core

DIGIT_BITS = 30                    # bits per long-accumulator digit (carries deferred in int64)
_DIGIT_MASK = (1 << DIGIT_BITS) - 1
_ONE = np.int64(1)


@register_jitable
def f64_bits(x):
    """The int64 bit pattern of float64 ``x``."""
    return np.float64(x).view(np.int64)


@register_jitable
def ro_two_sum(a, b):
    """``(ro(a + b), overflow)`` for finite float64 ``a``, ``b``: the exact sum rounded to odd at
    float64 precision, and whether the exact sum lies beyond float64's range."""
    s = a + b
    if not math.isfinite(s):
        return s, True
    bb = s - a
    err = (a - (s - bb)) + (b - bb)
    if err == 0.0:
        return s + 0.0, False                    # + 0.0: an exact zero sum is +0
    bits = f64_bits(s)
    # x = s + err: s if s is odd, else s's neighbour on err's side (magnitude up when err has
    # s's sign, down otherwise).
    step = np.int64(0) if (bits & 1) == 1 else (_ONE if (err > 0.0) == (s > 0.0) else -_ONE)
    return np.int64(bits + step).view(np.float64), False


@register_jitable
def ro_exact_sum(terms, n, digits):
    """``(ro(sum), overflow)`` of the first ``n`` finite float64 ``terms``, exactly.

    ``digits`` is int64 scratch of at least ``window_digits(terms)`` entries (see
    :func:`digits_needed`); it is overwritten.
    """
    lo = 100000
    hi = -100000
    for t in range(n):
        v = terms[t]
        if v != 0.0:
            m, e = math.frexp(abs(v))            # |v| = m * 2**e, 0.5 <= m < 1
            sig = np.int64(m * 9007199254740992.0)   # * 2**53, exact
            tz = 0
            while (sig & 1) == 0:
                sig >>= 1
                tz += 1
            lsb = e - 53 + tz                    # |v| = sig * 2**lsb, sig odd
            lo = min(lo, lsb)
            hi = max(hi, e)
    if hi < lo:                                  # every term is zero
        return 0.0, False
    # Window [lo, hi + carry bits); n terms of magnitude < 2**hi sum below 2**(hi + log2 n).
    nbits = hi - lo + 64
    ndig = nbits // DIGIT_BITS + 1
    if ndig > digits.size:
        raise ValueError("ro_exact_sum: scratch too small")
    for d in range(ndig):
        digits[d] = 0
    for t in range(n):
        v = terms[t]
        if v == 0.0:
            continue
        m, e = math.frexp(abs(v))
        sig = np.int64(m * 9007199254740992.0)
        off = e - 53 - lo                        # |v| = sig * 2**(lo + off), off >= 0
        d0 = off // DIGIT_BITS
        r = off - d0 * DIGIT_BITS
        neg = v < 0.0
        for k in range(3):                       # sig * 2**r < 2**83 spans <= 3 digits
            sh = k * DIGIT_BITS - r
            if sh < 0:
                piece = (sig & (np.int64(_DIGIT_MASK) >> (-sh))) << (-sh)
            else:
                piece = (sig >> sh) & _DIGIT_MASK
            digits[d0 + k] += -piece if neg else piece
    # Normalise: digits 0..ndig-2 in [0, 2**30), the top digit carries the sign.
    for d in range(ndig - 1):
        c = digits[d] >> DIGIT_BITS              # arithmetic shift: floor division
        digits[d] -= c << DIGIT_BITS
        digits[d + 1] += c
    negative = digits[ndig - 1] < 0
    if negative:                                 # magnitude = -(value): negate and renormalise
        for d in range(ndig):
            digits[d] = -digits[d]
        for d in range(ndig - 1):
            c = digits[d] >> DIGIT_BITS
            digits[d] -= c << DIGIT_BITS
            digits[d + 1] += c
    top = ndig - 1
    while top >= 0 and digits[top] == 0:
        top -= 1
    if top < 0:
        return 0.0, False
    tbits = 0
    while (digits[top] >> tbits) != 0:
        tbits += 1
    total = top * DIGIT_BITS + tbits             # bit length of the magnitude (units 2**lo)
    drop = max(total - 53, 0)
    mag = np.int64(0)
    sticky = False
    for d in range(top, -1, -1):
        low = d * DIGIT_BITS
        dv = digits[d]
        if low + DIGIT_BITS <= drop:
            sticky = sticky or dv != 0
        elif low >= drop:
            mag += dv << (low - drop)
        else:
            k = drop - low
            mag += dv >> k
            sticky = sticky or (dv & ((_ONE << k) - 1)) != 0
    if sticky:
        mag |= 1                                 # round to odd
    if lo + total > 1024:                        # |sum| >= 2**1024: beyond float64
        return (-np.inf if negative else np.inf), True
    y = math.ldexp(np.float64(mag), lo + drop)   # exact: mag < 2**53
    return (-y if negative else y), False


@register_jitable
def digits_for_window(lo, hi):
    """Scratch digits :func:`ro_exact_sum` needs for terms whose bits lie in ``[2**lo, 2**hi)``."""
    return (hi - lo + 64) // DIGIT_BITS + 2


@register_jitable
def round_repr(y, overflow, F, C, u):
    """The code of the exact value represented by ``y = ro(x)`` (``overflow``: ``x`` beyond
    float64's range, sign of ``y``)."""
    if overflow:
        return C[core.C_OVF_NEG] if y < 0.0 else C[core.C_OVF_POS]
    return core.encode_bits(f64_bits(y), core.SRC_FLOAT64, F, C, u)


@register_jitable
def round_add(a, b, F, C, u):
    """Code of ``a + b`` (exact sum of two float64s, NaN/inf propagated) rounded once into the
    format ``F`` under call tuple ``C``."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return core.encode_bits(f64_bits(a + b), core.SRC_FLOAT64, F, C, u)
    y, ovf = ro_two_sum(a, b)
    return round_repr(y, ovf, F, C, u)


@register_jitable
def round_sum(terms, n, digits, F, C, u):
    """Code of ``terms[0] + ... + terms[n-1]`` (exact, NaN/inf propagated) rounded once."""
    finite = True
    naive = 0.0
    for t in range(n):
        naive += terms[t]
        finite = finite and math.isfinite(terms[t])
    if not finite:
        return core.encode_bits(f64_bits(naive), core.SRC_FLOAT64, F, C, u)
    if n == 1:
        return core.encode_bits(f64_bits(terms[0] + 0.0), core.SRC_FLOAT64, F, C, u)
    if n == 2:
        y, ovf = ro_two_sum(terms[0], terms[1])
    else:
        y, ovf = ro_exact_sum(terms, n, digits)
    return round_repr(y, ovf, F, C, u)


# --------------------------------------------------------------------------------- one output
#: Smallest ``terms`` scratch of :func:`gemm_element`: :func:`scaled_terms` writes up to 55
#: entries (``O`` and at most 54 pieces of a 53-bit significand).
MIN_TERMS = 64


@register_jitable
def _product(a, b, b_kn, i, j, k):
    """``a[i, k] * b[k, j]`` in float64 (exact for the operands :func:`gemm_element` accepts);
    ``b`` is ``(K, N)`` when ``b_kn``, else its transpose ``(N, K)``."""
    bv = b[k, j] if b_kn else b[j, k]
    return np.float64(a[i, k]) * np.float64(bv)


@register_jitable
def scaled_terms(terms, O, s, P):
    """Write ``O`` and the exact pieces of ``s * P`` into ``terms``; return the count.

    ``P``'s odd integer significand is cut into pieces of ``53 - bits(s)`` bits, so each piece
    times ``s`` is exact in float64 (barring float64 underflow below 2**-1022)."""
    terms[0] = O
    if s == 1.0 or P == 0.0 or not (math.isfinite(P) and math.isfinite(s)):
        terms[1] = s * P
        return 2
    ms, es = math.frexp(abs(s))
    ss = np.int64(ms * 9007199254740992.0)
    sbits = 53
    while (ss & 1) == 0:
        ss >>= 1
        sbits -= 1
    w = 53 - sbits
    mp, ep = math.frexp(abs(P))
    sig = np.int64(mp * 9007199254740992.0)
    lsb = ep - 53
    n = 1
    mask = (np.int64(1) << w) - 1
    sign = -1.0 if P < 0.0 else 1.0
    while sig != 0:
        piece = sig & mask
        if piece != 0:
            terms[n] = s * (sign * math.ldexp(np.float64(piece), lsb))
            n += 1
        sig >>= w
        lsb += w
    return n


@register_jitable
def promote_sum(O, sab, P, Fp, Cp, sub_p, Cs, u, terms, digits):
    """One promotion (docs/gemm.md, step 4): ``(value, code)`` of ``O + s*P`` rounded once into
    the promotion format ``Fp``/``Cp`` (a CUDA core's fused multiply-add), ``s`` the product of
    the block scales ``sab`` (exact in float64) rounded to nearest even into that format by
    ``Cs`` (1 stays 1).  ``u``: the random number for stochastic rounding; ``terms`` and
    ``digits``: :func:`gemm_element`'s scratch."""
    s = 1.0
    if sab != 1.0:
        sc = core.encode_bits(f64_bits(sab), core.SRC_FLOAT64, Fp, Cs, np.uint64(0))
        s = core.decode_code(sc, Fp, sub_p)
    n = scaled_terms(terms, O, s, P)
    code = np.int64(round_sum(terms, n, digits, Fp, Cp, u))
    return core.decode_code(code, Fp, sub_p), code


@register_jitable
def gemm_element(a, b, b_kn, sa, sbt, i, j, idx, block_k, seg_len, W, pairwise, promote,
                 scaled, Fa, Ca, sub_a, Fp, Cp, sub_p, Cs, key_a, key_p, terms, digits, tree,
                 tcode):
    """``(value, code)`` of output element ``(i, j)`` (flat index ``idx = i * N + j``) of
    :func:`fpformat.gemm.matmul`: the CPU kernel and the GPU kernel of
    :mod:`fpformat.cuda_gemm` both call this, so both give the same bits.

    ``a`` is ``(M, K)``; ``b`` is ``(K, N)`` when ``b_kn`` (the GPU's layout: neighbouring
    threads read neighbouring columns), else ``(N, K)`` (the CPU's ``b.T``, contiguous along
    k).  ``sa`` ``(M, nblk)`` and ``sbt`` ``(N, nblk)`` are the block scales (read when
    ``scaled``).  The products (exact in float64) enter the accumulator ``Fa``/``Ca`` in groups
    of ``W`` per segment of ``seg_len`` (sequential, or an adder tree when ``pairwise``), each
    segment promoted into ``Fp``/``Cp`` when ``promote`` (scale products rounded with ``Cs``);
    the semantics are :mod:`fpformat.gemm`'s docstring.  Stochastic rounding draws
    ``sr_random(key_a, idx * (2K + 2) + r)`` for the accumulator's ``r``-th rounding and
    ``sr_random(key_p, idx * (nseg + 1) + r)`` for the promotions.  Scratch: ``terms`` (at
    least ``max(W + 1, MIN_TERMS)`` float64), ``digits`` (``digits_for_window(-1074, 1025)``
    int64), ``tree``/``tcode`` (``ceil(seg_len / W)`` entries when ``pairwise``)."""
    K = a.shape[1]
    nseg = (K + seg_len - 1) // seg_len if K > 0 else 0
    stride_a = 2 * K + 2                    # bound on accumulator roundings per output element
    stride_p = nseg + 1
    sr_a = Ca[core.C_MODE] == core.SR
    sr_p = Cp[core.C_MODE] == core.SR
    ev = 0
    pev = 0
    P = 0.0
    Pcode = np.int64(Ca[core.C_ZERO_POS])
    O = 0.0
    Ocode = np.int64(Cp[core.C_ZERO_POS])
    u = np.uint64(0)
    for sg in range(nseg):
        k0 = sg * seg_len
        k1 = min(k0 + seg_len, K)
        if not pairwise:
            P = 0.0
            Pcode = np.int64(Ca[core.C_ZERO_POS])
            k = k0
            while k < k1:
                g1 = min(k + W, k1)
                if sr_a:
                    u = core.sr_random(key_a, idx * stride_a + ev)
                if g1 - k == 1:
                    Pcode = np.int64(round_add(P, _product(a, b, b_kn, i, j, k), Fa, Ca, u))
                else:
                    terms[0] = P
                    n = 1
                    for kk in range(k, g1):
                        terms[n] = _product(a, b, b_kn, i, j, kk)
                        n += 1
                    Pcode = np.int64(round_sum(terms, n, digits, Fa, Ca, u))
                ev += 1
                P = core.decode_code(Pcode, Fa, sub_a)
                k = g1
        else:
            nl = 0
            k = k0
            while k < k1:
                g1 = min(k + W, k1)
                n = 0
                for kk in range(k, g1):
                    terms[n] = _product(a, b, b_kn, i, j, kk)
                    n += 1
                if sr_a:
                    u = core.sr_random(key_a, idx * stride_a + ev)
                c = round_sum(terms, n, digits, Fa, Ca, u)
                ev += 1
                tcode[nl] = c
                tree[nl] = core.decode_code(c, Fa, sub_a)
                nl += 1
                k = g1
            while nl > 1:
                h = nl // 2
                for t in range(h):
                    if sr_a:
                        u = core.sr_random(key_a, idx * stride_a + ev)
                    c = round_add(tree[2 * t], tree[2 * t + 1], Fa, Ca, u)
                    ev += 1
                    tcode[t] = c
                    tree[t] = core.decode_code(c, Fa, sub_a)
                if nl % 2 == 1:
                    tcode[h] = tcode[nl - 1]
                    tree[h] = tree[nl - 1]
                    nl = h + 1
                else:
                    nl = h
            P = tree[0]
            Pcode = np.int64(tcode[0])
        if promote:
            sab = 1.0
            if scaled:
                blk = k0 // block_k
                sab = np.float64(sa[i, blk]) * np.float64(sbt[j, blk])
            if sr_p:
                u = core.sr_random(key_p, idx * stride_p + pev)
            pev += 1
            O, Ocode = promote_sum(O, sab, P, Fp, Cp, sub_p, Cs, u, terms, digits)
    if promote:
        return O, Ocode
    return P, Pcode
