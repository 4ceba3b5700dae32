"""The GPU path: numba.cuda kernels compiled from the same scalar core as the CPU kernels.

    from fpformat import get_format
    y = get_format("float8_e4m3fn").quantize(x_gpu)          # x_gpu: torch CUDA / CuPy / numba
    codes = get_format("float8_e5m2").encode(x_gpu, rounding="sr", seed=1)

:mod:`fpformat.kernels` (and :mod:`fpformat.torch`) send every array exposing
``__cuda_array_interface__`` here.  The kernels are grid-stride loops around
:func:`fpformat.core.encode_bits`, :func:`fpformat.core.quantize_bits` and
:func:`fpformat.core.decode_code` -- the very functions the CPU kernels run (``register_jitable``),
not a second implementation -- so the GPU gives the CPU's codes bit for bit, stochastic rounding
included: element ``i`` (flat C-order index) draws ``core.sr_random(key, i)`` on both.

Arrays: results come back as the input's kind: a torch CUDA tensor gives a torch tensor on the
same device (launched on torch's current stream), a CuPy array a CuPy array (on CuPy's current
stream), a numba device array (or any other ``__cuda_array_interface__`` object) a numba device
array.  float32/float64 inputs are read in place as their bit patterns; float16 is widened to
float32 on the device (torch float16/bfloat16: by torch, ``x.float()``), exactly; quantize
results are narrowed back exactly (the format's values fit, as on the CPU).  Inputs must be
C-contiguous (torch and CuPy inputs are made so by their framework).

Block formats (:class:`fpformat.BlockFormat`, blocks along the last axis or ``"tensor"``): one
GPU *thread per block of elements*, each running the CPU block kernel's own per-block function
(:func:`fpformat.block_kernels.block_row`: amax, scale, element rounding), so CPU and GPU agree
bit for bit.  Why a thread per block: the per-block function is sequential over its block, and
MX blocks are short (16-32 elements: 64-128 contiguous bytes per thread, served from L1 after
the first touch).  "channel"/"tensor" blocks of thousands of elements leave most of the GPU idle
(one thread per row, or for the whole tensor): correct, but slow.  2-D tiles and blocks along
another axis are not supported here (``ValueError``): move such arrays to the host.

numba.cuda is imported only when a CUDA array arrives (importing fpformat never imports it).
Tests run these kernels under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) in a child
process: tests/test_cuda.py.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from . import block_kernels, core
from .arrays import FLOAT_KINDS, float_kind
from .block_kernels import B_K, block_params
from .dispatch import seed_key, source_layout
from .rounding import call_tuple, value_tuple
from .scales import BlockEncoding, tensor_scale

THREADS = 256            # threads per CUDA block on a real GPU
WAVES = 32               # grid = min(blocks needed, WAVES * multiprocessors): grid-stride beyond
SIM_THREADS = 8          # the simulator runs a Python thread per CUDA thread: keep grids tiny
SIM_BLOCKS = 2


cuda: Any = None          # numba.cuda once imported; a module global, because the simulator
                          # swaps its fake module into the kernels' globals (not closures)


def _cuda():
    """numba.cuda, imported on first use (the simulator when NUMBA_ENABLE_CUDASIM=1)."""
    global cuda
    if cuda is None:
        from numba import cuda as numba_cuda  # heavy and optional: only for CUDA arrays
        cuda = numba_cuda
    return cuda


def _simulator() -> bool:
    """Whether numba.cuda is the CUDA simulator (NUMBA_ENABLE_CUDASIM=1 at its import)."""
    try:                                # numba-cuda's config: heavy, imported with numba.cuda
        from numba.cuda.core import config  # numba-cuda >= 0.2x
    except ImportError:  # pragma: no cover - older numba-cuda reads numba's own config
        from numba.core import config
    return bool(config.ENABLE_CUDASIM)


def _launch_shape(n: int) -> tuple[int, int]:
    """(blocks, threads per block) for ``n`` elements in a grid-stride loop."""
    if _simulator():
        return max(1, min(-(-n // SIM_THREADS), SIM_BLOCKS)), SIM_THREADS
    sms = _cuda().get_current_device().MULTIPROCESSOR_COUNT
    return max(1, min(-(-n // THREADS), WAVES * sms)), THREADS


# --------------------------------------------------------------------------------- kernels
# Each kernel is compiled once per (source layout, format tuple, call tuple): the tuples are
# closure constants, so the compiler folds the format and the rounding mode away, as in the
# specialised CPU kernels.  The loops hold no arithmetic of their own beyond the core call.

@functools.lru_cache(maxsize=None)
def _encode_kernel(S: tuple, F: tuple, C: tuple):
    _cuda()
    sr = C[core.C_MODE] == core.SR

    @cuda.jit
    def encode_kernel(xbits, out, key):
        for i in range(cuda.grid(1), xbits.size, cuda.gridsize(1)):
            u = core.sr_random(key, i) if sr else np.uint64(0)
            out[i] = core.encode_bits(np.int64(xbits[i]), S, F, C, u)
    return encode_kernel


@functools.lru_cache(maxsize=None)
def _quantize_kernel(S: tuple, F: tuple, C: tuple, V: tuple):
    _cuda()
    sr = C[core.C_MODE] == core.SR

    @cuda.jit
    def quantize_kernel(xbits, out, key):
        for i in range(cuda.grid(1), xbits.size, cuda.gridsize(1)):
            u = core.sr_random(key, i) if sr else np.uint64(0)
            out[i] = core.quantize_bits(np.int64(xbits[i]), S, F, C, V, u)
    return quantize_kernel


@functools.lru_cache(maxsize=None)
def _decode_kernel(F: tuple, sub_unit: float):
    _cuda()
    limit = 1 << (F[core.F_E] + F[core.F_M] + (1 if F[core.F_SIGNBIT] != 0 else 0))

    @cuda.jit
    def decode_kernel(codes, out, bad):
        for i in range(cuda.grid(1), codes.size, cuda.gridsize(1)):
            c = codes[i]
            if c < 0 or c >= limit:                       # flagged; the host raises ValueError
                bad[0] = 1
            out[i] = core.decode_code(np.int64(c), F, sub_unit)
    return decode_kernel


@functools.lru_cache(maxsize=None)
def _convert_kernel():
    """dst[i] = src[i] with the element type converted (float16 <-> float32 <-> float64; exact
    where it is used: widening, or narrowing values the format guarantees to fit)."""
    _cuda()

    @cuda.jit
    def convert_kernel(src, dst):
        for i in range(cuda.grid(1), src.size, cuda.gridsize(1)):
            dst[i] = src[i]
    return convert_kernel


@functools.lru_cache(maxsize=None)
def _amax_kernel():
    """Largest finite magnitude (float64, via atomic max) and whether a NaN/inf is present."""
    _cuda()

    @cuda.jit
    def amax_kernel(x, amax, bad):
        m = 0.0
        flag = 0
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = abs(np.float64(x[i]))
            if v <= 1.7976931348623157e308:
                m = max(m, v)
            else:
                flag = 1
        cuda.atomic.max(amax, 0, m)
        if flag:
            bad[0] = 1
    return amax_kernel


def _block_row_function() -> Callable:
    """The CPU block kernel's per-block function.  It is ``numba.njit(inline="always")``: numba
    inlines it into the CUDA kernel at the IR level (its core calls then compile for CUDA).  The
    simulator runs kernels as Python, so there it is called as its Python function."""
    return block_kernels.block_row.py_func if _simulator() else block_kernels.block_row


@functools.lru_cache(maxsize=None)
def _block_kernel(B: tuple, FE: tuple, CE: tuple, FS: tuple, CS: tuple, want_out: bool):
    _cuda()
    block_row = _block_row_function()
    sr = CE[core.C_MODE] == core.SR

    @cuda.jit
    def block_kernel(x, key, codes, scales, out):
        rows = x.shape[0]
        L = x.shape[1]
        k = np.int64(B[B_K])
        nb = (L + k - 1) // k
        for t in range(cuda.grid(1), rows * nb, cuda.gridsize(1)):
            r = t // nb
            b = t - r * nb
            block_row(x, r, b, L, B, FE, CE, FS, CS, key, sr, codes, scales, out, want_out)
    return block_kernel


# --------------------------------------------------------------------------------- arrays
@dataclass
class _Device:
    """A C-contiguous numba device view of an input, with what is needed to answer in kind."""
    view: Any                  # numba DeviceNDArray (FakeCUDAArray in the simulator)
    kind: str                  # the input's dtype name: float16/bfloat16/float32/float64/uint8...
    family: str                # "torch", "cupy" or "numba"
    like: Any                  # the original object
    stream: Any                # the stream to launch on (0: the default stream)


def _family(x) -> str:
    mod = type(x).__module__
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith("cupy"):
        return "cupy"
    return "numba"


def _external_stream(ptr: int):
    """A numba handle on a framework's stream (0, numba's default stream, for the null stream)."""
    return _cuda().external_stream(ptr) if ptr else 0


def _torch_stream(t):
    import torch  # optional: only for torch CUDA tensors
    return _external_stream(torch.cuda.current_stream(t.device).cuda_stream)


def _device(x, floats: bool) -> _Device:
    """The numba device view of ``x`` (a torch CUDA tensor, CuPy array, numba device array or any
    ``__cuda_array_interface__`` object).  ``floats``: x must be a float array (else integer)."""
    cuda = _cuda()
    fam = _family(x)
    if fam == "torch":
        if x.device.type != "cuda":
            raise ValueError(f"expected a CUDA tensor, got device {x.device}")
        kind = str(x.dtype).replace("torch.", "")
        if floats and kind not in FLOAT_KINDS:
            raise TypeError(f"x must be a float16, bfloat16, float32 or float64 tensor, "
                            f"got {x.dtype}")
        t = x.detach()
        if kind in ("float16", "bfloat16"):
            t = t.float()                                    # exact widening, by torch
        t = t.contiguous()
        stream = _torch_stream(x)
        with cuda.gpus[x.device.index]:
            view = cuda.as_cuda_array(t, sync=False)         # we launch on torch's stream
        return _Device(view, kind, fam, x, stream)
    if fam == "cupy":
        import cupy  # optional: only for CuPy arrays
        a = cupy.ascontiguousarray(x)
        stream = _external_stream(cupy.cuda.get_current_stream().ptr)
        view = cuda.as_cuda_array(a, sync=False)
    elif getattr(x, "__cuda_ndarray__", False):              # numba's own (or simulated) arrays
        view, stream = x, 0
    elif hasattr(x, "__cuda_array_interface__"):
        view, stream = cuda.as_cuda_array(x), 0
    else:
        raise TypeError(f"expected a CUDA array (with __cuda_array_interface__), "
                        f"got {type(x).__name__}")
    if not view.is_c_contiguous():
        raise ValueError("CUDA arrays must be C-contiguous (copy it first, e.g. "
                         "numba.cuda.device_array_like + copy, or cupy.ascontiguousarray)")
    kind = np.dtype(view.dtype).name
    return _Device(view, kind, fam, x, stream)


def _empty(d: _Device, shape: tuple[int, ...], dtype) -> tuple[Any, Any]:
    """A new array of ``d``'s family (on the same device) and its numba device view."""
    cuda = _cuda()
    name = np.dtype(dtype).name
    if d.family == "torch":
        import torch  # optional: only for torch CUDA tensors
        t = torch.empty(shape, dtype=getattr(torch, name), device=d.like.device)
        with cuda.gpus[d.like.device.index]:
            return t, cuda.as_cuda_array(t, sync=False)
    if d.family == "cupy":
        import cupy  # optional: only for CuPy arrays
        a = cupy.empty(shape, dtype=name)
        return a, cuda.as_cuda_array(a, sync=False)
    a = cuda.device_array(shape, dtype=name)
    return a, a


def _temp(d: _Device, n: int, dtype):
    """A 1-D scratch array: allocated by torch for torch inputs (stream-ordered caching
    allocator), else by numba.  The numba view keeps the owner alive."""
    return _empty(d, (n,), dtype)[1]


def _read(arr, d: _Device) -> np.ndarray:
    """Copy a small device array to the host once the work queued on ``d``'s stream is done."""
    host = arr.copy_to_host(stream=d.stream)
    if d.stream != 0:
        d.stream.synchronize()
    return host


def _on_device(x):
    """The numba context of the device holding ``x`` (torch/CuPy; else numba's current one)."""
    fam = _family(x)
    if fam == "torch" and getattr(x, "is_cuda", False):
        return _cuda().gpus[x.device.index]
    if fam == "cupy":
        return _cuda().gpus[x.device.id]
    return contextlib.nullcontext()


def _in_device_context(fn: Callable) -> Callable:
    """Run ``fn(fmt, x, ...)`` with the numba context of ``x``'s device current."""
    @functools.wraps(fn)
    def wrapper(fmt, x, *args, **kwargs):
        with _on_device(x):
            return fn(fmt, x, *args, **kwargs)
    return wrapper


def _flat(view):
    return view.reshape(view.size)


def _launch(kernel, n: int, stream, *args) -> None:
    blocks, threads = _launch_shape(n)
    kernel[blocks, threads, stream](*args)


def _source(fmt, d: _Device):
    """(flat bit patterns as a device array, source layout S) for the core to read."""
    flat = _flat(d.view)
    dt = np.dtype(flat.dtype).name
    if dt not in ("float16", "float32", "float64"):
        raise TypeError(f"x must be a float16, bfloat16, float32 or float64 array, got dtype {dt}")
    S = source_layout(fmt, "float32" if d.kind == "bfloat16" else d.kind)
    want = np.float32 if S == core.SRC_FLOAT32 else np.float64
    if flat.dtype != want:                                   # widen on the device (exact)
        wide = _temp(d, flat.size, want)
        if flat.size:
            _launch(_convert_kernel(), flat.size, d.stream, flat, wide)
        flat = wide
    # float64 bits are read as int64 (the core takes int64; no unsigned wrap-around needed)
    return flat.view(np.uint32 if S == core.SRC_FLOAT32 else np.int64), S


def _shape(d: _Device) -> tuple[int, ...]:
    return tuple(int(s) for s in d.view.shape)


# --------------------------------------------------------------------------------- element API
@_in_device_context
def encode(fmt, x, rounding: str = "rne", saturate: bool = False, seed: int | None = None,
           sr_bits: int | None = None):
    """Codes of the CUDA array ``x`` in ``fmt`` (the format's code dtype, ``x``'s shape and kind);
    see :meth:`fpformat.FloatFormat.encode`.  Block formats return a
    :class:`fpformat.block.BlockEncoding` whose ``codes``/``scales`` are CUDA arrays."""
    if _is_block(fmt):
        return block_encode(fmt, x, rounding, saturate, seed, sr_bits)
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    d = _device(x, floats=True)
    key = seed_key(seed, C[core.C_MODE])
    bits, S = _source(fmt, d)
    obj, out = _empty(d, _shape(d), fmt.dtype)
    if bits.size:
        _launch(_encode_kernel(S, fmt.params, C), bits.size, d.stream, bits, _flat(out), key)
    return obj


@_in_device_context
def quantize(fmt, x, rounding: str = "rne", saturate: bool = False, seed: int | None = None,
             sr_bits: int | None = None):
    """``decode(encode(x))`` in one pass, with ``x``'s dtype, shape and kind (see
    :meth:`fpformat.FloatFormat.quantize`); block formats go to :func:`block_quantize`."""
    if _is_block(fmt):
        return block_quantize(fmt, x, rounding, saturate, seed, sr_bits)
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    d = _device(x, floats=True)
    if not fmt.fits(d.kind):
        raise ValueError(f"format {fmt} has values that are not {d.kind} values; quantize a "
                         f"float64 array instead, or use encode/decode")
    key = seed_key(seed, C[core.C_MODE])
    bits, S = _source(fmt, d)
    V = value_tuple(fmt, C, S)
    work = np.float32 if S == core.SRC_FLOAT32 else np.float64
    kernel = _quantize_kernel(S, fmt.params, C, V)

    def fill(out):                                  # out: flat float32/float64 device array
        if bits.size:
            _launch(kernel, bits.size, d.stream, bits, out.view(bits.dtype), key)
    return _finish(d, _shape(d), work, fill)


def _finish(d: _Device, shape, work, fill: Callable) -> Any:
    """Allocate the float result in ``work`` dtype, let ``fill(flat_view)`` write it, and return
    it in ``d.kind`` and ``d``'s family (narrowing exactly where needed)."""
    kind = d.kind
    if kind == np.dtype(work).name:
        obj, out = _empty(d, shape, work)
        fill(_flat(out))
        return obj
    if d.family == "torch":                                  # torch narrows (exact: values fit)
        import torch  # optional: only for torch CUDA tensors
        obj, out = _empty(d, shape, work)
        fill(_flat(out))
        return obj.to(getattr(torch, kind))
    tmp = _temp(d, int(np.prod(shape)), work)
    fill(tmp)
    obj, out = _empty(d, shape, kind)
    if tmp.size:
        _launch(_convert_kernel(), tmp.size, d.stream, tmp, _flat(out))
    return obj


@_in_device_context
def decode(fmt, codes, dtype=np.float64):
    """Values of the CUDA array ``codes`` (unsigned or signed integers) in ``fmt`` as ``dtype``
    (float64 default; float32/float16/bfloat16 when the format's values fit), ``codes``' kind.
    Codes outside ``0 .. 2**bits - 1`` raise ``ValueError`` (checked on the device)."""
    d = _device(codes, floats=False)
    if np.dtype(d.view.dtype).kind not in "ui":
        raise TypeError(f"codes must be an integer array, got dtype {d.view.dtype}")
    name = float_kind(dtype)                                 # any spelling, torch's too
    if name != "float64" and not fmt.fits(name):
        raise ValueError(f"format {fmt} has values that are not {name} values; decode to float64")
    if name == "bfloat16" and d.family != "torch":
        raise ValueError("bfloat16 results on the GPU are available for torch tensors only")
    cuda = _cuda()
    bad = cuda.to_device(np.zeros(1, dtype=np.int32), stream=d.stream)
    flat = _flat(d.view)
    kernel = _decode_kernel(fmt.params, float(2.0 ** (fmt.emin - fmt.man_bits)))
    out_kind = _Device(d.view, name, d.family, d.like, d.stream)
    # the kernel writes the requested dtype directly (exact: the values fit); bfloat16 via float32
    work = np.float32 if name == "bfloat16" else np.dtype(name)

    def fill(out):
        if flat.size:
            _launch(kernel, flat.size, d.stream, flat, out, bad)
    result = _finish(out_kind, _shape(d), work, fill)
    if int(_read(bad, d)[0]):
        raise ValueError(f"codes must be in 0..{(1 << fmt.bits) - 1} for the {fmt.bits}-bit "
                         f"format {fmt}")
    return result


# --------------------------------------------------------------------------------- blocks
def _is_block(fmt) -> bool:
    return hasattr(fmt, "element") and hasattr(fmt, "scale_rule")


def _tensor_scale_device(d: _Device, flat) -> float:
    """NVFP4's per-tensor scale from a device reduction, by :func:`fpformat.scales.tensor_scale`'s
    rule."""
    cuda = _cuda()
    amax = cuda.to_device(np.zeros(1, dtype=np.float64), stream=d.stream)
    bad = cuda.to_device(np.zeros(1, dtype=np.int32), stream=d.stream)
    if flat.size:
        _launch(_amax_kernel(), flat.size, d.stream, flat, amax, bad)
    if int(_read(bad, d)[0]):
        return tensor_scale(np.array([np.nan]))
    return tensor_scale(_read(amax, d))


class _BlockRun(NamedTuple):
    """What :func:`_run_blocks` produced (arrays of the input's family, on its device)."""
    device: _Device                  # the input as the kernels saw it
    shape: tuple[int, ...]           # the input's shape
    codes: Any                       # element codes, (rows, L)
    scales: Any                      # scale codes, or float32 scale bits, (rows, blocks per row)
    tensor_scale: float | None       # the "nvfp4" rule's tensor scale
    out: Any                         # quantize only: the values in the input's dtype and kind


def _run_blocks(fmt, x, rounding, saturate, seed, sr_bits, want_out: bool) -> _BlockRun:
    """Run the block kernel on the CUDA array ``x`` (``out`` only when ``want_out``)."""
    if fmt.tile is not None:
        raise ValueError(f"block format {fmt}: 2-D tiles are not supported on the GPU; "
                         f"quantize on the host")
    d = _device(x, floats=True)
    shape = _shape(d)
    if len(shape) == 0 or math.prod(shape) == 0:
        raise ValueError("x must be a non-empty array with at least one dimension on the GPU path")
    if fmt.block_size != "tensor" and fmt.axis % len(shape) != len(shape) - 1:
        raise ValueError(f"block format {fmt}: blocks along axis {fmt.axis} are not supported on "
                         f"the GPU (only the last axis); transpose or quantize on the host")
    flat = _flat(d.view)
    if flat.dtype not in (np.float32, np.float64):           # float16 (numba/CuPy): widen
        wide = _temp(d, flat.size, np.float32)
        _launch(_convert_kernel(), flat.size, d.stream, flat, wide)
        flat = wide
    L = shape[-1]
    if fmt.block_size == "tensor":
        x2, k = flat.reshape(1, flat.size), flat.size
    else:
        x2 = flat.reshape(flat.size // L, L)
        k = L if fmt.block_size == "channel" else fmt.block_size
    tscale = _tensor_scale_device(d, flat) if fmt.scale_rule == "nvfp4" else None
    B, FE, CE, FS, CS = block_params(fmt, k, tscale, rounding, saturate, sr_bits)
    key = seed_key(seed, CE[core.C_MODE])
    rows, Lx = int(x2.shape[0]), int(x2.shape[1])
    nb = -(-Lx // k)
    sf = fmt.scale_format
    work = np.dtype(flat.dtype)
    codes_obj, codes = _empty(d, (rows, Lx), fmt.element.dtype)
    scales_obj, scales = _empty(d, (rows, nb), np.uint32 if sf is None else sf.dtype)
    kernel = _block_kernel(B, FE, CE, FS, CS, want_out)

    def fill(out2):
        _launch(kernel, rows * nb, d.stream, x2, key, codes, scales, out2)

    out = None
    if want_out:
        out = _finish(d, shape, work, lambda flat_out: fill(flat_out.reshape(rows, Lx)))
    else:
        fill(_temp(d, 1, work).reshape(1, 1))                # the kernel's unused output
    return _BlockRun(device=d, shape=shape, codes=codes_obj, scales=scales_obj,
                     tensor_scale=tscale, out=out)


@_in_device_context
def block_encode(fmt, x, rounding: str = "rne", saturate: bool = True, seed: int | None = None,
                 sr_bits: int | None = None):
    """:meth:`fpformat.BlockFormat.encode` on the GPU: a ``BlockEncoding`` whose ``codes`` and
    ``scales`` are arrays of ``x``'s kind (scales as float32 values when the format has no scale
    format, as on the CPU).  Decode it on the host after copying (``BlockFormat.decode``)."""
    run = _run_blocks(fmt, x, rounding, saturate, seed, sr_bits, want_out=False)
    sshape, _ = fmt.layout(run.shape)
    scales = run.scales
    if fmt.scale_format is None:
        scales = _as_float32(run.device, scales)
    return BlockEncoding(codes=run.codes.reshape(run.shape), scales=scales.reshape(sshape),
                         tensor_scale=run.tensor_scale, format=fmt, shape=run.shape,
                         dtype=run.device.kind)


def _as_float32(d: _Device, bits_obj):
    if d.family == "torch":
        import torch  # optional: only for torch CUDA tensors
        return bits_obj.view(torch.float32)
    return bits_obj.view(np.float32)


@_in_device_context
def block_quantize(fmt, x, rounding: str = "rne", saturate: bool = True, seed: int | None = None,
                   sr_bits: int | None = None):
    """:meth:`fpformat.BlockFormat.quantize` on the GPU: ``x``'s dtype, shape and kind (the
    product element x scale is formed in float64 and rounded to x's dtype, as on the CPU)."""
    return _run_blocks(fmt, x, rounding, saturate, seed, sr_bits, want_out=True).out
