"""The random Hadamard transform applied to both inputs of a GEMM before they are quantized.

A GEMM ``A @ B`` reduces over ``K``.  Cut ``K`` into blocks of ``b`` elements (``b`` a power of
two) and let ``R = D H / sqrt(b)`` with ``H`` the ``b x b`` Sylvester Hadamard matrix (entries
±1, ``H H^T = b I``) and ``D = diag(signs)`` a random ±1 vector.  ``R`` is orthogonal, so with
``A' = A R`` (every block of ``b`` along ``K`` multiplied by ``R``) and ``B' = R^T B``::

    A' @ B' = A R R^T B = A @ B

in exact arithmetic.  Quantizing ``A'`` and ``B'`` instead of ``A`` and ``B`` spreads an outlier
over its block, which narrows each block's range (NVIDIA's NVFP4 recipe on the weight-gradient
GEMM; Tseng et al. 2025, "Training LLMs with MXFP4", on the backward GEMMs).

:func:`rotate` is the one verb: multiply a 2-D tensor's ``axis`` (the GEMM's reduction axis for
that operand) block by block by ``R``; calling it on both operands of a GEMM along their
reduction axes is the transform.  The rotation runs in the tensor's dtype (float32: a rounding
error of order 1e-7 per element, as in the field's kernels).  Given a :class:`Rotation` (the
float32 matrix and its weights, what :func:`rotation` builds), a float32 CPU tensor's blocks
run as a fast Walsh–Hadamard transform instead of a GEMM: each element times its weight, then
the ``log2 b`` butterfly stages of ``H`` (``b log2 b`` additions per block instead of ``b**2``
multiply-adds; the sums are the same, added in another order, and the same on every machine).
Along either axis the same additions in the same order: where both run the fast transform,
``rotate(t, r, 1)`` is ``rotate(t.T, r, 0).T`` bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import NamedTuple

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.core.extending import intrinsic

from fpformat.dispatch import JIT, SERIAL_JIT, njit_as, threads_for

#: Largest Hadamard block (elements): the dense b x b matrix stays small.
MAX_HADAMARD_BLOCK = 1 << 12


def check_hadamard_block(block: object) -> int:
    """``block`` as an int: a power of two in 2..:data:`MAX_HADAMARD_BLOCK`; ``ValueError``
    naming it otherwise."""
    if isinstance(block, bool) or not isinstance(block, int) or not \
            2 <= block <= MAX_HADAMARD_BLOCK or block & (block - 1):
        raise ValueError(f"hadamard block: must be a power of two in 2..{MAX_HADAMARD_BLOCK} "
                         f"(elements along the reduction axis), got {block!r}")
    return block


def sylvester(block: int) -> torch.Tensor:
    """The ``block x block`` Sylvester Hadamard matrix (float64 entries ±1): ``H_1 = [1]``,
    ``H_2n = [[H_n, H_n], [H_n, -H_n]]``."""
    check_hadamard_block(block)
    return _sylvester(block).clone()


@functools.lru_cache(maxsize=None)
def _sylvester(block: int) -> torch.Tensor:
    """:func:`sylvester`, built once per block size (a recipe whose signs change every step
    builds a rotation every step); not to be written to."""
    h = torch.ones((1, 1), dtype=torch.float64)
    while h.shape[0] < block:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def random_signs(block: int, seed: int) -> torch.Tensor:
    """``block`` signs (float64 ±1) drawn from ``seed`` (an int >= 0): the same on every device
    and torch version (bits of BLAKE2b over the seed, not torch's generator)."""
    check_hadamard_block(block)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: must be an integer >= 0, got {seed!r}")
    bits = bytearray()
    counter = 0
    while len(bits) * 8 < block:
        bits += hashlib.blake2b(f"{seed}/{counter}".encode(), digest_size=64).digest()
        counter += 1
    signs = [1.0 - 2.0 * ((bits[i // 8] >> (i % 8)) & 1) for i in range(block)]
    return torch.tensor(signs, dtype=torch.float64)


def hadamard_matrix(block: int, seed: int) -> torch.Tensor:
    """``R = diag(signs) H / sqrt(block)`` (float64, orthogonal); signs: :func:`random_signs`."""
    return random_signs(block, seed)[:, None] * _sylvester(block) / math.sqrt(block)


class Rotation(NamedTuple):
    """A random Hadamard rotation ``R = diag(signs) H / sqrt(b)`` as the GEMMs apply it.

    matrix: ``R`` in float32, ``(b, b)``.
    weights: ``R``'s first column (``signs / sqrt(b)`` in float32, a numpy array): ``R[j, i]
        = weights[j] * H[j, i]`` exactly, so the fast transform (the weights, then the
        butterflies of ``H``) forms the same sums as the matrix.
    """

    matrix: torch.Tensor
    weights: np.ndarray


def rotation(block: int, seed: int) -> Rotation:
    """:func:`hadamard_matrix` in float32 with its weights (:class:`Rotation`)."""
    m = hadamard_matrix(block, seed).to(torch.float32)
    return Rotation(m, m[:, 0].numpy().copy())


def rotate(t: torch.Tensor, r: torch.Tensor | Rotation | None, axis: int) -> torch.Tensor:
    """``t`` (2-D) with every block of ``b = r.shape[0]`` elements along ``axis`` (0 or 1)
    multiplied by the orthogonal ``r``: ``t @ R`` for ``axis=1`` (``t``'s rows), ``R^T @ t`` for
    ``axis=0`` (its columns), as a new tensor; ``r`` None returns ``t``.  So ``rotate(a, r, 1)
    @ rotate(b, r, 0) == a @ b`` up to rounding.

    A length that is not a multiple of ``b`` keeps the transform orthogonal: the tail is cut
    into powers of two, largest first, each rotated by the leading ``n x n`` corner of ``r``
    rescaled by ``sqrt(b / n)`` (the Sylvester ``H_n`` with the first ``n`` signs); a last single
    element stays as it is.

    ``r`` a :class:`Rotation` on a float32 CPU tensor: every piece runs as the fast
    Walsh-Hadamard transform (module docstring; a tail piece's weights are its corner's first
    column); for every other ``r``, tensor or device the pieces multiply by the matrix."""
    if r is None:
        return t
    if isinstance(r, Rotation):
        r, weights = r
        if t.device.type == "cpu" and t.dtype == torch.float32:
            return _walsh_hadamard(t, weights, _fast_plan(r.shape[0], *t.shape, axis))
    pieces = _pieces(t.shape[axis], r.shape[0])
    if not pieces:                                # an empty axis
        return t.clone()
    m = r.to(device=t.device, dtype=t.dtype)
    parts = [_matrix_piece(t, m, axis, lo, n, c) for lo, n, c in pieces]
    if len(parts) == 1:
        # a single element along the axis comes back as a view of t: a new tensor instead
        return parts[0].clone() if pieces[0][2] == 1 else parts[0]
    return torch.cat(parts, axis)


@functools.lru_cache(maxsize=256)
def _pieces(k: int, b: int) -> tuple[tuple[int, int, int], ...]:
    """``rotate``'s pieces of an axis of ``k`` elements, ``(start, length, block)``: the whole
    blocks of ``b``, then the tail in powers of two, largest first (block 1: left as it is)."""
    full = k - k % b
    out = [(0, full, b)] if full else []
    pos, n = full, b
    while pos < k:
        while n > k - pos:
            n //= 2
        out.append((pos, n, n))
        pos += n
    return tuple(out)


def _corner(m: torch.Tensor, c: int) -> torch.Tensor:
    """The rotation of a tail piece of ``c`` elements: ``m``'s leading ``c x c`` corner times
    ``sqrt(b / c)`` (``m`` itself for ``c = b``)."""
    b = m.shape[0]
    return m if c == b else m[:c, :c] * math.sqrt(b / c)


def _matrix_piece(t: torch.Tensor, m: torch.Tensor, axis: int, lo: int, n: int,
                  c: int) -> torch.Tensor:
    """Elements ``[lo, lo + n)`` of ``t``'s ``axis``, each run of ``c`` multiplied by the
    corner of ``m`` (``c = 1``: as they are), by GEMMs (no transposes)."""
    if c == 1:
        return t[:, lo:lo + n] if axis == 1 else t[lo:lo + n]
    mat = _corner(m, c)
    if axis == 1:
        # one (rows * n / c, c) GEMM: a strided part is copied first (a batch of GEMMs of
        # n / c rows each would cost 2-3x more)
        part = t[:, lo:lo + n].contiguous()
        return (part.reshape(-1, c) @ mat).reshape(part.shape)
    part = t[lo:lo + n]
    return (mat.t() @ part.reshape(n // c, c, part.shape[1])).reshape(part.shape)


class _FastPlan(NamedTuple):
    """The fast transform of a ``(rows, cols)`` float32 tensor along one axis by a rotation of
    block ``b``: its blocks, each a run of ``c`` rows (down the columns) or columns (along the
    rows) from ``start``, rotated by the first ``c`` weights times ``sqrt(b / c)``."""

    along_rows: bool
    #: (blocks, 2) int64: each block's first row (column, along the rows) and its length c
    blocks: np.ndarray
    #: (blocks,) float32: ``sqrt(b / c)`` in float32 (1 for a whole block): the factor on the
    #: weights of a tail piece's corner
    factors: np.ndarray
    #: the tensor's row length
    cols: np.int64


@functools.lru_cache(maxsize=256)
def _fast_plan(b: int, rows: int, cols: int, axis: int) -> _FastPlan:
    """:class:`_FastPlan` of a ``(rows, cols)`` tensor rotated along ``axis`` in blocks of
    ``b`` (one per shape: a training step rotates a few shapes many times)."""
    blocks, factors = [], []
    for lo, n, c in _pieces(cols if axis == 1 else rows, b):
        for start in range(lo, lo + n, c):
            blocks.append((start, c))
            factors.append(np.float32(1.0) if c == b else np.float32(math.sqrt(b / c)))
    return _FastPlan(axis == 1, np.array(blocks, dtype=np.int64).reshape(-1, 2),
                     np.array(factors, dtype=np.float32), np.int64(cols))


def _walsh_hadamard(t: torch.Tensor, weights: np.ndarray, plan: _FastPlan) -> torch.Tensor:
    """:func:`rotate` of the float32 CPU tensor ``t`` by the fast transform, every block of
    ``plan`` in one kernel call into one new tensor: ``R^T @ t`` down the columns (each element
    times its row's weight, then ``H``'s butterflies in float32) or ``t @ R`` along the rows
    (the columns' transform of ``t``'s transpose, transposed back, bit for bit)."""
    x = t.detach().contiguous().numpy()
    out = np.empty_like(x)
    if x.size == 0:
        return torch.from_numpy(out)
    with threads_for(x.size) as threads:
        if plan.along_rows:
            kernel = _fwht_along_rows if threads > 1 else _fwht_along_rows_serial
        else:
            kernel = _fwht_down_columns if threads > 1 else _fwht_down_columns_serial
        kernel(x.reshape(-1), weights, plan.blocks, plan.factors, out.reshape(-1), plan.cols,
               np.int64(threads))
    return torch.from_numpy(out)


#: Columns per strip of :func:`_fwht_down_columns`: a (c x strip) tile stays in the L1 cache.
_STRIP = 64
#: Float32 lanes of the vectors the transforms work in (512 bits; narrower machines take two
#: or four of their own per vector).
_LANES = 16
#: Largest block down the columns that the vector transform takes: up to :data:`_LANES` rows
#: held as vectors of :data:`_LANES` columns at once, up to 64 in two passes (2048 x 64..768
#: float32, one thread, AMD EPYC: blocks of 16 0.11-0.22 ns per element against 0.25-0.42 for
#: the tile, of 32 and 64 0.17-0.42 against 0.29-0.48, and 0.65-1.0 against 0.85-1.2 where the
#: rows are 704 or 768 long; where they are a multiple of 512 float32 long, 64 rows a
#: multiple of 2 KB apart contend for a few cache sets and the tile is faster, there the
#: longer blocks take the tile).
_COLUMN_VECTORS_UPTO = 64


def _float32_vector_type(t) -> bool:
    """Whether numba type ``t`` is a 1-D float32 array (what the intrinsics below index)."""
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.float32


def _f32_vector(width: int) -> ir.VectorType:
    return ir.VectorType(ir.FloatType(), width)


def _vector_at(builder, data, index, width: int):
    """A pointer to ``width`` float32 from element ``index`` of the array data ``data``."""
    return builder.bitcast(builder.gep(data, [index]), _f32_vector(width).as_pointer())


def _stages_across(builder, vectors: list) -> None:
    """In place, the butterfly stages across ``vectors`` (LLVM IR values, a power of two of
    them): at distances ``h = 1, 2, ...``, vector ``q`` (``q & h`` clear) and vector ``q + h``
    become their sum and their difference."""
    h = 1
    while h < len(vectors):
        for q in range(len(vectors)):
            if q & h == 0:
                u, v = vectors[q], vectors[q + h]
                vectors[q], vectors[q + h] = builder.fadd(u, v), builder.fsub(u, v)
        h *= 2


def _row_transform(width: int, count: int):
    """An intrinsic ``transform(src, s, weights, k, dst, d)``: ``dst[d:d+n] = H_n (src[s:s+n] *
    weights[k:k+n])`` for ``n = width * count`` (float32 arrays, uint64 indices, no bounds
    checks), held as ``count`` vectors of ``width`` lanes: the stages at distances ``1, 2, ...,
    width / 2`` within each vector (each lane and its partner ``lane ^ h``: the low one ``u + v``,
    the high one ``u - v``, as a select), then those at ``width, 2 width, ...`` across the
    vectors.  The same additions in the same order as :func:`_butterflies`, element by
    element."""
    @intrinsic
    def transform(typingctx, src, s, weights, k, dst, d):
        if not all(_float32_vector_type(a) for a in (src, weights, dst)):
            return None

        def codegen(context, builder, sig, args):
            data = [context.make_array(sig.args[i])(context, builder, args[i]).data
                    for i in (0, 2, 4)]
            lane = ir.IntType(32)
            step = [ir.Constant(ir.IntType(64), q * width) for q in range(count)]
            vectors = []
            for q in range(count):                  # 1. weights
                x = builder.load(_vector_at(builder, data[0], builder.add(args[1], step[q]),
                                            width), align=4)
                w = builder.load(_vector_at(builder, data[1], builder.add(args[3], step[q]),
                                            width), align=4)
                vectors.append(builder.fmul(x, w))
            h = 1
            while h < width:                        # 2. H within each vector
                partner = ir.Constant(ir.VectorType(lane, width), [i ^ h for i in range(width)])
                low = ir.Constant(ir.VectorType(ir.IntType(1), width),
                                  [i & h == 0 for i in range(width)])
                for q in range(count):
                    v = vectors[q]
                    pv = builder.shuffle_vector(v, v, partner)
                    vectors[q] = builder.select(low, builder.fadd(v, pv), builder.fsub(pv, v))
                h *= 2
            _stages_across(builder, vectors)        # 3. H across them
            for q in range(count):
                builder.store(vectors[q], _vector_at(builder, data[2],
                                                     builder.add(args[5], step[q]), width),
                              align=4)
            return context.get_dummy_value()
        return types.void(src, s, weights, k, dst, d), codegen
    return transform


def _column_transform(count: int):
    """An intrinsic ``transform(src, s, weights, dst, stride)``: for the :data:`_LANES`
    columns from flat index ``s`` of ``count`` rows ``stride`` apart (float32 arrays, uint64
    indices, no bounds checks), ``dst = H_count (weights * src)``, row ``j`` times
    ``weights[j]``, the rows held as vectors: the stages across them at distances ``1, 2,
    ...``, the same additions in the same order as :func:`_butterflies`."""
    @intrinsic
    def transform(typingctx, src, s, weights, dst, stride):
        if not all(_float32_vector_type(a) for a in (src, weights, dst)):
            return None

        def codegen(context, builder, sig, args):
            data = [context.make_array(sig.args[i])(context, builder, args[i]).data
                    for i in (0, 2, 3)]
            at = [builder.add(args[1], builder.mul(args[4], ir.Constant(ir.IntType(64), j)))
                  for j in range(count)]
            broadcast = ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES)
            vectors = []
            for j in range(count):                  # 1. weights
                x = builder.load(_vector_at(builder, data[0], at[j], _LANES), align=4)
                w = builder.load(builder.gep(data[1], [ir.Constant(ir.IntType(64), j)]))
                w = builder.insert_element(ir.Constant(_f32_vector(_LANES), ir.Undefined), w,
                                           ir.Constant(ir.IntType(32), 0))
                vectors.append(builder.fmul(x, builder.shuffle_vector(w, w, broadcast)))
            _stages_across(builder, vectors)        # 2. H
            for j in range(count):
                builder.store(vectors[j], _vector_at(builder, data[2], at[j], _LANES), align=4)
            return context.get_dummy_value()
        return types.void(src, s, weights, dst, stride), codegen
    return transform


def _column_stages(count: int):
    """An intrinsic ``stages(a, s, stride)``: in place, for the :data:`_LANES` columns from flat
    index ``s`` of ``count`` rows ``stride`` apart, the stages of ``H_count`` across the rows
    (no weights): the later stages of a block of ``16 count`` rows whose runs of 16 rows have
    had theirs (:func:`_column_transform`), each ``stride`` being 16 rows."""
    @intrinsic
    def stages(typingctx, a, s, stride):
        if not _float32_vector_type(a):
            return None

        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            at = [_vector_at(builder, data, builder.add(
                args[1], builder.mul(args[2], ir.Constant(ir.IntType(64), j))), _LANES)
                for j in range(count)]
            vectors = [builder.load(p, align=4) for p in at]
            _stages_across(builder, vectors)
            for v, p in zip(vectors, at):
                builder.store(v, p, align=4)
            return context.get_dummy_value()
        return types.void(a, s, stride), codegen
    return stages


_row_64, _row_32, _row_16, _row_8 = (_row_transform(_LANES, 4), _row_transform(_LANES, 2),
                                     _row_transform(_LANES, 1), _row_transform(8, 1))
_column_16, _column_8, _column_4, _column_2 = (_column_transform(16), _column_transform(8),
                                               _column_transform(4), _column_transform(2))
_column_stages_4, _column_stages_2 = _column_stages(4), _column_stages(2)


@numba.njit(inline="always")
def _block_weights(weights, b, factor, into):
    """``into[:b]``: the first ``b`` weights times ``factor`` (a tail piece's corner: the
    float32 products, as numpy forms them), or the weights themselves for ``factor`` 1."""
    for j in range(b):
        into[j] = weights[j] if factor == np.float32(1.0) else np.float32(weights[j] * factor)


@numba.njit(inline="always")
def _columns_by_vectors(x, wb, out, r0, c0, w, b, cols):
    """Rows ``[r0, r0 + b)`` (``b`` at most :data:`_COLUMN_VECTORS_UPTO`) of columns ``[c0, c0
    + w)`` (``w`` a multiple of :data:`_LANES`) rotated down the columns by vectors: a block
    of more than 16 rows as runs of 16 through the first four stages, then the rest across
    the runs, in place."""
    stride = np.uint64(cols)
    runs = max(b // _LANES, 1)
    for c in range(c0, c0 + w, _LANES):
        at = np.uint64(r0 * cols + c)
        if b >= _LANES:
            for q in range(runs):
                _column_16(x, at + np.uint64(q * _LANES) * stride, wb[q * _LANES:], out,
                           stride)
            for j in range(_LANES if runs > 1 else 0):
                row = at + np.uint64(j) * stride
                if runs == 4:
                    _column_stages_4(out, row, np.uint64(_LANES) * stride)
                else:
                    _column_stages_2(out, row, np.uint64(_LANES) * stride)
        elif b == 8:
            _column_8(x, at, wb, out, stride)
        elif b == 4:
            _column_4(x, at, wb, out, stride)
        else:
            _column_2(x, at, wb, out, stride)


@numba.njit(inline="always")
def _columns_by_tile(x, wb, out, r0, c0, w, b, cols, tile):
    """Rows ``[r0, r0 + b)`` of columns ``[c0, c0 + w)`` rotated down the columns through the
    ``(b, w)`` tile: weights in, :func:`_butterflies`, back to the rows."""
    w = np.uint64(w)
    for j in range(b):
        wj = wb[j]
        src = np.uint64((r0 + j) * cols + c0)
        dst = np.uint64(j) * w
        for c in range(w):
            tile[dst + c] = x[src + c] * wj
    _butterflies(tile, b, w)
    for j in range(b):
        src = np.uint64(j) * w
        dst = np.uint64((r0 + j) * cols + c0)
        for c in range(w):
            out[dst + c] = tile[src + c]


def _fwht_down_columns_source(x, weights, blocks, factors, out, cols, threads):
    """``out = H_c (w * x)`` for every block of ``c`` rows in ``blocks`` (first row, ``c``;
    ``w``: the first ``c`` weights times the block's factor; ``c = 1``: copied) of the flat
    C-order ``(rows, cols)`` float32 arrays, :data:`_STRIP` columns at a time, in a few runs
    per thread (each allocates its scratch once): a block of up to
    :data:`_COLUMN_VECTORS_UPTO` rows by vectors of :data:`_LANES` columns, the rest (larger
    blocks, the last columns) through a tile."""
    width = min(cols, _STRIP)
    strips = (cols + width - 1) // width
    total = blocks.shape[0] * strips
    runs = min(total, 4 * threads)
    per_run = (total + runs - 1) // runs
    for run in prange(runs):
        tile = np.empty(weights.size * width, dtype=np.float32)
        wb = np.empty(weights.size, dtype=np.float32)
        for item in range(run * per_run, min((run + 1) * per_run, total)):
            blk = item // strips
            c0 = (item - blk * strips) * width
            w = min(width, cols - c0)
            r0, b = blocks[blk, 0], blocks[blk, 1]
            if b == 1:                             # a last single row: as it is
                src = np.uint64(r0 * cols + c0)
                for c in range(np.uint64(w)):
                    out[src + c] = x[src + c]
                continue
            _block_weights(weights, b, factors[blk], wb)
            by_vectors = b <= _LANES or (b <= _COLUMN_VECTORS_UPTO and cols % 512 != 0)
            vectors = w - w % _LANES if by_vectors else 0
            if vectors:
                _columns_by_vectors(x, wb, out, r0, c0, vectors, b, cols)
            if vectors < w:
                _columns_by_tile(x, wb, out, r0, c0 + vectors, w - vectors, b, cols, tile)


def _fwht_along_rows_source(x, weights, blocks, factors, out, cols, threads):
    """``out = (w * x) H_c`` for every block of ``c`` columns in ``blocks`` (first column,
    ``c``; weights as in :func:`_fwht_down_columns`) of the flat C-order ``(rows, cols)``
    float32 arrays, row by row, in a few runs of rows per thread: a block of 8 to 64 columns
    in vectors (:func:`_row_transform`), a longer one 64 at a time then its stages from 64 on
    in place, one of 2 or 4 through :func:`_butterflies`, one of 1 copied."""
    rows = x.size // cols
    nblocks = blocks.shape[0]
    b = weights.size
    runs = min(rows, 4 * threads)
    per_run = (rows + runs - 1) // runs
    for run in prange(runs):
        # each block's weights, a row of its own
        wb = np.empty(nblocks * b, dtype=np.float32)
        for blk in range(nblocks):
            _block_weights(weights, blocks[blk, 1], factors[blk], wb[blk * b:])
        tile = np.empty(4, dtype=np.float32)
        for r in range(run * per_run, min((run + 1) * per_run, rows)):
            for blk in range(nblocks):
                c = blocks[blk, 1]
                at = np.uint64(r * cols + blocks[blk, 0])
                k = np.uint64(blk * b)
                if c == 64:
                    _row_64(x, at, wb, k, out, at)
                elif c == 32:
                    _row_32(x, at, wb, k, out, at)
                elif c == 16:
                    _row_16(x, at, wb, k, out, at)
                elif c == 8:
                    _row_8(x, at, wb, k, out, at)
                elif c > 64:
                    n = np.uint64(c)
                    for q in range(np.uint64(0), n, np.uint64(64)):
                        _row_64(x, at + q, wb, k + q, out, at + q)
                    h = np.uint64(64)
                    while h < n:                   # the stages from 64 on, in place
                        for i0 in range(np.uint64(0), n, np.uint64(2) * h):
                            p0 = at + i0
                            for i in range(h):
                                u, v = out[p0 + i], out[p0 + h + i]
                                out[p0 + i] = u + v
                                out[p0 + h + i] = u - v
                        h *= np.uint64(2)
                elif c > 1:
                    for j in range(c):
                        tile[j] = x[at + np.uint64(j)] * wb[k + np.uint64(j)]
                    _butterflies(tile, c, np.uint64(1))
                    for j in range(c):
                        out[at + np.uint64(j)] = tile[j]
                else:
                    out[at] = x[at]


@numba.njit(inline="always")
def _butterflies(tile, b, w):
    """In place, ``H_b`` times every column of the ``(b, w)`` tile held flat (row stride ``w``):
    the stages ``(u, v) -> (u + v, u - v)`` at distances 1, 2, 4, ... (Sylvester order), two
    stages per pass over the tile and a last single stage when ``log2 b`` is odd.  Each element
    sees the same additions, in the same order, as stage after stage."""
    h = 1
    while 4 * h <= b:
        for i0 in range(0, b, 4 * h):
            for i in range(i0, i0 + h):
                p0 = np.uint64(i) * w
                p1 = np.uint64(i + h) * w
                p2 = np.uint64(i + 2 * h) * w
                p3 = np.uint64(i + 3 * h) * w
                for c in range(w):
                    a0, a1, a2, a3 = tile[p0 + c], tile[p1 + c], tile[p2 + c], tile[p3 + c]
                    s01, d01, s23, d23 = a0 + a1, a0 - a1, a2 + a3, a2 - a3
                    tile[p0 + c] = s01 + s23
                    tile[p1 + c] = d01 + d23
                    tile[p2 + c] = s01 - s23
                    tile[p3 + c] = d01 - d23
        h *= 4
    if h < b:
        for i in range(h):
            p0 = np.uint64(i) * w
            p1 = np.uint64(i + h) * w
            for c in range(w):
                a0, a1 = tile[p0 + c], tile[p1 + c]
                tile[p0 + c] = a0 + a1
                tile[p1 + c] = a0 - a1


# Each loop compiled twice: with threads, and for calls on one thread without (entering a
# parallel region cost about 15 us a call inside a training step, where a 16-point transform
# of 2048 x 64 takes about 110).
_fwht_down_columns = numba.njit(**JIT)(_fwht_down_columns_source)
_fwht_down_columns_serial = njit_as(_fwht_down_columns_source, "_serial", SERIAL_JIT)
_fwht_along_rows = numba.njit(**JIT)(_fwht_along_rows_source)
_fwht_along_rows_serial = njit_as(_fwht_along_rows_source, "_serial", SERIAL_JIT)
