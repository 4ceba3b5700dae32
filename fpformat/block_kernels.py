"""The fused block-scaling kernel: per block, amax, scale and element rounding in one pass.

Blocks run along the last axis of a C-contiguous 2-D view ``(rows, L)``; block ``b`` of a row
holds elements ``[b*k, min((b+1)*k, L))``, or, for 2-D tiles of ``R`` rows, those elements of
``R`` consecutive rows.  Per block the kernel finds ``amax`` (and whether a
NaN/inf is present), forms the scale by the format's rule, rounds the scale into the scale format
and every element ``x / scale`` into the element format, both through the scalar core
(:func:`fpformat.core.encode_bits`), and writes element codes, scale codes and, for quantize,
``decode(code) * scale``.  :mod:`fpformat.block` holds the semantics and the plain-numpy path
(tiles, other axes) that the tests hold this kernel to.

Like :mod:`fpformat.kernels`, each loop is compiled generic (tuples as arguments) and specialised
(tuples as compile-time constants) once a combination has processed enough elements.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import prange

from . import core
from .dispatch import JIT, prefer_specialized, seed_key, threads_for, want_specialized
from .rounding import call_tuple, value_tuple
from .scales import emax_elem

RULE_OCP, RULE_AMAX, RULE_NVFP4 = 0, 1, 2

# Block tuple B (float64): rule, block length, element max, OCP emax_elem, tensor scale,
# whether scales are float32 values (1) or codes of a scale format (0), element/scale sub units,
# the scale format's NaN code, whether it is E8M0, and whether element codes are two's-complement
# integers (1; see int_code).
B_RULE, B_K, B_EMAX, B_EMAX_ELEM, B_TSCALE, B_F32, B_ESUB, B_SSUB, B_SNAN, B_E8M0, B_INT = range(11)
assert B_INT == 10, "_with_runtime spells out the block tuple"


@numba.njit(inline="always")
def int_code(c, signbit):
    """The two's-complement code of the sign-magnitude code ``c`` of an integer element (sign
    bit ``signbit``): ``-k`` becomes ``2*signbit - k``; -0 becomes 0 (there is no -0).  The
    most negative code (``signbit`` itself, e.g. -128) is never produced."""
    mag = c & (signbit - 1)
    return (2 * signbit - mag) & (2 * signbit - 1) if c & signbit else c


@numba.njit(inline="always")
def _f64bits(v):
    return np.int64(np.float64(v).view(np.int64))


@numba.njit(inline="always")
def _block_scale(amax, bad, B, FS, CS):
    """(scale value, scale code or float32 bits) for a block with largest magnitude ``amax``."""
    rule = np.int64(B[B_RULE])
    if bad:
        return np.nan, np.int64(B[B_SNAN])
    if rule == RULE_OCP:
        # floor(log2 amax) from amax's float64 exponent field (amax, from float32/float64 data,
        # is 0 or a float64 normal); 2**e built the same way: no libm calls per block.
        if amax > 0:
            e = ((_f64bits(amax) >> 52) & 0x7FF) - 1023 - np.int64(B[B_EMAX_ELEM])
        else:
            e = np.int64(-127)
        e = min(max(e, np.int64(-127)), np.int64(127))
        s = np.int64((e + 1023) << 52).view(np.float64)
        if B[B_E8M0] == 1.0:                                 # E8M0: the code is e + 127
            return s, e + 127
    elif rule == RULE_AMAX:
        s = amax / B[B_EMAX] if amax > 0 else 1.0
    else:  # NVFP4: block scale relative to the tensor scale (0 when that is NaN)
        s = amax / (6.0 * B[B_TSCALE])
        if not (s <= 1.7976931348623157e308):
            s = 0.0
    if B[B_F32] == 1.0:
        s32 = np.float32(s)
        return np.float64(s32), np.int64(s32.view(np.uint32))
    code = core.encode_bits(_f64bits(s), core.SRC_FLOAT64, FS, CS, np.uint64(0))
    val = core.decode_code(code, FS, B[B_SSUB])
    if rule == RULE_NVFP4:
        val = val * B[B_TSCALE]
    return val, code


@numba.njit(inline="always")
def _with_runtime(B, k, tscale):
    """``B`` with its data-dependent fields, the block length and the tensor scale, given at run
    time: the specialised kernels are keyed (and compiled) on the rest only."""
    return (B[B_RULE], np.float64(k), B[B_EMAX], B[B_EMAX_ELEM], np.float64(tscale), B[B_F32],
            B[B_ESUB], B[B_SSUB], B[B_SNAN], B[B_E8M0], B[B_INT])


@numba.njit(inline="always")
def block_tile(x, tr, b, R, L, B, FE, CE, VE, FS, CS, key, sr, codes, scales, out, want_out):
    """Block ``b`` of tile row ``tr``: rows ``[tr*R, min((tr+1)*R, rows))`` times elements
    ``[b*k, min((b+1)*k, L))`` share one scale (``R = 1``: a block along the last axis).
    Writes the element codes, or with ``want_out`` the values instead (rounded straight to a
    value by the core, ``VE`` its special results as float64 bits)."""
    k = np.int64(B[B_K])
    lo = b * k
    hi = min(lo + k, L)
    r0 = tr * R
    r1 = min(r0 + R, x.shape[0])
    amax = 0.0
    bad = False
    for r in range(r0, r1):
        xr = x[r]
        for j in range(lo, hi):                             # a reduction: vectorises
            v = abs(np.float64(xr[j]))
            bad = bad or not (v <= 1.7976931348623157e308)  # NaN or inf
            amax = max(amax, v if v <= 1.7976931348623157e308 else 0.0)
    sval, scode = _block_scale(amax, bad, B, FS, CS)
    scales[tr, b] = scode
    usable = sval == sval and sval != 0.0 and abs(sval) <= 1.7976931348623157e308
    div = sval if usable else 1.0
    ints = B[B_INT] == 1.0
    for r in range(r0, r1):
        xr = x[r]
        base = r * L
        # The element loops have selects only (no early exits).
        if want_out:
            outr = out[r]
            for j in range(lo, hi):
                y = np.float64(xr[j]) / div if usable else 0.0    # +0 in NaN/zero-scale blocks
                u = core.sr_random(key, base + j) if sr else np.uint64(0)
                q = core.quantize_bits(_f64bits(y), core.SRC_FLOAT64, FE, CE, VE, u)
                v = np.int64(q).view(np.float64) * sval
                outr[j] = v + 0.0 if ints else v                # + 0.0: no -0 among integers
        else:
            cr = codes[r]
            for j in range(lo, hi):
                y = np.float64(xr[j]) / div if usable else 0.0
                u = core.sr_random(key, base + j) if sr else np.uint64(0)
                c = core.encode_bits(_f64bits(y), core.SRC_FLOAT64, FE, CE, u)
                cr[j] = int_code(c, FE[core.F_SIGNBIT]) if ints else c


@numba.njit(**JIT)
def _block_generic(x, B, FE, CE, VE, FS, CS, key, codes, scales, out, want_out, R, k, tscale):
    rows, L = x.shape
    nb = (L + k - 1) // k
    ntr = (rows + R - 1) // R
    sr = CE[core.C_MODE] == core.SR
    Bt = _with_runtime(B, k, tscale)
    for t in prange(ntr * nb):
        tr = t // nb
        b = t - tr * nb
        block_tile(x, tr, b, R, L, Bt, FE, CE, VE, FS, CS, key, sr, codes, scales, out,
                   want_out)


@functools.lru_cache(maxsize=None)
def _block_specialized(B, FE, CE, VE, FS, CS, want_out):
    @numba.njit(**JIT)
    def block_specialized(x, key, codes, scales, out, R, k, tscale):
        rows, L = x.shape
        nb = (L + k - 1) // k
        ntr = (rows + R - 1) // R
        sr = CE[core.C_MODE] == core.SR
        Bt = _with_runtime(B, k, tscale)
        for t in prange(ntr * nb):
            tr = t // nb
            b = t - tr * nb
            block_tile(x, tr, b, R, L, Bt, FE, CE, VE, FS, CS, key, sr, codes, scales, out,
                       want_out)
    return block_specialized


_NO_SCALE_FORMAT = core.as_int64_tuple([0] * core.F_LEN)
_NO_CALL = core.as_int64_tuple([0] * core.C_LEN)


def block_params(fmt, k: int, tscale: float | None, rounding: str, saturate: bool, sr_bits):
    """The tuples the per-block function reads, ``(B, FE, CE, FS, CS)``, for block format
    ``fmt`` with blocks of ``k`` elements (shared by the CPU and CUDA kernels)."""
    el, sf = fmt.element, fmt.scale_format
    CE = call_tuple(el, rounding, saturate, sr_bits)
    if sf is not None:
        mode = "rtp" if fmt.scale_rule == "amax" and fmt.scale_rounding == "up" else "rne"
        FS, CS = sf.params, call_tuple(sf, mode, True, None)
        # A scale format without NaN has no code for a block holding NaN/inf: encode refuses
        # such data before the kernel runs; quantize only reads the block's value (NaN).
        snan_code = sf.nan_code
        snan = float(0 if snan_code is None else snan_code)
        ssub = 2.0 ** (sf.emin - sf.man_bits)
    else:
        FS, CS, ssub = _NO_SCALE_FORMAT, _NO_CALL, 1.0
        snan = float(np.float32(np.nan).view(np.uint32))
    rule = {"ocp": RULE_OCP, "amax": RULE_AMAX, "nvfp4": RULE_NVFP4}[fmt.scale_rule]
    B = (float(rule), float(k), float(el.max), float(emax_elem(el)),
         float(tscale if tscale is not None else 1.0), 1.0 if sf is None else 0.0,
         2.0 ** (el.emin - el.man_bits), ssub, snan,
         1.0 if fmt.scale_is_e8m0 else 0.0,
         1.0 if fmt.int_codes else 0.0)
    return B, el.params, CE, FS, CS


def _constant_part(B: tuple) -> tuple:
    """``B`` without its run-time fields (block length, tensor scale): the specialisation key
    and the specialised kernel's constant."""
    return B[:B_K] + (0.0,) + B[B_K + 1:B_TSCALE] + (0.0,) + B[B_TSCALE + 1:]


def specialize(fmt, rounding: str, saturate: bool, sr_bits) -> None:
    """Have the next calls of this kernel for block format ``fmt`` with these options run
    specialised (compiled then, or loaded from numba's cache), whatever their block length."""
    B, FE, CE, FS, CS = block_params(fmt, 1, None, rounding, saturate, sr_bits)
    prefer_specialized(("blk", _constant_part(B), FE, CE, FS, CS))


def run_blocks(fmt, x2: np.ndarray, k: int, tscale: float | None, rounding: str, saturate: bool,
               seed, sr_bits, want_out: bool, tile_rows: int = 1):
    """Encode (and optionally quantize) the C-contiguous float32/float64 2-D array ``x2`` with
    blocks of ``k`` along its last axis, each spanning ``tile_rows`` rows (2-D tiles; 1: a block
    per row).  Returns ``(codes, scales, out)``: codes None with ``want_out`` (quantize needs the
    values only), out None without; the scales shaped ``(ceil(rows / tile_rows),
    ceil(L / k))``."""
    B, FE, CE, FS, CS = block_params(fmt, k, tscale, rounding, saturate, sr_bits)
    el, sf = fmt.element, fmt.scale_format
    rows, L = x2.shape
    nb = -(-L // k)
    codes = np.empty((1, 1) if want_out else (rows, L), dtype=el.dtype)
    VE = value_tuple(el, CE, core.SRC_FLOAT64)
    scales = np.empty((-(-rows // tile_rows), nb), dtype=np.uint32 if sf is None else sf.dtype)
    out = np.empty((rows, L) if want_out else (1, 1), dtype=np.float64 if not want_out
                   else (np.float32 if x2.dtype == np.float32 else np.float64))
    key = seed_key(seed, CE[core.C_MODE])
    Bk = _constant_part(B)
    args = (np.int64(tile_rows), np.int64(k), np.float64(B[B_TSCALE]))
    with threads_for(x2.size):
        if want_specialized(("blk", Bk, FE, CE, FS, CS), x2.size):
            _block_specialized(Bk, FE, CE, VE, FS, CS, want_out)(x2, key, codes, scales, out,
                                                                *args)
        else:
            _block_generic(x2, Bk, FE, CE, VE, FS, CS, key, codes, scales, out, want_out, *args)
    if sf is None:
        scales = scales.view(np.float32)
    return (None if want_out else codes), scales, (out if want_out else None)
