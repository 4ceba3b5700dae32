"""The numba.cuda kernels of the GPU path (the host side, arrays and routing: :mod:`fpformat.cuda`).

Every kernel is a thin loop around the scalar core the CPU kernels run
(:func:`fpformat.core.encode_bits`, :func:`~fpformat.core.quantize_bits`,
:func:`~fpformat.core.decode_code`) and, for block formats, the CPU block kernel's own per-block
scale function (:func:`fpformat.block_kernels._block_scale`) and element rule (``x / scale``
rounded from float64, as :func:`fpformat.block_kernels.block_row` does).  Nothing numeric is
implemented twice; what is here is addressing, reductions and bit moves.

**What is a compile-time constant and what is an argument.**  A kernel is built (and compiled,
once, then cached on disk by numba) per *kernel kind* and

* the format, call and value tuples (``F``, ``C``, ``V``: format and rounding mode),
* the input and output dtypes (``IN``/``OUT``: float16, bfloat16, float32, float64),
* for blocks, the data-independent part of the block tuple ``B`` (rule, element max, scale
  format: :func:`block_constants`) and which results are written (codes, scales, values),
* the threads per CUDA block (a fixed number: 256 on a GPU, fewer in the simulator).

Everything that depends on the data is an argument: sizes, the block/tile geometry, the
stochastic-rounding key, the NVFP4 tensor scale (read on the device from a device-side amax, never
a host float) and every amax.  So one process compiles one kernel per (format, mode, dtype,
kind), whatever the shapes and values; :func:`fpformat.cuda.compilations` counts them.

**How the block kernels are shaped.**  A scaling block is a tile ``(tr, tc)`` of a
``(batch, R, C)`` view of the input (blocks along the last axis: ``(1, k)`` tiles of
``(1, rows, L)``; along another axis: ``(k, 1)`` tiles of ``(pre, n, post)``; ``"tensor"``: one
tile of everything; 2-D tiles as given), so one addressing serves every layout, without
transposing copies.  Two shapes of kernel:

* :func:`group_kernel` (every block of up to ``WIDE_PER_THREAD * threads`` elements: MX, NVFP4,
  channel rows, tiles): a *group* of ``G`` threads per scaling block (``G`` the block length
  rounded up to a power of two, at most the threads of a CUDA block), so thread ``j`` of the
  group reads elements ``j, j + G, ...`` -- consecutive threads read consecutive addresses
  (coalesced) along the last axis.  The group's amax is a tree reduction in shared memory
  (``log2 G`` steps; shared memory rather than warp shuffles because numba's CUDA simulator,
  which the tests run everywhere, has no shuffles, and for ``G <= 32`` it is five steps), then
  every thread forms the block's scale with the shared scale function and rounds its elements.
  One pass over the data.
* :func:`amax_kernel` + :func:`scale_kernel` + :func:`element_kernel` (``"tensor"`` and blocks
  too long for one CUDA block): a grid-wide reduction -- CUDA blocks take coalesced chunks of
  consecutive elements; a chunk inside one scaling block is reduced in shared memory and
  published with one ``atomic.max``, others per thread and block change -- then one thread per
  block forms the scale, then a grid-stride pass rounds every element.  The NVFP4 tensor amax is
  this reduction with a single block.

amax is taken on the integer magnitude bits (``bits & ~sign``): for IEEE floats their order is
the values' order, and NaN/inf show as bits ``>= inf``'s, the CPU's "bad block" flag.

**Division.**  The CPU forms ``x / scale`` in float64, correctly rounded.  Where the scale is a
power of two (OCP/E8M0 scales, and any other scale value that happens to be one) the kernels
multiply by its exact reciprocal instead: the two operations round the same real number, so the
bits agree.  Other scales (``"amax"`` float32 scales, NVFP4's UE4M3 x float32 products) keep the
float64 division: multiplying by a rounded reciprocal differs from the quotient in the last bit
for some inputs, and a last-bit difference moves a tie of the element format (ties are common:
``x = 1.5 * scale``), so no cheaper form is bit-exact.  The division is once per element of such
blocks; the element rounding itself is integer code.

**NaN signs.**  The GPU never relies on the sign of a NaN produced by floating-point hardware
(``neg.f64`` and conversions do not promise it).  Inputs are read as integer bit patterns
(float16/bfloat16 widened by integer code); NaN results are built from sign bits with integer
operations, by the CPU's rule: a decoded NaN code keeps its code's sign, a NaN from a NaN scale
is the positive quiet NaN, narrowing keeps the sign (the core's float16/bfloat16/float32 encoders
do the narrowing).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba.extending import register_jitable

from . import block_kernels, core
from .block_kernels import (
    B_ESUB,
    B_INT,
    B_RULE,
    B_TSCALE,
    RULE_NVFP4,
    bits_value,
    nonfinite,
    tensor_scale_of,
)

cuda: Any = None          # numba.cuda, set by bind(); a module global because the simulator swaps
                          # its fake module into the kernels' globals (not into closures)

# The CPU block kernel's njit(inline="always") helpers: called as device functions on a GPU, as
# their Python functions in the simulator (which runs kernels as Python); set by bind().
_block_scale: Any = None
_int_code: Any = None

# Input/output dtypes of the kernels (the ``IN``/``OUT`` constants).
F16, BF16, F32, F64 = 0, 1, 2, 3
KINDS = {"float16": F16, "bfloat16": BF16, "float32": F32, "float64": F64}
#: The unsigned view of each kind's bit patterns that the kernels read and write (8-byte kinds as
#: int64: sign bits stay in range of the simulator's numpy arrays).
BITS_DTYPE = {F16: np.uint16, BF16: np.uint16, F32: np.uint32, F64: np.int64}

#: Elements per thread above which a block goes to the grid-wide (three-kernel) path.
WIDE_PER_THREAD = 64
#: Elements per thread in a chunk of the grid-wide amax reduction.
CHUNK_PER_THREAD = 16

_ABS32 = np.int64(0x7FFFFFFF)
_INF32 = np.int64(0x7F800000)
_ABS64 = np.int64(0x7FFFFFFFFFFFFFFF)
_INF64 = np.int64(0x7FF0000000000000)
_QNAN64 = np.int64(0x7FF8000000000000)
_SIGN64 = np.int64(-0x8000000000000000)


def bind(numba_cuda, simulator: bool) -> None:
    """Give the kernels numba.cuda (the simulator's when ``simulator``)."""
    global cuda, _block_scale, _int_code
    cuda = numba_cuda
    _block_scale = block_kernels._block_scale.py_func if simulator else block_kernels._block_scale
    _int_code = block_kernels.int_code.py_func if simulator else block_kernels.int_code


# --------------------------------------------------------------------------------- bit helpers
@register_jitable
def f16_to_f32_bits(h):
    """float32 bits of the float16 with bits ``h`` (exact, integer code; NaN payloads and signs
    kept as numpy's conversion keeps them)."""
    h = np.int64(h) & 0xFFFF
    s = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0x1F:
        return s | _INF32 | (m << 13)
    if e != 0:
        return s | ((e + 112) << 23) | (m << 13)
    if m == 0:
        return s
    p = np.int64(9)                                          # subnormal: m * 2**-24
    while (m >> p) == 0:
        p -= 1
    return s | ((p + 103) << 23) | ((m << (23 - p)) & 0x7FFFFF)


@register_jitable
def f32_to_f64_bits(b):
    """float64 bits of the float32 with bits ``b``: the hardware conversion for numbers (exact),
    a quiet NaN of ``b``'s sign built with integer operations for NaN."""
    b = np.int64(b) & 0xFFFFFFFF
    if (b & _ABS32) > _INF32:
        return _QNAN64 | (_SIGN64 if b & 0x80000000 else np.int64(0))
    return np.int64(np.float64(np.uint32(b).view(np.float32)).view(np.int64))


@register_jitable
def read_bits(raw, IN):
    """The input element ``raw`` (its dtype's bit pattern) as float32 bits (float16, bfloat16,
    float32 inputs) or float64 bits (float64 inputs), as int64."""
    if IN == F16:
        return f16_to_f32_bits(raw)
    if IN == BF16:
        return (np.int64(raw) & 0xFFFF) << 16
    if IN == F32:
        return np.int64(raw) & 0xFFFFFFFF
    return np.int64(raw)


@register_jitable
def in_layout(b, IN, S):
    """``read_bits`` output moved into the core's source layout ``S`` (float32 or float64)."""
    if IN != F64 and S[core.S_M] == 52:
        return f32_to_f64_bits(b)
    return b


@register_jitable
def f64bits(v):
    return np.int64(np.float64(v).view(np.int64))


@register_jitable
def nan_negative(code, F):
    """The sign :func:`fpformat.core.decode_code` gives a NaN code on the CPU: the code's sign,
    except the fnuz NaN (the sign bit alone), which decodes as +NaN."""
    signbit = F[core.F_SIGNBIT]
    return (code & signbit) != 0 and (code & ~signbit) != 0


@register_jitable
def decoded_bits(code, F, sub_unit):
    """float64 bits of ``decode_code(code)``, NaN built from the code's sign (CPU rule)."""
    v = core.decode_code(code, F, sub_unit)
    if v != v:
        return _QNAN64 | (_SIGN64 if nan_negative(code, F) else np.int64(0))
    return f64bits(v)


@register_jitable
def narrow(b, S, NARROW):
    """Bits ``b`` of source layout ``S`` in the output dtype: unchanged when ``NARROW[0]`` is 0,
    else encoded (round to nearest even, IEEE overflow, NaN keeping its sign) by the core into
    the output dtype's format ``NARROW[1]`` with call tuple ``NARROW[2]``."""
    if NARROW[0] == 0:
        return b
    return core.encode_bits(b, S, NARROW[1], NARROW[2], np.uint64(0))


@register_jitable
def code_bits(c):
    """A code as the int64 whose bit pattern the unsigned code array stores.  A 64-bit
    format's codes with the sign bit set are negative int64s; storing the int64 wraps to the
    same bits on a GPU and in the simulator's numpy (which refuses the Python int the core can
    return there)."""
    return np.int64(c)


@register_jitable
def grid_start():
    """(first flat thread index, grid stride) as int64 (indices beyond 2**31 stay exact)."""
    start = np.int64(cuda.blockIdx.x) * np.int64(cuda.blockDim.x) + np.int64(cuda.threadIdx.x)
    return start, np.int64(cuda.gridDim.x) * np.int64(cuda.blockDim.x)


# --------------------------------------------------------------------------------- element kernels
@functools.lru_cache(maxsize=None)
def encode_kernel(IN: int, S: tuple, F: tuple, C: tuple):
    """``out[i] = code of x[i]`` (codes as the format's unsigned dtype)."""
    sr = C[core.C_MODE] == core.SR

    @cuda.jit(cache=True)
    def encode_kernel(xb, out, key):
        start, stride = grid_start()
        for i in range(start, xb.size, stride):
            b = in_layout(read_bits(xb[i], IN), IN, S)
            u = core.sr_random(key, i) if sr else np.uint64(0)
            out[i] = code_bits(core.encode_bits(b, S, F, C, u))
    return encode_kernel


@functools.lru_cache(maxsize=None)
def quantize_kernel(IN: int, S: tuple, F: tuple, C: tuple, V: tuple, NARROW: tuple):
    """``out[i] = bits of decode(encode(x[i]))`` in the input's dtype (``NARROW``: see
    :func:`narrow`; exact, the format's values fit the dtype)."""
    sr = C[core.C_MODE] == core.SR

    @cuda.jit(cache=True)
    def quantize_kernel(xb, out, key):
        start, stride = grid_start()
        for i in range(start, xb.size, stride):
            b = in_layout(read_bits(xb[i], IN), IN, S)
            u = core.sr_random(key, i) if sr else np.uint64(0)
            out[i] = narrow(core.quantize_bits(b, S, F, C, V, u), S, NARROW)
    return quantize_kernel


@functools.lru_cache(maxsize=None)
def decode_kernel(F: tuple, sub_unit: float, limit: int, check: bool, NARROW: tuple):
    """``out[i] = bits of decode(codes[i])`` in the output dtype; ``bad[0] = 1`` where ``check``
    and a code lies outside ``0 .. limit - 1``."""

    @cuda.jit(cache=True)
    def decode_kernel(codes, out, bad):
        start, stride = grid_start()
        for i in range(start, codes.size, stride):
            c = np.int64(codes[i])
            if check and (c < 0 or c >= limit):
                bad[0] = 1
            out[i] = narrow(decoded_bits(c, F, sub_unit), core.SRC_FLOAT64, NARROW)
    return decode_kernel


@functools.lru_cache(maxsize=None)
def fill_kernel():
    """``a[:] = value`` (int64): scratch initialisation without a host transfer."""

    @cuda.jit(cache=True)
    def fill_kernel(a, value):
        start, stride = grid_start()
        for i in range(start, a.size, stride):
            a[i] = value
    return fill_kernel


# --------------------------------------------------------------------------------- block helpers
def block_constants(B: tuple) -> tuple:
    """The data-independent part of a block tuple (``block_kernels.block_params``): the block
    length and the tensor scale are zeroed.  The kernels put the tensor scale back
    (:func:`with_tscale`); the block length stays 0 (the per-block scale function never reads
    it: the kernels pass lengths as arguments)."""
    return B[:block_kernels.B_K] + (0.0,) + B[block_kernels.B_K + 1:B_TSCALE] + (0.0,) \
        + B[B_TSCALE + 1:]


@register_jitable
def with_tscale(BC, ts):
    """``BC`` with the tensor scale ``ts`` (the only entry the per-block scale function reads
    that depends on the data).  Spelled out slot by slot for numba: the tuple is the 11 slots
    of ``block_kernels`` ``B_RULE .. B_INT`` with ``B_TSCALE == 4`` (asserted below)."""
    return (BC[0], BC[1], BC[2], BC[3], ts, BC[5], BC[6], BC[7], BC[8], BC[9], BC[10])


assert B_TSCALE == 4 and block_kernels.B_INT == 10, "with_tscale spells out the block tuple"


@register_jitable
def abs_bits(b, wide):
    return b & (_ABS64 if wide else _ABS32)


@register_jitable
def divisor(sval):
    """``(usable, pow2, reciprocal)`` for a block scale: unusable (NaN, zero, inf) scales give
    zero elements; a power of two has an exact reciprocal (``x * r`` then equals ``x / sval``
    bit for bit: both round the same real number)."""
    usable = sval == sval and sval != 0.0 and abs(sval) <= 1.7976931348623157e308
    b = f64bits(sval)
    fe = (b >> 52) & 0x7FF
    pow2 = usable and (b & 0xFFFFFFFFFFFFF) == 0 and 1 <= fe <= 2045
    r = np.int64((2046 - fe) << 52).view(np.float64) if pow2 else 1.0
    return usable, pow2, -r if sval < 0.0 else r


@register_jitable
def block_result(b, i, sval, usable, pow2, recip, key, wide, FE, CE, BC, sr, OUT, NARROW):
    """One element of a block: ``(code, output bits)`` for input bits ``b`` (float32 or float64
    layout, ``wide``) at flat index ``i`` in a block with scale value ``sval``.  The element is
    ``x / sval`` rounded from float64 as the CPU block kernel does; the output value is
    ``decode(code) * sval`` rounded once to the output dtype, NaN built from signs (CPU rule: a
    NaN element keeps its code's sign, a NaN scale gives +NaN)."""
    y = 0.0                                              # +0 in NaN/zero-scale blocks
    if usable:
        x = bits_value(b, wide)
        y = x * recip if pow2 else x / sval
    u = core.sr_random(key, i) if sr else np.uint64(0)
    c = core.encode_bits(f64bits(y), core.SRC_FLOAT64, FE, CE, u)
    ints = BC[B_INT] == 1.0
    code = _int_code(c, FE[core.F_SIGNBIT]) if ints else c
    ev = core.decode_code(c, FE, BC[B_ESUB])
    if ev != ev:
        vb = _QNAN64 | (_SIGN64 if nan_negative(c, FE) else np.int64(0))
    elif sval != sval:
        vb = _QNAN64
    else:
        v = ev * sval
        vb = f64bits(v + 0.0 if ints else v)             # + 0.0: no -0 among integers
    if OUT == F64:
        return code, vb
    if OUT == F32 and (vb & _ABS64) <= _INF64:           # a number: IEEE round to nearest
        return code, np.int64(np.float32(vb.view(np.float64)).view(np.uint32))
    return code, narrow(vb, core.SRC_FLOAT64, NARROW)


@register_jitable
def tile_of(s, R, C, tr, tc, nbr, nbc):
    """Scaling block ``s`` of a ``(batch, R, C)`` array in ``(tr, tc)`` tiles: (flat index of
    its first element, its width, its number of elements)."""
    per = nbr * nbc
    b = s // per
    rem = s - b * per
    br = rem // nbc
    bc = rem - br * nbc
    r0 = br * tr
    c0 = bc * tc
    w = min(tc, C - c0)
    return (b * R + r0) * C + c0, w, min(tr, R - r0) * w


@register_jitable
def tile_index(base, t, w, C):
    """Flat index of element ``t`` (row-major within the tile) of the tile at ``base``."""
    if t < w:
        return base + t
    r = t // w
    return base + r * C + (t - r * w)


@register_jitable
def block_of(i, R, C, tr, tc, nbr, nbc):
    """The scaling block holding flat index ``i`` of a ``(batch, R, C)`` array."""
    row = i // C
    c = i - row * C
    b = row // R
    r = row - b * R
    return (b * nbr + r // tr) * nbc + c // tc


# --------------------------------------------------------------------------------- block kernels
@functools.lru_cache(maxsize=None)
def group_kernel(IN: int, OUT: int, FE: tuple, CE: tuple, FS: tuple, CS: tuple, BC: tuple,
                 NARROW: tuple, want_codes: bool, want_out: bool, threads: int):
    """Blocks of at most ``WIDE_PER_THREAD * threads`` elements: ``G`` threads per scaling
    block (see the module docstring).  Writes codes and scales (``want_codes``) and/or values
    (``want_out``)."""
    sr = CE[core.C_MODE] == core.SR
    nv = BC[B_RULE] == float(RULE_NVFP4)
    wide = IN == F64
    T = threads

    @cuda.jit(cache=True)
    def group_kernel(xb, tamax, key, batch, R, C, tr, tc, G, codes, scales, out):
        sh = cuda.shared.array(T, np.int64)
        tid = np.int64(cuda.threadIdx.x)
        lane = tid & (G - 1)
        per = T // G
        nbr = (R + tr - 1) // tr
        nbc = (C + tc - 1) // tc
        nblk = batch * nbr * nbc
        ts = tensor_scale_of(tamax[0], wide) if nv else 1.0
        B = with_tscale(BC, ts)
        for q in range(np.int64(cuda.blockIdx.x), (nblk + per - 1) // per,
                       np.int64(cuda.gridDim.x)):
            s = q * per + tid // G
            active = s < nblk
            m = np.int64(0)
            base = np.int64(0)
            w = np.int64(1)
            n = np.int64(0)
            if active:
                base, w, n = tile_of(s, R, C, tr, tc, nbr, nbc)
                for t in range(lane, n, G):
                    m = max(m, abs_bits(read_bits(xb[tile_index(base, t, w, C)], IN), wide))
            sh[tid] = m
            cuda.syncthreads()
            step = G >> 1
            while step > 0:                                  # tree reduction within the group
                if lane < step:
                    sh[tid] = max(sh[tid], sh[tid + step])
                cuda.syncthreads()
                step >>= 1
            m = sh[tid - lane]
            cuda.syncthreads()                               # sh is reused by the next round
            if active:
                sval, scode = _block_scale(bits_value(m, wide), nonfinite(m, wide), B, FS, CS)
                if want_codes and lane == 0:
                    scales[s] = scode
                usable, pow2, recip = divisor(sval)
                for t in range(lane, n, G):
                    i = tile_index(base, t, w, C)
                    code, ob = block_result(read_bits(xb[i], IN), i, sval, usable, pow2, recip,
                                            key, wide, FE, CE, BC, sr, OUT, NARROW)
                    if want_codes:
                        codes[i] = code
                    if want_out:
                        out[i] = ob
    return group_kernel


@functools.lru_cache(maxsize=None)
def amax_kernel(IN: int, threads: int):
    """``amax[block] = max(amax[block], |bits|)`` over a ``(batch, R, C)`` array in ``(tr,
    tc)`` tiles (``amax`` starts at 0).  A CUDA block takes chunks of ``CHUNK_PER_THREAD *
    threads`` consecutive elements (grid-stride over chunks; thread ``j`` reads ``j, j +
    threads, ...``: coalesced).  A chunk inside one scaling block (always for ``"tensor"``;
    blocks of one row, ``tr == 1``, are contiguous, so its ends decide) is reduced in shared
    memory and published with one ``atomic.max``; otherwise each thread publishes its running
    maximum whenever its block changes."""
    wide = IN == F64
    T = threads
    CH = CHUNK_PER_THREAD * threads

    @cuda.jit(cache=True)
    def amax_kernel(xb, batch, R, C, tr, tc, amax):
        sh = cuda.shared.array(T, np.int64)
        tid = np.int64(cuda.threadIdx.x)
        n = np.int64(xb.size)
        nbr = (R + tr - 1) // tr
        nbc = (C + tc - 1) // tc
        single = batch * nbr * nbc == 1
        for q in range(np.int64(cuda.blockIdx.x), (n + CH - 1) // CH, np.int64(cuda.gridDim.x)):
            lo = q * CH
            hi = min(lo + CH, n)
            first = np.int64(0) if single else block_of(lo, R, C, tr, tc, nbr, nbc)
            one = single or (tr == 1 and first == block_of(hi - 1, R, C, tr, tc, nbr, nbc))
            cur = first
            m = np.int64(0)
            for i in range(lo + tid, hi, T):
                if not one:
                    s = block_of(i, R, C, tr, tc, nbr, nbc)
                    if s != cur:
                        if m > 0:
                            cuda.atomic.max(amax, cur, m)
                        cur = s
                        m = np.int64(0)
                m = max(m, abs_bits(read_bits(xb[i], IN), wide))
            if one:                                          # the same for the whole CUDA block
                sh[tid] = m
                cuda.syncthreads()
                step = T >> 1
                while step > 0:
                    if tid < step:
                        sh[tid] = max(sh[tid], sh[tid + step])
                    cuda.syncthreads()
                    step >>= 1
                if tid == 0 and sh[0] > 0:
                    cuda.atomic.max(amax, first, sh[0])
                cuda.syncthreads()                           # sh is reused by the next chunk
            elif m > 0:
                cuda.atomic.max(amax, cur, m)
    return amax_kernel


@functools.lru_cache(maxsize=None)
def scale_kernel(IN: int, FS: tuple, CS: tuple, BC: tuple, want_codes: bool):
    """One thread per block: the scale value (``svals``, float64) and code (``scales``, when
    ``want_codes``) from the block's amax bits, by the CPU's per-block scale function."""
    nv = BC[B_RULE] == float(RULE_NVFP4)
    wide = IN == F64

    @cuda.jit(cache=True)
    def scale_kernel(amax, tamax, scales, svals):
        ts = tensor_scale_of(tamax[0], wide) if nv else 1.0
        B = with_tscale(BC, ts)
        start, stride = grid_start()
        for s in range(start, amax.size, stride):
            m = amax[s]
            sval, scode = _block_scale(bits_value(m, wide), nonfinite(m, wide), B, FS, CS)
            svals[s] = sval
            if want_codes:
                scales[s] = scode
    return scale_kernel


@functools.lru_cache(maxsize=None)
def element_kernel(IN: int, OUT: int, FE: tuple, CE: tuple, BC: tuple, NARROW: tuple,
                   want_codes: bool, want_out: bool):
    """Every element of blocks whose scales :func:`scale_kernel` wrote (grid-stride)."""
    sr = CE[core.C_MODE] == core.SR
    wide = IN == F64

    @cuda.jit(cache=True)
    def element_kernel(xb, svals, key, batch, R, C, tr, tc, codes, out):
        nbr = (R + tr - 1) // tr
        nbc = (C + tc - 1) // tc
        single = batch * nbr * nbc == 1
        start, stride = grid_start()
        for i in range(start, xb.size, stride):
            s = np.int64(0) if single else block_of(i, R, C, tr, tc, nbr, nbc)
            sval = svals[s]
            usable, pow2, recip = divisor(sval)
            code, ob = block_result(read_bits(xb[i], IN), i, sval, usable, pow2, recip, key, wide,
                                    FE, CE, BC, sr, OUT, NARROW)
            if want_codes:
                codes[i] = code
            if want_out:
                out[i] = ob
    return element_kernel


@functools.lru_cache(maxsize=None)
def block_decode_kernel(FE: tuple, esub: float, elimit: int, FS: tuple, ssub: float,
                        slimit: int, BC: tuple, check: bool, NARROW: tuple):
    """Values of a block encoding, as :meth:`fpformat.BlockFormat.decode` computes them
    (``element * scale``; ``0 * element`` where the scale is 0), bits of the output dtype;
    ``bad[0] = 1`` for an element or scale code outside its format (when ``check``)."""
    ints = BC[B_INT] == 1.0
    f32 = BC[block_kernels.B_F32] == 1.0
    nv = BC[B_RULE] == float(RULE_NVFP4)
    isignbit = np.int64(elimit >> 1)

    @cuda.jit(cache=True)
    def block_decode_kernel(codes, scales, ts, batch, R, C, tr, tc, out, bad):
        nbr = (R + tr - 1) // tr
        nbc = (C + tc - 1) // tc
        start, stride = grid_start()
        for i in range(start, codes.size, stride):
            s = block_of(i, R, C, tr, tc, nbr, nbc)
            sc = np.int64(scales[s])
            if f32:
                sb = f32_to_f64_bits(sc)
            else:
                if check and (sc < 0 or sc >= slimit):
                    bad[0] = 1
                sb = decoded_bits(sc, FS, ssub)
            c = np.int64(codes[i])
            if check and (c < 0 or c >= elimit):
                bad[0] = 1
            if ints:                                 # two's complement: k * quantum
                k = c - elimit if c >= isignbit else c
                eb = f64bits(np.float64(k) * esub)
            else:
                eb = decoded_bits(c, FE, esub)
            sval = np.int64(sb).view(np.float64)
            if nv and (sb & _ABS64) <= _INF64:
                sval = sval * ts                     # NaN only from a NaN ts: its sign
                sb = f64bits(sval) if sval == sval else f64bits(ts) & _SIGN64 | _QNAN64
            ev = np.int64(eb).view(np.float64)
            if (eb & _ABS64) > _INF64:               # NaN element: its sign (first operand)
                vb = eb
            elif (sb & _ABS64) > _INF64:             # NaN scale: its sign
                vb = sb
            else:
                v = 0.0 * ev if sval == 0.0 else ev * sval
                vb = f64bits(v) if v == v else _QNAN64 | DEFAULT_NAN_SIGN
            out[i] = narrow(vb, core.SRC_FLOAT64, NARROW)
    return block_decode_kernel


def _default_nan_sign() -> np.int64:
    """The sign bit of the NaN this CPU's invalid operations (``0 * inf``) produce: what the CPU
    decode gives for such a product, which the GPU then writes explicitly."""
    with np.errstate(invalid="ignore"):
        v = np.float64(0.0) * np.float64(np.inf)
    return np.int64(v.view(np.int64)) & _SIGN64


DEFAULT_NAN_SIGN = _default_nan_sign()
