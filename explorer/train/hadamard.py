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
error of order 1e-7 per element, as in the field's kernels).
"""

from __future__ import annotations

import hashlib
import math

import torch

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


def rotate(t: torch.Tensor, r: torch.Tensor | None, axis: int) -> torch.Tensor:
    """``t`` (2-D) with every block of ``b = r.shape[0]`` elements along ``axis`` (0 or 1)
    multiplied by the orthogonal ``r``: ``t @ R`` for ``axis=1`` (``t``'s rows), ``R^T @ t`` for
    ``axis=0`` (its columns); ``r`` None returns ``t``.  So ``rotate(a, r, 1) @ rotate(b, r, 0)
    == a @ b`` up to rounding.

    A length that is not a multiple of ``b`` keeps the transform orthogonal: the tail is cut
    into powers of two, largest first, each rotated by the leading ``n x n`` corner of ``r``
    rescaled by ``sqrt(b / n)`` (the Sylvester ``H_n`` with the first ``n`` signs); a last single
    element stays as it is."""
    if r is None:
        return t
    k = t.shape[axis]
    b = r.shape[0]
    m = r.to(device=t.device, dtype=t.dtype)

    def blocks(lo: int, n: int, mat: torch.Tensor) -> torch.Tensor:
        # elements [lo, lo + n) of the axis, each run of mat.shape[0] times mat; no transposes
        c = mat.shape[0]
        if axis == 1:
            part = t[:, lo:lo + n]
            if part.is_contiguous():                       # one (rows * n / c, c) GEMM
                return (part.reshape(-1, c) @ mat).reshape(part.shape)
            return (part.reshape(part.shape[0], n // c, c) @ mat).reshape(part.shape)
        part = t[lo:lo + n]
        return (mat.t() @ part.reshape(n // c, c, part.shape[1])).reshape(part.shape)

    full = k - k % b
    parts = [blocks(0, full, m)] if full else []
    pos, n = full, b
    while pos < k:
        while n > k - pos:
            n //= 2
        if n == 1:
            parts.append(t[:, pos:] if axis == 1 else t[pos:])
            break
        parts.append(blocks(pos, n, m[:n, :n] * math.sqrt(b / n)))
        pos += n
    return parts[0] if len(parts) == 1 else torch.cat(parts, axis)
