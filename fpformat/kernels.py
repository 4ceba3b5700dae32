"""Element kernels (numba, parallel, cached) around the scalar core, and the host-side routing.

The loops are deliberately thin: each element goes through :func:`fpformat.core.encode_bits`,
:func:`fpformat.core.quantize_bits` or :func:`fpformat.core.decode_code`.  Each loop exists in two
compilations of the same source (:mod:`fpformat.dispatch` says when which runs):

* *generic*: the format/call tuples are runtime arguments; one compilation serves every format
  and mode (vectorised, about 2x slower than specialised);
* *specialised*: the tuples are compile-time constants (closure variables), so the compiler folds
  the mode and the format away.

Both compilations run the same core, and the tests hold them to each other bit for bit.  CUDA
arrays are routed to :mod:`fpformat.cuda`, which compiles the same core for the GPU.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import prange
from numba.core.extending import register_jitable

from . import core, cuda
from .arrays import as_float_array, check_out, float_kind, is_cuda_array, restore_dtype
from .block_kernels import absmax_bits, nearest_by_addition, rounds_by_addition
from .dispatch import (
    JIT,
    prefer_specialized,
    seed_key,
    source_layout,
    threads_for,
    want_specialized,
)
from .rounding import call_tuple, check_sr_bits, value_tuple


@numba.njit(inline="always")
def _random(C, key, i):
    return core.sr_random(key, i) if C[core.C_MODE] == core.SR else np.uint64(0)


# The generic kernels keep the stochastic loop apart: with a runtime mode, a random number drawn
# under a condition would stop the deterministic loop from vectorising.
@numba.njit(**JIT)
def _encode_generic(xbits, out, S, F, C, key):
    if C[core.C_MODE] == core.SR:
        for i in prange(xbits.size):
            out[i] = core.encode_bits(np.int64(xbits[i]), S, F, C, core.sr_random(key, i))
    else:
        for i in prange(xbits.size):
            out[i] = core.encode_bits(np.int64(xbits[i]), S, F, C, np.uint64(0))


@numba.njit(**JIT)
def _quantize_generic(xbits, out, S, F, C, V, key):
    if C[core.C_MODE] == core.SR:
        for i in prange(xbits.size):
            out[i] = core.quantize_bits(np.int64(xbits[i]), S, F, C, V, core.sr_random(key, i))
    else:
        for i in prange(xbits.size):
            out[i] = core.quantize_bits(np.int64(xbits[i]), S, F, C, V, np.uint64(0))


# Stochastic rounding with the caller's random bits (``random_bits=``): the per-element 64-bit
# numbers come from an array (see given_random_u64) instead of the counter-based stream.  Generic
# compilations only: this path serves verification, and keeps the default loops untouched.
@numba.njit(**JIT)
def _encode_given(xbits, out, S, F, C, us):
    for i in prange(xbits.size):
        out[i] = core.encode_bits(np.int64(xbits[i]), S, F, C, us[i])


@numba.njit(**JIT)
def _quantize_given(xbits, out, S, F, C, V, us):
    for i in prange(xbits.size):
        out[i] = core.quantize_bits(np.int64(xbits[i]), S, F, C, V, us[i])


@numba.njit(**JIT)
def _decode_kernel(codes, out, F, sub_unit):
    for i in prange(codes.size):
        out[i] = core.decode_code(np.int64(codes[i]), F, sub_unit)


@functools.lru_cache(maxsize=None)
def _encode_specialized(S, F, C):
    @numba.njit(**JIT)
    def encode_specialized(xbits, out, key):
        for i in prange(xbits.size):
            out[i] = core.encode_bits(np.int64(xbits[i]), S, F, C, _random(C, key, i))
    return encode_specialized


@functools.lru_cache(maxsize=None)
def _quantize_specialized(S, F, C, V):
    @numba.njit(**JIT)
    def quantize_specialized(xbits, out, key):
        for i in prange(xbits.size):
            out[i] = core.quantize_bits(np.int64(xbits[i]), S, F, C, V, _random(C, key, i))
    return quantize_specialized


def specialize(fmt, rounding="rne", saturate=False, sr_bits=None, dtype=np.float32) -> None:
    """Make this format's encode and quantize calls with these options (for ``dtype`` inputs)
    use the specialised kernels from their next call on.  That call compiles them (about a
    second) or loads them from numba's cache; nothing is compiled here."""
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    S = source_layout(fmt, np.dtype(dtype) if dtype != "bfloat16" else np.float32)
    for key in (("enc", S, fmt.params, C), ("q", S, fmt.params, C), ("qs", S, fmt.params, C)):
        prefer_specialized(key)


def _source_bits(fmt, flat: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """The input's bit patterns in the layout the core reads for this format."""
    S = source_layout(fmt, flat.dtype)
    if S == core.SRC_FLOAT32:
        return flat.view(np.uint32), S
    with np.errstate(invalid="ignore"):      # signalling NaNs quieten; only their sign matters
        return flat.astype(np.float64, copy=False).view(np.uint64), S


def sr_random_u64(seed: int, index) -> np.ndarray | np.uint64:
    """The 64 random bits stochastic rounding uses for element ``index`` under ``seed``."""
    key = seed_key(seed, core.SR)
    with np.errstate(over="ignore"):
        if np.ndim(index) == 0:
            return core.sr_random(key, np.uint64(index))
        # core.sr_random on arrays: the same uint64 arithmetic, wrapping, element by element
        return core.sr_random(key, np.asarray(index, dtype=np.uint64))


def random_bits_width(random_bits, shape, rounding, seed, sr_bits) -> tuple[np.ndarray, int]:
    """Validate ``random_bits`` (the caller's stochastic-rounding bits for an input of
    ``shape``) and return ``(r, k)``: the bits as a uint64 array and their width ``k``.

    The rule they drive is in :func:`given_random_u64`.  ``k`` is ``sr_bits``, or, when that is
    None, the width of ``random_bits``' unsigned dtype (uint8: 8, ... uint64: 64); a signed
    integer array needs ``sr_bits``.  ``ValueError`` naming the parameter for anything else:
    another rounding mode, a seed as well, a CUDA array, a non-integer dtype, another shape, or
    a value outside ``0 .. 2**k - 1``."""
    if not isinstance(rounding, str) or rounding.lower() != "sr":
        raise ValueError(f"random_bits needs rounding='sr', got rounding={rounding!r}")
    if seed is not None:
        raise ValueError("random_bits and seed are exclusive: the bits replace the seeded stream")
    if is_cuda_array(random_bits):
        raise ValueError("random_bits is supported on the CPU only (numpy arrays or CPU tensors), "
                         "got a CUDA array")
    r = np.asarray(random_bits)
    if r.dtype.kind not in "ui":
        raise ValueError(f"random_bits must be an integer array, got dtype {r.dtype}")
    if r.shape != tuple(shape):
        raise ValueError(f"random_bits must have x's shape {tuple(shape)}, got {r.shape}")
    if sr_bits is None and r.dtype.kind != "u":
        raise ValueError(f"random_bits of signed dtype {r.dtype} needs sr_bits (the "
                         f"generator's width in bits, 1..64)")
    k = check_sr_bits(sr_bits, default=8 * r.dtype.itemsize)
    if r.size:
        lo, hi = int(r.min()), int(r.max())
        if lo < 0 or hi >= 1 << k:
            raise ValueError(f"random_bits must be in 0..{(1 << k) - 1} (k = {k} bits), "
                             f"got values in {lo}..{hi}")
    return r.astype(np.uint64), k


def given_random_u64(random_bits, shape, rounding, seed, sr_bits) -> tuple[np.ndarray, int]:
    """The per-element 64-bit numbers that make the core's stochastic rounding follow the
    hardware convention with the caller's bits, flat (C order), and the width ``k``.

    The convention (docs/numerics.md, "Stochastic rounding with given bits"): ``t`` is the
    ``k`` bits just below the last place kept (the discarded bits truncated to ``k``; zeros
    appended where fewer are discarded), ``r`` the element's ``k`` random bits; the magnitude
    rounds up iff ``t + r >= 2**k`` (the carry out of the ``k``-bit sum).  The core rounds up
    iff ``(u >> (64 - k)) < t``; with ``u = (2**k - 1 - r) << (64 - k)`` that is the same
    test."""
    r, k = random_bits_width(random_bits, shape, rounding, seed, sr_bits)
    mask = np.uint64((1 << k) - 1)
    u = (mask - r.reshape(-1)) << np.uint64(64 - k)
    return np.ascontiguousarray(u, dtype=np.uint64), k


def run_quantize(S, F, C, V, bits, obits, key) -> None:
    """The element kernel's call: ``bits`` (source layout ``S``) rounded into the format ``F``
    with the call ``C`` (its value tuple ``V``), their bits written to ``obits``; specialised or
    generic as :func:`fpformat.dispatch.want_specialized` says."""
    with threads_for(bits.size):
        if want_specialized(("q", S, F, C), bits.size):
            _quantize_specialized(S, F, C, V)(bits, obits, key)
        else:
            _quantize_generic(bits, obits, S, F, C, V, key)


def _flat_input(x):
    arr, kind = as_float_array(x)
    return arr, kind, np.ascontiguousarray(arr).reshape(-1)


def encode(fmt, x, rounding="rne", saturate=False, seed=None, sr_bits=None,
           random_bits=None) -> np.ndarray:
    """Codes of ``x`` in ``fmt`` (see :meth:`FloatFormat.encode`)."""
    if random_bits is not None and is_cuda_array(x):
        raise ValueError("random_bits is supported on the CPU only (numpy arrays or CPU "
                         "tensors); x is a CUDA array")
    if is_cuda_array(x):
        return cuda.encode(fmt, x, rounding, saturate, seed, sr_bits)
    arr, _, flat = _flat_input(x)
    us = None
    if random_bits is not None:
        us, sr_bits = given_random_u64(random_bits, arr.shape, rounding, seed, sr_bits)
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    bits, S = _source_bits(fmt, flat)
    out = np.empty(flat.size, dtype=fmt.dtype)
    F = fmt.params
    if us is not None:
        with threads_for(flat.size):
            _encode_given(bits, out, S, F, C, us)
        return out.reshape(arr.shape)
    key = seed_key(seed, C[core.C_MODE])
    with threads_for(flat.size):
        if want_specialized(("enc", S, F, C), flat.size):
            _encode_specialized(S, F, C)(bits, out, key)
        else:
            _encode_generic(bits, out, S, F, C, key)
    return out.reshape(arr.shape)


def decode(fmt, codes, dtype=np.float64) -> np.ndarray:
    """Values of ``codes`` in ``fmt`` as ``dtype`` (see :meth:`FloatFormat.decode`)."""
    if is_cuda_array(codes):
        return cuda.decode(fmt, codes, dtype)
    c = np.asarray(codes)
    if c.dtype.kind not in "ui":
        raise TypeError(f"codes must be an integer array, got dtype {c.dtype}")
    if c.size and (int(c.min()) < 0 or int(c.max()) >= (1 << fmt.bits)):
        raise ValueError(f"codes must be in 0..{(1 << fmt.bits) - 1} for the {fmt.bits}-bit "
                         f"format {fmt}")
    flat = np.ascontiguousarray(c).reshape(-1)
    out = np.empty(flat.size, dtype=np.float64)
    with threads_for(flat.size):
        _decode_kernel(flat, out, fmt.params, float(2.0 ** (fmt.emin - fmt.man_bits)))
    out = out.reshape(c.shape)
    kind = float_kind(dtype)                # any spelling: np.float32, "float32", torch dtype...
    if kind != "float64":
        if not fmt.fits(kind):
            raise ValueError(f"format {fmt} has values that are not {kind} values; "
                             f"decode to float64")
        out = restore_dtype(out.astype(np.float32) if kind == "bfloat16" else out, kind)
    return out


def quantize(fmt, x, rounding="rne", saturate=False, seed=None, sr_bits=None, out=None,
             random_bits=None):
    """``decode(encode(x))`` in one pass, in ``x``'s dtype (see :meth:`FloatFormat.quantize`)."""
    if random_bits is not None and is_cuda_array(x):
        raise ValueError("random_bits is supported on the CPU only (numpy arrays or CPU "
                         "tensors); x is a CUDA array")
    if is_cuda_array(x):
        return cuda.quantize(fmt, x, rounding, saturate, seed, sr_bits, out)
    if random_bits is not None:
        if out is not None:
            raise ValueError("out= is not supported together with random_bits")
        return _quantize_given_bits(fmt, x, rounding, saturate, seed, sr_bits, random_bits)
    if out is not None:
        return _quantize_into(fmt, x, out, rounding, saturate, seed, sr_bits)
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    arr, kind, flat = _flat_input(x)
    if not fmt.fits(kind):
        raise ValueError(f"format {fmt} has values that are not {kind} values; quantize a "
                         f"float64 array instead, or use encode/decode")
    bits, S = _source_bits(fmt, flat)
    work_dtype = np.float32 if S == core.SRC_FLOAT32 else np.float64
    out = np.empty(flat.size, dtype=work_dtype)
    obits = out.view(np.uint32 if S == core.SRC_FLOAT32 else np.uint64)
    key = seed_key(seed, C[core.C_MODE])
    F = fmt.params
    V = value_tuple(fmt, C, S)
    run_quantize(S, F, C, V, bits, obits, key)
    return restore_dtype(out.reshape(arr.shape), kind, like=x)


# Per-tensor scaling with a given scale (Transformer Engine's FP8 cast): y = round(fl32(x * s)),
# out = fl32(y * s_inv), and the largest |x| on the way, in one pass over float32 data.  Round
# to nearest even into the float formats block_kernels.nearest_by_addition serves runs by float32
# additions there (1.4x faster side by side than the core on 2048x176, one thread).
#: Elements per chunk of the scaled quantize (one thread's share at a time; one amax each).
_SCALED_CHUNK = 1 << 14


@register_jitable
def _scaled_by_addition(F, C) -> bool:
    """Whether the scaled quantize rounds by :func:`fpformat.block_kernels.nearest_by_addition`
    (the core's nearest even for this format, and its grid's smallest normal quantum and
    ``2**23`` times a quantum above its largest value are float32 normals)."""
    M = F[core.F_M]
    return (rounds_by_addition(F, C) and F[core.F_EMIN] + 127 - M >= 1
            and F[core.F_EMAXFIELD] - F[core.F_BIAS] + 128 - M + 23 <= 254)


@numba.njit(inline="always")
def _nearest_any(b, F, V):
    """The core's nearest-even value bits for float32 bits ``b``, NaN and inf included, by
    :func:`fpformat.block_kernels.nearest_by_addition` (where :func:`_scaled_by_addition`)."""
    floor = np.uint32((F[core.F_EMIN] + 127) << 23)
    cap = np.uint32((F[core.F_EMAXFIELD] - F[core.F_BIAS] + 128) << 23)
    q = nearest_by_addition(b, floor, cap, F[core.F_M],
                            np.uint32(V[core.V_MAXBITS]).view(np.float32),
                            np.uint32(V[core.V_OVF_POS]), np.uint32(V[core.V_OVF_NEG]))
    a = b & np.uint32(0x7FFFFFFF)
    negative = b >= np.uint32(0x80000000)
    nan = np.uint32(V[core.V_NAN_NEG]) if negative else np.uint32(V[core.V_NAN_POS])
    inf = np.uint32(V[core.V_INF_NEG]) if negative else np.uint32(V[core.V_INF_POS])
    q = nan if a > np.uint32(0x7F800000) else q
    return inf if a == np.uint32(0x7F800000) else q


@numba.njit(inline="always")
def _scaled_chunk(x, xb, out, part, c, S, F, C, V, key, s, s_inv):
    lo = np.uint64(c) * np.uint64(_SCALED_CHUNK)
    hi = min(lo + np.uint64(_SCALED_CHUNK), np.uint64(x.size))
    m = np.uint32(0)
    additions = _scaled_by_addition(F, C)
    for i in range(lo, hi):
        m = absmax_bits(m, xb[i])
        y = np.float32(x[i] * s)                    # float32 product, as torch computes it
        if additions:
            q = _nearest_any(np.float32(y).view(np.uint32), F, V)
        else:
            u = core.sr_random(key, i) if C[core.C_MODE] == core.SR else np.uint64(0)
            q = np.uint32(core.quantize_bits(np.int64(y.view(np.uint32)), S, F, C, V, u))
        out[i] = np.uint32(q).view(np.float32) * s_inv
    part[c] = m


@numba.njit(**JIT)
def _scaled_generic(x, xb, out, part, S, F, C, V, key, s, s_inv):
    for c in prange(part.size):
        _scaled_chunk(x, xb, out, part, c, S, F, C, V, key, s, s_inv)


@functools.lru_cache(maxsize=None)
def _scaled_specialized(S, F, C, V):
    @numba.njit(**JIT)
    def scaled_specialized(x, xb, out, part, key, s, s_inv):
        for c in prange(part.size):
            _scaled_chunk(x, xb, out, part, c, S, F, C, V, key, s, s_inv)
    return scaled_specialized


def quantize_scaled_applies(fmt) -> bool:
    """Whether :func:`quantize_scaled` serves the element format ``fmt`` (every value, and
    the rounding, within float32's layout)."""
    return source_layout(fmt, np.float32) == core.SRC_FLOAT32


@functools.lru_cache(maxsize=256)
def _scaled_plan(fmt, rounding: str, saturate: bool) -> tuple[tuple, tuple, tuple]:
    """``(S, C, V)`` of :func:`quantize_scaled` for ``fmt`` and these options (computed once:
    a training step makes many small calls)."""
    if not quantize_scaled_applies(fmt):
        raise ValueError(f"format {fmt} has values that are not float32 values; the scaled "
                         f"quantize works in float32")
    C = call_tuple(fmt, rounding, saturate, None)
    return core.SRC_FLOAT32, C, value_tuple(fmt, C, core.SRC_FLOAT32)


def quantize_scaled(fmt, x: np.ndarray, scale: float, rounding: str = "rne",
                    saturate: bool = True, seed=None) -> tuple[np.ndarray, float]:
    """Per-tensor scaled fake-quantization of float32 ``x`` in one pass: ``out =
    fl32(q(fl32(x * s)) * fl32(1 / s))`` with ``s = fl32(scale)`` and ``q`` this format's
    rounding (both products rounded to float32, as a float32 framework computes them), and
    ``amax``, the largest ``|x|`` (NaN if ``x`` holds a NaN, inf if an infinity, 0 for an
    empty ``x``).  Returns ``(out, amax)``; ``ValueError`` for data other than float32 or a
    format whose values are not all float32 values."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise ValueError(f"x must be a float32 numpy array, got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    s = np.float32(scale)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"scale must be a finite float32 > 0, got {scale!r}")
    S, C, V = _scaled_plan(fmt, rounding, saturate)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    part = np.zeros(max(1, -(-flat.size // _SCALED_CHUNK)), dtype=np.uint32)
    key = seed_key(seed, C[core.C_MODE])
    s_inv = np.float32(1) / s
    xb = flat.view(np.uint32)
    with threads_for(flat.size):
        if want_specialized(("qs", S, fmt.params, C), flat.size):
            _scaled_specialized(S, fmt.params, C, V)(flat, xb, out, part, key, s, s_inv)
        else:
            _scaled_generic(flat, xb, out, part, S, fmt.params, C, V, key, s, s_inv)
    amax = float(np.uint32(part.max()).view(np.float32))
    return out.reshape(x.shape), amax


def _quantize_given_bits(fmt, x, rounding, saturate, seed, sr_bits, random_bits):
    """``quantize`` with the caller's stochastic-rounding bits (:func:`given_random_u64`)."""
    arr, kind, flat = _flat_input(x)
    us, k = given_random_u64(random_bits, arr.shape, rounding, seed, sr_bits)
    C = call_tuple(fmt, rounding, saturate, k)
    if not fmt.fits(kind):
        raise ValueError(f"format {fmt} has values that are not {kind} values; quantize a "
                         f"float64 array instead, or use encode/decode")
    bits, S = _source_bits(fmt, flat)
    f32 = S == core.SRC_FLOAT32
    out = np.empty(flat.size, dtype=np.float32 if f32 else np.float64)
    obits = out.view(np.uint32 if f32 else np.uint64)
    with threads_for(flat.size):
        _quantize_given(bits, obits, S, fmt.params, C, value_tuple(fmt, C, S), us)
    return restore_dtype(out.reshape(arr.shape), kind, like=x)


def _quantize_into(fmt, x, out, rounding, saturate, seed, sr_bits):
    """``quantize`` writing into ``out`` (float32/float64 numpy, x's dtype and shape,
    C-contiguous)."""
    if not (isinstance(x, np.ndarray) and isinstance(out, np.ndarray)):
        raise TypeError("out= needs numpy arrays for x and out")
    if x.dtype not in (np.float32, np.float64) or out.dtype != x.dtype or out.shape != x.shape:
        raise ValueError(f"out must be a float32/float64 array with x's dtype and shape "
                         f"({x.dtype}, {x.shape}), got ({out.dtype}, {out.shape})")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    check_out(x, out)
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    if not fmt.fits(x.dtype):
        raise ValueError(f"format {fmt} has values that are not {x.dtype} values")
    flat = np.ascontiguousarray(x).reshape(-1)
    bits, S = _source_bits(fmt, flat)
    if (S == core.SRC_FLOAT32) != (x.dtype == np.float32):
        raise ValueError(f"out= cannot be used for {x.dtype} inputs to {fmt}; omit out")
    obits = out.reshape(-1).view(np.uint32 if S == core.SRC_FLOAT32 else np.uint64)
    key = seed_key(seed, C[core.C_MODE])
    F = fmt.params
    V = value_tuple(fmt, C, S)
    run_quantize(S, F, C, V, bits, obits, key)
    return out
