"""The fast MX kernel: float32 input, E8M0 scales, blocks along the last axis or down the columns.

This is the hot path of MX fake-quantization (``get_format("mxfp4").quantize(x)`` on float32
data).  It computes exactly what :mod:`fpformat.block_kernels` and the plain-numpy path in
:mod:`fpformat.block` compute — the tests hold all three to each other and to an independent
reference — but stays in float32 bit patterns, so its element loop vectorises:

* ``amax``: an integer max over ``bits & 0x7FFFFFFF``, in 32-bit lanes (a NaN or an infinity
  shows as a value ``>= 0x7F800000``; the block's E8M0 code is then 255 and every element NaN,
  codes ``+0``, so the element loop only ever sees finite values);
* ``X = 2**e``, ``e = clamp(floor(log2 amax) - emax_elem, -127, 127)`` from amax's exponent
  field (subnormal amax: from its leading bit); ``e = -127`` for a zero block.  The amax rule
  rounded up into E8M0 (Transformer Engine's MXFP8 scales, ``e4m3/32/ue8m0/amax``) runs here
  too: ``e = clamp(ceil(log2(amax / element.max)), -127, 127)``, ``e = 0`` for a zero block;
* elements: the core rounds ``y = x * 2**-e`` without that multiplication.  Read with exponent
  bias ``127 + e`` instead of 127, ``x``'s own bits hold ``y``; the core rounds them in that
  *scaled source layout* and builds its result there, and those bits, read back as an ordinary
  float32, are the rounded ``y`` times ``2**e``: the fake-quantized value itself.  (Codes
  take the multiplying path below: the core encodes some 30 times faster from a layout fixed
  at compilation than from this one, a runtime tuple.)  The special results (``V``) are given
  as bits of that layout, i.e. their values times ``2**e``.  Everything is exact: the layout
  only renames exponents.  The core needs the element format's smallest normal exponent at or
  above the layout's (``1 - 127 - e``), true for every block unless its amax lies below about
  ``2**-120``;
* such tiny blocks (and codes) take the multiplying path: ``y = x * 2**-e`` in float32, exact unless
  ``|y| < 2**-126``.  Such a ``y`` lies far below half the element format's smallest subnormal
  (this kernel requires the element's quantum ``2**(emin - man_bits) >= 2**-22``), where every
  rounding mode decides on sign and "nonzero" alone (stochastic rounding never rounds up
  there: its threshold is 0), so for the directed modes (rtp, rtn, rto: the only ones that
  tell a tiny value from 0) it is replaced by ``±2**-126``, which rounds identically; then
  ``P = decode(encode(y))`` in the float32 layout and ``P * X`` in float32, exact: ``P*X`` is a
  multiple of ``2**(emin - man_bits - 127) >= 2**-149`` and below ``2**128``.

Values rounded to nearest even or stochastically (``quantize`` with ``rne`` or ``sr``: fake
quantization in training) skip the core where the element format is a signed float with
subnormals and ``±0`` (and, to nearest, at least one mantissa bit: every OCP element format):
the element step is float32 arithmetic in ``x``'s own units, no scaling needed.  Element ``x``
of a block with scale ``2**e`` has quantum ``q = 2**(max(floor(log2|x|), emin) - M + e)``, a
power of two read off ``x``'s exponent field.  To nearest, ``(|x| + 2**23 q) - 2**23 q`` is
``|x|`` rounded to nearest even on the multiples of ``q``
(:func:`fpformat.block_kernels.nearest_by_addition`); stochastically, ``|x| * (1 / q)`` splits
exactly into the lower neighbour's multiple and the dropped part, which decides as the core's
dropped bits do (:func:`fpformat.block_kernels.stochastic_by_scaling`: 1.0-1.1 against 1.3-1.5
ns per element for MXFP4 on 2048x64 float32, one thread, along rows and down columns).  Above
the element max times ``2**e`` the overflow result.  A block takes this path when ``2**(emin -
M + e)`` is a float32 normal and ``2**23`` times its largest quantum is finite (only blocks of
amax below about ``2**-109`` or above about ``2**105`` take the core).  Short and branch free,
the loop vectorises.  Along rows such blocks go by segments of a row's blocks (rows
that ``k`` divides end to end, as one long row), in loops over the segment that each
vectorise: the blocks' maxima, their scales and constants side by side, then the elements
block by block (:func:`_ocp_row_segment`).

Otherwise full blocks of values go through the element loop two at a time: two independent
chains per step let the processor overlap them (each waits for its block's scale).

Blocks down the columns of a 2-D array (``k`` rows by one column: the transposed operands of a
backward GEMM, quantized along the tokens) run columns side by side, a scale per vector lane.
There elements round by arithmetic with each lane's constants, as above, or take the
multiplying path: in the scaled layout the core's per-block constants would vary from lane to
lane and cost more than the two multiplications (1.0 against 1.7 ns per element with
round-to-nearest on 2048x256 float32, one thread; the general kernel 2.1).

Stochastic rounding draws element ``i``'s bits from its flat C-order index, as everywhere.
Like :mod:`fpformat.kernels`, one source is compiled generic (tuples as arguments) and
specialised (tuples as closure constants, compiled once a combination has processed enough
elements, or always under ``FPFORMAT_SPECIALIZE=always``).  The block length stays a runtime
argument in both: with a constant trip count the compiler unrolls a block's short loops fully,
and unrolled they no longer vectorise (numba leaves LLVM's SLP vectoriser off).  The per-block
scalar helpers are ``register_jitable`` functions rather than inlined numba IR, which keeps the
first compilation short.  Figures (speed, compile time): docs/block.md and
``benchmarks/bench_fpformat.py`` (the ``mxfp4`` rows).
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import prange
from numba.core.extending import register_jitable

from . import core, scales
from .block_kernels import (
    _absmax_run,
    absmax_32,
    absmax_bits,
    int_code,
    nearest_by_addition,
    rounds_by_addition,
    rounds_stochastically,
    stochastic_by_scaling,
)
from .dispatch import (
    JIT,
    SERIAL_JIT,
    HashedKey,
    IdentityCache,
    njit_as,
    prefer_specialized,
    seed_key,
    threads_for,
    want_specialized,
)
from .rounding import call_tuple, value_tuple

_ABS = np.int64(0x7FFFFFFF)
_INF = np.int64(0x7F800000)
_MIN_NORMAL = np.int64(0x00800000)
_NO_CAP = np.uint32(0x7F800000)  # nearest_by_addition's cap: a block that fits needs none
_ONE = np.float32(1.0)            # the scaled layout's results need no multiplication


@register_jitable
def _pow2_f32(e):
    """``2.0**e`` as a float32 for ``-127 <= e <= 127`` (``2**-127`` is subnormal)."""
    bits = ((e + 127) << 23) if e > -127 else np.int64(1 << 22)
    return np.uint32(bits).view(np.float32)


@register_jitable
def _ocp_exponent(m, emax_elem):
    """The OCP scale exponent for a block whose largest magnitude has float32 bits ``m``."""
    fe = m >> 23
    if fe > 0:
        flog2 = fe - 127
    else:                                    # subnormal (or zero) amax: its leading bit
        lead = (np.int64(np.float64(m).view(np.int64)) >> 52) - 1023
        flog2 = lead - 149
    e = flog2 - emax_elem if m > 0 else np.int64(-127)
    return min(max(e, np.int64(-127)), np.int64(127))


@register_jitable
def _block_exponent(m, R):
    """The E8M0 scale exponent of a block whose largest magnitude has float32 bits ``m``, by the
    rule ``R = (emax_elem, max_up)``: OCP's when ``max_up`` is 0, else the amax rule rounded up
    into E8M0 (``2**ceil(log2(amax / max_up))``, ``max_up`` the element max; a zero block gets
    scale 1), both clamped to E8M0's ``[-127, 127]``."""
    if R[1] == 0.0:
        return _ocp_exponent(m, np.int64(R[0]))
    if m == 0:
        return np.int64(0)
    if m >= _MIN_NORMAL:
        # amax = 2**ea * 1.fa and max = 2**em * 1.fm, so ceil(log2(amax / max)) is ea - em,
        # plus 1 when fa > fm: the bits' difference divided by 2**23, rounded up
        top = np.int64(np.float32(R[1]).view(np.uint32))
        e = (m - top + np.int64(0x7FFFFF)) >> 23
        return min(max(e, np.int64(-127)), np.int64(127))
    # a subnormal amax: amax / max in float64 is a power of two only when the exact quotient
    # is one (amax and max * 2**e lie on one 24-bit grid), so rounding it up gives the ceiling
    q = np.float64(np.uint32(m).view(np.float32)) / R[1]
    qb = np.int64(np.float64(q).view(np.int64))
    e = ((qb >> 52) & 0x7FF) - 1023 + (1 if qb & 0xFFFFFFFFFFFFF else 0)
    return min(max(e, np.int64(-127)), np.int64(127))


@register_jitable
def _scaled_bits(v, X):
    """Float32 bits ``v`` of a special result, as the bits of its value times ``X`` (exact here;
    zero, inf and NaN stay as they are)."""
    a = v & _ABS
    scaled = np.int64(np.float32(np.uint32(v).view(np.float32) * X).view(np.uint32))
    return v if a == 0 or a >= _INF else scaled


@register_jitable
def _scaled_layout(e):
    """The source layout that has the core round ``x * 2**-e`` straight from ``x``'s float32
    bits: read with exponent bias ``127 + e`` the same bits hold a value ``2**-e`` times
    smaller, and the core's result, built in that layout, read back as an ordinary float32 is
    the rounded value times ``2**e``."""
    f32 = core.SRC_FLOAT32
    return (f32[core.S_M], np.int64(f32[core.S_BIAS]) + e, f32[core.S_EMASK],
            f32[core.S_SIGNSHIFT])


@register_jitable
def _scaled_values(e, V):
    """The value tuple for :func:`_scaled_layout`: each special result's float32 bits as the
    bits of its value times ``2**e``."""
    X = _pow2_f32(e)
    return (_scaled_bits(V[0], X), _scaled_bits(V[1], X), _scaled_bits(V[2], X),
            _scaled_bits(V[3], X), _scaled_bits(V[4], X), _scaled_bits(V[5], X),
            _scaled_bits(V[6], X), _scaled_bits(V[7], X), _scaled_bits(V[8], X),
            _scaled_bits(V[9], X), _scaled_bits(V[10], X), _scaled_bits(V[11], X))


@register_jitable
def _in_layout(e, F):
    """Whether the scaled layout of :func:`_scaled_layout` serves a block with exponent ``e``:
    the core needs the format's smallest normal exponent at or above the layout's
    (``1 - (127 + e)``).  Only blocks with a tiny amax (below about ``2**-120``) fall outside."""
    return F[core.F_EMIN] >= -126 - e


@register_jitable
def _by_arithmetic(F, C, want_codes, int_codes):
    """Whether the element step rounds by float32 arithmetic in ``x``'s own units (module
    docstring) instead of the core: values only, to nearest even by additions
    (:func:`fpformat.block_kernels.rounds_by_addition`) or stochastically by scaling to the
    quantum (:func:`fpformat.block_kernels.rounds_stochastically`)."""
    return not want_codes and not int_codes and (rounds_by_addition(F, C)
                                                 or rounds_stochastically(F, C))


@register_jitable
def _arithmetic_constants(e, m, F, V):
    """The per-block constants of :func:`fpformat.block_kernels.nearest_by_addition` and
    :func:`fpformat.block_kernels.stochastic_by_scaling` for scale exponent ``e`` and a
    largest magnitude with float32 bits ``m``: ``(fits, floor, max_x, ovf_pos, ovf_neg)``.

    ``floor`` is the exponent field of the smallest quantum, ``2**(emin - M + e)``, plus ``M``
    (so ``max(exponent field, floor) - M`` is each element's quantum); ``max_x`` the largest
    element value times ``2**e`` (float32); ``ovf_*`` the overflow results' bits times
    ``2**e``.  ``fits``: the smallest quantum is a float32 normal and ``2**23`` times the
    block's largest quantum is finite, which the addition needs (so every quantum ``q`` lies
    in ``[2**-126, 2**104]`` and ``1 / q`` is a normal too, which the scaling needs)."""
    M = F[core.F_M]
    sub_field = F[core.F_EMIN] - M + e + 127
    fits = sub_field >= 1 and sub_field <= 231 and (m >> 23) <= 231 + M
    X = _pow2_f32(e)
    max_x = np.float32(np.uint32(V[core.V_MAXBITS]).view(np.float32) * X)
    return (fits, np.uint32((sub_field + M) << 23) if fits else np.uint32(0), max_x,
            np.uint32(_scaled_bits(V[core.V_OVF_POS], X)),
            np.uint32(_scaled_bits(V[core.V_OVF_NEG], X)))


@numba.njit(inline="always")
def _arithmetic_element(b, z, C, floor, M, max_x, ovf_pos, ovf_neg):
    """An element (float32 bits ``b``; ``z`` its random stream's counter,
    :func:`fpformat.core.sr_counter`, which the caller's loop advances by an addition) of a
    block that rounds by arithmetic (constants from :func:`_arithmetic_constants`): its value,
    to nearest even by additions or stochastically by scaling, as the call's mode says."""
    if C[core.C_MODE] == core.SR:
        v = stochastic_by_scaling(b, core.sr_from_counter(z), floor, _NO_CAP, M, max_x, ovf_pos,
                                  ovf_neg, C[core.C_SR_BITS])
    else:
        v = nearest_by_addition(b, floor, _NO_CAP, M, max_x, ovf_pos, ovf_neg)
    return np.uint32(v).view(np.float32)


@numba.njit(inline="always")
def _ocp_element(b, i, S, F, C, V, X, key, codes, out, want_codes, want_out, int_codes):
    """Element ``i``, given as bits ``b`` of source layout ``S``: its code, and its value (the
    core's result in layout ``S`` read as a float32, times ``X``)."""
    u = core.sr_random(key, i) if C[core.C_MODE] == core.SR else np.uint64(0)
    if want_codes:
        c = core.encode_bits(b, S, F, C, u)
        codes[i] = int_code(c, F[core.F_SIGNBIT]) if int_codes else c
    if want_out:
        v = np.uint32(core.quantize_bits(b, S, F, C, V, u)).view(np.float32) * X
        out[i] = v + np.float32(0) if int_codes else v       # + 0: no -0 among integers


@numba.njit(inline="always")
def _nonfinite_block_element(i, C, codes, out, want_codes, want_out):
    """Element ``i`` of a block holding a NaN or an infinity (scale code 255): code +0, value
    NaN."""
    if want_codes:
        codes[i] = C[core.C_ZERO_POS]
    if want_out:
        out[i] = np.float32(np.nan)


@numba.njit(inline="always")
def _quotient_bits(x, xb, i, inv, C):
    """Float32 bits of ``x[i] * inv`` for the multiplying path (blocks outside
    :func:`_in_layout`)."""
    mode = C[core.C_MODE]
    yb = np.int64(np.float32(x[i] * inv).view(np.uint32))
    if mode == core.RTP or mode == core.RTN or mode == core.RTO:
        # |y| < 2**-126 (inexact or flushed): the same rounding as any tiny value of its sign.
        # Only the directed modes see the difference between such a y and 0.
        tiny = (yb & _ABS) < _MIN_NORMAL and (np.int64(xb[i]) & _ABS) != 0
        yb = ((yb & ~_ABS) | _MIN_NORMAL) if tiny else yb
    return yb


@numba.njit(inline="always")
def _ocp_block(x, xb, lo, n, F, C, V, R, key, codes, out, want_codes, want_out,
               int_codes):
    """One block: the ``n`` elements from flat index ``lo`` (uint64: no wraparound checks in the
    loops) of the flat arrays ``x`` (float32), ``xb`` (its bits), ``codes`` and ``out``.
    Returns the block's E8M0 code."""
    m = np.uint32(0)
    for j in range(n):                                       # 32-bit integer max: vectorises
        m = absmax_bits(m, xb[lo + np.uint64(j)])
    mm = np.int64(m)
    if mm >= _INF:                                           # NaN or inf in the block
        for j in range(n):
            _nonfinite_block_element(lo + np.uint64(j), C, codes, out, want_codes, want_out)
        return np.int64(255)
    e = _block_exponent(mm, R)
    if _by_arithmetic(F, C, want_codes, int_codes):     # the other modes need no constants
        fits, floor, max_x, ovf_pos, ovf_neg = _arithmetic_constants(e, mm, F, V)
        if fits:
            z = core.sr_counter(key, lo)
            for j in range(n):
                i = lo + np.uint64(j)
                out[i] = _arithmetic_element(xb[i], z, C, floor, F[core.F_M], max_x, ovf_pos,
                                             ovf_neg)
                z += core.SR_STEP
            return e + 127
    if _in_layout(e, F) and not want_codes:
        S, Vs = _scaled_layout(e), _scaled_values(e, V)
        for j in range(n):
            i = lo + np.uint64(j)
            _ocp_element(np.int64(xb[i]), i, S, F, C, Vs, _ONE, key, codes, out, want_codes,
                         want_out, int_codes)
    else:
        inv, X = _pow2_f32(-e), _pow2_f32(e)
        for j in range(n):
            i = lo + np.uint64(j)
            _ocp_element(_quotient_bits(x, xb, i, inv, C), i, core.SRC_FLOAT32, F, C, V, X, key,
                         codes, out, want_codes, want_out, int_codes)
    return e + 127


@numba.njit(inline="always")
def _ocp_pair(x, xb, lo, n, t, F, C, V, R, key, codes, scales, out, want_codes,
              want_out, int_codes):
    """Blocks ``t`` and ``t + 1``, of ``n`` elements from ``lo``, in one element loop (see the
    module docstring).  Returns False, having written nothing, where either block needs the
    one-block path (a NaN or an infinity, or a tiny amax)."""
    lo2 = lo + np.uint64(n)
    m1 = np.uint32(0)
    m2 = np.uint32(0)
    for j in range(n):
        m1 = absmax_bits(m1, xb[lo + np.uint64(j)])
        m2 = absmax_bits(m2, xb[lo2 + np.uint64(j)])
    e1 = _block_exponent(np.int64(m1), R)
    e2 = _block_exponent(np.int64(m2), R)
    if (np.int64(m1) >= _INF or np.int64(m2) >= _INF
            or not (_in_layout(e1, F) and _in_layout(e2, F))):
        return False
    S1, V1 = _scaled_layout(e1), _scaled_values(e1, V)
    S2, V2 = _scaled_layout(e2), _scaled_values(e2, V)
    for j in range(n):
        i1, i2 = lo + np.uint64(j), lo2 + np.uint64(j)
        _ocp_element(np.int64(xb[i1]), i1, S1, F, C, V1, _ONE, key, codes, out, want_codes,
                     want_out, int_codes)
        _ocp_element(np.int64(xb[i2]), i2, S2, F, C, V2, _ONE, key, codes, out, want_codes,
                     want_out, int_codes)
    scales[t] = e1 + 127
    scales[t + 1] = e2 + 127
    return True


#: :func:`_ocp_block` compiled once on its own and called, not inlined, where a kernel needs it
#: rarely (inlined, its core paths would be compiled into every kernel again: 5-6 s each).
_ocp_block_apart = njit_as(_ocp_block.py_func, "_apart", SERIAL_JIT)


#: Blocks per segment of :func:`_ocp_row_segment` (its scratch stays in the L1 cache), and
#: segments per parallel work item (each allocates its scratch once).
ROW_SEGMENT_BLOCKS = 64
SEGMENTS_PER_RUN = 8


@numba.njit(inline="always")
def _ocp_row_segment(x, xb, base, w, k, first, F, C, V, R, key, codes, scales, out, blockmax,
                     lane):
    """The blocks of ``k`` elements along one row covering the flat elements ``[base, base +
    w)`` (the last one shorter where ``k`` does not divide ``w``), their scale codes written to
    ``scales[first:]``, rounded by arithmetic (:func:`_by_arithmetic`) in four steps whose
    loops vectorise: (1) each block's largest magnitude; (2) each block's scale code and
    constants (:func:`_arithmetic_constants`), side by side; (3) every element with its
    block's constants; (4) the blocks the arithmetic does not serve (a NaN or an infinity
    inside, or a scale out of its range) again, one at a time (:func:`_ocp_block`, called).
    ``blockmax`` (int64) and ``lane`` (uint32, ``(4, n)``): scratch of at least the segment's
    blocks.  (Block by block instead, MXFP4 on 2048 x 64 float32 took 2.0 ns an element
    stochastically and 1.7 to nearest, one thread, Intel Xeon; this way 1.0 and 0.5.)"""
    M = F[core.F_M]
    ku = np.uint64(k)
    wu = np.uint64(w)
    nfull = wu // ku
    nblocks = (w + k - 1) // k
    # 1. Each block's largest magnitude, as float32 bits (NaN/inf: the largest).
    for t in range(nfull):
        lo = base + np.uint64(t) * ku
        if k == 32:
            blockmax[t] = np.int64(absmax_32(xb, lo))
        else:
            blockmax[t] = np.int64(_absmax_run(xb, lo, lo + ku, np.uint32(0)))
    if nfull < nblocks:
        blockmax[nfull] = np.int64(_absmax_run(xb, base + nfull * ku, base + wu, np.uint32(0)))
    # 2. Each block's scale code and its constants (those of a zero block where it holds a
    # NaN or an infinity: step 4 rewrites it).  A block step 3 does not serve keeps _INF as
    # its maximum, step 4's mark.
    unserved = 0
    for t in range(nblocks):
        m = blockmax[t]
        finite = m < _INF
        e = _block_exponent(m, R) if finite else np.int64(0)
        fits, lane[0, t], max_x, lane[2, t], lane[3, t] = _arithmetic_constants(
            e, m if finite else np.int64(0), F, V)
        lane[1, t] = np.float32(max_x).view(np.uint32)
        scales[first + t] = e + 127
        served = finite and fits
        blockmax[t] = m if served else _INF
        unserved += 0 if served else 1
    # 3. Every element, by arithmetic with its block's constants.
    for t in range(nblocks):
        floor, max_x = lane[0, t], np.uint32(lane[1, t]).view(np.float32)
        ovf_pos, ovf_neg = lane[2, t], lane[3, t]
        lo = base + np.uint64(t) * ku
        z = core.sr_counter(key, lo)
        for i in range(lo, min(lo + ku, base + wu)):
            out[i] = _arithmetic_element(xb[i], z, C, floor, M, max_x, ovf_pos, ovf_neg)
            z += core.SR_STEP
    if unserved == 0:
        return
    # 4. The blocks step 3 did not serve, through the one-block path.
    for t in range(nblocks):
        if blockmax[t] < _INF:
            continue
        lo = base + np.uint64(t) * ku
        scales[first + t] = _ocp_block_apart(x, xb, lo, min(k, np.int64(base + wu - lo)), F, C,
                                             V, R, key, codes, out, False, True, False)


@numba.njit(inline="always")
def _ocp_rows(x, xb, L, k, F, C, V, R, key, codes, scales, out, want_codes, want_out,
              int_codes):
    """All blocks of the flat C-order arrays holding ``(x.size // L, L)`` rows; ``scales`` is
    the flat ``(rows, blocks per row)`` array.  Values rounded by arithmetic go by segments of
    a row's blocks (:func:`_ocp_row_segment`).  Where the core rounds, blocks go in pairs
    through :func:`_ocp_pair` when ``k`` divides ``L``, otherwise (and where a pair declines)
    one at a time."""
    nb = (L + k - 1) // k
    total = (x.size // L) * nb
    if _by_arithmetic(F, C, want_codes, int_codes):
        # segments of a row's blocks (rows that k divides run end to end as one long row:
        # the same blocks, the same scale indices)
        row = x.size if L % k == 0 else L
        nbr = (row + k - 1) // k
        ng = (nbr + ROW_SEGMENT_BLOCKS - 1) // ROW_SEGMENT_BLOCKS
        nseg = (x.size // row) * ng
        for run in prange((nseg + SEGMENTS_PER_RUN - 1) // SEGMENTS_PER_RUN):
            blockmax = np.empty(min(nbr, ROW_SEGMENT_BLOCKS), dtype=np.int64)
            lane = np.empty((4, min(nbr, ROW_SEGMENT_BLOCKS)), dtype=np.uint32)
            for sg in range(run * SEGMENTS_PER_RUN, min(run * SEGMENTS_PER_RUN + SEGMENTS_PER_RUN,
                                                        nseg)):
                r = sg // ng
                b0 = (sg - r * ng) * ROW_SEGMENT_BLOCKS
                c0 = b0 * k
                _ocp_row_segment(x, xb, np.uint64(r * row + c0),
                                 min(ROW_SEGMENT_BLOCKS * k, row - c0), k, r * nbr + b0, F, C,
                                 V, R, key, codes, scales, out, blockmax, lane)
        return
    # codes take the multiplying path (the core encodes from a source layout known when it is
    # compiled some 30 times faster than from the scaled layout, a runtime tuple)
    full = L % k == 0 and not want_codes
    for p in prange((total + 1) // 2):
        t0 = 2 * p
        if full and t0 + 1 < total and _ocp_pair(
                x, xb, np.uint64(t0) * np.uint64(k), k, t0, F, C, V, R, key, codes,
                scales, out, want_codes, want_out, int_codes):
            continue
        for t in range(t0, min(t0 + 2, total)):
            r = t // nb
            b = t - r * nb
            scales[t] = _ocp_block(x, xb, np.uint64(r * L + b * k), min(k, L - b * k), F, C, V,
                                   R, key, codes, out, want_codes, want_out, int_codes)


@numba.njit(inline="always")
def _ocp_column_segment(x, xb, r0, r1, c0, w, N, F, C, V, R, key, codes, scales, srow, out,
                        want_codes, want_out, int_codes, colmax, inv, power, lane):
    """The blocks down columns ``[c0, c0 + w)`` of rows ``[r0, r1)`` of the flat C-order
    ``(rows, N)`` arrays: one block per column, its E8M0 code written to the flat ``scales`` at
    ``srow * N + column``.  ``colmax`` (uint32), ``inv`` and ``power`` (float32): scratch of
    ``w`` entries, ``lane`` (uint32) of ``(4, w)``.  Columns go side by side through each loop
    (a block's elements lie ``N`` apart), so the scale differs from lane to lane: elements
    round by float32 arithmetic with each lane's constants where :func:`_by_arithmetic` allows
    and every lane fits, else every element takes the multiplying path (``x * 2**-e``,
    rounded, times ``2**e``; module docstring), which needs no per-block constants beyond the
    two powers of two (the scaled layout would, and per lane they cost more than the two
    multiplications)."""
    # 1. Each column's largest magnitude, as float32 bits (NaN/inf: the largest).
    colmax[:w] = 0
    for r in range(r0, r1):
        base = np.uint64(r * N + c0)
        for j in range(np.uint64(w)):
            colmax[j] = absmax_bits(colmax[j], xb[base + j])
    # 2. Each column's scale exponent (0 where the column holds a NaN or an infinity: step 4
    # rewrites those columns) and its constants for the arithmetic.
    nonfinite = 0
    arithmetic = _by_arithmetic(F, C, want_codes, int_codes)
    for j in range(w):
        m = np.int64(colmax[j])
        e = _block_exponent(m, R) if m < _INF else np.int64(0)
        inv[j] = _pow2_f32(-e)
        power[j] = _pow2_f32(e)
        scales[np.uint64(srow * N + c0 + j)] = e + 127 if m < _INF else 255
        nonfinite += 0 if m < _INF else 1
        if arithmetic:                       # the other modes, and codes, need no constants
            fits, lane[0, j], max_x, lane[2, j], lane[3, j] = _arithmetic_constants(
                e, m if m < _INF else np.int64(0), F, V)
            lane[1, j] = np.float32(max_x).view(np.uint32)
            arithmetic = fits or m >= _INF
    # 3. Every element: by arithmetic, or x * 2**-e rounded by the core, times 2**e.
    if arithmetic:
        M = F[core.F_M]
        floor, max_bits, ovf_pos, ovf_neg = lane[0], lane[1], lane[2], lane[3]
        for r in range(r0, r1):
            base = np.uint64(r * N + c0)
            z = core.sr_counter(key, base)
            for j in range(np.uint64(w)):
                i = base + j
                out[i] = _arithmetic_element(xb[i], z, C, floor[j], M,
                                             np.uint32(max_bits[j]).view(np.float32),
                                             ovf_pos[j], ovf_neg[j])
                z += core.SR_STEP
    else:
        for r in range(r0, r1):
            base = np.uint64(r * N + c0)
            for j in range(np.uint64(w)):
                i = base + j
                _ocp_element(_quotient_bits(x, xb, i, inv[j], C), i, core.SRC_FLOAT32, F, C,
                             V, power[j], key, codes, out, want_codes, want_out, int_codes)
    if nonfinite == 0:
        return
    # 4. Columns holding a NaN or an infinity: every element NaN, codes +0.
    for j in range(w):
        if np.int64(colmax[j]) < _INF:
            continue
        for r in range(r0, r1):
            _nonfinite_block_element(np.uint64(r * N + c0 + j), C, codes, out, want_codes,
                                     want_out)


#: Columns per segment of :func:`_ocp_columns` (its scratch stays in the L1 cache).
COLUMN_SEGMENT = 1024


@numba.njit(inline="always")
def _ocp_columns(x, xb, N, k, F, C, V, R, key, codes, scales, out, want_codes, want_out,
                 int_codes):
    """All blocks of ``k`` rows down the columns of the flat C-order ``(x.size // N, N)``
    arrays; ``scales`` is the flat ``(ceil(rows / k), N)`` array.  Segments of
    :data:`COLUMN_SEGMENT` columns of one block row are the parallel work items."""
    rows = x.size // N
    tile_rows = (rows + k - 1) // k
    nseg = (N + COLUMN_SEGMENT - 1) // COLUMN_SEGMENT
    width = min(N, COLUMN_SEGMENT)
    total = tile_rows * nseg
    for t in prange(total):
        tr = t // nseg
        c0 = (t - tr * nseg) * COLUMN_SEGMENT
        _ocp_column_segment(x, xb, tr * k, min(tr * k + k, rows), c0, min(width, N - c0), N,
                            F, C, V, R, key, codes, scales, tr, out, want_codes, want_out,
                            int_codes, np.empty(width, dtype=np.uint32),
                            np.empty(width, dtype=np.float32), np.empty(width, dtype=np.float32),
                            np.empty((4, width), dtype=np.uint32))


# Each kernel compiled with threads and, for runs on one thread, without: entering a parallel
# region costs a call more than the work of a small block (MXFP4, stochastic rounding, one
# thread, AMD EPYC: 13.7 against 19.8 us on 64 x 64 float32 down the columns; 399 against
# 435 us on 2048 x 176, so the one-thread compilation is no slower on large ones either).
def _columns_source(x, xb, N, k, F, C, V, R, key, codes, scales, out, want_codes, want_out,
                    int_codes):
    _ocp_columns(x, xb, N, k, F, C, V, R, key, codes, scales, out, want_codes, want_out,
                 int_codes)


_columns_generic = numba.njit(**JIT)(_columns_source)
_columns_generic_serial = njit_as(_columns_source, "_serial", SERIAL_JIT)


@functools.lru_cache(maxsize=None)
def _columns_specialized(F, C, V, R, want_codes, want_out, int_codes, serial=False):
    def columns_specialized(x, xb, N, k, key, codes, scales, out):
        _ocp_columns(x, xb, N, k, F, C, V, R, key, codes, scales, out, want_codes, want_out,
                     int_codes)
    if serial:
        return njit_as(columns_specialized, "_serial", SERIAL_JIT)
    return numba.njit(**JIT)(columns_specialized)


def _ocp_source(x, xb, L, k, F, C, V, R, key, codes, scales, out, want_codes, want_out,
                int_codes):
    _ocp_rows(x, xb, L, k, F, C, V, R, key, codes, scales, out, want_codes, want_out,
              int_codes)


_ocp_generic = numba.njit(**JIT)(_ocp_source)
_ocp_generic_serial = njit_as(_ocp_source, "_serial", SERIAL_JIT)


@functools.lru_cache(maxsize=None)
def _ocp_specialized(F, C, V, R, want_codes, want_out, int_codes, serial=False):
    # The block length stays a runtime argument: a constant trip count would have the compiler
    # unroll the block's short loops fully, and unrolled they no longer vectorise.
    def ocp_specialized(x, xb, L, k, key, codes, scales, out):
        _ocp_rows(x, xb, L, k, F, C, V, R, key, codes, scales, out, want_codes, want_out,
                  int_codes)
    if serial:
        return njit_as(ocp_specialized, "_serial", SERIAL_JIT)
    return numba.njit(**JIT)(ocp_specialized)


def _finite_inputs(C, V):
    """``C`` and ``V`` with the results for NaN and inf inputs set to the overflow results.
    The element loop here only sees finite ``x * 2**-e`` (a block holding a NaN or an infinity
    never reaches it), and with those results equal the core leaves its NaN and inf checks
    out."""
    C, V = list(C), list(V)
    C[core.C_NAN_POS] = C[core.C_INF_POS] = C[core.C_OVF_POS]
    C[core.C_NAN_NEG] = C[core.C_INF_NEG] = C[core.C_OVF_NEG]
    V[core.V_NAN_POS] = V[core.V_INF_POS] = V[core.V_OVF_POS]
    V[core.V_NAN_NEG] = V[core.V_INF_NEG] = V[core.V_OVF_NEG]
    return tuple(C), tuple(V)


def ocp_f32_applies(fmt, dtype) -> bool:
    """Whether this kernel computes ``fmt`` on 2-D arrays of ``dtype`` (blocks along their last
    axis or down their columns): float32 data, E8M0 scales by the OCP rule or the amax rule
    rounded up, an element format whose values (and their products with any E8M0 scale of a
    float32 block) are float32 values."""
    el = fmt.element
    rule = fmt.scale_rule == "ocp" or (fmt.scale_rule == "amax" and fmt.scale_rounding == "up")
    return (dtype == np.float32 and rule and fmt.tile is None and fmt.scale_is_e8m0
            and el.man_bits <= 23 and el.emin >= -126 and el.emin - el.man_bits >= -22)


@functools.lru_cache(maxsize=256)
def kernel_tuples(fmt, rounding: str, saturate: bool, sr_bits):
    """The kernel's constant tuples ``(F, C, V, R)`` for ``fmt`` with these options (computed
    once: a training step makes a hundred calls with the same few)."""
    el = fmt.element
    C = call_tuple(el, rounding, saturate, sr_bits)
    C, V = _finite_inputs(C, value_tuple(el, C, core.SRC_FLOAT32))
    R = (np.int64(scales.emax_elem(el)), 0.0 if fmt.scale_rule == "ocp" else float(el.max))
    return el.params, C, V, R


def _key(F, C, R, want_codes: bool, want_out: bool, int_codes: bool, columns: bool) -> tuple:
    return HashedKey(("mx32-columns" if columns else "mx32", F, C, R, want_codes, want_out,
                      int_codes))


#: ``_key_of.get(tuples, (want_codes, want_out, int_codes, columns))``: :func:`_key` of a
#: :func:`kernel_tuples` result, made once per tuples (building and hashing the key per call
#: cost 1.7 us of an 8 us call on 32 x 32)
_key_of = IdentityCache(lambda tuples, *flags: _key(tuples[0], tuples[1], tuples[3], *flags))


def specialize(fmt, rounding: str, saturate: bool, sr_bits) -> None:
    """Have this kernel's next encode and quantize calls for ``fmt`` with these options run
    specialised (compiled then, or loaded from numba's cache), along rows and down columns."""
    F, C, _, R = kernel_tuples(fmt, rounding, saturate, sr_bits)
    for want_codes, want_out in ((True, False), (False, True)):
        for columns in (False, True):
            prefer_specialized(_key(F, C, R, want_codes, want_out, fmt.int_codes, columns))


def scale_shape(shape: tuple[int, int], k: int, down_columns: bool) -> tuple[int, int]:
    """The E8M0 scale codes' shape for a ``shape`` input with blocks of ``k`` along its rows
    (``(rows, ceil(L / k))``) or down its columns (``(ceil(rows / k), L)``)."""
    rows, L = shape
    return (-(-rows // k), L) if down_columns else (rows, -(-L // k))


def launch_ocp_f32(fmt, tuples: tuple, x1: np.ndarray, L: int, k: int, key: np.uint64,
                   codes: np.ndarray, scale_codes: np.ndarray, out: np.ndarray,
                   want_codes: bool, want_out: bool, down_columns: bool) -> None:
    """The kernel call of :func:`run_ocp_f32` on the flat float32 data ``x1`` seen as
    ``(x1.size // L, L)``, with ``tuples`` from :func:`kernel_tuples`, specialised or generic as
    :func:`fpformat.dispatch.want_specialized` says: ``codes`` and/or ``out`` and the flat
    ``scale_codes`` filled in."""
    F, C, V, R = tuples
    ic = fmt.int_codes
    xb = x1.view(np.uint32)
    scope = threads_for(x1.size)
    with scope:
        # A run on one thread takes the one-thread twins; the small calls of a threaded run
        # (one thread each, too) keep the threaded compilation, whose specialised kernels
        # that run has compiled already (each twin costs another 5-20 s to compile).
        serial = scope.saved == 1
        if down_columns:
            generic = _columns_generic_serial if serial else _columns_generic
            specialized = _columns_specialized
        else:
            generic = _ocp_generic_serial if serial else _ocp_generic
            specialized = _ocp_specialized
        if want_specialized(_key_of.get(tuples, (want_codes, want_out, ic, down_columns)),
                            x1.size):
            specialized(F, C, V, R, want_codes, want_out, ic, serial)(
                x1, xb, L, k, key, codes, scale_codes, out)
        else:
            generic(x1, xb, L, k, F, C, V, R, key, codes, scale_codes, out, want_codes,
                    want_out, ic)


def run_ocp_f32(fmt, x2: np.ndarray, k: int, rounding: str, saturate: bool, seed, sr_bits,
                want_codes: bool, want_out: bool, out: np.ndarray | None = None,
                down_columns: bool = False):
    """Run the kernel on the C-contiguous float32 ``(rows, L)`` array ``x2`` with blocks of
    ``k`` along its last axis, or with ``down_columns`` of ``k`` rows down each column.
    Returns ``(codes or None, E8M0 scale codes, out or None)``, the scales shaped ``(rows,
    ceil(L / k))`` (down the columns: ``(ceil(rows / k), L)``); ``out`` (float32, ``x2``'s
    shape) may be given to write into."""
    el = fmt.element
    tuples = kernel_tuples(fmt, rounding, saturate, sr_bits)
    rows, L = x2.shape
    sshape = scale_shape(x2.shape, k, down_columns)
    x1 = np.ascontiguousarray(x2).reshape(-1)
    codes = np.empty(x1.size if want_codes else 1, dtype=el.dtype)
    scale_codes = np.empty(sshape[0] * sshape[1], dtype=np.uint8)
    if want_out:
        out = np.empty(x1.size, dtype=np.float32) if out is None else out.reshape(-1)
    else:
        out = np.empty(1, dtype=np.float32)
    launch_ocp_f32(fmt, tuples, x1, L, k, seed_key(seed, tuples[1][core.C_MODE]), codes,
                   scale_codes, out, want_codes, want_out, down_columns)
    return (codes.reshape(rows, L) if want_codes else None), scale_codes.reshape(sshape), \
        (out.reshape(rows, L) if want_out else None)
