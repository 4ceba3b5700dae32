"""The scalar numeric core: one element encoded, one code decoded.

Every function here is decorated with :func:`numba.extending.register_jitable`, so the *same
source* runs as plain Python, inside the CPU kernels (``numba.njit``) and inside the CUDA kernels
(``numba.cuda.jit``): one core for every target, parameters rather than copies.

Integers only.  The input is the bit pattern of an IEEE binary float (float32 or float64, the
*source layout* ``S``); the format and the call are described by small integer tuples built on the
host (``F`` by :attr:`fpformat.FloatFormat.params`, ``C`` and ``V`` by :mod:`fpformat.rounding`;
the ``F_*``/``C_*``/``V_*``/``S_*`` indices below).  Reading these tuples
with constant indices costs nothing once compiled.

Semantics: docs/numerics.md.  In short, ``|x| = sig * 2**(ex - src_m)`` is split at the
format's quantum ``2**q`` into ``n`` (the integer significand of the lower neighbour, hidden bit
included) and a remainder; the rounding mode decides whether ``n`` goes up by one; the magnitude
code follows from ``n`` and the exponent, a carry out of the binade landing naturally on the next
exponent field.
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

# Rounding modes (the integer codes the kernels see).
RNE, RNA, RTZ, RTP, RTN, RTO, SR = 0, 1, 2, 3, 4, 5, 6

# Format tuple F (int64), built by fpformat.format.FloatFormat.params.
F_E = 0            # exponent bits
F_M = 1            # mantissa bits
F_BIAS = 2
F_EMIN = 3         # exponent of the smallest normal (1 - bias, or -bias without zero)
F_EMAXFIELD = 4    # 2**E - 1, the largest exponent field
F_MAXMAG = 5       # largest finite magnitude code
F_INFMAG = 6       # magnitude code of infinity, -1 if none
F_SIGNBIT = 7      # 1 << (E + M) for signed formats, 0 for unsigned
F_SUBNORMALS = 8   # 1: exponent field 0 holds subnormals; 0: flush to zero
F_HASZERO = 9      # 0 for E8M0-like formats: exponent field 0 is normal
F_NEGZERO = 10     # 1: the sign-bit-only code is -0; 0: it is NaN (fnuz)
F_NANPOS = 11      # code for +NaN results, -1 if the format has no NaN
F_NANNEG = 12      # code for -NaN results, -1 if the format has no NaN
F_PARITY = 13      # 1: "even"/"odd" (rne, rto) is the lower neighbour's code parity (P3109 p = 1)
F_LEN = 14

# Call tuple C (int64), built by fpformat.rounding.call_tuple: the rounding mode and the results of
# the special cases, precomputed on the host so the core stays branch-light.
C_MODE = 0
C_OVF_POS = 1      # code for a positive overflow (rounded magnitude > max)
C_OVF_NEG = 2
C_INF_POS = 3      # code for +inf input
C_INF_NEG = 4
C_NAN_POS = 5      # code for a NaN input with sign bit clear
C_NAN_NEG = 6
C_ZERO_POS = 7     # code for +0 input
C_ZERO_NEG = 8     # code for -0 input
C_NEG_UNSIGNED = 9 # code for x < 0 into an unsigned format
C_SR_BITS = 10     # 1..64 random bits per stochastic rounding decision
C_LEN = 11

# Value tuple V (int64): the call's special results as bit patterns in the source layout, for
# quantize (built by fpformat.rounding.value_tuple).
V_OVF_POS, V_OVF_NEG, V_INF_POS, V_INF_NEG, V_NAN_POS, V_NAN_NEG = 0, 1, 2, 3, 4, 5
V_ZERO_POS, V_ZERO_NEG, V_NEG_UNSIGNED = 6, 7, 8
V_LOWQ = 9         # bits of the quantum 2**q below the normal range (2**emin when flushing)
V_MAXBITS = 10     # bits of the largest finite magnitude
V_MIN = 11         # bits of the smallest value (formats without zero)
V_LEN = 12

# Source layout tuple S: (mantissa bits, exponent bias, exponent-field mask, sign shift).
S_M = 0
S_BIAS = 1
S_EMASK = 2
S_SIGNSHIFT = 3
SRC_FLOAT32 = (23, 127, 0xFF, 31)
SRC_FLOAT64 = (52, 1023, 0x7FF, 63)


def as_int64_tuple(values) -> tuple[int, ...]:
    """Parameters as int64 two's complement: a tuple the compiler types as UniTuple(int64) (a
    value >= 2**63, such as a 64-bit sign bit, would make it a mixed tuple and the arithmetic
    float)."""
    return tuple(int(v) - (1 << 64) if int(v) >= (1 << 63) else int(v) for v in values)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@register_jitable
def _mix64(z):
    """The splitmix64 finaliser: a bijective 64-bit avalanche mix."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@register_jitable
def sr_key(seed):
    """Stream key for a user seed (any int64); nearby seeds give unrelated streams."""
    return _mix64(np.uint64(seed) + _GOLDEN)


#: What :func:`sr_counter` advances by from one element to the next.
SR_STEP = _GOLDEN


@register_jitable
def sr_counter(key, i):
    """The splitmix64 counter of element ``i`` of the stream ``key``, ``key + (i + 1) *
    SR_STEP`` (uint64, wrapping): :func:`sr_from_counter` turns it into the element's random
    bits, and a loop over elements may add ``SR_STEP`` instead of multiplying again."""
    return key + (np.uint64(i) + np.uint64(1)) * SR_STEP


@register_jitable
def sr_from_counter(z):
    """The 64 random bits of the element whose counter is ``z`` (:func:`sr_counter`)."""
    return _mix64(z)


@register_jitable
def sr_random(key, i):
    """The 64 random bits for element ``i`` of the stream ``key``: counter-based (splitmix64),
    a pure function of (key, i), so results depend on neither threads, chunks nor device."""
    return sr_from_counter(sr_counter(key, i))


@register_jitable
def round_parts(b, S, F, C, u):
    """The shared front end: split the input at the format's quantum and round.

    ``b`` is the int64 bit pattern of a float in source layout ``S``; ``u`` the element's 64-bit
    random number (stochastic rounding only).  Returns ``(negative, a, fe, low, ex, sh, n, up)``:
    the sign, the magnitude bits, the source exponent field, whether ``|x|`` lies below the
    format's normal range, its binade exponent, the number of significand bits below the
    quantum (clamped to ``src_m + 2``, beyond which nothing changes), the rounded integer
    significand ``n`` (hidden bit included) and whether it was rounded up.

    Straight-line and lean on purpose: every mode's decision is one expression and the format's
    constants fold at compile time in the specialised kernels, so the loops around it
    vectorise (this function is most of the kernels' cost).

    Legend, in the order the steps use them:

    1. Split the input: ``negative`` its sign; ``a`` its magnitude bits; ``fe`` the source
       exponent field; ``src_m`` the source's mantissa width; ``sig`` the source significand
       with its hidden bit (``|x| = sig * 2**(max(fe, 1) - bias - src_m)``).
    2. Place the quantum: ``lowlim`` is the source exponent field of the format's smallest
       normal binade (``emin``), ``low`` whether ``|x|`` lies below it; ``shift`` the number of
       significand bits below the format's quantum (more below ``emin``, all of the binade's
       when flushing subnormals), ``sh`` that count clamped to ``src_m + 2``.
    3. Round: ``n = sig >> sh`` is the lower neighbour's integer significand, ``rem`` the bits
       dropped, ``half`` the tie point, ``odd`` n's last bit; ``up`` the mode's decision.
    4. Return ``ex``, the binade exponent, with the rest for the callers to build the code.
    """
    src_m = S[S_M]
    M = F[F_M]
    mode = C[C_MODE]
    one = np.int64(1)

    signmask = one << S[S_SIGNSHIFT]
    negative = (b & signmask) != 0
    a = b & ~signmask                                        # magnitude bits
    fe = a >> src_m                                          # source exponent field
    # Below the format's normal range (source subnormals always are: routing guarantees the
    # format's emin >= the source's, or emin = -1023 from float64, see lowraw).  There the
    # quantum is fixed at 2**qlow.
    lowraw = F[F_EMIN] + S[S_BIAS]
    lowlim = max(lowraw, 1)                                  # source exponent field of emin
    low = fe < lowlim
    # A source subnormal (fe == 0) has the exponent of fe == 1; where the shift clamps anyway
    # (lowlim >= M + 3) the max is left out (constant-folded: this loop is the kernels' cost).
    fe1 = fe if lowlim >= M + 3 else max(fe, one)
    shift = src_m - M + max(lowlim - fe1, 0)                 # quantum 2**(emin - M) below range
    if F[F_SUBNORMALS] == 0 and low:                         # flushing: quantum 2**emin
        shift += M
    # emin = -1023 from float64 (lowraw = 0): the format's lowest binade lies among float64's
    # subnormals, which then share the one quantum 2**(emin - M) (FloatFormat allows no lower).
    if lowraw < 1 and low:
        shift -= 1
    sh = min(shift, src_m + 2)                               # sig < 2**(src_m+1): n = 0 beyond
    sig = (a & ((one << src_m) - 1)) | (np.int64(fe != 0) << src_m)
    mask = (one << sh) - 1
    half = (mask + 1) >> 1
    rem = sig & mask
    n = sig >> sh
    odd = n & 1
    # With M = 0 every normal significand is 1 (odd); P3109 reads the parity of the lower
    # neighbour's code instead, its biased exponent (F_PARITY; numerics.md "Ties").
    if F[F_PARITY] == 1 and M == 0 and not low:
        odd = (max(fe, one) - S[S_BIAS] + F[F_BIAS]) & 1

    if mode == RNE:
        up = rem + odd > half                                # rem > half, or a tie and n odd
    elif mode == RNA:
        up = rem >= half
    elif mode == RTP:
        up = not negative
    elif mode == RTN:
        up = negative
    elif mode == RTO:
        up = odd == 0
    elif mode == SR:                                         # P(up) = floor(r * 2**bits) / 2**bits
        bits = C[C_SR_BITS]
        urem = np.uint64(rem)
        t = (urem >> np.uint64(min(shift - bits, 63))) if shift >= bits \
            else (urem << np.uint64(max(bits - shift, 0)))
        up = (u >> np.uint64(64 - bits)) < t
    else:                                                    # RTZ
        up = False
    # Nothing to round when rem == 0; the nearest modes and sr see that already unless the
    # format keeps every source bit (sh == 0, half == 0).
    if mode == RTP or mode == RTN or mode == RTO or M >= src_m:
        up = up and rem != 0
    n += np.int64(up)
    ex = max(fe, one) - S[S_BIAS]
    return negative, a, fe, low, ex, sh, n, up


@register_jitable
def _specials(code, negative, a, low, F, S, natural_negzero, natural_ovf, ovf_pos, ovf_neg,
              low_pos, low_neg, neg_unsigned, zero_pos, zero_neg, nan_pos, nan_neg, inf_pos,
              inf_neg):
    """Select the special-case results over the finite result ``code`` (codes or value bits).

    A check is left out where the finite path already gives its result: ``±0`` (or +0 for
    fnuz, ``natural_negzero``) for a zero input, and, where ``natural_ovf`` (the format's range
    ends below the source's infinity), the overflow result for ±inf and NaN.  The conditions on
    the tuples are constants in the specialised kernels, so the common formats pay only for
    the specials they have.  Unsigned formats always check (their negative-input rule comes
    first)."""
    signed = F[F_SIGNBIT] != 0
    if low and F[F_HASZERO] == 0:                            # no zero: clamp to ±the smallest
        code = low_neg if negative else low_pos
    if negative and not signed:
        code = neg_unsigned
    zero_natural = (signed and F[F_HASZERO] == 1 and zero_pos == 0
                    and zero_neg == natural_negzero)
    if not zero_natural and a == 0:
        code = zero_neg if negative else zero_pos
    inf_bits = S[S_EMASK] << S[S_M]
    natural_ovf = natural_ovf and signed
    if not (natural_ovf and nan_pos == ovf_pos and nan_neg == ovf_neg) and a > inf_bits:
        code = nan_neg if negative else nan_pos
    if not (natural_ovf and inf_pos == ovf_pos and inf_neg == ovf_neg) and a == inf_bits:
        code = inf_neg if negative else inf_pos
    return code


@register_jitable
def encode_bits(b, S, F, C, u):
    """Encode one input given as the int64 bit pattern ``b`` of a float in source layout ``S``.

    ``u`` is the element's 64-bit random number (stochastic rounding only).  Returns the full
    code (sign bit included) as int64.
    """
    negative, a, fe, low, ex, sh, n, up = round_parts(b, S, F, C, u)
    M = F[F_M]
    if low:
        mag = n << M if F[F_SUBNORMALS] == 0 else n
    else:
        mag = (min(ex + F[F_BIAS], F[F_EMAXFIELD] + 1) << M) + n - (np.int64(1) << M)
    overflow = mag > F[F_MAXMAG] or mag < 0                  # < 0: wrapped past 2**63
    # fnuz formats have no -0: a negative result that rounds to zero is +0.
    fnuz = F[F_HASZERO] == 1 and F[F_NEGZERO] == 0
    code = mag if negative and mag == 0 and fnuz else mag | (F[F_SIGNBIT] if negative else 0)
    if overflow:
        code = C[C_OVF_NEG] if negative else C[C_OVF_POS]
    # The format's largest exponent below the source's infinity: ±inf and NaN overflow above.
    natural_ovf = F[F_EMAXFIELD] - F[F_BIAS] < S[S_EMASK] - S[S_BIAS]
    return _specials(code, negative, a, low, F, S, np.int64(0) if fnuz else F[F_SIGNBIT],
                     natural_ovf, C[C_OVF_POS], C[C_OVF_NEG], np.int64(0), F[F_SIGNBIT],
                     C[C_NEG_UNSIGNED], C[C_ZERO_POS], C[C_ZERO_NEG], C[C_NAN_POS], C[C_NAN_NEG],
                     C[C_INF_POS], C[C_INF_NEG])


@register_jitable
def quantize_bits(b, S, F, C, V, u):
    """``decode(encode(x))`` for one input, as the bit pattern of the result in the *source*
    layout (the format's values must be values of the source type).

    ``V`` holds the special results as source-layout bits (indices ``V_*``).  The rounded value
    is formed in place: dropping ``sh`` low bits and adding the round-up carries into the
    exponent field exactly as the value does; below the source's precision the result is 0 or
    the quantum ``2**q``.  The sign is the input's, copied over.
    """
    negative, a, fe, low, ex, sh, n, up = round_parts(b, S, F, C, u)
    signmask = np.int64(1) << S[S_SIGNSHIFT]
    if sh <= S[S_M]:
        y = ((a >> sh) + np.int64(up)) << sh
    else:
        y = V[V_LOWQ] if up else np.int64(0)
    overflow = np.uint64(y) > np.uint64(V[V_MAXBITS])       # unsigned: a NaN's carry may wrap
    fnuz = F[F_HASZERO] == 1 and F[F_NEGZERO] == 0
    y = y if y == 0 and fnuz else y | (b & signmask)
    if overflow:
        y = V[V_OVF_NEG] if negative else V[V_OVF_POS]
    # quantize needs the format's values to be source values: inf and NaN lie above max.
    return _specials(y, negative, a, low, F, S, np.int64(0) if fnuz else signmask, True,
                     V[V_OVF_POS], V[V_OVF_NEG], V[V_MIN], V[V_MIN] | signmask,
                     V[V_NEG_UNSIGNED], V[V_ZERO_POS], V[V_ZERO_NEG], V[V_NAN_POS], V[V_NAN_NEG],
                     V[V_INF_POS], V[V_INF_NEG])


@register_jitable
def decode_code(code, F, sub_unit):
    """The float64 value of ``code``; ``sub_unit`` is ``2.0**(emin - M)``, the subnormal quantum.

    Straight-line like :func:`encode_bits`."""
    signbit = F[F_SIGNBIT]
    M = F[F_M]
    negative = (code & signbit) != 0
    mag = code & ~signbit
    e = mag >> M
    m = mag & ((np.int64(1) << M) - 1)
    normal = np.int64(((min(e, 2046) - F[F_BIAS] + 1023) << 52) | (m << (52 - M))).view(np.float64)
    if e <= 1 and F[F_HASZERO] == 1 and F[F_SUBNORMALS] == 1:
        # Exponent fields 0 and 1 share the quantum sub_unit; computed so, a lowest binade
        # below float64's normal range (emin = -1023) decodes exactly too.
        v = np.float64(mag) * sub_unit
    elif e == 0 and F[F_HASZERO] == 1:
        v = 0.0
    else:
        v = normal
    if mag > F[F_MAXMAG]:
        v = np.inf if mag == F[F_INFMAG] else np.nan
    v = -v if negative else v
    if negative and mag == 0 and F[F_NEGZERO] == 0 and F[F_HASZERO] == 1:
        v = np.nan
    return v
