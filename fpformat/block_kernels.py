"""The fused block-scaling kernel: per block, amax, scale and element rounding.

Blocks run along the last axis of a C-contiguous 2-D view ``(rows, L)``; block ``b`` of a row
holds elements ``[b*k, min((b+1)*k, L))``, or, for 2-D tiles of ``R`` rows, those elements of
``R`` consecutive rows (``k = 1``: blocks down the columns).  The kernel works through
*segments*, a run of about :data:`SEGMENT_COLUMNS` columns of one tile row, in four steps whose
loops are free of early exits so that they vectorise: (1) each block's largest magnitude, as an
integer max over the bits (a block along a row straight from the data, a tile by way of each
column's largest over the tile's rows); (2) each block's scale by the format's rule, rounded
into the scale format through the scalar core (:func:`fpformat.core.encode_bits`), or to
nearest even with saturation by a float64 addition (:func:`nearest_scale`); (3) block
by block, every element ``x / scale`` rounded into the element format by the core, written as
a code or, for quantize, as ``decode(code) * scale`` (the block's scale read once, outside the
loop over its elements; per column for blocks down the columns; round-to-nearest into a 4-bit
float from float32 data compares instead, see :func:`nearest_table`, other values rounded to
nearest even into a float format take float64 additions, :func:`nearest_by_addition64`: 1.4-1.7x
faster side by side on E4M3 blocks of 128, 128x128 tiles and columns, and stochastically
rounded values float64 scaling to the quantum, :func:`stochastic_by_scaling64`, the random
stream's counter advanced by an addition per element, :func:`fpformat.core.sr_counter`); (4) blocks
whose scale is NaN, zero or infinite, rewritten.  Rows whose length is a multiple of ``k`` run
end to end as one long row (the same blocks).
:mod:`fpformat.block` holds the semantics and the plain-numpy path (tiles, other axes) that the
tests hold this kernel to.

Like :mod:`fpformat.kernels`, each loop is compiled generic (tuples as arguments) and specialised
(tuples as compile-time constants) once a combination has processed enough elements.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.core.extending import intrinsic, register_jitable

from . import core
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
    """(scale value, scale code or float32 bits) for a block with largest magnitude ``amax``,
    (NaN, the scale format's NaN code) when the block holds a NaN or an infinity (``bad``).
    Selects, not branches: a loop over blocks vectorises."""
    val, code = _rule_scale(amax if not bad else 0.0, B, FS, CS)
    return (np.nan if bad else val), (np.int64(B[B_SNAN]) if bad else code)


@numba.njit(inline="always")
def _rule_scale(amax, B, FS, CS):
    """(scale value, scale code or float32 bits) by the format's rule for finite ``amax``."""
    rule = np.int64(B[B_RULE])
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
    if scales_by_addition(FS, CS):
        code, val = nearest_scale(s, FS, B[B_SSUB])
    else:
        code = core.encode_bits(_f64bits(s), core.SRC_FLOAT64, FS, CS, np.uint64(0))
        val = core.decode_code(code, FS, B[B_SSUB])
    if rule == RULE_NVFP4:
        val = val * B[B_TSCALE]
    return val, code


@register_jitable
def scales_by_addition(FS, CS) -> bool:
    """Whether :func:`nearest_scale` rounds block scales into the scale format ``FS`` for the
    call ``CS``: to nearest even, saturating (a positive overflow gives the largest code), on a
    grid with zero, subnormals and at least one mantissa bit (code 0 being +0, "even" the even
    multiple of the quantum) whose quanta and largest value :func:`_fits64`."""
    return (CS[core.C_MODE] == core.RNE and CS[core.C_OVF_POS] == FS[core.F_MAXMAG]
            and CS[core.C_ZERO_POS] == 0 and FS[core.F_M] >= 1 and FS[core.F_SUBNORMALS] == 1
            and FS[core.F_HASZERO] == 1 and FS[core.F_PARITY] == 0 and _fits64(FS))


@numba.njit(inline="always")
def nearest_scale(s, FS, sub_unit):
    """(code, value) of the finite ``s >= 0`` rounded into the scale format ``FS`` where
    :func:`scales_by_addition`, as ``core.encode_bits`` and ``core.decode_code`` give them, in
    a few float64 and integer operations instead of the core's general path (a loop over
    blocks of 16 spent more time on its scales than on its elements' absolute maxima): the
    value by :func:`_nearest_magnitude64`'s addition, capped at the largest value, and the
    code read off its float64 bits (``sub_unit = 2**(emin - M)``: the subnormal quantum)."""
    M = FS[core.F_M]
    largest = core.decode_code(np.int64(FS[core.F_MAXMAG]), FS, sub_unit)
    r = min(_nearest_magnitude64(_f64bits(s), FS), largest)
    bits = _f64bits(r)
    exponent = (bits >> 52) - 1023                     # -1023 for r = 0
    normal = ((exponent + FS[core.F_BIAS]) << M) | ((bits >> (52 - M)) & ((np.int64(1) << M) - 1))
    subnormal = np.int64(r / sub_unit)                 # exact: a multiple of the quantum
    return (normal if exponent >= FS[core.F_EMIN] else subnormal), r


@numba.njit(inline="always")
def _with_runtime(B, k, tscale):
    """``B`` with its data-dependent fields, the block length and the tensor scale, given at run
    time: the specialised kernels are keyed (and compiled) on the rest only."""
    return (B[B_RULE], np.float64(k), B[B_EMAX], B[B_EMAX_ELEM], np.float64(tscale), B[B_F32],
            B[B_ESUB], B[B_SSUB], B[B_SNAN], B[B_E8M0], B[B_INT])


@intrinsic
def absmax_bits(typingctx, m, b):
    """``max(m, b & ~sign)`` on two unsigned integers of one width (uint32: float32 bits,
    uint64: float64 bits), computed in that width: read as floats, the larger magnitude, with
    NaN and infinity above every finite value.  (numba widens 32-bit arithmetic to 64 bits; in
    32-bit lanes a loop of these vectorises twice as wide.)"""
    if m != b or m not in (types.uint32, types.uint64):
        return None
    width = m.bitwidth

    def codegen(context, builder, signature, args):
        m, b = args
        a = builder.and_(b, ir.Constant(ir.IntType(width), (1 << (width - 1)) - 1))
        return builder.select(builder.icmp_unsigned(">", a, m), a, m)
    return m(m, b), codegen


def _absmax_run_of(n: int):
    """An intrinsic ``absmax(xb, i)``: the largest of ``xb[i:i+n] & ~sign`` (uint32 or uint64
    bits, uint64 ``i``, no bounds checks), :func:`absmax_bits` over a block of ``n``, as one
    vector of ``n`` lanes reduced across them (NVFP4 along the rows, side by side in one process,
    one thread, AMD EPYC: 2048 x 64 162 -> 155 us with stochastic rounding, 132 -> 125 to
    nearest; 2048 x 176 435 -> 417 and 468 -> 415)."""
    @intrinsic
    def absmax(typingctx, xb, i):
        if not (isinstance(xb, types.Array) and xb.ndim == 1
                and xb.dtype in (types.uint32, types.uint64) and isinstance(i, types.Integer)):
            return None
        width = xb.dtype.bitwidth

        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            vector = ir.VectorType(ir.IntType(width), n)
            at = builder.bitcast(builder.gep(data, [args[1]]), vector.as_pointer())
            bits = builder.and_(builder.load(at, align=width // 8),
                                ir.Constant(vector, [(1 << (width - 1)) - 1] * n))
            reduce = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.IntType(width), [vector]),
                f"llvm.vector.reduce.umax.v{n}i{width}")
            return builder.call(reduce, [bits])
        return xb.dtype(xb, i), codegen
    return absmax


#: Blocks of 16 and 32 along a row (NVFP4, MX): :func:`_absmax_run_of`.
absmax_16 = _absmax_run_of(16)
absmax_32 = _absmax_run_of(32)


_SIGN32 = np.uint32(0x80000000)
_ABS32 = np.uint32(0x7FFFFFFF)
_EXP32 = np.uint32(0x7F800000)


@register_jitable
def rounds_by_addition(F, C) -> bool:
    """Whether :func:`nearest_by_addition` rounds for the core: round to nearest even into a
    signed format with subnormals, ``±0`` and at least one mantissa bit (with none, "even" is
    not the even multiple of the quantum)."""
    return (C[core.C_MODE] == core.RNE and F[core.F_M] >= 1 and F[core.F_SUBNORMALS] == 1
            and F[core.F_HASZERO] == 1 and F[core.F_NEGZERO] == 1 and F[core.F_SIGNBIT] != 0)


@register_jitable
def rounds_stochastically(F, C) -> bool:
    """Whether :func:`stochastic_by_scaling` rounds for the core: stochastic rounding into a
    signed format with subnormals and ``±0`` (any mantissa width: stochastic rounding reads
    no parity)."""
    return (C[core.C_MODE] == core.SR and F[core.F_SUBNORMALS] == 1
            and F[core.F_HASZERO] == 1 and F[core.F_NEGZERO] == 1 and F[core.F_SIGNBIT] != 0)


@intrinsic
def _frozen_uint64(typingctx, v):
    """``uint64(v)`` for a float ``v``, frozen (LLVM's ``freeze``): where ``v`` is NaN or out of
    range the conversion's result is poison, which freezing turns into some fixed number, so
    that code computing a result it then discards stays defined without a test per element."""
    if not isinstance(v, types.Float):
        return None

    def codegen(context, builder, sig, args):
        converted = builder.fptoui(args[0], ir.IntType(64))
        frozen = ir.instructions.Instruction(builder.block, ir.IntType(64), "freeze",
                                             [converted])
        builder._insert(frozen)
        return frozen
    return types.uint64(v), codegen


@numba.njit(inline="always")
def stochastic_up(fraction, u, bits):
    """Stochastic rounding's decision, as the core takes it: the dropped part ``fraction``
    of a quantum (``0 <= fraction < 1``, exact) read as the ``bits``-bit threshold ``t =
    floor(fraction * 2**bits)`` (the core's dropped bits, shifted to ``bits``; the product is
    exact, a power-of-two scaling), and up when the top ``bits`` bits of the random ``u`` lie
    below it: ``P(up) = t / 2**bits``.  A NaN ``fraction`` (from a NaN or an infinity, in a
    block rewritten afterwards) gives some decision, never used (:func:`_frozen_uint64`; a
    test for NaN instead cost 7% of a stochastically rounded NVFP4 call)."""
    scale = np.int64((np.int64(bits) + 1023) << 52).view(np.float64)     # 2**bits, no pow
    return (u >> np.uint64(64 - bits)) < _frozen_uint64(fraction * scale)


@numba.njit(inline="always")
def _quantum_field(a, floor, cap, M):
    """The float32 bits of the quantum ``2**(max(min(field, cap), floor) - M)`` of the
    magnitude bits ``a`` on a float grid with ``M`` mantissa bits (fields shifted into place)."""
    return max(min(a & _EXP32, cap), floor) - np.uint32(M << 23)


@numba.njit(inline="always")
def nearest_by_addition(b, floor, cap, M, max_x, ovf_pos, ovf_neg):
    """Finite float32 bits ``b`` rounded to nearest even on a float grid with ``M`` mantissa
    bits, in float32 operations that vectorise: the element's quantum is the power of two
    ``max(min(field, cap), floor) - M`` (exponent fields, shifted into place: ``floor`` is the
    grid's smallest normal, ``cap`` a field above its largest, where every value overflows
    anyway), and ``(|x| + 2**23 q) - 2**23 q`` is ``|x|`` rounded to nearest even on the
    multiples of ``q`` (the sum lies in the binade whose float32 step is ``q``; float32
    addition rounds to nearest even there and the subtraction is exact).  Above ``max_x`` the
    overflow result's bits, else the sign goes back on (``-0`` included).  Needs ``floor - M``
    a normal field and ``cap - M + 23`` a finite one."""
    a = b & _ABS32
    quantum_field = _quantum_field(a, floor, cap, M)
    big = np.uint32(quantum_field + np.uint32(23 << 23)).view(np.float32)
    r = (np.uint32(a).view(np.float32) + big) - big
    overflow = ovf_neg if b >= _SIGN32 else ovf_pos
    rounded = np.uint32(np.float32(r).view(np.uint32) | (b & _SIGN32))
    return overflow if r > max_x else rounded


@numba.njit(inline="always")
def stochastic_by_scaling(b, u, floor, cap, M, max_x, ovf_pos, ovf_neg, bits):
    """Finite float32 bits ``b`` rounded stochastically (random bits ``u``, resolution
    ``bits``) on the grid of :func:`nearest_by_addition` (same ``floor``, ``cap``, ``M``,
    ``max_x`` and overflow results), as the core rounds them, in float32 operations that
    vectorise: with ``q`` the element's quantum, ``z = |x| * (1 / q)`` is exact (powers of
    two), its integer part ``n`` the lower neighbour's multiple of ``q``, and ``z - n``
    (exact) the dropped part that :func:`stochastic_up` turns into the decision; the result
    is ``(n + up) * q`` (exact), the overflow result above ``max_x``, the sign put back.
    Needs ``1 / q`` a float32 normal for every quantum: ``floor - M`` a normal field and
    ``min(field, cap) - M`` at most 253 for every element's field."""
    a = b & _ABS32
    quantum_field = _quantum_field(a, floor, cap, M)
    inverse = np.uint32(np.uint32(254 << 23) - quantum_field).view(np.float32)
    z = np.uint32(a).view(np.float32) * inverse
    n = np.floor(z)
    # a select (a masked add), not the flag converted and added: three instructions fewer per
    # vector, 0.84 against 0.97 ns per element in a loop of the float64 twin alone
    r = ((n + np.float32(1.0)) if stochastic_up(z - n, u, bits) else n) \
        * np.uint32(quantum_field).view(np.float32)
    overflow = ovf_neg if b >= _SIGN32 else ovf_pos
    rounded = np.uint32(np.float32(r).view(np.uint32) | (b & _SIGN32))
    return overflow if r > max_x else rounded


_SIGN64 = np.int64(-0x8000000000000000)
_ABS64 = np.int64(0x7FFFFFFFFFFFFFFF)
_EXP64 = np.int64(0x7FF0000000000000)


@register_jitable
def _fits64(F) -> bool:
    """Whether :func:`nearest_by_addition64` serves the format: its smallest quantum and
    ``2**52`` quanta above its largest value are float64 normals."""
    M = F[core.F_M]
    return (F[core.F_EMIN] + 1023 - M >= 1
            and F[core.F_EMAXFIELD] - F[core.F_BIAS] + 1024 - M + 52 <= 2046)


@numba.njit(inline="always")
def _quantum_field64(a, F):
    """The float64 bits of the quantum of the magnitude bits ``a`` on the format ``F``'s grid:
    ``2**(e - M)`` for ``e`` its exponent, at least ``emin`` and capped a binade above the
    largest (where every value overflows anyway)."""
    floor = np.int64(F[core.F_EMIN] + 1023) << 52
    cap = np.int64(F[core.F_EMAXFIELD] - F[core.F_BIAS] + 1024) << 52
    return max(min(a & _EXP64, cap), floor) - (np.int64(F[core.F_M]) << 52)


@numba.njit(inline="always")
def nearest_by_addition64(y, F, V):
    """:func:`nearest_by_addition` for a finite float64 ``y`` and the format ``F`` (its value
    tuple ``V`` in the float64 layout), where :func:`rounds_by_addition`: the core's
    nearest-even result's float64 bits (int64), by ``(|y| + 2**52 q) - 2**52 q``."""
    b = np.int64(np.float64(y).view(np.int64))
    return _overflowed64(_nearest_magnitude64(b & _ABS64, F), b, V)


@numba.njit(inline="always")
def _nearest_magnitude64(a, F):
    """The float64 magnitude with bits ``a`` rounded to nearest even on the format ``F``'s
    grid (no overflow handling), by ``(|y| + 2**52 q) - 2**52 q`` for its quantum ``q``."""
    big = np.int64(_quantum_field64(a, F) + (np.int64(52) << 52)).view(np.float64)
    return (np.int64(a).view(np.float64) + big) - big


@numba.njit(inline="always")
def stochastic_by_scaling64(y, u, F, V, bits):
    """:func:`stochastic_by_scaling` for a float64 ``y`` and the format ``F`` (its value tuple
    ``V`` in the float64 layout), where :func:`rounds_stochastically` and :func:`_fits64`: the
    core's stochastically rounded result's float64 bits (int64).  The quantum is capped as in
    :func:`nearest_by_addition64` (values above the cap overflow whichever way they round)."""
    b = np.int64(np.float64(y).view(np.int64))
    a = b & _ABS64
    quantum_field = _quantum_field64(a, F)
    inverse = np.int64((np.int64(2046) << 52) - quantum_field).view(np.float64)
    z = np.int64(a).view(np.float64) * inverse
    n = np.floor(z)
    r = ((n + 1.0) if stochastic_up(z - n, u, bits) else n) \
        * np.int64(quantum_field).view(np.float64)            # a select, as in the float32 one
    return _overflowed64(r, b, V)


@numba.njit(inline="always")
def _overflowed64(r, b, V):
    """The float64 bits of the rounded magnitude ``r`` with the sign of the bits ``b`` put
    back, or the overflow result past the largest value: saturating (``V``'s overflow results
    are ``±max``), the smaller of ``r`` and the largest value (one instruction, where the
    test and the select by sign cost 3% of a stochastically rounded NVFP4 call)."""
    largest = np.int64(V[core.V_MAXBITS])
    if V[core.V_OVF_POS] == largest and V[core.V_OVF_NEG] == largest | _SIGN64:
        return np.int64(np.float64(min(r, largest.view(np.float64))).view(np.int64)) \
            | (b & _SIGN64)
    overflow = np.int64(V[core.V_OVF_NEG]) if b < 0 else np.int64(V[core.V_OVF_POS])
    rounded = np.int64(np.float64(r).view(np.int64)) | (b & _SIGN64)
    return overflow if r > largest.view(np.float64) else rounded


#: NVFP4's per-tensor scale is ``amax / (448 * 6)`` (:func:`fpformat.scales.tensor_scale`).
_NVFP4_DIVISOR = 448.0 * 6.0


@register_jitable
def bits_value(b, wide):
    """The float64 value of float32 bits (``wide`` False) or float64 bits (a number, not NaN)."""
    if wide:
        return np.int64(b).view(np.float64)
    return np.float64(np.uint32(np.int64(b) & 0xFFFFFFFF).view(np.float32))


@register_jitable
def nonfinite(m, wide):
    """Whether the magnitude bits ``m`` (int64; float64 bits when ``wide``, else float32 bits)
    are those of NaN or infinity."""
    return m >= (np.int64(0x7FF0000000000000) if wide else np.int64(0x7F800000))


@register_jitable
def tensor_scale_of(m, wide):
    """NVFP4's tensor scale from the tensor's largest magnitude bits ``m`` (int64), by
    :func:`fpformat.scales.tensor_scale`'s rule: NaN (positive, built as bits) for a tensor
    holding NaN/inf, 1 for an all-zero tensor, else ``float32(amax / (448 * 6))``."""
    if nonfinite(m, wide):
        return np.int64(0x7FF8000000000000).view(np.float64)
    at = bits_value(m, wide)
    if at > 0.0:
        return np.float64(np.float32(at / _NVFP4_DIVISOR))
    return 1.0


#: Columns per segment of :func:`block_segment`: enough that the element loop runs long for
#: short blocks (16 or 32 elements), few enough that its scratch arrays stay in the L1 cache.
SEGMENT_COLUMNS = 1024


@numba.njit(inline="always")
def block_segment(x, xb, tr, g, G, R, L, B, FE, CE, VE, FS, CS, Q, key, codes, scales, out,
                  want_out, ints, scratch):
    """Blocks ``[g*G, (g+1)*G)`` of tile row ``tr`` of the C-order ``(rows, L)`` data held flat
    in ``x`` (its bits in ``xb``): block ``b`` holds rows ``[tr*R, (tr+1)*R)`` times columns
    ``[b*k, (b+1)*k)``, both cut at the edges (``R = 1``: a block along the last axis; ``k =
    1``: a block down a column).  Writes each block's scale code to the flat ``scales`` (index
    ``tr * blocks_per_row + b``) and the element codes to the flat ``codes``, or with
    ``want_out`` the values instead (rounded straight to a value by the core, ``VE`` its
    special results as float64 bits) to the flat ``out``.  ``Q``: the compare table of
    :func:`nearest_table` (:data:`NO_TABLE`: divide).  ``scratch``: arrays of at least the
    segment's columns and blocks.  ``ints``: element codes are two's-complement integers
    (:data:`B_INT`, given apart so that it is a constant of the specialised kernel).  Flat
    arrays and uint64 indices: no wraparound checks, so the loops vectorise."""
    k = np.int64(B[B_K])
    nb = (L + k - 1) // k
    b0 = g * G
    b1 = min(b0 + G, nb)
    c0 = b0 * k
    w = min(b1 * k, L) - c0                  # the segment's columns: [c0, c0 + w)
    r0 = tr * R
    r1 = min(r0 + R, x.size // L)
    wide = xb.itemsize == 8
    # 1. Each block's largest magnitude, as bits (NaN/inf: the largest): a block per row
    # straight from the data (one of 16 or 32 as one vector, :func:`_absmax_run_of`), a tile
    # by way of its columns' largest over the tile's rows.
    colmax, block_bits, block_scale, divisor, inverse = scratch
    compare = Q[0] == 1.0 and not wide
    nblocks = b1 - b0
    ku = np.uint64(k)
    nfull = np.uint64(w // k)
    if R == 1 and k > 1:
        base = np.uint64(r0 * L + c0)
        colmax[0] = 0
        if k == 16:
            for t in range(nfull):
                block_bits[t] = np.int64(absmax_16(xb, base + t * ku))
        elif k == 32:
            for t in range(nfull):
                block_bits[t] = np.int64(absmax_32(xb, base + t * ku))
        else:
            for t in range(nfull):
                first = base + t * ku
                block_bits[t] = np.int64(_absmax_run(xb, first, first + ku, colmax[0]))
        if nfull < nblocks:              # colmax[0]: 0 in the data's bit width
            block_bits[nfull] = np.int64(_absmax_run(xb, base + nfull * ku, base + np.uint64(w),
                                                     colmax[0]))
    else:
        colmax[:w] = 0
        for r in range(r0, r1):
            base = np.uint64(r * L + c0)
            for j in range(np.uint64(w)):
                colmax[j] = absmax_bits(colmax[j], xb[base + j])
        # then each block's largest over its columns (full blocks, then a ragged last one)
        for t in range(nfull):
            m = colmax[t * ku]
            for j in range(np.uint64(1), ku):
                m = max(m, colmax[t * ku + j])
            block_bits[t] = np.int64(m)
        if nfull < nblocks:
            m = colmax[nfull * ku]
            for j in range(nfull * ku + np.uint64(1), np.uint64(w)):
                m = max(m, colmax[j])
            block_bits[nfull] = np.int64(m)
    # 2. Each block's scale.
    unusable = 0
    for t in range(nblocks):                                  # selects only: vectorises
        m = block_bits[t]
        bad = nonfinite(m, wide)
        sval, scode = _block_scale(bits_value(m, wide), bad, B, FS, CS)
        scales[np.uint64(tr * nb + b0 + t)] = scode
        block_scale[t] = sval
        usable = _divisible(sval)
        divisor[t] = sval if usable else 1.0
        unusable += 0 if usable else 1
    if compare:
        for t in range(nblocks):
            inverse[t] = 1.0 / divisor[t]
    # 3. Every element: x / scale rounded by the core, or by the compare table (selects only:
    # the loops vectorise).  A block's scale is read once, outside the loop over its elements
    # (1.0 where it is NaN, zero or infinite: step 4 writes those blocks); blocks down the
    # columns (k = 1) take theirs per column instead.
    if compare:
        _compare_rows(x, xb, np.uint64(r0 * L + c0), np.int64(r1 - r0), np.uint64(L),
                      np.int64(w), np.int64(k), np.uint64(nfull), np.int64(nblocks), divisor,
                      inverse, Q, FE[core.F_SIGNBIT], codes, out, want_out)
    else:
        for r in range(r0, r1):
            base = np.uint64(r * L + c0)
            if k == 1:
                z = core.sr_counter(key, base)
                for j in range(np.uint64(w)):
                    _element_at(x, base + j, divisor[j], z, FE, CE, VE, ints, codes, out, want_out)
                    z += core.SR_STEP
                continue
            for t in range(nfull):
                s = divisor[t]
                first = base + t * ku
                z = core.sr_counter(key, first)
                for j in range(ku):
                    _element_at(x, first + j, s, z, FE, CE, VE, ints, codes, out, want_out)
                    z += core.SR_STEP
            if nfull < nblocks:
                s = divisor[nfull]
                z = core.sr_counter(key, base + nfull * ku)
                for i in range(base + nfull * ku, base + np.uint64(w)):
                    _element_at(x, i, s, z, FE, CE, VE, ints, codes, out, want_out)
                    z += core.SR_STEP
    if unusable == 0:
        return
    # 4. Blocks whose scale is NaN (a NaN or inf inside), zero or infinite: every element is
    # +0 scaled by it (NaN, or +0 for a zero scale; a NaN-free scale format's NaN code).
    for b in range(b0, b1):
        sval = block_scale[b - b0]
        if _divisible(sval):
            continue
        lo = b * k
        hi = min(lo + k, L)
        for r in range(r0, r1):
            for c in range(lo, hi):
                i = np.uint64(r * L + c)
                u = core.sr_random(key, i) if CE[core.C_MODE] == core.SR else np.uint64(0)
                _element(0.0, sval, i, FE, CE, VE, u, ints, codes, out, want_out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _compare_rows(x, xb, base, rows, L, w, k, nfull, nblocks, divisor, inverse, Q, signbit,
                  codes, out, want_out):
    """Step 3 of :func:`block_segment` by the compare table ``Q``, for the segment's ``rows``
    rows (``L`` apart, the first from flat index ``base``).  A function of its own, compiled
    once for every format (the table is an argument): inlined, it would double the block
    kernel's compilation time; called once a segment, not once a row (a row of a segment down
    the columns is as short as the data's rows, and a call per row cost as much as the row)."""
    ku = np.uint64(k)
    for r in range(rows):
        row = base + np.uint64(r) * L
        if k == 1:
            for j in range(np.uint64(w)):
                _nearest_at(x, xb, row + j, divisor[j], inverse[j], Q, signbit, codes, out,
                            want_out)
            continue
        for t in range(nfull):
            s, inv = divisor[t], inverse[t]
            first = row + t * ku
            for j in range(ku):
                _nearest_at(x, xb, first + j, s, inv, Q, signbit, codes, out, want_out)
        if nfull < nblocks:
            s, inv = divisor[nfull], inverse[nfull]
            for i in range(row + nfull * ku, row + np.uint64(w)):
                _nearest_at(x, xb, i, s, inv, Q, signbit, codes, out, want_out)


@numba.njit(inline="always")
def _divisible(sval):
    """Whether elements can be divided by the block scale ``sval`` (finite and nonzero)."""
    return sval == sval and sval != 0.0 and abs(sval) <= 1.7976931348623157e308


#: Relative guard on the thresholds of :func:`nearest_table`: above the error of ``|x| * (1 /
#: s)`` in float64 (below ``2**-51``), below the smallest relative distance from ``|x| / s`` to
#: a midpoint it does not equal (``2**-32``; see :func:`nearest_table`).
_GUARD = 2.0 ** -40
#: :func:`nearest_table`'s answer where it does not apply (elements divide).
NO_TABLE = (0.0,) * 15


def nearest_table(fmt, x_dtype, rounding: str) -> tuple:
    """The compare table that rounds to nearest (ties to even) without dividing, or
    :data:`NO_TABLE` where it does not apply: ``(1.0, t1..t7, v1..v7)`` for NVFP4-style
    formats (a 4-bit float element with a signed zero and eight magnitudes ``0 = v0 < v1 < ...
    < v7 = max``, scales of a float format with at most 3 mantissa bits times the float32
    tensor scale) on float32 data.

    Element ``x`` of a block with scale ``s`` rounds to ``v_n`` for ``n`` the number of
    thresholds below ``y = |x| * (1 / s)`` (float64), which compares with each midpoint ``m_i
    = (v_{i-1} + v_i) / 2`` as the exact ``|x| / s`` does: ``x`` has 24 significant bits and
    ``m_i * s`` at most ``4 + 4 + 24`` (midpoint, scale code, tensor scale), so ``x - m_i * s``
    is 0 or a multiple of the finer of their last places, and ``|x| / s`` either equals a
    midpoint or lies at least ``2**-32`` of it away, relatively, while ``y`` is within
    ``2**-51`` of ``|x| / s``.  Guarding each midpoint by ``2**-40`` (up where its ties round
    down to the even ``v_{i-1}``, down where they round up) turns an exact tie into the
    even neighbour and leaves every other comparison as it is.  Above ``m_7`` the result is
    the largest magnitude: the element has neither infinity nor NaN to overflow to, so it
    saturates whether or not the call asks to (the table is the same for both)."""
    el, sf = fmt.element, fmt.scale_format
    if not (x_dtype == np.float32 and rounding == "rne" and fmt.scale_rule == "nvfp4"
            and sf is not None and sf.man_bits <= 3 and el.bits == 4 and el.signed
            and el.has_zero and not el.has_nan and not el.has_inf and el.subnormals
            and not fmt.int_codes):
        return NO_TABLE
    values = [float(v) for v in el.decode(np.arange(8, dtype=el.dtype))]
    if sorted(values) != values or values[0] != 0.0 or values[-1] != el.max:
        return NO_TABLE
    thresholds = []
    for lo, hi in zip(values, values[1:]):
        mid = (lo + hi) / 2
        tie_up = float(el.decode(el.encode(np.array(mid), rounding="rne"))) == hi
        thresholds.append(mid * (1.0 - _GUARD) if tie_up else mid * (1.0 + _GUARD))
    return (1.0, *thresholds, *values[1:])


@numba.njit(inline="always")
def _nearest(y, Q):
    """The magnitude rounded to nearest by the table ``Q`` of :func:`nearest_table` for ``y =
    |x| / s`` as its float64 product, and its magnitude code (selects: vectorises)."""
    n = ((y > Q[1]) + (y > Q[2]) + (y > Q[3]) + (y > Q[4]) + (y > Q[5]) + (y > Q[6])
         + (y > Q[7]))
    v = 0.0
    v = Q[8] if y > Q[1] else v
    v = Q[9] if y > Q[2] else v
    v = Q[10] if y > Q[3] else v
    v = Q[11] if y > Q[4] else v
    v = Q[12] if y > Q[5] else v
    v = Q[13] if y > Q[6] else v
    v = Q[14] if y > Q[7] else v
    return v, np.int64(n)


@numba.njit(inline="always")
def _nearest_at(x, xb, i, s, inv, Q, signbit, codes, out, want_out):
    """Element ``i`` of the float32 ``x`` (bits ``xb``) rounded to nearest by the table ``Q``
    in a block of scale ``s`` (``inv = 1 / s``): its value ``±v * s`` (exact in float64,
    rounded once to float32, as the dividing path rounds it) or its code."""
    v, n = _nearest(np.float64(abs(x[i])) * inv, Q)
    negative = xb[i] >= np.uint32(0x80000000)
    if want_out:
        r = np.float32(v * s)
        out[i] = -r if negative else r
    else:
        codes[i] = n | (signbit if negative else 0)


@numba.njit(inline="always")
def _element_at(x, i, s, z, FE, CE, VE, ints, codes, out, want_out):
    """Element ``i`` of the flat ``x`` divided by the block scale ``s`` and rounded; ``z``:
    its random stream's counter (:func:`fpformat.core.sr_counter`), which the caller's loop
    advances by ``SR_STEP`` an element (an addition, where the counter computed from ``i``
    cost a 64-bit multiplication an element: 7% of a stochastically rounded NVFP4 call)."""
    # The mode is read from CE here, not handed down as a flag: a flag computed outside the
    # prange loop reaches its body as a runtime value, and its branch stayed in the loop.
    u = core.sr_from_counter(z) if CE[core.C_MODE] == core.SR else np.uint64(0)
    _element(np.float64(x[i]) / s, s, i, FE, CE, VE, u, ints, codes, out, want_out)


@numba.njit(inline="always")
def _element(y, s, i, FE, CE, VE, u, ints, codes, out, want_out):
    """Element ``i``: ``y = x / s`` rounded; its code, or with ``want_out`` its value times
    ``s``."""
    if want_out:
        if rounds_by_addition(FE, CE) and not ints and _fits64(FE):
            q = nearest_by_addition64(y, FE, VE)
        elif rounds_stochastically(FE, CE) and not ints and _fits64(FE):
            q = stochastic_by_scaling64(y, u, FE, VE, CE[core.C_SR_BITS])
        else:
            q = core.quantize_bits(_f64bits(y), core.SRC_FLOAT64, FE, CE, VE, u)
        v = np.int64(q).view(np.float64) * s
        out[i] = v + 0.0 if ints else v                     # + 0.0: no -0 among integers
    else:
        c = core.encode_bits(_f64bits(y), core.SRC_FLOAT64, FE, CE, u)
        codes[i] = int_code(c, FE[core.F_SIGNBIT]) if ints else c


@numba.njit(inline="always")
def _segments(x, xb, L, B, FE, CE, VE, FS, CS, Q, key, codes, scales, out, want_out, ints, R, k,
              tscale, threads):
    nb = (L + k - 1) // k
    G = max(1, SEGMENT_COLUMNS // k)
    ng = (nb + G - 1) // G
    ntr = (x.size // L + R - 1) // R
    # Segments in C order, in a few runs per thread: each run allocates its scratch arrays
    # once (an allocation per segment costs as much as the segment's scale work).
    total = ntr * ng
    runs = min(total, 4 * threads)
    per_run = (total + runs - 1) // runs
    if tscale < 0.0 and xb.size > 0:
        # FIND_TENSOR_SCALE: NVFP4's tensor scale found here, in one pass before the blocks,
        # rather than by a call of its own (whose launch costs a one-thread call more)
        m = _absmax_run(xb, np.uint64(0), np.uint64(xb.size), np.zeros(1, dtype=xb.dtype)[0])
        tscale = tensor_scale_of(np.int64(m), xb.itemsize == 8)
    Bt = _with_runtime(B, k, tscale)
    width = min(G * k, L)
    for run in prange(runs):
        scratch = (np.empty(width, dtype=xb.dtype), np.empty(G, dtype=np.int64),
                   np.empty(G, dtype=np.float64), np.empty(G, dtype=np.float64),
                   np.empty(G, dtype=np.float64))
        for t in range(run * per_run, min((run + 1) * per_run, total)):
            tr = t // ng
            block_segment(x, xb, tr, t - tr * ng, G, R, L, Bt, FE, CE, VE, FS, CS, Q, key,
                          codes, scales, out, want_out, ints, scratch)


@numba.njit(**JIT)
def _block_generic(x, xb, L, B, FE, CE, VE, FS, CS, Q, key, codes, scales, out, want_out, R, k,
                   tscale, threads):
    _segments(x, xb, L, B, FE, CE, VE, FS, CS, Q, key, codes, scales, out, want_out,
              B[B_INT] == 1.0, R, k, tscale, threads)


@functools.lru_cache(maxsize=None)
def _block_specialized(B, FE, CE, VE, FS, CS, Q, want_out):
    # The int-codes flag as a Python constant: read from the block tuple, which reaches the
    # parallel loop's body with its run-time fields (block length, tensor scale), it was a
    # run-time value there, and each element computed both the arithmetic and the core's
    # rounding to select between them (2.7 against 1.7 ns per element, NVFP4 columns, sr).
    ints = B[B_INT] == 1.0

    @numba.njit(**JIT)
    def block_specialized(x, xb, L, key, codes, scales, out, R, k, tscale, threads):
        _segments(x, xb, L, B, FE, CE, VE, FS, CS, Q, key, codes, scales, out, want_out, ints,
                  R, k, tscale, threads)
    return block_specialized


#: Elements per chunk of :func:`_tensor_scale_bits` (one thread's share at a time).
_AMAX_CHUNK = 1 << 14


@numba.njit(inline="always")
def _absmax_run(xb, lo, hi, m):
    """:func:`absmax_bits` of ``m`` and the bits ``xb[lo:hi]`` (uint64 bounds: no wraparound
    checks; ``m`` a local accumulator in the data's width: the loop vectorises)."""
    for i in range(lo, hi):
        m = absmax_bits(m, xb[i])
    return m


def _tensor_scale_source(xb, part, wide):
    """:func:`tensor_scale_of` the largest magnitude among the bits ``xb``, found chunk by chunk
    (``part``: zeroed, one entry per chunk, each thread's share at a time)."""
    n = np.uint64(xb.size)
    for c in prange(part.size):
        lo = np.uint64(c) * np.uint64(_AMAX_CHUNK)
        part[c] = _absmax_run(xb, lo, min(lo + np.uint64(_AMAX_CHUNK), n), part[c])
    return tensor_scale_of(np.int64(part.max()), wide)


_tensor_scale_bits = numba.njit(**JIT)(_tensor_scale_source)
# The same loop for calls on one thread: entering a parallel region costs more than the pass
# over a training step's tensors (6.8 against 11.7 us on 2048 x 64 float32, side by side).
_tensor_scale_bits_serial = njit_as(_tensor_scale_source, "_serial", SERIAL_JIT)


def tensor_scale_bits(xb: np.ndarray, threads: int) -> float:
    """:func:`fpformat.scales.tensor_scale` of the flat C-contiguous float32/float64 data whose
    bits (uint32/uint64) are ``xb``, in one vectorised pass on ``threads`` threads (what
    :class:`fpformat.dispatch.threads_for` gives the call)."""
    part = np.zeros(max(1, -(-xb.size // _AMAX_CHUNK)), dtype=xb.dtype)
    amax = _tensor_scale_bits if threads > 1 else _tensor_scale_bits_serial
    return float(amax(xb, part, xb.itemsize == 8))


def tensor_scale(x: np.ndarray) -> float:
    """:func:`fpformat.scales.tensor_scale` of the float32/float64 array ``x`` in one
    vectorised pass over its bits (no temporaries)."""
    flat = np.ascontiguousarray(x).reshape(-1)
    with threads_for(flat.size) as threads:
        return tensor_scale_bits(flat.view(np.uint64 if flat.dtype == np.float64
                                           else np.uint32), threads)


#: The tensor scale that has the block kernel find NVFP4's tensor scale from the data itself
#: (:func:`tensor_scale_bits` in the same pass over the data, the kernel's one launch).
FIND_TENSOR_SCALE = -1.0

#: The element codes' stand-in for calls that write values (never written; see run_blocks).
STAND_IN_CODES = np.empty(1, dtype=np.uint8)

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


class KernelPlan(NamedTuple):
    """What every call of the kernel for one block format and its options shares: the tuples
    (``B`` without its run-time fields, see :func:`_constant_part`) and the specialisation key."""

    B: tuple
    FE: tuple
    CE: tuple
    VE: tuple
    FS: tuple
    CS: tuple
    #: The compare table of :func:`nearest_table` for float32 data (:data:`NO_TABLE`: divide).
    Q: tuple
    key: tuple


@functools.lru_cache(maxsize=256)
def kernel_plan(fmt, rounding: str, saturate: bool, sr_bits, compare: bool = True) -> KernelPlan:
    """The :class:`KernelPlan` of block format ``fmt`` with these options (computed once: a
    training step makes a hundred calls with the same few); ``compare`` as in
    :func:`run_blocks`."""
    B, FE, CE, FS, CS = block_params(fmt, 1, None, rounding, saturate, sr_bits)
    Bk = _constant_part(B)
    VE = value_tuple(fmt.element, CE, core.SRC_FLOAT64)
    Q = nearest_table(fmt, np.float32, rounding) if compare else NO_TABLE
    return KernelPlan(Bk, FE, CE, VE, FS, CS, Q, HashedKey(("blk", Bk, FE, CE, FS, CS, Q)))


def specialize(fmt, rounding: str, saturate: bool, sr_bits) -> None:
    """Have the next calls of this kernel for block format ``fmt`` with these options run
    specialised (compiled then, or loaded from numba's cache), whatever their block length."""
    prefer_specialized(kernel_plan(fmt, rounding, saturate, sr_bits).key)


def blocks_geometry(shape: tuple[int, int], k: int,
                    tile_rows: int) -> tuple[int, int, tuple[int, int]]:
    """``(L, k, scale_grid)`` as the kernel sees a C-contiguous ``shape`` array with blocks of
    ``k`` along its last axis spanning ``tile_rows`` rows: a block longer than a row is the row,
    and rows whose length is a multiple of ``k`` run end to end as one long row of ``L`` (the
    same blocks, whose segments run long however short the rows are); ``scale_grid`` the shape
    of the scales the kernel writes, ``(ceil(rows / tile_rows), ceil(L / k))`` in its view."""
    rows, L = shape
    k = min(k, L)
    if tile_rows == 1 and L % k == 0:
        rows, L = 1, rows * L
    return L, k, (-(-rows // tile_rows), -(-L // k))


def launch_blocks(plan: KernelPlan, x1: np.ndarray, xb: np.ndarray, L: int, tile_rows: int,
                  k: int, tscale: float | None, key: np.uint64, codes: np.ndarray,
                  scales: np.ndarray, out: np.ndarray, want_out: bool, threads: int) -> None:
    """The kernel call of :func:`run_blocks` on the flat data ``x1`` (its bits ``xb``) seen as
    ``(x1.size // L, L)`` (:func:`blocks_geometry`), on ``threads`` threads (what
    :class:`fpformat.dispatch.threads_for` gives the call), specialised or generic as
    :func:`fpformat.dispatch.want_specialized` says: ``codes`` (or with ``want_out`` ``out``)
    and the flat uint64 ``scales`` filled in.  ``tscale``: NVFP4's tensor scale, None for
    other rules, or :data:`FIND_TENSOR_SCALE`."""
    tscale = 1.0 if tscale is None else float(tscale)
    if want_specialized(plan.key, x1.size):
        _specialized_of.get(plan, (want_out,))(x1, xb, L, key, codes, scales, out, tile_rows,
                                               k, tscale, threads)
    else:
        _block_generic(x1, xb, L, plan.B, plan.FE, plan.CE, plan.VE, plan.FS, plan.CS, plan.Q,
                       key, codes, scales, out, want_out, tile_rows, k, tscale, threads)


#: ``_specialized_of.get(plan, (want_out,))``: :func:`_block_specialized` of a plan (the plans are
#: cached; found by the plan's identity, not its tuples' hash)
_specialized_of = IdentityCache(
    lambda plan, want_out: _block_specialized(plan.B, plan.FE, plan.CE, plan.VE, plan.FS,
                                              plan.CS, plan.Q, want_out))


def run_blocks(fmt, x2: np.ndarray, k: int, tscale: float | None, rounding: str, saturate: bool,
               seed, sr_bits, want_out: bool, tile_rows: int = 1, compare: bool = True):
    """Encode (and optionally quantize) the C-contiguous float32/float64 2-D array ``x2`` with
    blocks of ``k`` along its last axis, each spanning ``tile_rows`` rows (2-D tiles; 1: a block
    per row).  Returns ``(codes, scales, out)``: codes None with ``want_out`` (quantize needs the
    values only), out None without; the scales shaped ``(ceil(rows / tile_rows),
    ceil(L / k))``.  ``compare`` False: every element divides, also where
    :func:`nearest_table` applies (the tests' reference for it)."""
    plan = kernel_plan(fmt, rounding, saturate, sr_bits, compare)
    el, sf = fmt.element, fmt.scale_format
    shape = x2.shape
    L, k, scale_grid = blocks_geometry(shape, k, tile_rows)
    x1 = x2.reshape(-1)
    xb = x1.view(np.uint32 if x1.dtype == np.float32 else np.uint64)
    # The arrays a call does not fill are one-element stand-ins, and the scales are written as
    # uint64 whatever their format (float32 bits or codes, converted after): each distinct
    # array type is another compilation of the kernel (about half a minute each), and these
    # keep it to one per input width.
    codes = STAND_IN_CODES if want_out else np.empty(x1.size, dtype=el.dtype)
    scales = np.empty(scale_grid, dtype=np.uint64)
    out = np.empty(x1.size if want_out else 1, dtype=x1.dtype)
    key = seed_key(seed, plan.CE[core.C_MODE])
    with threads_for(x1.size) as threads:
        launch_blocks(plan, x1, xb, L, tile_rows, k, tscale, key, codes, scales.reshape(-1), out,
                      want_out, threads)
    scales = scales.astype(np.uint32).view(np.float32) if sf is None else scales.astype(sf.dtype)
    scales = scales.reshape(-(-shape[0] // tile_rows), -(-shape[1] // k))
    return (None if want_out else codes.reshape(shape)), scales, \
        (out.reshape(shape) if want_out else None)
