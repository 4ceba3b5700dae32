"""Bit-exact emulation of a chip's dot-product (multiply-accumulate) unit.

    from fpformat import FloatFormat
    from fpformat.gemm import matmul
    y = matmul(a, b, acc_format=FloatFormat(8, 13), acc_rounding="rtz")        # 22-bit accumulator
    y = matmul(a, b, acc_format="e8m13", chunk=128)       # DeepSeek-V3: promote to fp32 every 128
    y = matmul(a, b, acc_format="e8m23", order="pairwise") # adder tree
    y = matmul(a, b, acc_format="e8m23", fused_width=4)    # 4-term fused dot-product unit

The model (docs/gemm.md has the full statement and the hardware each option stands for).  For
every output element ``y[i, j]``:

1. The products ``a[i, k] * b[k, j]`` of the *element values* are exact (checked: each operand's
   significand bits must sum to at most 53, which holds for every format of up to 25 mantissa bits
   against another of up to 26; quantize wider data with ``a_format=``/``b_format=``).
2. ``k`` is cut into *segments*: ``chunk`` products when ``chunk`` is set, else one scale block
   (``block_k``) when block scales are given, else all of ``k``.
3. Within a segment the products enter the accumulator (``acc_format``, rounding ``acc_rounding``)
   in groups of ``fused_width`` consecutive products whose sum is exact:

   * ``order="sequential"``: ``P = round(P + group)``, one rounding per group (``P`` starts at +0;
     ``fused_width=1`` is the classic MAC ``P = round(P + a*b)``);
   * ``order="pairwise"``: each group is rounded into the accumulator format, then a balanced
     adder tree combines neighbours level by level (an odd one out passes up unchanged), each
     adder rounding ``round(left + right)``.

4. When ``chunk`` or block scales are set, every segment's result ``P`` is *promoted*: ``O =
   round_p(O + s*P)`` in ``promote_format`` (float32 by default; one rounding, as the fused
   multiply-add of a CUDA core does), with ``s = round_p(sa * sb)`` the product of the two
   operands' block scales (1 without scales).  The result is ``O``; otherwise it is ``P``.

Every rounding is a correct rounding of the exact value (see :mod:`fpformat.gemm_core` for the
proof); the tests hold the kernels to a Fraction reference.  Exact zero sums are +0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numba
import numpy as np
from numba import prange

from . import core, cuda_gemm, gemm_core, unit_core
from .arrays import is_cuda_array
from .dispatch import JIT, seed_key, threads_for, want_specialized
from .format import FloatFormat
from .presets import get_format
from .rounding import call_tuple
from .units import get_unit

ORDERS = ("sequential", "pairwise")
MAX_ACC_MAN_BITS = 50
MAX_FUSED_WIDTH = 1 << 16
#: Largest promotion chunk in products (indices stay within 32-bit arithmetic).
MAX_CHUNK = (1 << 31) - 1
_NDIG = int(gemm_core.digits_for_window(-1074, 1025))    # covers every float64 term


# ------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class Accumulator:
    """How a dot-product unit accumulates (see the module docstring for the semantics).

    acc_format: the accumulator's format (a FloatFormat or a name for ``get_format``), signed,
        with a zero, at most 50 mantissa bits (``e8m23`` = float32, ``e8m13`` = a 22-bit one).
    rounding: the accumulator's rounding mode (``rne rna rtz rtp rtn rto sr``).
    order: ``"sequential"`` (k order) or ``"pairwise"`` (adder tree).
    fused_width: W >= 1 products summed exactly, then rounded once into the accumulator.
    chunk: promote the partial sum into ``promote_format`` every ``chunk`` products (None: never,
        unless block scales are given).
    promote_format, promote_rounding: the outer accumulator (float32, RNE: a CUDA core).
    saturate: clamp accumulator overflow to +-max instead of the IEEE rule.
    sr_bits: random bits per stochastic-rounding decision (None: 64).
    """

    acc_format: Any = "float32"
    rounding: str = "rne"
    order: str = "sequential"
    fused_width: int = 1
    chunk: int | None = None
    promote_format: Any = "float32"
    promote_rounding: str = "rne"
    saturate: bool = False
    sr_bits: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "acc_format", _accumulator_format(self.acc_format, "acc_format"))
        object.__setattr__(self, "promote_format",
                           _accumulator_format(self.promote_format, "promote_format"))
        call_tuple(self.acc_format, self.rounding, bool(self.saturate), self.sr_bits)  # validates
        call_tuple(self.promote_format, self.promote_rounding, False, self.sr_bits)
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        width = self.fused_width
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) \
                or not 1 <= width <= MAX_FUSED_WIDTH:
            raise ValueError(f"fused_width must be an int in 1..{MAX_FUSED_WIDTH}, "
                             f"got {self.fused_width!r}")
        object.__setattr__(self, "fused_width", int(self.fused_width))
        if self.chunk is not None:
            if isinstance(self.chunk, bool) or not isinstance(self.chunk, (int, np.integer)) \
                    or not 1 <= self.chunk <= MAX_CHUNK:
                raise ValueError(f"chunk must be None or an int in 1..{MAX_CHUNK}, "
                                 f"got {self.chunk!r}")
            object.__setattr__(self, "chunk", int(self.chunk))
        if not isinstance(self.saturate, (bool, np.bool_)):
            raise TypeError(f"saturate must be a bool, got {type(self.saturate).__name__}")

    def label(self) -> str:
        """A short description, e.g. ``"e8m13/rtz"``, ``"e8m13/rne chunk128->float32"``."""
        s = f"{self.acc_format}/{self.rounding}"
        if self.order != "sequential":
            s += f" {self.order}"
        if self.fused_width > 1:
            s += f" fused{self.fused_width}"
        if self.chunk is not None:
            s += f" chunk{self.chunk}->{self.promote_format}"
        return s


def _accumulator_format(fmt, pname: str) -> FloatFormat:
    f = get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(f, FloatFormat):
        raise TypeError(f"{pname} must be a FloatFormat or an element format name, got {fmt!r}")
    if f.man_bits > MAX_ACC_MAN_BITS:
        raise ValueError(f"{pname} must have at most {MAX_ACC_MAN_BITS} mantissa bits (exact "
                         f"rounding goes through float64), got {f.man_bits}")
    if not f.signed or not f.has_zero:
        raise ValueError(f"{pname} must be a signed format with a zero, got {f}")
    return f


# ------------------------------------------------------------------------------------ kernel
@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _gemm_kernel(a, bt, sa, sbt, block_k, seg_len, W, pairwise, promote, scaled,
                 Fa, Ca, sub_a, Fp, Cp, sub_p, Cs, key_a, key_p, out_val, out_code):
    """Every output element through :func:`fpformat.gemm_core.gemm_element` (the scalar core
    the GPU kernel of :mod:`fpformat.cuda_gemm` runs too), with per-element scratch."""
    M = a.shape[0]
    N = bt.shape[0]
    ngroups = (seg_len + W - 1) // W
    for idx in prange(M * N):
        i = idx // N
        j = idx - i * N
        terms = np.empty(max(W + 1, gemm_core.MIN_TERMS), dtype=np.float64)
        digits = np.empty(_NDIG, dtype=np.int64)
        tree = np.empty(ngroups if pairwise else 1, dtype=np.float64)
        tcode = np.empty(ngroups if pairwise else 1, dtype=np.int64)
        v, c = gemm_core.gemm_element(a, bt, False, sa, sbt, i, j, idx, block_k, seg_len, W,
                                      pairwise, promote, scaled, Fa, Ca, sub_a, Fp, Cp, sub_p,
                                      Cs, key_a, key_p, terms, digits, tree, tcode)
        out_val[i, j] = v
        out_code[i, j] = c


# ------------------------------------------------------------------------------------ host
def _as_2d(x, pname: str) -> np.ndarray:
    if hasattr(x, "detach"):                      # a torch tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" and arr.dtype.name != "bfloat16":
        raise TypeError(f"{pname} must be a real float array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{pname} must be 2-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr.astype(np.float64))


def significand_info(x: np.ndarray) -> tuple[int, int, int]:
    """``(bits, lsb, top)`` over the finite nonzero values of float64 array ``x``: the largest
    number of significant bits, the smallest exponent of a last set bit (``|v| = odd * 2**lsb``)
    and the largest ``e`` with ``|v| < 2**e``.  ``(0, 0, -1075)`` when there are none."""
    v = np.abs(x[np.isfinite(x) & (x != 0)])
    if v.size == 0:
        return 0, 0, -1075
    m, e = np.frexp(v)
    sig = (m * 2.0 ** 53).astype(np.int64)
    low = sig & -sig
    tz = np.log2(low.astype(np.float64)).astype(np.int64)      # exact: low is a power of two
    bits = 53 - tz
    return int(bits.max()), int((e - 53 + tz).min()), int(e.max())


def _check_products(a: np.ndarray, b: np.ndarray, what: str = "a and b") -> None:
    _check_significands(significand_info(a), significand_info(b), what)


def _check_significands(info_a, info_b, what: str = "a and b") -> None:
    """``ValueError`` unless every product of values with these :func:`significand_info`
    answers is exact in float64 (and inside its exponent range)."""
    ba, la, ta = (int(v) for v in info_a)
    bb, lb, tb = (int(v) for v in info_b)
    if ba == 0 or bb == 0:
        return
    if ba + bb > 53:
        raise ValueError(f"products of {what} are not exact in float64: their values have {ba} and "
                         f"{bb} significant bits (at most 53 together); quantize the inputs to "
                         f"element formats (a_format=, b_format=)")
    if la + lb < -1074 or ta + tb > 1024:
        raise ValueError(f"products of {what} leave float64's exponent range (underflow or "
                         f"overflow); scale the inputs")


def _block_scales(a_scale, b_scale, block_k, M: int, K: int, N: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(SA, SBt)``: the block scales of ``a`` (M, ceil(K/block_k)) and of ``b`` transposed
    (N, ceil(K/block_k)) as float64 arrays (ones where None), checked: ``block_k`` a positive
    int, the shapes, and scale products exact in float64 (``ValueError`` naming the
    parameter)."""
    if isinstance(block_k, bool) or not isinstance(block_k, (int, np.integer)) or block_k < 1:
        raise ValueError(f"block_k must be a positive int, got {block_k!r}")
    nblk = -(-K // block_k)
    SA = np.ones((M, nblk)) if a_scale is None else _as_2d(a_scale, "a_scale")
    SBt = (np.ones((N, nblk)) if b_scale is None
           else np.ascontiguousarray(_as_2d(b_scale, "b_scale").T))
    if SA.shape != (M, nblk):
        raise ValueError(f"a_scale must have shape {(M, nblk)} (rows, k blocks of {block_k}), "
                         f"got {SA.shape}")
    if SBt.shape != (N, nblk):
        raise ValueError(f"b_scale must have shape {(nblk, N)} (k blocks of {block_k}, "
                         f"columns), got {SBt.T.shape}")
    _check_products(SA, SBt, "a_scale and b_scale")
    return SA, SBt


def _element_and_scales(x: np.ndarray, fmt, rounding: str, pname: str
                        ) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """Quantize rows of ``x`` (blocks along the last axis, the k axis) into ``fmt``: an element
    format gives ``(values, None, None)``; a block format gives the element values, the scale
    values per (row, block) and the block size."""
    f = get_format(fmt) if isinstance(fmt, str) else fmt
    if isinstance(f, FloatFormat):
        values = np.asarray(f.quantize(x, rounding=rounding, saturate=True), dtype=np.float64)
        return values, None, None
    element = getattr(f, "element", None)
    block = getattr(f, "block_size", None)
    if not isinstance(element, FloatFormat) or not isinstance(block, (int, np.integer)):
        raise TypeError(f"{pname} must be a FloatFormat, a block format with an integer block "
                        f"size, or a name of one; got {fmt!r} (for channel/tensor scaling or "
                        f"other scale layouts pass element values and a_scale/b_scale, block_k)")
    enc = f.encode(x, rounding=rounding, saturate=True)
    values = element.decode(enc.codes)
    scales = f.decode_scales(enc) if hasattr(f, "decode_scales") else None
    if scales is None:
        sfmt = getattr(f, "scale_format", None)
        scales = (np.asarray(enc.scales, dtype=np.float64) if sfmt is None
                  else sfmt.decode(enc.scales))
    scales = np.asarray(scales, dtype=np.float64).reshape(x.shape[0], -1)
    return np.asarray(values, dtype=np.float64), scales, int(block)


def matmul(a, b, acc_format: Any = "float32", acc_rounding: str = "rne", chunk: int | None = None,
           a_format: Any = None, b_format: Any = None, *, order: str = "sequential",
           fused_width: int = 1, promote_format: Any = "float32", promote_rounding: str = "rne",
           a_scale=None, b_scale=None, block_k: int | None = None, acc_saturate: bool = False,
           seed: int | None = None, sr_bits: int | None = None, input_rounding: str = "rne",
           return_codes: bool = False, accumulator: Accumulator | None = None):
    """Emulate ``a @ b`` on a dot-product unit (semantics: module docstring, docs/gemm.md).

    Args:
        a: (M, K) element values (any float/int array or CPU tensor); b: (K, N).
        acc_format, acc_rounding, chunk, order, fused_width, promote_format, promote_rounding,
            acc_saturate, sr_bits: the accumulator (see :class:`Accumulator`); or pass a whole
            ``accumulator=Accumulator(...)``, which then overrides them.
        a_format, b_format: quantize the inputs first (rounding ``input_rounding``, saturating):
            an element format, or a block format with an integer block size whose blocks run
            along k (its scales become ``a_scale``/``b_scale``).
        a_scale: (M, ceil(K/block_k)) block scales of ``a``; b_scale: (ceil(K/block_k), N).  The
            result is ``sum over blocks of (sa*sb) * (block dot product of element values)``, the
            scale product applied at each promotion (``chunk`` must divide ``block_k``).
        seed: stochastic rounding (accumulator: element ``r`` of output ``(i, j)`` draws
            ``sr_random(seed, (i*N + j)*(2K + 2) + r)``, ``r`` counting its roundings).
        return_codes: also return the result codes (in ``promote_format`` when promoting, else in
            ``acc_format``).

    Returns:
        float64 (M, N) values, or ``(values, codes)``.

    CUDA arrays (``a`` and ``b`` both float arrays on the GPU: torch CUDA tensors, CuPy or numba
    device arrays, numba's simulated ones) without ``a_format``/``b_format``/scales are computed
    on the device by :mod:`fpformat.cuda_gemm` with the CPU kernel's scalar core
    (:func:`fpformat.gemm_core.gemm_element`), bit for bit as here; the results are arrays of
    ``a``'s kind on its device (the product check reads three numbers per operand back: one
    stream synchronisation).  Other CUDA inputs are copied to the host.
    """
    if accumulator is None:
        accumulator = Accumulator(acc_format, acc_rounding, order, fused_width, chunk,
                                  promote_format, promote_rounding, acc_saturate, sr_bits)
    elif not isinstance(accumulator, Accumulator):
        raise TypeError(f"accumulator must be an Accumulator, got {type(accumulator).__name__}")
    acc = accumulator
    if a_format is None and b_format is None and a_scale is None and b_scale is None \
            and cuda_gemm.matmul_on_device(a, b):
        return cuda_gemm.matmul(a, b, lambda K: _plan(acc, K, None, seed), _check_significands,
                                return_codes)
    A = _as_2d(a, "a")
    B = _as_2d(b, "b")
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"a and b do not chain: a is {A.shape}, b is {B.shape}")
    M, K = A.shape
    N = B.shape[1]
    Bt = np.ascontiguousarray(B.T)
    fa_block = fb_block = None
    if a_format is not None:
        A, sa_q, fa_block = _element_and_scales(A, a_format, input_rounding, "a_format")
        if sa_q is not None:
            if a_scale is not None:
                raise ValueError("a_scale: a block a_format already supplies the scales")
            a_scale = sa_q
    if b_format is not None:
        Bt, sb_q, fb_block = _element_and_scales(Bt, b_format, input_rounding, "b_format")
        if sb_q is not None:
            if b_scale is not None:
                raise ValueError("b_scale: a block b_format already supplies the scales")
            b_scale = sb_q.T
    blocks = {x for x in (fa_block, fb_block) if x is not None}
    if len(blocks) > 1:
        raise ValueError(f"a_format and b_format have different block sizes {sorted(blocks)}")
    if blocks:
        bk = blocks.pop()
        if block_k is not None and block_k != bk:
            raise ValueError(f"block_k={block_k} disagrees with the block formats' {bk}")
        block_k = bk
    _check_products(A, Bt)

    scaled = a_scale is not None or b_scale is not None
    if scaled:
        if block_k is None:
            raise ValueError("block_k is required with a_scale/b_scale")
        SA, SBt = _block_scales(a_scale, b_scale, block_k, M, K, N)
        if acc.chunk is not None and block_k % acc.chunk != 0:
            raise ValueError(f"chunk={acc.chunk} must divide block_k={block_k}: a promotion "
                             f"applies one block's scale")
    else:
        SA = np.ones((1, 1))
        SBt = np.ones((1, 1))
        block_k = None
    plan = _plan(acc, K, block_k, seed)
    out_val = np.empty((M, N), dtype=np.float64)
    out_code = np.empty((M, N), dtype=np.int64)
    _gemm_kernel(A, Bt, SA, SBt, *plan[:-1], out_val, out_code)
    if return_codes:
        return out_val, out_code.astype(plan.final.dtype)
    return out_val


class GemmPlan(NamedTuple):
    """The arguments of :func:`fpformat.gemm_core.gemm_element` that do not depend on the
    data, as the CPU kernel takes them (in this order), and the result codes' format."""
    block_k: int                 # products per scale block (K, at least 1, unscaled)
    seg_len: int                 # products per promoted segment
    W: int                       # fused width
    pairwise: bool
    promote: bool
    scaled: bool
    Fa: tuple                    # accumulator format, call tuple, subnormal quantum
    Ca: tuple
    sub_a: float
    Fp: tuple                    # promotion format, call tuple, subnormal quantum
    Cp: tuple
    sub_p: float
    Cs: tuple                    # rounding of scale products (RNE into the promotion format)
    key_a: Any                   # stochastic-rounding keys (accumulator, promotions)
    key_p: Any
    final: FloatFormat           # the result codes' format (:func:`result_format`)


def _plan(acc: Accumulator, K: int, block_k: int | None, seed) -> GemmPlan:
    """The plan of a ``K``-long GEMM with ``acc``; ``block_k``: the scale blocks' length
    (already checked against ``acc.chunk``), None without scales."""
    scaled = block_k is not None
    if not scaled:
        block_k = max(K, 1)
    seg_len = acc.chunk if acc.chunk is not None else block_k
    promote = scaled or acc.chunk is not None
    fa, fp = acc.acc_format, acc.promote_format
    Ca = call_tuple(fa, acc.rounding, bool(acc.saturate), acc.sr_bits)
    Cp = call_tuple(fp, acc.promote_rounding, False, acc.sr_bits)
    Cs = call_tuple(fp, "rne", False, None)
    key_a = seed_key(seed, Ca[core.C_MODE])
    key_p = seed_key(None if seed is None else int(seed) + 0x5EED, Cp[core.C_MODE])
    return GemmPlan(int(block_k), int(seg_len), acc.fused_width, acc.order == "pairwise",
                    promote, scaled, fa.params, Ca, float(2.0 ** (fa.emin - fa.man_bits)),
                    fp.params, Cp, float(2.0 ** (fp.emin - fp.man_bits)), Cs, key_a, key_p,
                    fp if promote else fa)


def result_format(accumulator: Accumulator, scaled: bool = False) -> FloatFormat:
    """The format of :func:`matmul`'s result codes: the promotion format when promoting."""
    return accumulator.promote_format if (scaled or accumulator.chunk is not None) \
        else accumulator.acc_format


def dot(a, b, acc_format: Any = "float32", acc_rounding: str = "rne", chunk: int | None = None,
        **kwargs) -> float:
    """The emulated dot product of two 1-D vectors (keywords as :func:`matmul`)."""
    A = np.asarray(a, dtype=np.float64)
    B = np.asarray(b, dtype=np.float64)
    if A.ndim != 1 or B.ndim != 1:
        raise ValueError(f"a and b must be 1-D, got shapes {A.shape} and {B.shape}")
    if "a_scale" in kwargs and kwargs["a_scale"] is not None:
        kwargs["a_scale"] = np.asarray(kwargs["a_scale"], dtype=np.float64).reshape(1, -1)
    if "b_scale" in kwargs and kwargs["b_scale"] is not None:
        kwargs["b_scale"] = np.asarray(kwargs["b_scale"], dtype=np.float64).reshape(-1, 1)
    out = matmul(A[None, :], B[:, None], acc_format, acc_rounding, chunk, **kwargs)
    if kwargs.get("return_codes"):
        return float(out[0][0, 0]), int(out[1][0, 0])
    return float(out[0, 0])


# ------------------------------------------------------------------------------------ matrix units
@numba.njit(**JIT)
def _decompose_kernel(x, m, emin, keep_subnormals, sig, exp):
    for i in prange(x.size):
        sig[i], exp[i] = unit_core.decompose(x[i], m, emin, keep_subnormals)


@numba.njit(inline="always")
def _mma_rows(sa, ea, sb, eb, c, out, U, F, C, V, flat):
    """Output element ``flat`` of the unit's GEMM: row ``i`` of ``sa`` against row ``j`` of
    ``sb`` (B transposed), block after block, from ``c[t, i, j]``."""
    M, K = sa.shape[1], sa.shape[2]
    N = sb.shape[1]
    fma = U[unit_core.U_FMA]
    t = flat // (M * N)
    i = (flat // N) % M
    j = flat % N
    d = c[t, i, j]
    for k0 in range(0, K, fma):
        k1 = min(k0 + fma, K)
        d = unit_core.block_any(sa[t, i, k0:k1], ea[t, i, k0:k1], sb[t, j, k0:k1],
                                eb[t, j, k0:k1], d, U, F, C, V)
    out[t, i, j] = d


@numba.njit(**JIT)
def _mma_generic(sa, ea, sb, eb, c, out, U, F, C, V):
    """The unit's GEMM with the tuples as runtime arguments: one compilation for every unit."""
    for flat in prange(out.size):
        _mma_rows(sa, ea, sb, eb, c, out, U, F, C, V, flat)


@functools.lru_cache(maxsize=None)
def _mma_specialized(U, F, C, V):
    """The unit's GEMM with the unit and result-format tuples as constants: the compiler
    folds the unit's choices out of the block loops (about 3x faster for FP8 units)."""
    @numba.njit(**JIT)
    def mma_kernel(sa, ea, sb, eb, c, out):
        for flat in prange(out.size):
            _mma_rows(sa, ea, sb, eb, c, out, U, F, C, V, flat)
    return mma_kernel


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _promote_kernel(O, sa, sbt, blk, P, Fp, Cp, sub_p, Cs):
    """``O[i, j] = round_p(O[i, j] + round_p(sa[i, blk] * sbt[j, blk]) * P[i, j])`` for every
    output element (:func:`fpformat.gemm_core.promote_sum`).  One thread: a promotion costs
    little beside the block's products, and a serial kernel compiles in a fraction of the time."""
    M, N = O.shape
    for i in range(M):
        terms = np.empty(gemm_core.MIN_TERMS, dtype=np.float64)
        digits = np.empty(_NDIG, dtype=np.int64)
        for j in range(N):
            sab = np.float64(sa[i, blk]) * np.float64(sbt[j, blk])
            O[i, j] = gemm_core.promote_sum(O[i, j], sab, np.float64(P[i, j]), Fp, Cp, sub_p, Cs,
                                            np.uint64(0), terms, digits)[0]


def _scaled_mma(A, B, Cv, unit, fi, fo, tuples, a_scale, b_scale, block_k):
    """:func:`mma` with block scales (2-D float64 ``A``, ``B``, ``Cv`` checked by the caller;
    ``tuples`` the unit's): every ``block_k`` products through the unit from +0, promoted into
    ``fo``."""
    (M, K), N = A.shape, B.shape[1]
    SA, SBt = _block_scales(a_scale, b_scale, block_k, M, K, N)
    Fp, rne = fo.params, call_tuple(fo, "rne", False, None)   # promotions and scale products
    sub_p = float(2.0 ** (fo.emin - fo.man_bits))
    O = np.array(np.broadcast_to(Cv, (M, N)), dtype=np.float64)
    Bt = np.ascontiguousarray(B.T)
    for blk in range(SA.shape[1]):
        k = slice(blk * block_k, (blk + 1) * block_k)
        P = _unit_gemm(np.ascontiguousarray(A[None, :, k]), np.ascontiguousarray(Bt[None, :, k]),
                       0.0, unit, fi, tuples)[0]
        _promote_kernel(O, SA, SBt, blk, P, Fp, rne, sub_p, rne)
    return O.astype(cuda_gemm._result_dtype(fo))


def _decompose(x: np.ndarray, fmt: FloatFormat, keep_subnormals: bool):
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    sig = np.empty(flat.size, np.int64)
    exp = np.empty(flat.size, np.int64)
    with threads_for(flat.size):
        _decompose_kernel(flat, fmt.man_bits, fmt.emin, keep_subnormals, sig, exp)
    return sig.reshape(x.shape), exp.reshape(x.shape)


def _values_of(x, fmt: FloatFormat, pname: str, quantize: bool) -> np.ndarray:
    """``x`` as float64, checked to hold values of ``fmt`` (or rounded into it)."""
    arr = np.asarray(x, dtype=np.float64)
    if quantize:                        # as a saturating conversion instruction does
        return fmt.quantize(arr, saturate=True)
    q = fmt.quantize(arr)
    bad = ~((q == arr) | (np.isnan(q) & np.isnan(arr)))
    if bad.any():
        v = arr[bad].reshape(-1)[0]
        raise ValueError(f"{pname} holds values that are not {fmt} values (e.g. {v!r}); "
                         f"round them first, or pass quantize_inputs=True")
    return arr


def mma(a, b, c=0.0, unit: Any = "h100", in_format: Any = "float16",
        out_format: Any = "float32", *, quantize_inputs: bool = False, a_scale=None,
        b_scale=None, block_k: int | None = None) -> np.ndarray:
    """``D = A.B + C`` as the matrix unit computes it (:mod:`fpformat.units`).

    ``a`` (..., M, K) and ``b`` (..., K, N) with numpy ``matmul`` batch semantics (1-D operands
    are promoted and the added axis dropped), ``c`` broadcast to (..., M, N).  ``a`` and ``b``
    must hold values of ``in_format`` (``quantize_inputs=True`` rounds them first, to nearest
    even, saturating at the format's max)
    and ``c`` values of ``out_format`` (always checked).  K longer than the unit's block is
    accumulated block after block, each block's rounded result the next one's addend, as a GEMM
    built from the instruction does.  ``unit``: a preset name (for these formats), a spec or a
    :class:`~fpformat.units.MatrixUnit`.  Returns float32 (float16 for float16 outputs).

    CUDA arrays (``a`` and ``b`` both on the GPU; ``c`` there or on the host) are computed on
    the device by :mod:`fpformat.cuda_gemm`, bit for bit as here, and the result is an array of
    ``a``'s kind on its device (units with ``"exact"`` or ``"pairwise"`` summation raise
    ``ValueError`` there).

    Block scales (``block_k`` products per block; 2-D ``a`` and ``b``, CPU only), as DeepGEMM
    runs DeepSeek-V3's FP8 GEMMs: ``a`` and ``b`` hold the element values, ``a_scale`` (M,
    ceil(K/block_k)) and ``b_scale`` (ceil(K/block_k), N) their blocks' scales (None: ones).
    Each block's products run through the unit from a zero addend (its partial sum ``P``, in
    ``out_format``) and are *promoted*: ``D = round(D + s*P)``, ``s = round(sa*sb)``, both
    rounded to nearest even into ``out_format`` (a CUDA core's multiply, then its fused
    multiply-add), ``D`` starting at ``c`` (docs/gemm.md, "Promotion")."""
    fi, fo = get_format(in_format), get_format(out_format)
    for f, pname in ((fi, "in_format"), (fo, "out_format")):
        if not isinstance(f, FloatFormat):
            raise ValueError(f"{pname} must be an element format, got {f}")
    unit = get_unit(unit, fi, fo)         # TypeError/ValueError for anything but a unit
    U, F, C, V = unit.tuples(fi, fo)
    scaled = a_scale is not None or b_scale is not None or block_k is not None
    if scaled and any(is_cuda_array(x) for x in (a, b, c, a_scale, b_scale)):
        raise ValueError("block scales (a_scale, b_scale, block_k) run on the CPU only; pass "
                         "host arrays")
    if any(is_cuda_array(x) for x in (a, b, c)):     # computed on the GPU
        host_c = c if is_cuda_array(c) else _values_of(c, fo, "c", False)
        return cuda_gemm.mma(a, b, host_c, unit, fi, fo, (U, F, C, V), quantize_inputs)
    A = _values_of(a, fi, "a", quantize_inputs)
    B = _values_of(b, fi, "b", quantize_inputs)
    drop = [A.ndim == 1, B.ndim == 1]
    A = A[None, :] if drop[0] else A
    B = B[:, None] if drop[1] else B
    if A.ndim < 2 or B.ndim < 2 or A.shape[-1] != B.shape[-2]:
        raise ValueError(f"a and b do not chain as matmul operands: shapes {np.shape(a)} and "
                         f"{np.shape(b)}")
    batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    M, K, N = A.shape[-2], A.shape[-1], B.shape[-1]
    shape = batch + (M, N)
    Cv = _values_of(c, fo, "c", False)
    try:
        Cv = np.broadcast_to(Cv, shape)
    except ValueError:
        raise ValueError(f"c of shape {np.shape(c)} does not broadcast to the result's "
                         f"{shape}") from None
    if scaled:
        if batch or any(drop):
            raise ValueError(f"block scales need 2-D a and b, got shapes {np.shape(a)} and "
                             f"{np.shape(b)}")
        return _scaled_mma(A, B, Cv, unit, fi, fo, (U, F, C, V), a_scale, b_scale, block_k)
    A = np.broadcast_to(A, batch + (M, K)).reshape(math.prod(batch), M, K)   # -1 is ambiguous
    Bt = np.swapaxes(np.broadcast_to(B, batch + (K, N)), -1, -2).reshape(math.prod(batch), N, K)
    cv = np.ascontiguousarray(Cv, np.float64).reshape(A.shape[0], M, N)
    out = _unit_gemm(A, Bt, cv, unit, fi, (U, F, C, V)).reshape(shape)
    if drop[0]:
        out = out[..., 0, :]
    if drop[1]:
        out = out[..., 0]
    return out.astype(cuda_gemm._result_dtype(fo))


def _unit_gemm(A: np.ndarray, Bt: np.ndarray, Cv, unit, fi: FloatFormat, tuples) -> np.ndarray:
    """The unit's GEMM of checked values: ``A`` (T, M, K), ``Bt`` (T, N, K) (B transposed),
    from the addends ``Cv`` (broadcast to (T, M, N)); float64 (T, M, N) holding output-format
    values.  ``tuples``: the unit's ``(U, F, C, V)``."""
    U, F, C, V = tuples
    (T, M, K), N = A.shape, Bt.shape[1]
    sa, ea = _decompose(A, fi, unit.subnormal_inputs)
    sb, eb = _decompose(Bt, fi, unit.subnormal_inputs)
    out = np.empty((T, M, N), np.float64)
    with threads_for(out.size * max(K, 1)):
        cv = np.ascontiguousarray(np.broadcast_to(Cv, out.shape), np.float64)
        if want_specialized(("mma", U, F, C, V), out.size * max(K, 1)):
            _mma_specialized(U, F, C, V)(sa, ea, sb, eb, cv, out)
        else:
            _mma_generic(sa, ea, sb, eb, cv, out, U, F, C, V)
    return out
