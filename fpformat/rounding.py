"""Rounding modes and the per-call tuple of special-case codes the scalar core reads.

Modes (``rounding=``): ``rne`` nearest/ties-to-even, ``rna`` nearest/ties-away, ``rtz`` toward
zero, ``rtp`` toward +inf, ``rtn`` toward -inf, ``rto`` round to odd, ``sr`` stochastic.  What each
does at overflow, to ±inf, NaN and ±0 is tabulated in docs/numerics.md; :func:`call_tuple` is
that table in code.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from . import core

Rounding = Literal["rne", "rna", "rtz", "rtp", "rtn", "rto", "sr"]
MODES: dict[str, int] = {"rne": core.RNE, "rna": core.RNA, "rtz": core.RTZ, "rtp": core.RTP,
                         "rtn": core.RTN, "rto": core.RTO, "sr": core.SR}


def mode_code(rounding: str) -> int:
    """The core's integer for a rounding-mode name (``ValueError`` naming the choices)."""
    if not isinstance(rounding, str) or rounding.lower() not in MODES:
        raise ValueError(f"rounding must be one of {', '.join(MODES)}, got {rounding!r}")
    return MODES[rounding.lower()]


def check_sr_bits(sr_bits, default: int | None = None) -> int | None:
    """``sr_bits`` (the resolution of stochastic rounding's random numbers) as an int in 1..64,
    or ``default`` when it is None; ``ValueError`` otherwise."""
    if sr_bits is None:
        return default
    if isinstance(sr_bits, bool) or not isinstance(sr_bits, (int, np.integer)) \
            or not 1 <= sr_bits <= 64:
        raise ValueError(f"sr_bits must be an int in 1..64 or None, got {sr_bits!r}")
    return int(sr_bits)


@functools.lru_cache(maxsize=4096)
def call_tuple(fmt, rounding: str = "rne", saturate: bool = False,
               sr_bits: int | None = None) -> tuple[int, ...]:
    """The call tuple (indices ``core.C_*``) for rounding ``fmt`` with these options."""
    mode = mode_code(rounding)
    if not isinstance(saturate, (bool, int)) or \
            isinstance(saturate, int) and saturate not in (0, 1):
        raise TypeError(f"saturate must be a bool, got {saturate!r}")
    bits = check_sr_bits(sr_bits, default=64)
    F = fmt.params
    signbit = F[core.F_SIGNBIT]
    maxmag = F[core.F_MAXMAG]
    smallest = 0                                       # magnitude code 0: zero, or E8M0's minimum
    nan_pos, nan_neg = F[core.F_NANPOS], F[core.F_NANNEG]
    has_nan = nan_pos >= 0

    def inf_rule(neg: bool) -> int:
        """Overflow to 'infinity': inf, else NaN, else max (IEEE 754 §7.4 with missing codes)."""
        if fmt.inf:
            return F[core.F_INFMAG] | (signbit if neg else 0)
        if has_nan:
            return nan_neg if neg else nan_pos
        return maxmag | (signbit if neg else 0)

    maxpos, maxneg = maxmag, maxmag | signbit
    if saturate:
        ovf_pos, ovf_neg = maxpos, maxneg
    elif mode in (core.RNE, core.RNA, core.SR):
        ovf_pos, ovf_neg = inf_rule(False), inf_rule(True)
    elif mode in (core.RTZ, core.RTO):
        ovf_pos, ovf_neg = maxpos, maxneg
    elif mode == core.RTP:
        ovf_pos, ovf_neg = inf_rule(False), maxneg
    else:  # RTN
        ovf_pos, ovf_neg = maxpos, inf_rule(True)

    if fmt.inf and not saturate:
        inf_pos, inf_neg = F[core.F_INFMAG], F[core.F_INFMAG] | signbit
    else:
        inf_pos, inf_neg = ovf_pos, ovf_neg

    if has_nan:
        qnan_pos, qnan_neg = nan_pos, nan_neg
    elif not fmt.has_zero:
        qnan_pos = qnan_neg = smallest
    elif fmt.signed:                                   # ml_dtypes: NaN -> zero of opposite sign
        qnan_pos, qnan_neg = signbit, 0
    else:
        qnan_pos = qnan_neg = 0

    if fmt.has_zero:
        zero_pos = 0
        zero_neg = signbit if fmt.signed and fmt.negative_zero else 0
    else:                                              # no zero: NaN, else ±the smallest value
        zero_pos, zero_neg = (nan_pos, nan_neg) if has_nan else (smallest, smallest | signbit)

    neg_unsigned = smallest if saturate or not has_nan else nan_pos
    if not fmt.signed:                                 # -inf into an unsigned format: below range
        inf_neg = neg_unsigned

    t = [0] * core.C_LEN
    t[core.C_MODE] = mode
    t[core.C_OVF_POS], t[core.C_OVF_NEG] = ovf_pos, ovf_neg
    t[core.C_INF_POS], t[core.C_INF_NEG] = inf_pos, inf_neg
    t[core.C_NAN_POS], t[core.C_NAN_NEG] = qnan_pos, qnan_neg
    t[core.C_ZERO_POS], t[core.C_ZERO_NEG] = zero_pos, zero_neg
    t[core.C_NEG_UNSIGNED] = neg_unsigned
    t[core.C_SR_BITS] = bits
    return core.as_int64_tuple(t)


@functools.lru_cache(maxsize=4096)
def value_tuple(fmt, C: tuple[int, ...], S: tuple[int, ...]) -> tuple[int, ...]:
    """The value tuple (indices ``core.V_*``): the special results of call tuple ``C`` as bit
    patterns of source layout ``S`` (float32 or float64), decoded exactly as ``decode`` does."""
    F = fmt.params
    sub_unit = 2.0 ** (fmt.emin - fmt.man_bits)
    f32 = S == core.SRC_FLOAT32

    def bits_of(value: float) -> int:
        if f32:
            return int(np.float32(value).view(np.uint32))
        return int(np.float64(value).view(np.uint64))

    def code_bits(code: int) -> int:
        return bits_of(core.decode_code(np.int64(code), F, sub_unit))

    qlow = fmt.emin if not fmt.subnormals else fmt.emin - fmt.man_bits
    t = [0] * core.V_LEN
    for vi, ci in ((core.V_OVF_POS, core.C_OVF_POS), (core.V_OVF_NEG, core.C_OVF_NEG),
                   (core.V_INF_POS, core.C_INF_POS), (core.V_INF_NEG, core.C_INF_NEG),
                   (core.V_NAN_POS, core.C_NAN_POS), (core.V_NAN_NEG, core.C_NAN_NEG),
                   (core.V_ZERO_POS, core.C_ZERO_POS), (core.V_ZERO_NEG, core.C_ZERO_NEG),
                   (core.V_NEG_UNSIGNED, core.C_NEG_UNSIGNED)):
        t[vi] = code_bits(C[ci])
    t[core.V_LOWQ] = bits_of(2.0 ** qlow)
    t[core.V_MAXBITS] = bits_of(fmt.max)
    t[core.V_MIN] = code_bits(0)
    return core.as_int64_tuple(t)
