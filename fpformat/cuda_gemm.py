"""Matrix units on the GPU: :func:`fpformat.gemm.mma` for CUDA arrays, computed on the device.

    import torch
    from fpformat.gemm import mma
    a = torch.randn(64, 128, device="cuda")
    d = mma(a, a.T, 0.0, unit="h100", in_format="float16", quantize_inputs=True)  # CUDA tensor

:func:`fpformat.gemm.mma` sends CUDA arrays (torch CUDA tensors, CuPy and numba device arrays,
numba's simulated device arrays) here.  The kernels are compiled by numba.cuda from the matrix
unit's scalar core, :func:`fpformat.unit_core.block_fma` -- the function the CPU kernels call --
so the GPU gives the CPU's bits:

1. an *operand kernel* per input (one thread per element) reads ``a`` or ``b`` in its own
   dtype (float16, float32, float64; torch bfloat16 is widened to float32 by torch, exactly),
   checks that each value is a value of ``in_format`` (the CPU's check: rounding it to nearest
   even gives it back; NaN is NaN) or, with ``quantize_inputs=True``, rounds it to nearest even
   with saturation, and stores its decomposition (:func:`fpformat.unit_core.decompose`) as two
   int64 arrays;
2. ``c``, when it is an array, is checked the same way against ``out_format``;
3. the *unit kernel* runs one thread per output element ``(t, i, j)``: starting from
   ``c[t, i, j]`` it applies ``block_fma`` to blocks of ``fma`` products along k, each block's
   rounded result the next one's addend, and writes the last one in the result dtype (float32,
   or float16 for float16 outputs; exact, the values fit).  ``b`` keeps its (k, n) layout, so
   the threads of a warp (neighbouring ``j``) read neighbouring words of ``b``; they share
   their row of ``a``.

Broadcasting follows numpy ``matmul`` (batch dimensions broadcast, 1-D operands promoted and
the added axis dropped); a broadcast operand is read in place through zero strides, never
copied.  ``c`` may be a Python or numpy scalar (a kernel argument), a host array (copied to the
device once) or a CUDA array.

Summations: ``"aligned"`` (NVIDIA), ``"late"`` and ``"odd-even"`` (AMD CDNA3) run on the GPU.
``"exact"`` (AMD CDNA1) and ``"pairwise"`` (AMD CDNA2) need per-block scratch arrays, which the
scalar core allocates on the CPU only: they raise ``ValueError``; run those units on host
arrays.

Synchronisation: the value checks set one device flag, read back after the unit kernel (one
stream synchronisation per call) so that a bad value raises ``ValueError`` as on the CPU.  With
``quantize_inputs=True`` and a scalar ``c`` nothing is checked and nothing is read back: the
call only queues work on the stream (torch's current stream for torch tensors).  Scratch
(the decomposed operands) comes from the input's framework: torch's caching allocator for
torch tensors.

Kernels are compiled once per (unit, input format, output format, operand dtypes, batch rank):
the unit's tuples are compile-time constants, as in the CPU's specialised kernels; shapes and
data are arguments.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from . import core, gemm_core, unit_core
from . import cuda as fc
from .arrays import FLOAT_KINDS, is_cuda_array
from .format import FloatFormat
from .rounding import call_tuple, value_tuple

cuda: Any = None          # numba.cuda once imported (a module global: the simulator swaps its
                          # fake module into the kernels' globals)

#: Summations whose block core runs on the GPU (the others allocate scratch per block).
GPU_SUMMATIONS = ("aligned", "late", "odd-even")


def _cuda():
    global cuda
    if cuda is None:
        cuda = fc._cuda()
    return cuda


# --------------------------------------------------------------------------------- kernels
@functools.lru_cache(maxsize=None)
def _operand_kernel(F: tuple, C: tuple, V: tuple, m: int, emin: int, keep_subnormals: bool,
                    quantize: bool):
    """``x`` (flat, any float dtype) -> ``sig``, ``exp`` (int64, flat): each value rounded into
    the input format (``quantize``; C saturating RNE) or checked to be one of its values
    (``flag[slot] = 1`` otherwise; C non-saturating RNE), then decomposed."""
    _cuda()

    @cuda.jit(cache=True)
    def operand_kernel(x, sig, exp, flag, slot):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = np.float64(x[i])
            qb = core.quantize_bits(np.float64(v).view(np.int64), core.SRC_FLOAT64, F, C, V,
                                    np.uint64(0))
            q = np.int64(qb).view(np.float64)
            if quantize:
                v = q
            elif not (q == v or (q != q and v != v)):
                flag[slot] = 1
            s, e = unit_core.decompose(v, m, emin, keep_subnormals)
            sig[i] = s
            exp[i] = e
    return operand_kernel


@functools.lru_cache(maxsize=None)
def _check_kernel(F: tuple, C: tuple, V: tuple):
    """``flag[slot] = 1`` when an element of ``x`` is not a value of the format (F, C: RNE)."""
    _cuda()

    @cuda.jit(cache=True)
    def check_kernel(x, flag, slot):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = np.float64(x[i])
            qb = core.quantize_bits(np.float64(v).view(np.int64), core.SRC_FLOAT64, F, C, V,
                                    np.uint64(0))
            q = np.int64(qb).view(np.float64)
            if not (q == v or (q != q and v != v)):
                flag[slot] = 1
    return check_kernel


@functools.lru_cache(maxsize=None)
def _zero_kernel():
    _cuda()

    @cuda.jit(cache=True)
    def zero_kernel(flag):
        if cuda.grid(1) == 0:
            for i in range(flag.size):
                flag[i] = 0
    return zero_kernel


#: Quiet NaN bit patterns by result itemsize: (positive, negative), as numpy converts float64
#: NaNs without payload (the CPU's result); hardware conversion would give its canonical NaN.
_NAN_BITS = {4: (0x7FC00000, 0xFFC00000), 2: (0x7E00, 0xFE00)}


@functools.lru_cache(maxsize=None)
def _unit_kernel(U: tuple, F: tuple, C: tuple, V: tuple, itemsize: int):
    """One thread per output element: ``out[t, i, j]`` = the unit's blocks along k applied to
    row ``i`` of ``a``'s batch ``ta`` and column ``j`` of ``b``'s batch ``tb``, from ``c``.

    ``bshape``: the broadcast batch shape (at least one dimension); ``sta``, ``stb``, ``stc``:
    per batch dimension, the stride of ``a``'s and ``b``'s batch index and ``c``'s element
    offset (0 where broadcast); ``ci``, ``cj``: ``c``'s element strides along i and j.  With
    ``c_scalar`` every element starts from ``c0`` and ``c`` is not read.  ``out_bits`` and
    ``c_bits`` are ``out`` and ``c`` viewed as unsigned integers: a NaN result is written as the
    quiet NaN of its sign (numpy's conversion of a NaN without payload: the CPU's result; a NaN
    of ``c`` passed through with K = 0 keeps its sign, read from its bits, not its payload),
    never left to the hardware's conversions, which need not keep the sign."""
    _cuda()
    fma = U[unit_core.U_FMA]
    block_fma = unit_core.block_fma
    nan_pos, nan_neg = _NAN_BITS[itemsize]

    @cuda.jit(cache=True)
    def unit_kernel(sa, ea, sb, eb, c, c_bits, c0, c_scalar, out, out_bits, bshape, sta, stb,
                    stc, ci, cj):
        T, M, N = out.shape[0], out.shape[1], out.shape[2]
        K = sa.shape[2]
        for flat in range(cuda.grid(1), T * M * N, cuda.gridsize(1)):
            t = flat // (M * N)
            i = (flat // N) % M
            j = flat % N
            rem = t
            ta = 0
            tb = 0
            oc = i * ci + j * cj
            for dim in range(len(bshape) - 1, -1, -1):
                q = rem % bshape[dim]
                rem = rem // bshape[dim]
                ta += q * sta[dim]
                tb += q * stb[dim]
                oc += q * stc[dim]
            d = c0 if c_scalar else np.float64(c[oc])
            for k0 in range(0, K, fma):
                k1 = min(k0 + fma, K)
                d = block_fma(sa[ta, i, k0:k1], ea[ta, i, k0:k1], sb[tb, k0:k1, j],
                              eb[tb, k0:k1, j], d, U, F, C, V)
            if d != d:
                if K == 0 and not c_scalar:           # c itself: its sign bit, not a conversion's
                    neg = (np.uint64(c_bits[oc]) >> np.uint64(8 * c_bits.itemsize - 1)) != 0
                else:                                 # block_fma's NaN, or c0 (passed bitwise)
                    neg = np.float64(d).view(np.int64) < 0
                out_bits[t, i, j] = nan_neg if neg else nan_pos
            else:
                out[t, i, j] = d
    return unit_kernel


@functools.lru_cache(maxsize=None)
def _matmul_kernel(Fa: tuple, Ca: tuple, Fp: tuple, Cp: tuple, Cs: tuple, pairwise: bool,
                   promote: bool, scaled: bool):
    """The accumulator model (:func:`fpformat.gemm.matmul`): a grid-stride loop over output
    elements, each through :func:`fpformat.gemm_core.gemm_element` (the CPU kernel's core),
    ``b`` read as ``(K, N)`` (a warp's neighbouring ``j`` read neighbouring words).  Thread
    ``t`` of the grid uses row ``t`` of the scratch arrays.  Codes are stored into the result
    format's unsigned dtype."""
    _cuda()

    @cuda.jit(cache=True)
    def matmul_kernel(a, b, sa, sbt, block_k, seg_len, W, sub_a, sub_p, key_a, key_p, terms,
                      digits, tree, tcode, out_val, out_code):
        N = np.int64(b.shape[1])
        t = np.int64(cuda.grid(1))
        for idx in range(t, np.int64(a.shape[0]) * N, np.int64(cuda.gridsize(1))):
            i = idx // N
            j = idx - i * N
            v, c = gemm_core.gemm_element(a, b, True, sa, sbt, i, j, idx, block_k, seg_len, W,
                                          pairwise, promote, scaled, Fa, Ca, sub_a, Fp, Cp,
                                          sub_p, Cs, key_a, key_p, terms[t], digits[t], tree[t],
                                          tcode[t])
            out_val[i, j] = v
            out_code[i, j] = c
    return matmul_kernel


#: ``info`` slots of :func:`_significand_kernel` per operand: largest significant-bit count,
#: smallest exponent of a last set bit, largest ``e`` with ``|v| < 2**e`` (their start values:
#: the identities of the max/min/max reductions; an operand with no finite nonzero value keeps
#: ``bits`` 0, as :func:`fpformat.gemm.significand_info` reports it).
_INFO_START = (0, 1 << 20, -1075)


@functools.lru_cache(maxsize=None)
def _significand_kernel():
    """:func:`fpformat.gemm.significand_info` of a flat operand into ``info[3 * slot:]``
    (atomic max/min over the finite nonzero values; ``info`` starts at :data:`_INFO_START`)."""
    _cuda()

    @cuda.jit(cache=True)
    def significand_kernel(x, info, slot):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = np.float64(x[i])
            if v != 0.0 and math.isfinite(v):
                m, e = math.frexp(abs(v))
                sig = np.int64(m * 9007199254740992.0)    # * 2**53, exact
                tz = np.int64(0)
                while (sig & 1) == 0:
                    sig >>= 1
                    tz += 1
                cuda.atomic.max(info, 3 * slot, np.int64(53) - tz)
                cuda.atomic.min(info, 3 * slot + 1, np.int64(e) - 53 + tz)
                cuda.atomic.max(info, 3 * slot + 2, np.int64(e))
    return significand_kernel


@functools.lru_cache(maxsize=None)
def _info_start_kernel():
    _cuda()
    b0, l0, t0 = _INFO_START

    @cuda.jit(cache=True)
    def info_start_kernel(info):
        if cuda.grid(1) == 0:
            for s in range(info.size // 3):
                info[3 * s] = b0
                info[3 * s + 1] = l0
                info[3 * s + 2] = t0
    return info_start_kernel


# --------------------------------------------------------------------------------- host
def _launch(kernel, n: int, stream, *args) -> None:
    """A grid-stride launch over ``n`` items, through :func:`fpformat.cuda._launch` (which
    counts the kernel in :func:`fpformat.cuda.compilations`)."""
    if n:
        blocks, threads = fc._launch_shape(n)
        fc._launch(kernel, blocks, threads, stream, *args)


def _batch_strides(batch: tuple[int, ...], own: tuple[int, ...], unit: int) -> tuple[int, ...]:
    """Per dimension of the broadcast ``batch`` shape: the stride (in units of ``unit``
    elements) of an operand whose own batch shape is ``own`` (right-aligned; 0 where it is
    broadcast)."""
    own = (1,) * (len(batch) - len(own)) + tuple(own)
    strides = []
    step = unit
    for size in reversed(own):
        strides.append(0 if size == 1 else step)
        step *= size
    return tuple(reversed(strides))


def _result_dtype(fo: FloatFormat):
    """The CPU's result dtype: float16 for outputs that fit it, else float32."""
    return np.float16 if fo.fits("float16") and fo.exp_bits <= 5 else np.float32


def mma(a, b, c, unit, fi: FloatFormat, fo: FloatFormat, tuples: tuple,
        quantize_inputs: bool) -> Any:
    """:func:`fpformat.gemm.mma` for CUDA arrays ``a`` and ``b``.

    The caller has resolved ``unit`` and its ``tuples = (U, F, C, V)``; ``c`` is a CUDA array,
    or a host value already checked to hold ``fo`` values (a float64 numpy scalar or array).
    Returns an array of ``a``'s kind on its device: float32, or float16 for float16 outputs.
    ``TypeError`` when an operand is not a CUDA array; ``ValueError`` for units whose summation
    needs scratch (:data:`GPU_SUMMATIONS`), shapes that do not chain or broadcast, and operand
    values outside their formats (as on the CPU)."""
    for x, pname in ((a, "a"), (b, "b")):
        if not is_cuda_array(x):
            raise TypeError(f"{pname} must be a CUDA array like the other operand, got "
                            f"{type(x).__name__} (put both operands on the GPU, or both on the "
                            f"host)")
    if unit.summation not in GPU_SUMMATIONS:
        raise ValueError(f"unit {unit}: summation={unit.summation!r} needs scratch arrays per "
                         f"block and runs on the CPU only; the GPU runs the summations "
                         f"{', '.join(GPU_SUMMATIONS)} (pass host arrays for this unit)")
    with fc._on_device(a):
        return _mma(a, b, c, unit, fi, fo, tuples, bool(quantize_inputs))


def _mma(a, b, c, unit, fi, fo, tuples, quantize_inputs):
    U, F, C, V = tuples
    da = fc._device(a, floats=True)
    db = fc._device(b, floats=True)
    stream = da.stream
    A, B = da.view, db.view
    drop = (A.ndim == 1, B.ndim == 1)
    a_shape = (1,) + tuple(A.shape) if drop[0] else tuple(A.shape)
    b_shape = tuple(B.shape) + (1,) if drop[1] else tuple(B.shape)
    if len(a_shape) < 2 or len(b_shape) < 2 or a_shape[-1] != b_shape[-2]:
        raise ValueError(f"a and b do not chain as matmul operands: shapes {tuple(A.shape)} and "
                         f"{tuple(B.shape)}")
    try:
        batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    except ValueError:
        raise ValueError(f"a and b do not broadcast as matmul operands: shapes "
                         f"{tuple(A.shape)} and {tuple(B.shape)}") from None
    M, N = a_shape[-2], b_shape[-1]
    shape = batch + (M, N)

    # c: a device array (checked on the device), or a checked host value
    c_scalar, c0 = False, 0.0
    if is_cuda_array(c):
        dc = fc._device(c, floats=True)
        cview = dc.view.reshape(dc.view.size)
        c_shape = tuple(dc.view.shape)
    else:
        host = np.asarray(c, dtype=np.float64)
        c_shape = host.shape
        if host.ndim == 0:
            c_scalar, c0 = True, float(host)
            cview = fc._empty(da, (1,), np.float64)[1]        # typed placeholder, never read
        else:
            cview = _to_device(da, np.ascontiguousarray(host).reshape(-1))
    try:
        fits = np.broadcast_shapes(c_shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"c of shape {c_shape} does not broadcast to the result's {shape}")

    flags_obj, flags = fc._empty(da, (3,), np.int32)        # a, b, c: a value outside the format
    fc._launch(_zero_kernel(), 1, 1, stream, flags)
    fi_C = call_tuple(fi, "rne", quantize_inputs, None)
    fi_V = value_tuple(fi, fi_C, core.SRC_FLOAT64)
    operand = _operand_kernel(fi.params, fi_C, fi_V, fi.man_bits, fi.emin,
                              bool(unit.subnormal_inputs), quantize_inputs)
    keep = [flags_obj]                     # owners of the scratch views, alive until launched
    parts = []
    for slot, (d, own) in enumerate(((da, a_shape), (db, b_shape))):
        flat = d.view.reshape(d.view.size)
        n_own = math.prod(own[:-2])
        sig_obj, sig = fc._empty(da, (flat.size,), np.int64)
        exp_obj, exp = fc._empty(da, (flat.size,), np.int64)
        keep += [sig_obj, exp_obj]
        _launch(operand, flat.size, stream, flat, sig, exp, flags, slot)
        parts += [sig.reshape((n_own,) + own[-2:]), exp.reshape((n_own,) + own[-2:])]
    checked = not quantize_inputs
    if not c_scalar:
        fo_C = call_tuple(fo, "rne", False, None)
        _launch(_check_kernel(fo.params, fo_C, value_tuple(fo, fo_C, core.SRC_FLOAT64)),
                cview.size, stream, cview, flags, 2)
        checked = True

    rdt = np.dtype(_result_dtype(fo))
    out_obj, out = fc._empty(da, (math.prod(batch), M, N), rdt)
    bshape = batch if batch else (1,)
    sta = _batch_strides(bshape, a_shape[:-2], 1)
    stb = _batch_strides(bshape, b_shape[:-2], 1)
    c_strides = _batch_strides(bshape + (M, N), c_shape, 1)
    if math.prod(shape):
        _launch(_unit_kernel(U, F, C, V, rdt.itemsize), math.prod(shape), stream, *parts,
                cview, _unsigned(cview), c0, c_scalar, out, _unsigned(out),
                bshape, sta, stb, c_strides[:-2], c_strides[-2], c_strides[-1])
    if checked:
        bad = fc._read(flags, da)
        for slot, (pname, fmt) in enumerate((("a", fi), ("b", fi), ("c", fo))):
            if bad[slot]:
                hint = "" if pname == "c" else "; round them first, or pass quantize_inputs=True"
                raise ValueError(f"{pname} holds values that are not {fmt} values{hint}")
    del keep
    final = tuple(s for s, gone in zip(shape, (False,) * len(batch) + drop) if not gone)
    return out_obj.reshape(final)


def _unsigned(view):
    """``view`` (a numba device array) reinterpreted as unsigned integers of its item size."""
    return view.view(np.dtype(f"uint{8 * np.dtype(view.dtype).itemsize}"))


def _to_device(d, host: np.ndarray):
    """A host array copied to ``d``'s device (by torch for torch inputs); its numba view."""
    if d.family == "torch":
        import torch  # optional: only for torch CUDA tensors
        t = torch.as_tensor(host, device=d.like.device)
        with _cuda().gpus[d.like.device.index]:
            return _cuda().as_cuda_array(t, sync=False)
    return _cuda().to_device(host, stream=d.stream)


# --------------------------------------------------------------------------------- matmul
#: Bytes of per-thread scratch one :func:`matmul` launch may hold (the grid shrinks to fit).
SCRATCH_BYTES = 256 << 20


def matmul_on_device(a, b) -> bool:
    """Whether :func:`fpformat.gemm.matmul` runs ``a @ b`` on the GPU: both are CUDA arrays of
    float16, float32 or float64, or torch CUDA tensors of bfloat16 (widened by torch; other
    arrays have no bfloat16 the kernels can read).  Other CUDA inputs (integer, float8) have no
    device kernel and go through the host."""
    return all(is_cuda_array(x) and _float_array(x) for x in (a, b))


def _float_array(x) -> bool:
    name = str(getattr(x, "dtype", "")).replace("torch.", "")
    return name in FLOAT_KINDS and (name != "bfloat16" or type(x).__module__.startswith("torch"))


def matmul(a, b, plan_for, check, return_codes: bool):
    """:func:`fpformat.gemm.matmul` (no input formats or scales) for CUDA arrays ``a`` (M, K)
    and ``b`` (K, N).

    ``plan_for(K)`` gives the :class:`fpformat.gemm.GemmPlan`; ``check(info_a, info_b)`` raises
    ``ValueError`` when products of such operands are not exact in float64
    (:func:`fpformat.gemm._check_significands`; the three numbers per operand are reduced on
    the device and read back once, before the GEMM is queued).  Returns float64 values of
    ``a``'s kind on its device, with the codes (the plan's result format's dtype) when
    ``return_codes``."""
    with fc._on_device(a):
        da = fc._device(a, floats=True)
        db = fc._device(b, floats=True)
        A, B = da.view, db.view
        for v, pname in ((A, "a"), (B, "b")):
            if v.ndim != 2:
                raise ValueError(f"{pname} must be 2-D, got shape {tuple(v.shape)}")
        M, K = (int(n) for n in A.shape)
        N = int(B.shape[1])
        if int(B.shape[0]) != K:
            raise ValueError(f"a and b do not chain: a is {(M, K)}, b is {tuple(B.shape)}")
        stream = da.stream
        plan = plan_for(K)
        info_obj, info = fc._empty(da, (6,), np.int64)
        fc._launch(_info_start_kernel(), 1, 1, stream, info)
        for slot, v in enumerate((A, B)):
            _launch(_significand_kernel(), int(v.size), stream, v.reshape(int(v.size)), info,
                    slot)
        got = fc._read(info, da)
        check(got[:3], got[3:])
        vals_obj, vals = fc._empty(da, (M, N), np.float64)
        codes_obj, codes = fc._empty(da, (M, N), np.dtype(plan.final.dtype))
        if M * N:
            _run_matmul(da, A, B, plan, vals, codes, M * N)
        del info_obj
        return (vals_obj, codes_obj) if return_codes else vals_obj


def _run_matmul(da, A, B, plan, vals, codes, n: int) -> None:
    """Launch the matmul kernel over ``n`` outputs with per-thread scratch from ``da``'s
    framework, the grid capped so that the scratch stays within :data:`SCRATCH_BYTES`."""
    ngroups = -(-plan.seg_len // plan.W) if plan.pairwise else 1
    nterms = max(plan.W + 1, gemm_core.MIN_TERMS)
    ndig = int(gemm_core.digits_for_window(-1074, 1025))
    per_thread = 8 * (nterms + ndig + 2 * ngroups)
    blocks, threads = fc._launch_shape(n)
    blocks = max(1, min(blocks, SCRATCH_BYTES // (per_thread * threads)))
    total = blocks * threads
    keep = []
    scratch = []
    for width, dt in ((nterms, np.float64), (ndig, np.int64), (ngroups, np.float64),
                      (ngroups, np.int64)):
        obj, view = fc._empty(da, (total, width), dt)
        keep.append(obj)
        scratch.append(view)
    kernel = _matmul_kernel(plan.Fa, plan.Ca, plan.Fp, plan.Cp, plan.Cs, plan.pairwise,
                            plan.promote, plan.scaled)
    ones_obj, ones = fc._empty(da, (1, 1), np.float64)      # block scales: not read unscaled
    fc._launch(kernel, blocks, threads, da.stream, A, B, ones, ones, plan.block_k, plan.seg_len,
               plan.W, plan.sub_a, plan.sub_p, plan.key_a, plan.key_p, *scratch, vals, codes)
    del keep, ones_obj
