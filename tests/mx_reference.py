"""An independent reference of the OCP MX v1.0 and NVIDIA NVFP4 block-scaling rules.

Written from the specifications' statements, not from fpformat's kernels: exact rational
arithmetic (``fractions.Fraction``) and plain Python loops, the element and scale formats given
by their own parameters below (not by ``FloatFormat``).  Slow on purpose; tests feed it a few
thousand elements.

OCP MX (per block of 32 along an axis, or any block layout the caller gives):
    X = 2**(floor(log2 amax) - emax_elem), the exponent clamped to E8M0's [-127, 127];
    amax == 0 -> X = 2**-127 (code 0); a NaN or an infinity in the block -> code 255, and every
    element decodes as NaN; P_i = round_nearest_even(V_i / X), saturating to +-max_elem;
    decoded value X * P_i.
NVFP4 (per 16 along the last axis):
    s_t = float32(amax_tensor / (448 * 6)) (1 when amax_tensor == 0; NaN when the tensor holds
    NaN/inf, and then everything decodes as NaN); s_b = UE4M3(amax_block / (6 * s_t)), nearest
    even, saturating at 448; e_i = E2M1(x_i / (s_b * s_t)) nearest even, saturating (elements +0
    when s_b == 0); decoded value e_i * s_b * s_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class Fmt:
    """A binary format by its parameters: ``man`` mantissa bits, ``emin`` the exponent of the
    smallest normal binade (the subnormal quantum is ``2**(emin - man)``), ``max`` the largest
    finite value, ``sign_bit`` the code's sign bit (0: unsigned), ``emax_elem`` OCP's exponent
    of the largest normal binade."""
    man: int
    emin: int
    max: Fraction
    sign_bit: int
    emax_elem: int


ELEMENTS = {
    "float8_e4m3fn": Fmt(3, -6, Fraction(448), 0x80, 8),
    "float8_e5m2": Fmt(2, -14, Fraction(57344), 0x80, 15),
    "float6_e2m3fn": Fmt(3, 0, Fraction(15, 2), 0x20, 2),
    "float6_e3m2fn": Fmt(2, -2, Fraction(28), 0x20, 4),
    "float4_e2m1fn": Fmt(1, 0, Fraction(6), 0x8, 2),
    # MXINT8: k/64 for |k| <= 127 (all "subnormal"), coded as the 8-bit two's-complement k
    # (OCP MX v1.0 INT8; -128 unused): see int8_code.
    "mxint8": Fmt(7, 1, Fraction(127, 64), 0x80, 0),
}
UE4M3 = Fmt(3, -6, Fraction(448), 0, 8)
FLOAT32 = Fmt(23, -126, Fraction((2 ** 24 - 1) * 2 ** 104), 0, 127)

PRESET_ELEMENT = {"mxfp8_e4m3": "float8_e4m3fn", "mxfp8_e5m2": "float8_e5m2",
                  "mxfp6_e2m3": "float6_e2m3fn", "mxfp6_e3m2": "float6_e3m2fn",
                  "mxfp4": "float4_e2m1fn", "mxint8": "mxint8"}


def floor_log2(q: Fraction) -> int:
    """floor(log2 q) for a positive rational, exactly."""
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** e > q:
        e -= 1
    elif Fraction(2) ** (e + 1) <= q:
        e += 1
    return e


def round_rne(q: Fraction, f: Fmt) -> Fraction:
    """|q| rounded to nearest (ties to an even significand) on ``f``'s grid, saturating at
    ``f.max``; the sign is kept (a negative q rounding to zero gives -0 in :func:`code_of`)."""
    a = abs(q)
    if a == 0:
        return Fraction(0)
    e = max(floor_log2(a), f.emin)
    quantum = Fraction(2) ** (e - f.man)
    n = a / quantum
    lo = math.floor(n)
    rem = n - lo
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and lo % 2 == 1):
        lo += 1
    r = min(lo * quantum, f.max)
    return r if q > 0 else -r


def code_of(v: Fraction, negative: bool, f: Fmt) -> int:
    """The code of a value on ``f``'s grid (sign from ``negative``, so -0 is the sign bit)."""
    a = abs(v)
    if a < Fraction(2) ** f.emin:
        mag = a / Fraction(2) ** (f.emin - f.man)
    else:
        e = floor_log2(a)
        mag = ((e - f.emin + 1) << f.man) + a / Fraction(2) ** (e - f.man) - (1 << f.man)
    assert mag.denominator == 1, (v, f)
    return int(mag) | (f.sign_bit if negative else 0)


def int8_code(v: Fraction) -> int:
    """MXINT8's code of the element value ``v = k/64``: the 8-bit two's complement of k."""
    k = v * 64
    assert k.denominator == 1 and -127 <= k <= 127, v
    return int(k) % 256


def _is_nan_or_inf(v: float) -> bool:
    return not math.isfinite(v)


@dataclass
class RefResult:
    values: np.ndarray        # decoded float64 values, x's shape (NaN in NaN blocks)
    codes: np.ndarray         # element codes (int64; -1 in NaN blocks: not specified)
    scales: np.ndarray        # scale codes per block (int64)
    tensor_scale: float | None = None


def _blocks_last_axis(shape: tuple[int, ...], k: int):
    """(scale index, element indices) pairs for blocks of ``k`` along the last axis."""
    L = shape[-1]
    nb = -(-L // k)
    for lead in np.ndindex(*shape[:-1]):
        for b in range(nb):
            yield lead + (b,), [lead + (j,) for j in range(b * k, min((b + 1) * k, L))]


def _blocks_tiles(shape: tuple[int, ...], tr: int, tc: int):
    R, Cn = shape[-2], shape[-1]
    for lead in np.ndindex(*shape[:-2]):
        for bi in range(-(-R // tr)):
            for bj in range(-(-Cn // tc)):
                idx = [lead + (i, j) for i in range(bi * tr, min((bi + 1) * tr, R))
                       for j in range(bj * tc, min((bj + 1) * tc, Cn))]
                yield lead + (bi, bj), idx


def ref_mx(x: np.ndarray, element: str, k: int = 32, tile: tuple[int, int] | None = None,
           axis: int = -1) -> RefResult:
    """OCP MX with E8M0 scales: blocks of ``k`` along ``axis`` or ``tile`` tiles over the last two
    axes.  ``x`` is any float array; its values are taken exactly."""
    f = ELEMENTS[element]
    x = np.asarray(x)
    if tile is None and axis % x.ndim != x.ndim - 1:
        r = ref_mx(np.moveaxis(x, axis, -1), element, k)
        return RefResult(np.moveaxis(r.values, -1, axis), np.moveaxis(r.codes, -1, axis),
                         np.moveaxis(r.scales, -1, axis))
    xs = x.astype(np.float64)
    values = np.empty(x.shape, dtype=np.float64)
    codes = np.full(x.shape, -1, dtype=np.int64)
    if tile is None:
        blocks = list(_blocks_last_axis(x.shape, k))
        sshape = x.shape[:-1] + (-(-x.shape[-1] // k),)
    else:
        blocks = list(_blocks_tiles(x.shape, *tile))
        sshape = x.shape[:-2] + (-(-x.shape[-2] // tile[0]), -(-x.shape[-1] // tile[1]))
    scales = np.empty(sshape, dtype=np.int64)
    for sidx, idx in blocks:
        vals = [float(xs[i]) for i in idx]
        if any(_is_nan_or_inf(v) for v in vals):
            scales[sidx] = 255
            for i in idx:
                values[i] = np.nan
            continue
        amax = max(abs(Fraction(v)) for v in vals)
        e = -127 if amax == 0 else min(max(floor_log2(amax) - f.emax_elem, -127), 127)
        scales[sidx] = e + 127
        X = Fraction(2) ** e
        for i, v in zip(idx, vals):
            p = round_rne(Fraction(v) / X, f)
            if element == "mxint8":                      # integers: no -0
                codes[i], values[i] = int8_code(p), float(p * X) + 0.0
            else:
                codes[i] = code_of(p, math.copysign(1.0, v) < 0, f)
                values[i] = float(p * X)
    return RefResult(values, codes, scales)


def ref_nvfp4(x: np.ndarray) -> RefResult:
    """NVFP4 along the last axis (blocks of 16)."""
    f = ELEMENTS["float4_e2m1fn"]
    x = np.asarray(x)
    xs = x.astype(np.float64)
    flat = [float(v) for v in xs.ravel()]
    sshape = x.shape[:-1] + (-(-x.shape[-1] // 16),)
    values = np.empty(x.shape, dtype=np.float64)
    codes = np.full(x.shape, -1, dtype=np.int64)
    scales = np.empty(sshape, dtype=np.int64)
    if any(_is_nan_or_inf(v) for v in flat):
        values[...] = np.nan
        scales[...] = -1                                     # not specified, except ...
        for sidx, idx in _blocks_last_axis(x.shape, 16):
            if any(_is_nan_or_inf(float(xs[i])) for i in idx):
                scales[sidx] = 0x7F                          # ... UE4M3's NaN code
        return RefResult(values, codes, scales, float("nan"))
    at = max((abs(Fraction(v)) for v in flat), default=Fraction(0))
    s_t = round_rne(at / 2688, FLOAT32) if at > 0 else Fraction(1)
    for sidx, idx in _blocks_last_axis(x.shape, 16):
        vals = [float(xs[i]) for i in idx]
        ab = max(abs(Fraction(v)) for v in vals)
        s_b = round_rne(ab / (6 * s_t), UE4M3)
        scales[sidx] = code_of(s_b, False, UE4M3)
        for i, v in zip(idx, vals):
            if s_b == 0:
                codes[i], values[i] = 0, 0.0
                continue
            s = s_b * s_t
            p = round_rne(Fraction(v) / s, f)
            codes[i] = code_of(p, math.copysign(1.0, v) < 0, f)
            values[i] = float(p * s)
    return RefResult(values, codes, scales, float(s_t))
