"""Block scaling: `BlockFormat` pairs an element format with a scale shared by a block.

    b = get_format("mxfp4")                      # OCP MX: float4_e2m1fn elements, E8M0 scale / 32
    enc = b.encode(x)                            # enc.codes (x's shape), enc.scales (per block)
    y = b.decode(enc)                            # == b.quantize(x)
    get_format("e4m3/channel")                   # Sun et al.: S = amax/max_elem per row, float32
    get_format("e2m1/16/ue4m3fn/nvfp4")          # NVFP4 (= get_format("nvfp4"))
    get_format("e4m3/128x128")                   # 2-D tiles over the last two axes

Scale rules (``scale_rule``), for a block with largest magnitude ``amax``:

* ``"ocp"`` (OCP Microscaling Formats v1.0): ``X = 2**(floor(log2 amax) - emax_elem)`` with
  ``emax_elem = floor(log2(element.max))`` (E4M3FN 8, E5M2 15, E2M3 2, E3M2 4, E2M1 2, INT8 0),
  the exponent clamped to E8M0's ``[-127, 127]``; a zero block gets ``2**-127``.
* ``"amax"`` (Sun et al.): ``S = amax / element.max``; with ``scale_format=None`` it is held as
  a float32 (rounded to nearest); with a scale format it is rounded into it, ``"up"`` (no element
  overflows) or ``"nearest"`` (``scale_rounding``); a zero block gets scale 1 (elements 0).
* ``"nvfp4"``: a float32 tensor scale ``s_t = amax_tensor / (448 * 6)`` (1 for an all-zero
  tensor) and a per-block scale ``s_b = round_nearest_sat(amax_block / (6 * s_t))`` in the scale
  format (UE4M3); elements are scaled by ``s_b * s_t`` (a zero ``s_b`` gives zero elements).

Elements are ``round(x / scale)`` into the element format, saturating (values beyond the element
max clamp to ±max, as OCP prescribes), with the chosen rounding mode; ``x / scale`` is formed in
float64 (exact for power-of-two scales, correctly rounded otherwise; the float32 MX kernel in
:mod:`fpformat.block_core` forms it in float32 where that is provably equivalent).  A block
holding a NaN or an infinity gets a NaN scale (E8M0 code 255, the scale format's NaN, or a
float32 NaN) and all its elements decode as NaN; where the scale format has no NaN such a block
has no encoding: ``encode`` raises ``ValueError`` naming it, ``quantize`` gives NaN for it.
Blocks may be ragged: the last block along the axis is shorter when the length is not a multiple
of the block size.  Stochastic rounding draws element ``i``'s random bits from its flat index in
``x``, as for element formats, or takes them from ``random_bits`` (the numpy path).

The block presets and the spec grammar live in :mod:`fpformat.presets`, the scale helpers shared
with the kernels in :mod:`fpformat.scales`, golden vectors in :mod:`fpformat.vectors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from . import block_core, block_kernels, cuda
from .arrays import as_float_array, check_out, float_kind, is_cuda_array, restore_dtype
from .block_kernels import run_blocks
from .format import FloatFormat, element_format, hash_once
from .scales import BlockEncoding, emax_elem, is_pow2_format, tensor_scale

SCALE_RULES = ("ocp", "amax", "nvfp4")
#: Largest block (and tile side) in elements: block indices stay within 32-bit arithmetic.
MAX_BLOCK = (1 << 31) - 1
SCALE_ROUNDINGS = ("up", "nearest")


def _element(fmt) -> FloatFormat:
    f = element_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(f, FloatFormat):
        raise TypeError(f"element must be an element format (FloatFormat or name), got {fmt!r}")
    return f


class FusedGeometry(NamedTuple):
    """How the fused kernels see an input (:meth:`BlockFormat.fused_geometry`)."""

    #: the C-contiguous input viewed as ``(rows, L)``
    shape: tuple[int, int]
    #: elements per block along a row (1: blocks down the columns)
    k: int
    #: rows a block spans (1: a block within a row; a tile's height; the block length down
    #: the columns)
    tile_rows: int
    #: blocks run down the columns (the float32 MX kernel's column mode)
    down_columns: bool


@hash_once
@dataclass(frozen=True)
class BlockFormat:
    """An element format with a shared scale per block (see the module docstring).

    Args:
        element: the element format (FloatFormat or a name).
        block_size: elements per block along ``axis`` (int >= 1), ``"channel"`` (the whole axis:
            one scale per row) or ``"tensor"`` (one scale for the whole array).
        axis: the axis blocks run along (default the last).
        tile: ``(rows, cols)`` 2-D tiles over the last two axes instead (e.g. ``(128, 128)``
            for weights, ``(1, 128)`` for activations); ``block_size`` is then ignored.
        scale_format: None (float32 scales) or a FloatFormat (E8M0, UE4M3, any).
        scale_rule: ``"ocp"``, ``"amax"`` or ``"nvfp4"``.
        scale_rounding: for ``"amax"`` into a scale format: ``"up"`` or ``"nearest"``.
        int_codes: element codes are two's-complement integers (OCP MXINT8): the element must
            be a signed ``e0m{B-1}b0`` format (values ``k * 2**(2 - B)``, ``|k| < 2**(B-1)``),
            written ``intB`` in specs.  ``-k`` is coded ``2**B - k``; there is no -0 (a negative
            value rounding to zero gives +0, in quantize too); the code ``2**(B-1)`` (``-2``)
            is never produced and decodes as ``-2 * scale``.
        name: display name; not part of equality.
    """

    element: Any
    block_size: int | str = 32
    axis: int = -1
    tile: tuple[int, int] | None = None
    scale_format: Any = None
    scale_rule: str = "amax"
    scale_rounding: str = "up"
    int_codes: bool = False
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "element", _element(self.element))
        if self.scale_format is not None:
            object.__setattr__(self, "scale_format", _element(self.scale_format))
        bs = self.block_size
        if isinstance(bs, str):
            if bs not in ("channel", "tensor"):
                raise ValueError(f"block_size must be an int >= 1, 'channel' or 'tensor', "
                                 f"got {bs!r}")
        elif isinstance(bs, bool) or not isinstance(bs, (int, np.integer)) \
                or not 1 <= bs <= MAX_BLOCK:
            raise ValueError(f"block_size must be an int in 1..{MAX_BLOCK}, 'channel' or "
                             f"'tensor', got {bs!r}")
        else:
            object.__setattr__(self, "block_size", int(bs))
        if self.tile is not None:
            t = tuple(self.tile)
            if len(t) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                  or not 1 <= v <= MAX_BLOCK for v in t):
                raise ValueError(f"tile must be (rows, cols) with ints in 1..{MAX_BLOCK}, "
                                 f"got {self.tile!r}")
            object.__setattr__(self, "tile", (int(t[0]), int(t[1])))
        if isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer)):
            raise TypeError(f"axis must be an int, got {self.axis!r}")
        if self.scale_rule not in SCALE_RULES:
            raise ValueError(f"scale_rule must be one of {', '.join(SCALE_RULES)}, "
                             f"got {self.scale_rule!r}")
        if self.scale_rounding not in SCALE_ROUNDINGS:
            raise ValueError(f"scale_rounding must be 'up' or 'nearest', "
                             f"got {self.scale_rounding!r}")
        if self.scale_rule == "ocp" and self.scale_format is not None \
                and not is_pow2_format(self.scale_format):
            raise ValueError("scale_rule 'ocp' needs a power-of-two scale format (E8M0-like: "
                             "unsigned, man_bits=0, no zero) or scale_format=None")
        if self.scale_rule == "nvfp4" and self.scale_format is None:
            raise ValueError("scale_rule 'nvfp4' needs a scale_format (UE4M3: 'ue4m3fn')")
        if self.element.max <= 0:
            raise ValueError("the element format needs a positive max")
        if not isinstance(self.int_codes, (bool, np.bool_)):
            raise TypeError(f"int_codes must be a bool, got {self.int_codes!r}")
        el = self.element
        if self.int_codes and not (el.exp_bits == 0 and el.bias == 0 and el.signed
                                   and el.has_zero and el.negative_zero):
            raise ValueError(f"int_codes needs a signed integer element e0m<M>b0 (intB), got {el}")

    # ----------------------------------------------------------------------------- naming
    @property
    def spec(self) -> str:
        """A spec string ``ELEMENT/BLOCK[/SCALE][/RULE]`` that ``get_format`` parses back."""
        blk = f"{self.tile[0]}x{self.tile[1]}" if self.tile else str(self.block_size)
        parts = [f"int{self.element.bits}" if self.int_codes else self.element.spec, blk]
        default_rule = "ocp" if self.scale_format is not None and \
            is_pow2_format(self.scale_format) else "amax"
        if self.scale_format is not None:
            parts.append(self.scale_format.spec)
        if self.scale_rule != default_rule or self.scale_rounding != "up":
            parts.append(self.scale_rule + ("" if self.scale_rounding == "up" else "-nearest"))
        s = "/".join(parts)
        return s if self.axis == -1 else f"{s}@axis{self.axis}"

    def __str__(self) -> str:
        return self.name or self.spec

    @property
    def bits_per_element(self) -> float:
        """Element bits plus the scale's storage (whole bytes: UE4M3 takes 8) spread over its
        block (for ``"channel"``/``"tensor"`` the scale is not counted)."""
        if self.tile:
            n = self.tile[0] * self.tile[1]
        elif isinstance(self.block_size, int):
            n = self.block_size
        else:
            return float(self.element.bits)
        sbits = 32 if self.scale_format is None else -(-self.scale_format.bits // 8) * 8
        return self.element.bits + sbits / n

    def describe(self) -> dict[str, Any]:
        """Properties as a JSON-ready dict (what `fpx info` prints)."""
        return {"name": str(self), "spec": self.spec, "element": self.element.describe(),
                "block_size": self.block_size, "axis": self.axis, "tile": self.tile,
                "scale_format": ("float32" if self.scale_format is None
                                 else self.scale_format.describe()),
                "scale_rule": self.scale_rule, "scale_rounding": self.scale_rounding,
                "element_codes": "twos_complement" if self.int_codes else "sign_magnitude",
                "bits_per_element": self.bits_per_element,
                "emax_elem": emax_elem(self.element)}

    @cached_property
    def scale_is_e8m0(self) -> bool:
        """Whether the scale format is OCP's E8M0 (``float8_e8m0fnu``), which the kernels
        handle without rounding."""
        return self.scale_format == element_format("float8_e8m0fnu")

    # ----------------------------------------------------------------------------- operations
    def fused_geometry(self, shape: tuple[int, ...]) -> FusedGeometry | None:
        """How the fused numba pass sees a C-contiguous array of ``shape``
        (:class:`FusedGeometry`): blocks along the last axis, down the columns of a 2-D array
        (as ``(k, 1)`` tiles) or 2-D tiles over a 2-D array; None for other axes, tiles over
        more dimensions and empty arrays (the numpy path handles those)."""
        ndim = len(shape)
        size = int(np.prod(shape)) if ndim else 1
        if ndim == 0 or size == 0 or (self.tile is not None and ndim != 2):
            return None
        if self.tile is not None:
            return FusedGeometry(tuple(shape), self.tile[1], self.tile[0], False)
        if self.block_size != "tensor" and self.axis % ndim != ndim - 1:
            if ndim != 2:
                return None
            rows = shape[0]
            return FusedGeometry(tuple(shape), 1, rows if self.block_size == "channel"
                                 else self.block_size, True)
        if self.block_size == "tensor":
            return FusedGeometry((1, size), size, 1, False)
        L = shape[-1]
        return FusedGeometry((size // L, L), L if self.block_size == "channel"
                             else self.block_size, 1, False)

    def _fused(self, arr: np.ndarray, rounding, saturate, seed, sr_bits, want_out: bool,
               out: np.ndarray | None = None):
        """The fused numba pass where :meth:`fused_geometry` has one (fpformat.block_core for
        float32 MX data, fpformat.block_kernels otherwise), else None.  ``out``: a
        C-contiguous float32 destination for the block_core kernel (ignored by the others)."""
        g = self.fused_geometry(arr.shape)
        if g is None:
            return None
        x = np.ascontiguousarray(arr)
        x2 = x.reshape(g.shape)
        sshape, _ = self.layout(x.shape)
        if block_core.ocp_f32_applies(self, x2.dtype):                  # float32 MX kernel
            dest = None if out is None else out.reshape(x2.shape)
            codes, scales, out = block_core.run_ocp_f32(
                self, x2, g.tile_rows if g.down_columns else g.k, rounding, saturate, seed,
                sr_bits, not want_out, want_out, dest, g.down_columns)
            return (None if codes is None else codes.reshape(x.shape), scales.reshape(sshape),
                    None, None if out is None else out.reshape(x.shape))
        tscale = None
        if self.scale_rule == "nvfp4":
            tscale = block_kernels.tensor_scale(x)
        codes, scales, out = run_blocks(self, x2, g.k, tscale, rounding, saturate, seed,
                                        sr_bits, want_out, g.tile_rows)
        return (None if codes is None else codes.reshape(x.shape), scales.reshape(sshape), tscale,
                None if out is None else out.reshape(x.shape))

    def specialize(self, rounding: str = "rne", saturate: bool = True,
                   sr_bits: int | None = None) -> None:
        """Have this format's fused CPU kernels run their specialised compilation (format and
        options as compile-time constants, several times faster per element) from the next
        encode or quantize call with these options on, instead of after the first 2**26
        elements (:data:`fpformat.dispatch.SPECIALIZE_AFTER`); that call compiles them (about
        a second) or loads them from numba's cache."""
        block_kernels.specialize(self, rounding, saturate, sr_bits)
        if self.tile is None and self.scale_is_e8m0 and self.scale_rule in ("ocp", "amax"):
            block_core.specialize(self, rounding, saturate, sr_bits)

    def encode(self, x, rounding: str = "rne", saturate: bool = True, seed: int | None = None,
               sr_bits: int | None = None, random_bits=None) -> BlockEncoding:
        """Scales per block and element codes of ``x`` (float16/bfloat16/float32/float64).

        ``random_bits``: stochastic rounding of the elements with the caller's bits (an integer
        array shaped like ``x``; element ``i`` of ``x / scale`` uses element ``i``), with the
        rule of :meth:`FloatFormat.encode`; CPU only.  ``ValueError`` when a block holds NaN or
        inf and the scale format has no NaN to mark it (module docstring)."""
        if random_bits is not None and is_cuda_array(x):
            raise ValueError("random_bits is supported on the CPU only (numpy arrays or CPU "
                             "tensors); x is a CUDA array")
        if is_cuda_array(x):
            return cuda.block_encode(self, x, rounding, saturate, seed, sr_bits)
        arr, kind = as_float_array(x)
        if self._scale_lacks_nan:
            self._check_encodable(arr)
        fused = None if random_bits is not None else \
            self._fused(arr, rounding, saturate, seed, sr_bits, want_out=False)
        if fused is not None:
            codes, scales, tscale, _ = fused
            return BlockEncoding(codes=codes, scales=scales, tensor_scale=tscale, format=self,
                                 shape=tuple(arr.shape), dtype=kind)
        return self._encode_numpy(arr, kind, rounding, saturate, seed, sr_bits, random_bits)

    @cached_property
    def _scale_lacks_nan(self) -> bool:
        """Whether the scale format has no NaN (then a block holding NaN/inf has no encoding)."""
        return self.scale_format is not None and not self.scale_format.has_nan

    def _nonfinite_blocks(self, arr: np.ndarray) -> np.ndarray:
        """Per block (the scales' shape): whether it holds a NaN or an infinity."""
        return self._block_reduce(~np.isfinite(arr), np.any)

    def _check_encodable(self, arr: np.ndarray) -> None:
        """``ValueError`` naming the first block that holds NaN/inf (for a scale format without
        NaN, which has no code to mark such a block)."""
        if arr.size == 0 or np.isfinite(arr).all():
            return
        self.layout(arr.shape)                        # the layout's own errors first
        first = tuple(int(i) for i in np.argwhere(self._nonfinite_blocks(arr))[0])
        raise ValueError(f"x holds NaN or inf in the block with scale index {first}, and the "
                         f"scale format {self.scale_format} has no NaN to mark it: such a block "
                         f"has no encoding.  quantize gives NaN for it; encode needs finite "
                         f"data or a scale format with a NaN (e.g. float8_e8m0fnu, ue4m3fn)")

    def _encode_numpy(self, arr, kind, rounding, saturate, seed, sr_bits,
                      random_bits=None) -> BlockEncoding:
        x64 = np.asarray(arr, dtype=np.float64)
        sval, scodes, tscale = self._scales(x64)
        full = self._broadcast(sval, x64.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = x64 / np.where(np.isfinite(full) & (full != 0), full, 1.0)
        y = np.where(np.isfinite(full) & (full != 0), y, 0.0)
        codes = self.element.encode(y, rounding=rounding, saturate=saturate, seed=seed,
                                    sr_bits=sr_bits, random_bits=random_bits)
        if self.int_codes:                  # sign-magnitude -> two's complement (-0 -> 0)
            sb = 1 << (self.element.bits - 1)
            c = codes.astype(np.int64)
            codes = np.where(c & sb, (2 * sb - (c & (sb - 1))) % (2 * sb), c).astype(codes.dtype)
        return BlockEncoding(codes=codes, scales=scodes, tensor_scale=tscale, format=self,
                             shape=tuple(x64.shape), dtype=kind)

    def _element_values(self, codes: np.ndarray) -> np.ndarray:
        """float64 element values of element codes (two's-complement integers: k * quantum)."""
        if not self.int_codes:
            return self.element.decode(codes)
        el = self.element
        c = np.asarray(codes).astype(np.int64)
        if c.size and (int(c.min()) < 0 or int(c.max()) >= (1 << el.bits)):
            raise ValueError(f"codes must be in 0..{(1 << el.bits) - 1} for {el.bits}-bit integers")
        k = np.where(c >= 1 << (el.bits - 1), c - (1 << el.bits), c)
        return k * 2.0 ** (el.emin - el.man_bits)

    def factors(self, enc: BlockEncoding) -> tuple[np.ndarray, np.ndarray]:
        """An encoding's two factors, float64 arrays of its shape: the element values and each
        element's block scale (NaN for a block holding NaN/inf; the NVFP4 tensor scale
        included).  :meth:`decode` is their product; a matrix unit that applies the scales
        itself (:func:`fpformat.gemm.mma` with ``a_scale``) reads them apart.  CPU encodings."""
        if not isinstance(enc, BlockEncoding):
            raise TypeError(f"enc must be a BlockEncoding from encode(), got {type(enc).__name__}")
        if is_cuda_array(enc.codes):
            raise ValueError("factors takes a CPU encoding; this one's codes are on the GPU "
                             "(encode host data, or decode on the GPU)")
        sval = self._scale_values(enc.scales, enc.tensor_scale)
        return self._element_values(enc.codes), self._broadcast(sval, enc.codes.shape)

    def decode(self, enc: BlockEncoding, dtype=np.float64) -> np.ndarray:
        """Values of an encoding (NaN throughout blocks whose scale is NaN)."""
        if not isinstance(enc, BlockEncoding):
            raise TypeError(f"enc must be a BlockEncoding from encode(), got {type(enc).__name__}")
        if is_cuda_array(enc.codes):                        # a GPU encoding decodes on the GPU
            return cuda.block_decode(self, enc, dtype)
        vals, full = self.factors(enc)
        with np.errstate(invalid="ignore"):
            out = np.where(full == 0, 0.0 * vals, vals * full)
        kind = float_kind(dtype)            # any spelling: np.float32, "float32", torch dtype...
        return out if kind == "float64" else restore_dtype(out, kind)

    def quantize(self, x, rounding: str = "rne", saturate: bool = True, seed: int | None = None,
                 sr_bits: int | None = None, out: np.ndarray | None = None, random_bits=None):
        """``decode(encode(x))`` with ``x``'s dtype and shape (the product element × scale is
        exact in float64 and rounded to ``x``'s dtype: exact for power-of-two scales).  A block
        holding NaN/inf is NaN throughout, also where the scale format has no NaN (and
        ``encode`` refuses the data).

        ``out``: optional preallocated array (x's dtype and shape) to write into, as with
        numpy's ``out=``; it is returned (a numpy array, or a CUDA array for CUDA inputs).
        ``random_bits``: as in
        :meth:`encode` (CPU only)."""
        if random_bits is not None and is_cuda_array(x):
            raise ValueError("random_bits is supported on the CPU only (numpy arrays or CPU "
                             "tensors); x is a CUDA array")
        if is_cuda_array(x):
            return cuda.block_quantize(self, x, rounding, saturate, seed, sr_bits, out)
        arr, kind = as_float_array(x)
        if out is not None:
            if not isinstance(out, np.ndarray) or out.shape != arr.shape or \
                    (kind != "bfloat16" and out.dtype != np.dtype(kind)):
                raise ValueError(f"out must be a numpy array of x's shape {arr.shape} and dtype "
                                 f"{kind}, got {getattr(out, 'dtype', type(out).__name__)} "
                                 f"{getattr(out, 'shape', '')}")
            check_out(x, out)
        if kind in ("float16", "bfloat16") and self.scale_rule != "ocp":
            # element x scale (not a power of two) is exact in float64: round it once, to x's
            # dtype, rather than to float32 first
            arr = arr.astype(np.float64)
        direct = out if out is not None and out.dtype == np.float32 and \
            out.flags.c_contiguous and arr.dtype == np.float32 else None
        fused = None if random_bits is not None else \
            self._fused(arr, rounding, saturate, seed, sr_bits, want_out=True, out=direct)
        if fused is not None:
            if direct is not None and fused[3] is not None and np.shares_memory(fused[3], direct):
                return direct
            res = restore_dtype(fused[3], kind, like=x)
        else:
            enc = self._encode_numpy(arr, kind, rounding, saturate, seed, sr_bits, random_bits)
            vals = self.decode(enc)
            if self._scale_lacks_nan and arr.size:       # the codes cannot say which were NaN
                bad = self._broadcast(self._nonfinite_blocks(arr), arr.shape)
                vals = np.where(bad, np.nan, vals)
            res = restore_dtype(vals, enc.dtype, like=x)
        if out is None:
            return res
        np.copyto(out, np.asarray(res).view(out.dtype) if kind == "bfloat16" else res)
        return out

    # ----------------------------------------------------------------------------- scales
    def layout(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
        """For an input of ``shape``: the scales' shape and, per blocked axis, ``(axis, block
        length)`` (the last block along an axis may be shorter)."""
        nd = len(shape)
        if nd == 0:
            raise ValueError("x must have at least one dimension")
        if self.tile is not None:
            if nd < 2:
                raise ValueError(f"tile {self.tile} needs an array of at least 2 dimensions")
            blocks = [(nd - 2, self.tile[0]), (nd - 1, self.tile[1])]
        elif self.block_size == "tensor":
            blocks = [(a, max(shape[a], 1)) for a in range(nd)]
        else:
            ax = self.axis
            if not -nd <= ax < nd:
                raise ValueError(f"axis {ax} is out of range for an array of {nd} dimensions")
            ax %= nd
            n = max(shape[ax], 1) if self.block_size == "channel" else self.block_size
            blocks = [(ax, n)]
        sshape = list(shape)
        for a, n in blocks:
            sshape[a] = -(-shape[a] // n) if shape[a] else 0
        return tuple(sshape), blocks

    def _block_reduce(self, a: np.ndarray, func) -> np.ndarray:
        """Reduce ``a`` over each block with ``func`` (a numpy reduction taking ``axis``)."""
        sshape, blocks = self.layout(a.shape)
        out = a
        for ax, n in blocks:
            nb = sshape[ax]
            pad = nb * n - out.shape[ax]
            if pad:
                widths = [(0, 0)] * out.ndim
                widths[ax] = (0, pad)
                out = np.pad(out, widths, constant_values=0)
            new = out.shape[:ax] + (nb, n) + out.shape[ax + 1:]
            out = func(out.reshape(new), axis=ax + 1)
        return out

    def _broadcast(self, s: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        _, blocks = self.layout(shape)
        out = s
        for ax, n in blocks:
            out = np.repeat(out, n, axis=ax)
            out = np.take(out, np.arange(shape[ax]), axis=ax)
        return out

    def _scales(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
        """(scale values, scale codes or float32 values, tensor scale) per block."""
        mag = np.abs(x)
        bad = ~np.isfinite(x)
        amax = self._block_reduce(np.where(bad, 0.0, mag), np.max)
        nonfinite = self._block_reduce(bad, np.any)
        rule, sf = self.scale_rule, self.scale_format
        tscale = None
        if rule == "ocp":
            with np.errstate(divide="ignore"):
                _, e2 = np.frexp(amax)                     # amax = m * 2**e2, m in [0.5, 1)
            exp = np.where(amax > 0, e2 - 1 - emax_elem(self.element), -127)
            exp = np.clip(exp, -127, 127)
            values = np.ldexp(1.0, exp.astype(np.int64))
            if sf is None:
                codes = values.astype(np.float32)
            else:
                codes = sf.encode(values, rounding="rne", saturate=True)
        elif rule == "amax":
            with np.errstate(invalid="ignore"):
                s = amax / self.element.max
            if sf is None:
                codes = np.where(s > 0, s, 1.0).astype(np.float32)
                values = codes.astype(np.float64)
            else:
                mode = "rtp" if self.scale_rounding == "up" else "rne"
                codes = sf.encode(np.where(s > 0, s, 1.0), rounding=mode, saturate=True)
                values = sf.decode(codes)
        else:  # nvfp4
            tscale = tensor_scale(x)
            with np.errstate(invalid="ignore"):
                sb = amax / (6.0 * tscale)
            codes = sf.encode(np.where(np.isfinite(sb), sb, 0.0), rounding="rne", saturate=True)
            values = sf.decode(codes) * tscale
        # Blocks with NaN/inf: NaN scale.
        if sf is None:
            codes = np.where(nonfinite, np.float32(np.nan), codes).astype(np.float32)
            values = np.where(nonfinite, np.nan, values)
        else:
            snan = sf.nan_code               # None: no marker (encode refused such data)
            codes = (codes if snan is None else np.where(nonfinite, snan, codes)).astype(sf.dtype)
            values = np.where(nonfinite, np.nan, values)
        return values, codes, tscale

    def _scale_values(self, scales: np.ndarray, tscale: float | None) -> np.ndarray:
        if self.scale_format is None:
            return np.asarray(scales, dtype=np.float64)
        v = self.scale_format.decode(np.asarray(scales))
        return v * tscale if self.scale_rule == "nvfp4" else v
