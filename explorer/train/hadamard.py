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
from numba import prange

from fpformat.dispatch import JIT, SERIAL_JIT, threads_for

#: Largest Hadamard block (elements): the dense b x b matrix stays small.
MAX_HADAMARD_BLOCK = 1 << 12
#: Smallest block the fast transform runs for along the rows, where it transposes 8 x 8
#: elements at a time (down the columns it runs for every block: 2048 x 64..688 float32, one
#: thread, Ice Lake, 0.27-0.38 ns per element for blocks of 2 to 64 against 0.41-0.97 for the
#: GEMM).  Along the rows, 2048 x 64..512 against the GEMM: 16 slower (0.79 against 0.59 ns),
#: 32 even, 64 0.5-0.65x, 128 0.3-0.4x.
FAST_ROWS_FROM = 64


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
    return random_signs(block, seed)[:, None] * sylvester(block) / math.sqrt(block)


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
    ``axis=0`` (its columns); ``r`` None returns ``t``.  So ``rotate(a, r, 1) @ rotate(b, r, 0)
    == a @ b`` up to rounding.

    A length that is not a multiple of ``b`` keeps the transform orthogonal: the tail is cut
    into powers of two, largest first, each rotated by the leading ``n x n`` corner of ``r``
    rescaled by ``sqrt(b / n)`` (the Sylvester ``H_n`` with the first ``n`` signs); a last single
    element stays as it is.

    ``r`` a :class:`Rotation` on a float32 CPU tensor: the pieces run as the fast
    Walsh-Hadamard transform (module docstring; a tail piece's weights are its corner's first
    column) -- down the columns every piece, along the rows those of 8 or more elements when
    ``b`` is at least :data:`FAST_ROWS_FROM`; the other pieces, and every other ``r``, tensor
    or device, multiply by the matrix."""
    if r is None:
        return t
    weights = None
    if isinstance(r, Rotation):
        r, weights = r
        if not (t.device.type == "cpu" and t.dtype == torch.float32
                and (axis == 0 or r.shape[0] >= FAST_ROWS_FROM)):
            weights = None
    pieces = _pieces(t.shape[axis], r.shape[0])
    if weights is not None:        # r is a Rotation's float32 CPU matrix, as t wants it
        return _walsh_hadamard_pieces(t, r, weights, axis, pieces)
    m = r.to(device=t.device, dtype=t.dtype)
    parts = [_matrix_piece(t, m, axis, lo, n, c) for lo, n, c in pieces]
    return parts[0] if len(parts) == 1 else torch.cat(parts, axis)


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


def _walsh_hadamard_pieces(t: torch.Tensor, m: torch.Tensor, weights: np.ndarray, axis: int,
                           pieces: list[tuple[int, int, int]]) -> torch.Tensor:
    """:func:`rotate` of the float32 CPU tensor ``t`` by the fast transform: ``R^T @ t`` down
    the columns (``axis`` 0: each element times its row's weight, then ``H``'s butterflies in
    float32) or ``t @ R`` along the rows (1: the columns' transform of ``t``'s transpose,
    transposed back, bit for bit), piece by piece into one new tensor (no copies of parts in
    or out); along the rows a piece of fewer than 8 elements multiplies by its matrix."""
    x = t.detach().contiguous().numpy()
    out = np.empty_like(x)
    rows, cols = x.shape
    b = weights.size
    xf, of = x.reshape(-1), out.reshape(-1)
    with threads_for(x.size) as threads:
        down_columns, along_rows = ((_fwht_down_columns, _fwht_along_rows) if threads > 1 else
                                    (_fwht_down_columns_serial, _fwht_along_rows_serial))
        for lo, n, c in pieces:
            if c == 1:
                if axis == 0:
                    out[lo:lo + n] = x[lo:lo + n]
                else:
                    out[:, lo:lo + n] = x[:, lo:lo + n]
                continue
            # the corner's first column: exactly its entries' magnitudes, with their signs
            w = weights if c == b else weights[:c] * np.float32(math.sqrt(b / c))
            if axis == 0:                   # rows [lo, lo + n) are a flat run of the arrays
                span = slice(lo * cols, (lo + n) * cols)
                down_columns(xf[span], w, of[span], np.int64(cols), np.int64(threads))
            elif c >= 8:
                along_rows(xf, w, of, np.int64(cols), np.int64(lo), np.int64(n),
                           np.int64(threads))
            else:
                out[:, lo:lo + n] = _matrix_piece(t.detach(), m, 1, lo, n, c).numpy()
    return torch.from_numpy(out)


#: Columns per strip of :func:`_fwht_down_columns` (rows per strip of :func:`_fwht_along_rows`):
#: a (b x strip) tile stays in the L1 cache.
_STRIP = 64


def _fwht_down_columns_source(x, weights, out, cols, threads):
    """``out = H_b (weights * x)`` for every block of ``b = weights.size`` rows of the flat
    C-order ``(rows, cols)`` float32 arrays, column by column: tiles of ``b`` rows by up to
    :data:`_STRIP` columns, in a few runs per thread (each allocates its tile once)."""
    b = weights.size
    width = min(cols, _STRIP)
    strips = (cols + width - 1) // width
    total = (x.size // cols // b) * strips
    runs = min(total, 4 * threads)
    per_run = (total + runs - 1) // runs
    for run in prange(runs):
        tile = np.empty(b * width, dtype=np.float32)
        for item in range(run * per_run, min((run + 1) * per_run, total)):
            g = item // strips
            c0 = (item - g * strips) * width
            w = np.uint64(min(width, cols - c0))
            for j in range(b):                     # 1. weights (R's signs and 1/sqrt(b))
                wj = weights[j]
                src = np.uint64((g * b + j) * cols + c0)
                dst = np.uint64(j) * w
                for c in range(w):
                    tile[dst + c] = x[src + c] * wj
            _butterflies(tile, b, w)               # 2. H_b
            for j in range(b):                     # 3. back to the rows
                src = np.uint64(j) * w
                dst = np.uint64((g * b + j) * cols + c0)
                for c in range(w):
                    out[dst + c] = tile[src + c]


def _fwht_along_rows_source(x, weights, out, cols, lo, span, threads):
    """``out = (weights * x) H_b`` for every block of ``b = weights.size`` columns (``b`` a
    multiple of 8) in columns ``[lo, lo + span)`` (``span`` a multiple of ``b``) of the flat
    C-order ``(rows, cols)`` float32 arrays: each block of up to
    :data:`_STRIP` rows is transposed into a ``(b, rows)`` tile, so the butterflies run down
    its columns as in :func:`_fwht_down_columns` (the same additions in the same order), and
    transposed back; the transposes go 8 x 8 elements at a time (a run of 8 contiguous
    elements each way)."""
    b = weights.size
    rows = x.size // cols
    strips = (rows + _STRIP - 1) // _STRIP
    blocks = span // b
    total = strips * blocks
    runs = min(total, 4 * threads)
    per_run = (total + runs - 1) // runs
    for run in prange(runs):
        tile = np.empty(b * _STRIP, dtype=np.float32)
        for item in range(run * per_run, min((run + 1) * per_run, total)):
            s = item // blocks
            r0 = s * _STRIP
            c0 = lo + (item - s * blocks) * b
            w = min(_STRIP, rows - r0)
            eights = w - w % 8
            for rb in range(0, eights, 8):         # 1. weights, into the transposed tile
                for jb in range(0, b, 8):
                    for r in range(8):
                        src = np.uint64((r0 + rb + r) * cols + c0 + jb)
                        for j in range(8):
                            tile[np.uint64((jb + j) * w + rb + r)] = \
                                x[src + np.uint64(j)] * weights[jb + j]
            for r in range(eights, w):
                src = np.uint64((r0 + r) * cols + c0)
                for j in range(b):
                    tile[np.uint64(j * w + r)] = x[src + np.uint64(j)] * weights[j]
            _butterflies(tile, b, np.uint64(w))    # 2. H_b down the tile's columns
            for rb in range(0, eights, 8):         # 3. transposed back
                for jb in range(0, b, 8):
                    for r in range(8):
                        dst = np.uint64((r0 + rb + r) * cols + c0 + jb)
                        for j in range(8):
                            out[dst + np.uint64(j)] = tile[np.uint64((jb + j) * w + rb + r)]
            for r in range(eights, w):
                dst = np.uint64((r0 + r) * cols + c0)
                for j in range(b):
                    out[dst + np.uint64(j)] = tile[np.uint64(j * w + r)]


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
_fwht_down_columns_serial = numba.njit(**SERIAL_JIT)(_fwht_down_columns_source)
_fwht_along_rows = numba.njit(**JIT)(_fwht_along_rows_source)
_fwht_along_rows_serial = numba.njit(**SERIAL_JIT)(_fwht_along_rows_source)
