"""Packing of 4-bit and 6-bit codes into bytes, in the layouts hardware and torch use.

    from fpformat import get_format
    from fpformat.packing import pack, unpack
    codes = get_format("float4_e2m1fn").encode(x)        # one uint8 per element, values < 16
    packed = pack(codes, 4)                              # two per byte: x.shape[-1] // 2 bytes
    assert (unpack(packed, 4) == codes).all()

Codes are packed along the last axis (its length must be a multiple of 2 for 4-bit and of 4
for 6-bit codes); the other axes stay.  Two layouts (``order=``):

``"lsb"`` (the default): a little-endian bit stream.  Element ``i`` occupies bits
``bits*i .. bits*i + bits - 1`` of the packed row, bit 0 being the least significant bit of
byte 0: the first element of a pair sits in the *low* nibble, and four 6-bit codes
``a b c d`` fill three bytes as ``[b1 b0 a5..a0] [c3..c0 b5..b2] [d5..d0 c5 c4]``.  Sources:

* 4-bit: torch's ``float4_e2m1fn_x2`` (c10/util/Float4_e2m1fn_x2.h: "val1 : val0" in bits
  "7654 : 3210"), the FP4 operands of NVIDIA's tensor-core MMAs as CUTLASS stores
  ``float_e2m1_t`` arrays (element 0 in the low bits), Triton's ``triton_kernels`` FP4 pack
  (``hi << 4 | lo``); PTX ``cvt.rn.satfinite.e2m1x2.f32 d, a, b`` puts ``b`` in the low nibble,
  so ``b`` is the first element in memory.
* 6-bit: the layout CUTLASS's MXFP6 GEMMs read (the ``[b1 b0][a5 .. a0]`` pattern of torchao's
  Triton ``pack_uint6`` kernel as used for ``cutlass_scaled_mxfp6_mxfp8_mm``) and AMD
  rocRoller's ``getFp6`` (element 0 is ``byte0 & 0x3f``).

``"msb"``: a big-endian bit stream, element 0 in the most significant bits of byte 0: pairs as
``hi = first`` (older torchao ``pack_uint4``, AMD Quark's ``_pack``), and 6-bit codes as
``AAAAAABB|BBBBCCCC|CCDDDDDD`` (torchao ``dtypes/uintx/bitpacking.py`` ``pack_uint6``).

The OCP MX specification v1.0 defines the element encodings, not a byte layout; check a
consumer's layout against a known byte pattern before trusting either order.
"""

from __future__ import annotations

import numpy as np

ORDERS = ("lsb", "msb")
#: Codes per group and bytes per group, by code width.
_GROUPS = {4: (2, 1), 6: (4, 3)}


def _check(bits, order) -> tuple[int, int]:
    if isinstance(bits, bool) or bits not in _GROUPS:
        raise ValueError(f"bits must be 4 or 6, got {bits!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    return _GROUPS[bits]


def pack(codes, bits: int, order: str = "lsb") -> np.ndarray:
    """Pack ``bits``-bit codes (4 or 6) along the last axis into a uint8 array (module
    docstring for the layouts).  ``codes``: non-negative integers below ``2**bits``, last axis a
    multiple of 2 (4-bit) or 4 (6-bit).  Returns shape ``(..., n * bits // 8)``."""
    per, nbytes = _check(bits, order)
    c = np.asarray(codes)
    if c.dtype.kind not in "ui":
        raise ValueError(f"codes must be an integer array, got dtype {c.dtype}")
    if c.ndim == 0:
        raise ValueError("codes must have at least one dimension")
    if c.shape[-1] % per:
        raise ValueError(f"the last axis of codes must be a multiple of {per} for {bits}-bit "
                         f"packing, got length {c.shape[-1]}")
    if c.size and (int(c.min()) < 0 or int(c.max()) >= 1 << bits):
        raise ValueError(f"codes must be in 0..{(1 << bits) - 1} for {bits}-bit packing, got "
                         f"values in {int(c.min())}..{int(c.max())}")
    g = c.astype(np.uint32).reshape(c.shape[:-1] + (c.shape[-1] // per, per))
    word = np.zeros(g.shape[:-1], dtype=np.uint32)        # one group: 8 or 24 bits
    for i in range(per):
        shift = bits * i if order == "lsb" else bits * (per - 1 - i)
        word |= g[..., i] << np.uint32(shift)
    out = np.empty(g.shape[:-1] + (nbytes,), dtype=np.uint8)
    for j in range(nbytes):
        shift = 8 * j if order == "lsb" else 8 * (nbytes - 1 - j)
        out[..., j] = (word >> np.uint32(shift)) & np.uint32(0xFF)
    return out.reshape(c.shape[:-1] + (c.shape[-1] // per * nbytes,))


def unpack(packed, bits: int, order: str = "lsb") -> np.ndarray:
    """The inverse of :func:`pack`: uint8 codes, shape ``(..., n * 8 // bits)``.  ``packed``:
    a uint8 array (any integer dtype with values below 256) whose last axis is a multiple of 1
    (4-bit) or 3 (6-bit) bytes."""
    per, nbytes = _check(bits, order)
    p = np.asarray(packed)
    if p.dtype.kind not in "ui":
        raise ValueError(f"packed must be an integer (uint8) array, got dtype {p.dtype}")
    if p.ndim == 0:
        raise ValueError("packed must have at least one dimension")
    if p.shape[-1] % nbytes:
        raise ValueError(f"the last axis of packed must be a multiple of {nbytes} bytes for "
                         f"{bits}-bit codes, got length {p.shape[-1]}")
    if p.size and (int(p.min()) < 0 or int(p.max()) > 0xFF):
        raise ValueError("packed must hold bytes (values in 0..255)")
    g = p.astype(np.uint32).reshape(p.shape[:-1] + (p.shape[-1] // nbytes, nbytes))
    word = np.zeros(g.shape[:-1], dtype=np.uint32)
    for j in range(nbytes):
        shift = 8 * j if order == "lsb" else 8 * (nbytes - 1 - j)
        word |= g[..., j] << np.uint32(shift)
    out = np.empty(g.shape[:-1] + (per,), dtype=np.uint8)
    for i in range(per):
        shift = bits * i if order == "lsb" else bits * (per - 1 - i)
        out[..., i] = (word >> np.uint32(shift)) & np.uint32((1 << bits) - 1)
    return out.reshape(p.shape[:-1] + (p.shape[-1] // nbytes * per,))
