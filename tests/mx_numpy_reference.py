"""A vectorised plain-numpy reference of OCP MX v1.0, NVIDIA NVFP4 and the amax (Sun et al.)
block rule, for every deterministic rounding mode.

Written from the specifications' statements, not from fpformat's kernels and not from
``FloatFormat``: element formats are given by the numbers in the OCP tables below, rounding is
``floor``/``rint`` on ``|v| / quantum`` in float64.  It complements ``tests/mx_reference.py``
(exact rationals, RNE only, slow): this one is fast enough for large random tensors and covers
``rne``, ``rna``, ``rtz``, ``rtp`` and ``rtn``.

Exactness.  Inputs are float16/bfloat16/float32 (≤ 24 significant bits) or float64.  OCP scales
are powers of two, so ``v / X`` is exact in float64 (the exponents stay far inside float64's
range).  For NVFP4 and the amax rule the scale has ≤ 28 significant bits and the targets ≤ 8, and
a float64 quotient of such operands rounds to a target-format tie only when the exact quotient is
that tie, so rounding the float64 quotient equals rounding the exact one (float32-class inputs).

OCP MX v1.0, §6.3 (conversion of a block of k scalars V_i):
    shared_exp = floor(log2(max_i |V_i|)) - emax_elem      (emax_elem: exponent of the element
    X = 2**shared_exp                                       format's largest normal binade)
    P_i = quantize_to_element_format(V_i / X), clamping normal numbers (saturation)
The E8M0 scale holds exponents -127..127 (code = exponent + 127, 0xFF = NaN): shared_exp is
clamped to that range.  Choices the spec leaves open, as fpformat documents them: an all-zero
block has X = 2**-127 (code 0); a block holding a NaN or an infinity has the NaN scale (0xFF)
and every element decodes as NaN.

NVFP4 (NVIDIA): E2M1 elements, blocks of 16, an E4M3 (unsigned use, "UE4M3") block scale and a
float32 per-tensor scale:
    s_t = float32(amax_tensor / (6 * 448))       (1 for an all-zero tensor)
    s_b = UE4M3_rne_saturating(amax_block / (6 * s_t))
    e_i = E2M1(x_i / (s_b * s_t)), saturating;   value e_i * s_b * s_t
A zero ``s_b`` (or ``s_t``) gives +0 elements; a NaN/inf anywhere makes everything NaN.

amax (Sun et al. 2025): S = amax_block / max_elem held as a float32 (nearest), or rounded into a
scale format (up = toward +inf, or nearest even), saturating; an all-zero block has S = 1; a
zero S gives +0 elements.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Elem(NamedTuple):
    """A symmetric element grid: ``man`` fraction bits, ``emin`` the exponent of the smallest
    normal binade (quantum below it: ``2**(emin - man)``), ``max`` the largest finite
    magnitude, ``emax`` OCP's emax_elem, ``negzero`` whether a negative value rounding to zero
    gives -0 (sign-magnitude floats) or +0 (two's-complement integers)."""
    man: int
    emin: int
    max: float
    emax: int
    negzero: bool = True


# OCP MX v1.0 element tables (E4M3/E5M2 from OCP OFP8) and MXINT8 (k/64, symmetric |k| <= 127).
ELEMENTS: dict[str, Elem] = {
    "float8_e4m3fn": Elem(3, -6, 448.0, 8),
    "float8_e5m2": Elem(2, -14, 57344.0, 15),
    "float6_e2m3fn": Elem(3, 0, 7.5, 2),
    "float6_e3m2fn": Elem(2, -2, 28.0, 4),
    "float4_e2m1fn": Elem(1, 0, 6.0, 2),
    "int8": Elem(7, 1, 127 / 64, 0, False),  # k * 2**-6: one fixed quantum; no -0
}
UE4M3 = Elem(3, -6, 448.0, 8)
E4M3_SUN = Elem(3, -6, 480.0, 8)            # the design-space "e4m3": every code finite

PRESETS: dict[str, tuple[str, int]] = {
    "mxfp8_e4m3": ("float8_e4m3fn", 32), "mxfp8_e5m2": ("float8_e5m2", 32),
    "mxfp6_e2m3": ("float6_e2m3fn", 32), "mxfp6_e3m2": ("float6_e3m2fn", 32),
    "mxfp4": ("float4_e2m1fn", 32), "mxint8": ("int8", 32),
}
MODES = ("rne", "rna", "rtz", "rtp", "rtn")


def round_to(v: np.ndarray, el: Elem, mode: str = "rne") -> np.ndarray:
    """``v`` (float64, finite) rounded onto ``el``'s grid with ``mode``, saturating at ±max;
    the sign is kept (a negative value rounding to zero gives -0.0)."""
    v = np.asarray(v, dtype=np.float64)
    a = np.abs(v)
    _, ex = np.frexp(a)                                 # a = f * 2**ex, f in [0.5, 1)
    e = np.maximum(ex - 1, el.emin)                     # the binade, or the subnormal range
    q = np.ldexp(1.0, (e - el.man).astype(np.int64))    # the quantum there
    t = a / q                                           # exact: q is a power of two
    n = np.floor(t)
    r = t - n
    neg = np.signbit(v)
    if mode == "rne":
        up = (r > 0.5) | ((r == 0.5) & (np.mod(n, 2) == 1))
    elif mode == "rna":
        up = r >= 0.5
    elif mode == "rtz":
        up = np.zeros(r.shape, dtype=bool)
    elif mode == "rtp":
        up = (r > 0) & ~neg
    elif mode == "rtn":
        up = (r > 0) & neg
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    mag = np.minimum((n + up) * q, el.max)
    return np.where(neg & (el.negzero | (mag != 0)), -mag, mag)


def _blocks(x: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """``x`` (..., L) zero-padded to a multiple of k and viewed as (..., nb, k)."""
    L = x.shape[-1]
    nb = -(-L // k)
    pad = nb * k - L
    if pad:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,))], axis=-1)
    return x.reshape(x.shape[:-1] + (nb, k)), L


def _unblock(p: np.ndarray, L: int) -> np.ndarray:
    return p.reshape(p.shape[:-2] + (-1,))[..., :L]


def mx(x: np.ndarray, element: str, k: int = 32,
       mode: str = "rne") -> tuple[np.ndarray, np.ndarray]:
    """OCP MX along the last axis: (decoded float64 values, E8M0 scale codes (int64))."""
    el = ELEMENTS[element]
    xb, L = _blocks(np.asarray(x, dtype=np.float64), k)
    finite = np.isfinite(xb)
    bad = ~finite.all(axis=-1)
    amax = np.where(finite, np.abs(xb), 0.0).max(axis=-1)
    _, ex = np.frexp(amax)
    e = np.clip(np.where(amax > 0, ex - 1 - el.emax, -127), -127, 127).astype(np.int64)
    X = np.ldexp(1.0, e)[..., None]
    p = round_to(np.where(finite, xb, 0.0) / X, el, mode) * X
    p = np.where(bad[..., None], np.nan, p)
    return _unblock(p, L), np.where(bad, 255, e + 127)


def mx_tiles(x2: np.ndarray, element: str, tile: tuple[int, int], mode: str = "rne"):
    """OCP MX with 2-D ``tile`` blocks over a 2-D array (ragged edge tiles allowed)."""
    R, C = x2.shape
    tr, tc = tile
    nr, nc = -(-R // tr), -(-C // tc)
    P = np.zeros((nr * tr, nc * tc))
    P[:R, :C] = x2
    flat = P.reshape(nr, tr, nc, tc).transpose(0, 2, 1, 3).reshape(nr, nc, tr * tc)
    v, codes = mx(flat, element, tr * tc, mode)
    v = v.reshape(nr, nc, tr, tc).transpose(0, 2, 1, 3).reshape(nr * tr, nc * tc)
    return v[:R, :C], codes[..., 0]


def nvfp4(x: np.ndarray, mode: str = "rne") -> tuple[np.ndarray, np.ndarray | None, float]:
    """NVFP4 along the last axis: (values, block scale values or None, tensor scale)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        return np.full(x.shape, np.nan), None, float("nan")
    at = float(np.abs(x).max()) if x.size else 0.0
    s_t = float(np.float32(at / (6.0 * 448.0))) if at > 0 else 1.0
    xb, L = _blocks(x, 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_b = round_to(np.nan_to_num(np.abs(xb).max(axis=-1) / (6.0 * s_t), posinf=0.0),
                       UE4M3, "rne")
        s = (s_b * s_t)[..., None]
        p = np.where(s > 0, round_to(xb / np.where(s > 0, s, 1.0), ELEMENTS["float4_e2m1fn"],
                                     mode) * s, 0.0)
    return _unblock(p, L), s_b, s_t


def amax_rule(x: np.ndarray, el: Elem, k: int, mode: str = "rne", scale: Elem | None = None,
              scale_rounding: str = "up") -> tuple[np.ndarray, np.ndarray]:
    """The amax rule along the last axis: (values, scale values).  ``scale=None``: float32
    scales; else scales rounded into ``scale`` (``"up"``: toward +inf, ``"nearest"``)."""
    xb, L = _blocks(np.asarray(x, dtype=np.float64), k)
    amax = np.abs(xb).max(axis=-1)
    s = np.where(amax > 0, amax / el.max, 1.0)
    if scale is None:
        S = s.astype(np.float32).astype(np.float64)
    else:
        S = round_to(s, scale, "rtp" if scale_rounding == "up" else "rne")
    Sb = S[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(Sb > 0, round_to(xb / np.where(Sb > 0, Sb, 1.0), el, mode) * Sb, 0.0)
    return _unblock(p, L), S
