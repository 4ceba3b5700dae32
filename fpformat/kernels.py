"""CPU kernels (numba, parallel, cached) around the scalar core, and the host-side routing.

The loops are deliberately thin: each element goes through :func:`fpformat.core.encode_bits`,
:func:`fpformat.core.quantize_bits` or :func:`fpformat.core.decode_code`.  Each loop exists in two
compilations of the same source:

* *generic*: the format/call tuples are runtime arguments; one compilation serves every format
  and mode (vectorised, ~2x slower than specialised);
* *specialised*: the tuples are compile-time constants (closure variables), so the compiler folds
  the mode and the format away.  Compiling costs about a second, cached on disk by numba, so a
  (format, mode, source) combination is specialised once it has processed
  ``SPECIALIZE_AFTER`` elements in this process (training loops, sweeps, benchmarks), or at once
  with :func:`specialize`.  ``FPFORMAT_SPECIALIZE=never|always`` overrides the policy.

Both compilations run the same core, and the tests hold them to each other bit for bit.
"""

from __future__ import annotations

import functools
import os
import threading

import numba
import numpy as np
from numba import prange

from . import core
from .arrays import as_float_array, is_cuda_array, restore_dtype
from .rounding import call_tuple, value_tuple

_JIT = dict(parallel=True, cache=True, nogil=True, error_model="numpy")
SPECIALIZE_AFTER = 1 << 26          # elements per (format, call, source) before specialising


@numba.njit(inline="always")
def _random(C, key, i):
    return core.sr_random(key, i) if C[core.C_MODE] == core.SR else np.uint64(0)


# The generic kernels keep the stochastic loop apart: with a runtime mode, a random number drawn
# under a condition would stop the deterministic loop from vectorising.
@numba.njit(**_JIT)
def _encode_generic(xbits, out, S, F, C, key):
    if C[core.C_MODE] == core.SR:
        for i in prange(xbits.size):
            out[i] = core.encode_bits(np.int64(xbits[i]), S, F, C, core.sr_random(key, i))
    else:
        for i in prange(xbits.size):
            out[i] = core.encode_bits(np.int64(xbits[i]), S, F, C, np.uint64(0))


@numba.njit(**_JIT)
def _quantize_generic(xbits, out, S, F, C, V, key):
    if C[core.C_MODE] == core.SR:
        for i in prange(xbits.size):
            out[i] = core.quantize_bits(np.int64(xbits[i]), S, F, C, V, core.sr_random(key, i))
    else:
        for i in prange(xbits.size):
            out[i] = core.quantize_bits(np.int64(xbits[i]), S, F, C, V, np.uint64(0))


@numba.njit(**_JIT)
def _decode_kernel(codes, out, F, sub_unit):
    for i in prange(codes.size):
        out[i] = core.decode_code(np.int64(codes[i]), F, sub_unit)


@functools.lru_cache(maxsize=None)
def _encode_specialized(S, F, C):
    @numba.njit(**_JIT)
    def encode_specialized(xbits, out, key):
        for i in prange(xbits.size):
            out[i] = core.encode_bits(np.int64(xbits[i]), S, F, C, _random(C, key, i))
    return encode_specialized


@functools.lru_cache(maxsize=None)
def _quantize_specialized(S, F, C, V):
    @numba.njit(**_JIT)
    def quantize_specialized(xbits, out, key):
        for i in prange(xbits.size):
            out[i] = core.quantize_bits(np.int64(xbits[i]), S, F, C, V, _random(C, key, i))
    return quantize_specialized


SERIAL_BELOW = 1 << 15              # elements under which a call runs on one thread


class _threads_for:
    """Run small calls on one thread: waking the pool costs more than the work (and much more
    on a busy machine)."""

    def __init__(self, n: int):
        self.serial = n < SERIAL_BELOW

    def __enter__(self):
        if self.serial:
            self.saved = numba.get_num_threads()
            numba.set_num_threads(1)

    def __exit__(self, *exc):
        if self.serial:
            numba.set_num_threads(self.saved)


_seen: dict[tuple, int] = {}
_seen_lock = threading.Lock()


def _want_specialized(key: tuple, n: int) -> bool:
    policy = os.environ.get("FPFORMAT_SPECIALIZE", "auto")
    if policy == "never":
        return False
    if policy == "always":
        return True
    with _seen_lock:
        total = _seen.get(key, 0) + n
        _seen[key] = total
    return total >= SPECIALIZE_AFTER


def specialize(fmt, rounding="rne", saturate=False, sr_bits=None, dtype=np.float32) -> None:
    """Compile the specialised kernels for this format and call now (for ``dtype`` inputs)."""
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    S = _source_layout(fmt, np.dtype(dtype) if dtype != "bfloat16" else np.float32)
    for key in (("enc", S, fmt.params, C), ("q", S, fmt.params, C)):
        with _seen_lock:
            _seen[key] = SPECIALIZE_AFTER


def _source_layout(fmt, dtype) -> tuple[int, ...]:
    if np.dtype(dtype) in (np.float32, np.float16) and fmt.man_bits <= 23 and fmt.emin >= -126:
        return core.SRC_FLOAT32
    return core.SRC_FLOAT64


def _source_bits(fmt, flat: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """The input's bit patterns in the layout the core reads for this format."""
    S = _source_layout(fmt, flat.dtype)
    if S == core.SRC_FLOAT32:
        return flat.view(np.uint32), S
    with np.errstate(invalid="ignore"):      # signalling NaNs quieten; only their sign matters
        return flat.astype(np.float64, copy=False).view(np.uint64), S


def seed_key(seed, mode: int) -> np.uint64:
    """The stochastic-rounding stream key for ``seed`` (a fresh random seed for ``None``)."""
    if mode != core.SR:
        return np.uint64(0)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    with np.errstate(over="ignore"):
        return core.sr_key(np.uint64(int(seed) % (1 << 64)))


def sr_random_u64(seed: int, index) -> np.ndarray | np.uint64:
    """The 64 random bits stochastic rounding uses for element ``index`` under ``seed``."""
    key = seed_key(seed, core.SR)
    with np.errstate(over="ignore"):
        if np.ndim(index) == 0:
            return core.sr_random(key, np.uint64(index))
        idx = np.asarray(index, dtype=np.uint64)
        return np.array([core.sr_random(key, i) for i in idx], dtype=np.uint64)


def _run_quantize(S, F, C, V, bits, obits, key) -> None:
    with _threads_for(bits.size):
        if _want_specialized(("q", S, F, C), bits.size):
            _quantize_specialized(S, F, C, V)(bits, obits, key)
        else:
            _quantize_generic(bits, obits, S, F, C, V, key)


def _flat_input(x):
    arr, kind = as_float_array(x)
    return arr, kind, np.ascontiguousarray(arr).reshape(-1)


def encode(fmt, x, rounding="rne", saturate=False, seed=None, sr_bits=None) -> np.ndarray:
    """Codes of ``x`` in ``fmt`` (see :meth:`FloatFormat.encode`)."""
    if is_cuda_array(x):
        from . import cuda
        return cuda.encode(fmt, x, rounding, saturate, seed, sr_bits)
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    arr, _, flat = _flat_input(x)
    bits, S = _source_bits(fmt, flat)
    out = np.empty(flat.size, dtype=fmt.dtype)
    key = seed_key(seed, C[core.C_MODE])
    F = fmt.params
    with _threads_for(flat.size):
        if _want_specialized(("enc", S, F, C), flat.size):
            _encode_specialized(S, F, C)(bits, out, key)
        else:
            _encode_generic(bits, out, S, F, C, key)
    return out.reshape(arr.shape)


def decode(fmt, codes, dtype=np.float64) -> np.ndarray:
    """Values of ``codes`` in ``fmt`` as ``dtype`` (see :meth:`FloatFormat.decode`)."""
    if is_cuda_array(codes):
        from . import cuda
        return cuda.decode(fmt, codes, dtype)
    c = np.asarray(codes)
    if c.dtype.kind not in "ui":
        raise TypeError(f"codes must be an integer array, got dtype {c.dtype}")
    if c.size and (int(c.min()) < 0 or int(c.max()) >= (1 << fmt.bits)):
        raise ValueError(f"codes must be in 0..{(1 << fmt.bits) - 1} for the {fmt.bits}-bit format {fmt}")
    flat = np.ascontiguousarray(c).reshape(-1)
    out = np.empty(flat.size, dtype=np.float64)
    with _threads_for(flat.size):
        _decode_kernel(flat, out, fmt.params, float(2.0 ** (fmt.emin - fmt.man_bits)))
    out = out.reshape(c.shape)
    from .format import _float_kind
    kind = _float_kind(dtype)                 # any spelling: np.float32, "float32", torch dtype...
    if kind != "float64":
        if not fmt.fits(kind):
            raise ValueError(f"format {fmt} has values that are not {kind} values; decode to float64")
        out = restore_dtype(out.astype(np.float32) if kind == "bfloat16" else out, kind)
    return out


def quantize(fmt, x, rounding="rne", saturate=False, seed=None, sr_bits=None, out=None):
    """``decode(encode(x))`` in one pass, in ``x``'s dtype (see :meth:`FloatFormat.quantize`)."""
    if is_cuda_array(x):
        if out is not None:
            raise ValueError("out= is supported for CPU numpy arrays only")
        from . import cuda
        return cuda.quantize(fmt, x, rounding, saturate, seed, sr_bits)
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
    _run_quantize(S, F, C, V, bits, obits, key)
    return restore_dtype(out.reshape(arr.shape), kind, like=x)


def _quantize_into(fmt, x, out, rounding, saturate, seed, sr_bits):
    """``quantize`` writing into ``out`` (float32/float64 numpy, x's dtype and shape, C-contiguous)."""
    if not (isinstance(x, np.ndarray) and isinstance(out, np.ndarray)):
        raise TypeError("out= needs numpy arrays for x and out")
    if x.dtype not in (np.float32, np.float64) or out.dtype != x.dtype or out.shape != x.shape:
        raise ValueError(f"out must be a float32/float64 array with x's dtype and shape "
                         f"({x.dtype}, {x.shape}), got ({out.dtype}, {out.shape})")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
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
    _run_quantize(S, F, C, V, bits, obits, key)
    return out
