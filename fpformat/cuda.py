"""The GPU path: numba.cuda kernels compiled from the same scalar core as the CPU kernels.

    from fpformat import get_format
    y = get_format("float8_e4m3fn").quantize(x_gpu)          # x_gpu: torch CUDA / CuPy / numba
    codes = get_format("float8_e5m2").encode(x_gpu, rounding="sr", seed=1)
    enc = get_format("nvfp4").encode(x_gpu);  get_format("nvfp4").decode(enc)   # stays on the GPU

:mod:`fpformat.kernels`, :mod:`fpformat.block` (and :mod:`fpformat.torch`) send every CUDA array
here (:func:`fpformat.arrays.is_cuda_array`: ``__cuda_array_interface__``, or numba's own
device arrays, simulated ones included).  The kernels (:mod:`fpformat.cuda_kernels`, whose
docstring says how they are shaped and what is a compile-time constant) run the very functions the
CPU kernels run, so the GPU gives the CPU's bits -- codes, scales, values, NaN signs and
stochastic rounding (element ``i``, its flat C-order index, draws ``core.sr_random(key, i)``).

Arrays: results come back as the input's kind: a torch CUDA tensor gives torch tensors on its
device, launched on torch's current stream; a CuPy array CuPy arrays on CuPy's current stream; a
numba device array (or any other ``__cuda_array_interface__`` object) numba device arrays.
float16, bfloat16, float32 and float64 inputs are read as their bit patterns (no widened copy),
values are written in the input's dtype, rounded once from the exact result.  torch inputs that
are not contiguous are made so by torch; other inputs must be C-contiguous (``ValueError``).

A call allocates its results and scratch (block amax, scale values, flags) from the input's own
framework -- torch's caching allocator for torch tensors -- keeps every reduction on the device
and does not wait for the GPU: ``quantize`` returns with its kernels queued on the stream, so it
can be captured in a CUDA graph (``torch.cuda.graph``) after one warm-up call has compiled
its kernels.  Some calls do synchronise, because their answer depends on a device value:
``encode`` of an ``"nvfp4"`` block format (``BlockEncoding.tensor_scale`` is a Python float),
``encode`` of a block format whose scale format has no NaN (it refuses NaN/inf data, as the
CPU does), and ``decode`` where the code dtype can hold codes outside the format (to raise
``ValueError`` as the CPU does).

Block formats: every layout the CPU has -- blocks along any axis, ``"channel"``, ``"tensor"``,
2-D tiles, ragged blocks -- with ``out=``; a GPU encoding decodes on the GPU.

Compilations: one per (format, rounding mode, dtype, kernel kind) per process, cached on disk
by numba; :func:`compilations` counts them.

numba.cuda is imported only when a CUDA array arrives (importing fpformat never imports it).
Tests run these kernels under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) in a child
process and compile them for sm_90 with NVVM (tests/test_cuda.py); tests/test_cuda_gpu.py runs
on a real GPU (``-m gpu``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from . import core, cuda_kernels
from .arrays import FLOAT_KINDS, float_kind
from .block_kernels import block_params
from .cuda_kernels import BITS_DTYPE, F64, KINDS
from .dispatch import seed_key, source_layout
from .names import ELEMENT_PRESET_FIELDS
from .rounding import call_tuple, value_tuple
from .scales import BlockEncoding

THREADS = 256            # threads per CUDA block on a real GPU
WAVES = 32               # grid = min(blocks needed, WAVES * multiprocessors): grid-stride beyond
SIM_THREADS = 16         # the simulator runs a Python thread per CUDA thread: keep grids tiny
SIM_BLOCKS = 2


cuda: Any = None          # numba.cuda once imported; a module global, because the simulator
                          # swaps its fake module into the kernels' globals (not closures)


def _cuda():
    """numba.cuda, imported on first use (the simulator when NUMBA_ENABLE_CUDASIM=1)."""
    global cuda
    if cuda is None:
        from numba import cuda as numba_cuda  # heavy and optional: only for CUDA arrays
        cuda_kernels.bind(numba_cuda, _simulator())
        cuda = numba_cuda
    return cuda


@functools.lru_cache(maxsize=None)       # fixed when numba.cuda is imported; asked per launch
def _simulator() -> bool:
    """Whether numba.cuda is the CUDA simulator (NUMBA_ENABLE_CUDASIM=1 at its import)."""
    try:                                # numba-cuda's config: heavy, imported with numba.cuda
        from numba.cuda.core import config  # numba-cuda >= 0.2x
    except ImportError:  # pragma: no cover - older numba-cuda reads numba's own config
        from numba.core import config
    return bool(config.ENABLE_CUDASIM)


def _threads() -> int:
    return SIM_THREADS if _simulator() else THREADS


@functools.lru_cache(maxsize=None)
def _max_blocks(device_id: int) -> int:
    """Blocks in a full grid: WAVES per multiprocessor (SIM_BLOCKS in the simulator)."""
    if _simulator():
        return SIM_BLOCKS
    return WAVES * _cuda().get_current_device().MULTIPROCESSOR_COUNT


def _grid_cap() -> int:
    return _max_blocks(0 if _simulator() else _cuda().get_current_device().id)


def _launch_shape(n: int) -> tuple[int, int]:
    """(blocks, threads per block) for ``n`` work items in a grid-stride loop."""
    threads = SIM_THREADS if _simulator() else THREADS
    return max(1, min(-(-n // threads), _grid_cap())), threads


# --------------------------------------------------------------------------------- compilations
_kernels: dict[int, Any] = {}             # every kernel launched in this process, by id
_sim_signatures: set[tuple] = set()       # simulator: (kernel, argument types) pairs launched


def _argtype(a) -> tuple:
    dt = getattr(a, "dtype", None)
    if dt is not None and hasattr(a, "shape"):
        return (np.dtype(dt).str, len(a.shape))
    return (type(a).__name__,)


def _launch(kernel, blocks: int, threads: int, stream, *args) -> None:
    _kernels[id(kernel)] = kernel
    if _simulator():
        _sim_signatures.add((id(kernel),) + tuple(_argtype(a) for a in args))
    kernel[blocks, threads, stream](*args)


def compilations() -> int:
    """Kernels compiled (or loaded from numba's disk cache) for the GPU path in this process: one
    per (format, rounding mode, dtype, kernel kind), whatever the data and shapes.  Under the
    simulator, which compiles nothing, the kernel and argument-type combinations launched (what
    a GPU would have compiled)."""
    if cuda is None:
        return 0
    if _simulator():
        return len(_sim_signatures)
    return sum(len(k.overloads) for k in _kernels.values())


# --------------------------------------------------------------------------------- arrays
@dataclass
class _Device:
    """A C-contiguous numba device view of an input, with what is needed to answer in kind."""
    view: Any                  # numba DeviceNDArray of the values (FakeCUDAArray in the simulator)
    kind: str                  # the input's dtype name: float16/bfloat16/float32/float64/uint8...
    family: str                # "torch", "cupy" or "numba"
    like: Any                  # the original object
    stream: Any                # the stream to launch on (0: the default stream)


class _Raw(NamedTuple):
    """An input as the kernels read it: its bit patterns (floats) or codes, flat."""
    flat: Any                  # 1-D numba view: float bits (cuda_kernels.BITS_DTYPE) or integers
    dev: _Device               # family, stream and kind (dev.view: the un-flattened view)
    shape: tuple[int, ...]


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


def _torch_bits_dtype(itemsize: int):
    import torch  # optional: only for torch CUDA tensors
    return {2: torch.int16, 4: torch.int32, 8: torch.int64}[itemsize]


def _device(x, floats: bool) -> _Device:
    """The numba device view of ``x``'s values (a torch CUDA tensor -- float16/bfloat16 widened
    to float32 by torch --, CuPy array, numba device array or any ``__cuda_array_interface__``
    object).  ``floats``: x must be a float array (else integer).  Used by
    :mod:`fpformat.cuda_gemm`; the element and block kernels read bits through :func:`_raw`."""
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
        view = cuda.as_cuda_array(t, sync=False)             # we launch on torch's stream
        return _Device(view, kind, fam, x, _torch_stream(x))
    view, stream = _foreign_view(x, fam, "x", copy_ok=True)
    return _Device(view, np.dtype(view.dtype).name, fam, x, stream)


def _foreign_view(x, fam: str, name: str, copy_ok: bool):
    """(numba view, stream) of a CUDA array that is not a torch tensor: CuPy (made contiguous
    if ``copy_ok``, on CuPy's current stream), numba's own (or simulated) device arrays, any
    ``__cuda_array_interface__`` object; ``ValueError`` unless C-contiguous."""
    cuda = _cuda()
    if fam == "cupy":
        import cupy  # optional: only for CuPy arrays
        a = cupy.ascontiguousarray(x) if copy_ok else x
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
        stream = _external_stream(cupy.cuda.get_current_stream().ptr)
        view = cuda.as_cuda_array(a, sync=False)
    elif getattr(x, "__cuda_ndarray__", False):              # numba's own (or simulated) arrays
        view, stream = x, 0
    elif hasattr(x, "__cuda_array_interface__"):
        view, stream = cuda.as_cuda_array(x), 0
    else:
        raise TypeError(f"{name}: expected a CUDA array (with __cuda_array_interface__), "
                        f"got {type(x).__name__}")
    if not view.is_c_contiguous():
        raise ValueError(f"{name}: CUDA arrays must be C-contiguous (copy it first, e.g. "
                         f"numba.cuda.device_array_like + copy, or cupy.ascontiguousarray)")
    return view, stream


def _raw(x, floats: bool, name: str = "x", copy_ok: bool = True) -> _Raw:
    """``x`` as the kernels read it: float bit patterns (``floats``) or integer codes, as a flat
    numba view, without a widened copy.  ``copy_ok=False`` (``out=`` targets): a torch tensor
    must already be contiguous."""
    cuda = _cuda()
    fam = _family(x)
    if fam == "torch":
        if x.device.type != "cuda":
            raise ValueError(f"{name}: expected a CUDA tensor, got device {x.device}")
        kind = str(x.dtype).replace("torch.", "")
        t = x.detach()
        if not t.is_contiguous():
            if not copy_ok:
                raise ValueError(f"{name} must be contiguous")
            t = t.contiguous()
        shape = tuple(int(s) for s in t.shape)
        if floats:
            if kind not in FLOAT_KINDS:
                raise TypeError(f"{name} must be a float16, bfloat16, float32 or float64 "
                                f"tensor, got {x.dtype}")
            t = t.view(_torch_bits_dtype(t.element_size()))
        view = cuda.as_cuda_array(t.reshape(-1), sync=False)  # we launch on torch's stream
        return _Raw(view, _Device(view, kind, fam, x, _torch_stream(x)), shape)
    view, stream = _foreign_view(x, fam, name, copy_ok)
    dt = np.dtype(view.dtype)
    kind = dt.name
    shape = tuple(int(s) for s in view.shape)
    flat = view.reshape(int(view.size)) if len(shape) != 1 else view
    if floats:
        if kind not in FLOAT_KINDS:
            raise TypeError(f"{name} must be a float16, bfloat16, float32 or float64 array, "
                            f"got dtype {kind}")
        flat = flat.view(BITS_DTYPE[KINDS[kind]])
    elif dt.kind not in "ui":
        raise TypeError(f"codes must be an integer array, got dtype {kind}")
    return _Raw(flat, _Device(view, kind, fam, x, stream), shape)


def _empty(d: _Device, shape: tuple[int, ...], dtype) -> tuple[Any, Any]:
    """A new array of ``d``'s family (on the same device) and its numba device view."""
    cuda = _cuda()
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if d.family == "torch":
        import torch  # optional: only for torch CUDA tensors
        t = torch.empty(shape, dtype=getattr(torch, name), device=d.like.device)
        return t, cuda.as_cuda_array(t, sync=False)
    if d.family == "cupy":
        import cupy  # optional: only for CuPy arrays
        a = cupy.empty(shape, dtype=name)
        return a, cuda.as_cuda_array(a, sync=False)
    dt = _bfloat16() if name == "bfloat16" else name
    a = cuda.device_array(shape, dtype=dt)
    return a, a


def _bfloat16():
    import ml_dtypes  # optional: numba device arrays of bfloat16 carry ml_dtypes' dtype
    return ml_dtypes.bfloat16


def _alloc(d: _Device, shape: tuple[int, ...], name: str) -> tuple[Any, Any]:
    """A result array (``d``'s family, ``shape``, dtype ``name``) and its flat kernel view:
    the bit patterns for a float dtype, the integers otherwise."""
    if d.family == "torch" and name in FLOAT_KINDS:
        import torch  # optional: only for torch CUDA tensors
        t = torch.empty(shape, dtype=getattr(torch, name), device=d.like.device)
        view = t.view(_torch_bits_dtype(t.element_size())).reshape(-1)
        return t, _cuda().as_cuda_array(view, sync=False)
    obj, view = _empty(d, shape, name)
    flat = view.reshape(int(math.prod(shape)))
    if name in FLOAT_KINDS:
        flat = flat.view(BITS_DTYPE[KINDS[name]])
    return obj, flat


def _bits_dtype(d: _Device, IN: int):
    """The dtype of the kernels' view of float bits in ``d``'s family (torch: signed)."""
    dt = np.dtype(BITS_DTYPE[IN])
    return np.dtype(f"int{8 * dt.itemsize}") if d.family == "torch" else dt


def _scratch(d: _Device, n: int, dtype) -> Any:
    """A 1-D scratch array (torch's caching allocator for torch inputs); the view keeps the
    owner alive."""
    return _empty(d, (max(n, 1),), dtype)[1]


def _zeros64(d: _Device, n: int) -> Any:
    a = _scratch(d, n, np.int64)
    blocks, threads = _launch_shape(a.size)
    _launch(cuda_kernels.fill_kernel(), blocks, threads, d.stream, a, np.int64(0))
    return a


def _read(arr, d: _Device) -> np.ndarray:
    """Copy a small device array to the host once the work queued on ``d``'s stream is done."""
    host = arr.copy_to_host(stream=d.stream)
    if d.stream != 0:
        d.stream.synchronize()
    return host


def _on_device(x):
    """The numba context of the device holding ``x`` (torch/CuPy), entered once per call; a
    no-op where that device's context is already current (torch made it so)."""
    fam = _family(x)
    idx = None
    if fam == "torch" and getattr(x, "is_cuda", False):
        import torch  # optional: only for torch CUDA tensors
        idx = x.device.index
        if idx == torch.cuda.current_device():
            return contextlib.nullcontext()
    elif fam == "cupy":
        idx = x.device.id
    return _cuda().gpus[idx] if idx is not None else contextlib.nullcontext()


def _in_device_context(fn: Callable) -> Callable:
    """Run ``fn(fmt, x, ...)`` with the numba context of ``x``'s device current."""
    @functools.wraps(fn)
    def wrapper(fmt, x, *args, **kwargs):
        _cuda()
        with _on_device(getattr(x, "codes", x)):
            return fn(fmt, x, *args, **kwargs)
    return wrapper


def _address(view) -> tuple[int, int]:
    """(start address, bytes) of a numba view (the host buffer under the simulator)."""
    ary = getattr(view, "_ary", None)
    if ary is not None:                                      # simulator: a numpy array inside
        return int(ary.__array_interface__["data"][0]), int(ary.nbytes)
    return int(view.device_ctypes_pointer.value or 0), int(view.nbytes)


def _out_view(out, raw: _Raw, name: str) -> tuple[Any, Any]:
    """``out=``: a CUDA array of ``x``'s dtype and shape, C-contiguous, either ``x`` itself (in
    place: every element is read before it is written) or sharing no memory with it."""
    if not (getattr(out, "__cuda_ndarray__", False) or hasattr(out, "__cuda_array_interface__")
            or _family(out) == "torch" and getattr(out, "is_cuda", False)):
        raise TypeError(f"out must be a CUDA array like x, got {type(out).__name__}")
    o = _raw(out, floats=True, name="out", copy_ok=False)
    if o.dev.kind != raw.dev.kind or o.shape != raw.shape:
        raise ValueError(f"out must have x's dtype and shape ({raw.dev.kind}, {raw.shape}), "
                         f"got ({o.dev.kind}, {o.shape})")
    (a0, an), (b0, bn) = _address(o.flat), _address(raw.flat)
    if an and bn and a0 < b0 + bn and b0 < a0 + an and (a0, an) != (b0, bn):
        raise ValueError("out overlaps x without being x itself: pass out=x to quantize in "
                         "place, or a separate array")
    return out, o.flat


@functools.lru_cache(maxsize=None)
def _dtype_format(cls, kind: str):
    """The IEEE format of a float dtype (``cls`` is the caller's FloatFormat class: this layer
    does not import it), whose encoder narrows results into that dtype."""
    return cls(**ELEMENT_PRESET_FIELDS[kind], name=kind)


def _narrowing(cls, kind: str, S: tuple) -> tuple:
    """The ``NARROW`` constant of :func:`fpformat.cuda_kernels.narrow`: bits of layout ``S`` into
    dtype ``kind`` (nothing to do where ``S`` is that dtype's own layout)."""
    if (kind == "float32" and S == core.SRC_FLOAT32) or (kind == "float64"
                                                        and S == core.SRC_FLOAT64):
        return (0, _NO_TUPLE_F, _NO_TUPLE_C)
    f = _dtype_format(cls, kind)
    return (1, f.params, call_tuple(f, "rne", False, None))


_NO_TUPLE_F = core.as_int64_tuple([0] * core.F_LEN)
_NO_TUPLE_C = core.as_int64_tuple([0] * core.C_LEN)


def _kind_in(raw: _Raw) -> int:
    return KINDS[raw.dev.kind]


# --------------------------------------------------------------------------------- element API
@_in_device_context
def encode(fmt, x, rounding: str = "rne", saturate: bool = False, seed: int | None = None,
           sr_bits: int | None = None):
    """Codes of the CUDA array ``x`` in ``fmt`` (the format's code dtype, ``x``'s shape and kind);
    see :meth:`fpformat.FloatFormat.encode`.  Block formats return a
    :class:`fpformat.scales.BlockEncoding` whose ``codes``/``scales`` are CUDA arrays."""
    if _is_block(fmt):
        return block_encode(fmt, x, rounding, saturate, seed, sr_bits)
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    raw = _raw(x, floats=True)
    key = seed_key(seed, C[core.C_MODE])
    S = _layout(fmt, raw)
    obj, out = _alloc(raw.dev, raw.shape, fmt.dtype.name)
    if raw.flat.size:
        blocks, threads = _launch_shape(raw.flat.size)
        _launch(cuda_kernels.encode_kernel(_kind_in(raw), S, fmt.params, C), blocks, threads,
                raw.dev.stream, raw.flat, out, key)
    return obj


def _layout(fmt, raw: _Raw) -> tuple:
    """The core's source layout for ``fmt`` on this input (float16/bfloat16 read as float32)."""
    kind = raw.dev.kind
    return source_layout(fmt, "float32" if kind in ("float16", "bfloat16") else kind)


@_in_device_context
def quantize(fmt, x, rounding: str = "rne", saturate: bool = False, seed: int | None = None,
             sr_bits: int | None = None, out=None):
    """``decode(encode(x))`` in one pass, with ``x``'s dtype, shape and kind (see
    :meth:`fpformat.FloatFormat.quantize`); block formats go to :func:`block_quantize`.
    ``out``: a CUDA array of x's dtype and shape to write into (``x`` itself: in place)."""
    if _is_block(fmt):
        return block_quantize(fmt, x, rounding, saturate, seed, sr_bits, out)
    C = call_tuple(fmt, rounding, saturate, sr_bits)
    raw = _raw(x, floats=True)
    kind = raw.dev.kind
    if not fmt.fits(kind):
        raise ValueError(f"format {fmt} has values that are not {kind} values; quantize a "
                         f"float64 array instead, or use encode/decode")
    key = seed_key(seed, C[core.C_MODE])
    S = _layout(fmt, raw)
    V = value_tuple(fmt, C, S)
    if out is None:
        obj, oflat = _alloc(raw.dev, raw.shape, kind)
    else:
        obj, oflat = _out_view(out, raw, "out")
    if raw.flat.size:
        kernel = cuda_kernels.quantize_kernel(_kind_in(raw), S, fmt.params, C, V,
                                              _narrowing(type(fmt), kind, S))
        blocks, threads = _launch_shape(raw.flat.size)
        _launch(kernel, blocks, threads, raw.dev.stream, raw.flat, oflat, key)
    return obj


@_in_device_context
def decode(fmt, codes, dtype=np.float64):
    """Values of the CUDA array ``codes`` (unsigned or signed integers) in ``fmt`` as ``dtype``
    (float64 default; float32/float16/bfloat16 when the format's values fit), ``codes``' kind.
    Codes outside ``0 .. 2**bits - 1`` raise ``ValueError`` (checked on the device; the check,
    and its one synchronisation, only where the code dtype can hold such codes)."""
    raw = _raw(codes, floats=False, name="codes")
    name = float_kind(dtype)                                 # any spelling, torch's too
    if name != "float64" and not fmt.fits(name):
        raise ValueError(f"format {fmt} has values that are not {name} values; decode to float64")
    limit = 1 << fmt.bits
    check = _may_exceed(raw, limit)
    obj, out = _alloc(raw.dev, raw.shape, name)
    if raw.flat.size:
        bad = _zeros64(raw.dev, 1) if check else _scratch(raw.dev, 1, np.int64)
        kernel = cuda_kernels.decode_kernel(fmt.params, float(2.0 ** (fmt.emin - fmt.man_bits)),
                                            limit, check,
                                            _narrowing(type(fmt), name, core.SRC_FLOAT64))
        blocks, threads = _launch_shape(raw.flat.size)
        _launch(kernel, blocks, threads, raw.dev.stream, raw.flat, out, bad)
        if check and int(_read(bad, raw.dev)[0]):
            raise ValueError(f"codes must be in 0..{limit - 1} for the {fmt.bits}-bit "
                             f"format {fmt}")
    return obj


def _may_exceed(raw: _Raw, limit: int) -> bool:
    """Whether integers of ``raw``'s dtype can lie outside ``0 .. limit - 1``."""
    dt = np.dtype(raw.flat.dtype)
    return dt.kind == "i" or (1 << (8 * dt.itemsize)) > limit


# --------------------------------------------------------------------------------- blocks
def _is_block(fmt) -> bool:
    return hasattr(fmt, "element") and hasattr(fmt, "scale_rule")


class _Geometry(NamedTuple):
    """Blocks as ``(tr, tc)`` tiles of a ``(batch, R, C)`` view (cuda_kernels' docstring)."""
    batch: int
    R: int
    C: int
    tr: int
    tc: int
    sshape: tuple[int, ...]        # the scales' shape (BlockFormat.layout)
    blocks: int                    # number of scaling blocks
    tile: int                      # elements of a full block (its tile clipped to the array)


def _geometry(fmt, shape: tuple[int, ...]) -> _Geometry:
    sshape, blocks = fmt.layout(shape)               # ValueError: 0-d, bad axis, tiles on 1-d
    nd, n = len(shape), math.prod(shape)
    if fmt.tile is not None:
        batch, R, C = math.prod(shape[:-2]), shape[-2], shape[-1]
        tr, tc = fmt.tile
    elif fmt.block_size == "tensor":
        batch, R, C, tr, tc = 1, 1, n, 1, max(n, 1)
    else:
        ax, k = blocks[0]
        if ax == nd - 1:
            batch, R, C, tr, tc = 1, math.prod(shape[:-1]), shape[-1], 1, k
        else:
            batch, R, C, tr, tc = math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:]), k, 1
    return _Geometry(batch, R, C, tr, tc, tuple(sshape), math.prod(sshape),
                     min(tr, max(R, 1)) * min(tc, max(C, 1)))


def _group_size(tile: int, threads: int) -> int:
    """Threads per scaling block: the block length rounded up to a power of two, at most a CUDA
    block's threads."""
    return min(1 << max(tile - 1, 0).bit_length(), threads)


class _BlockRun(NamedTuple):
    """What :func:`_run_blocks` produced (arrays of the input's family, on its device)."""
    raw: _Raw
    codes: Any                       # element codes, x's shape (encode)
    scales: Any                      # scale codes, or float32 scale bits, sshape (encode)
    tamax: Any                       # the "nvfp4" rule's tensor amax bits (device, 1 element)
    out: Any                         # quantize: the values in the input's dtype and kind


def _run_blocks(fmt, x, rounding, saturate, seed, sr_bits, want_codes: bool, want_out: bool,
                out=None) -> _BlockRun:
    """Run the block kernels on the CUDA array ``x``: codes and scales (``want_codes``) and/or
    values (``want_out``, into ``out`` when given)."""
    raw = _raw(x, floats=True)
    d = raw.dev
    geo = _geometry(fmt, raw.shape)
    B, FE, CE, FS, CS = block_params(fmt, 1, None, rounding, saturate, sr_bits)
    BC = cuda_kernels.block_constants(B)
    key = seed_key(seed, CE[core.C_MODE])
    IN = _kind_in(raw)
    kind = d.kind
    sf = fmt.scale_format
    n = int(raw.flat.size)
    if want_codes:
        codes_obj, codes = _alloc(d, raw.shape, fmt.element.dtype.name)
        scales_obj, scales = _alloc(d, geo.sshape, "uint32" if sf is None else sf.dtype.name)
    else:
        codes_obj = scales_obj = None
        codes, scales = _scratch(d, 1, np.uint8), _scratch(d, 1, np.uint8)
    if want_out:
        obj, oflat = _alloc(d, raw.shape, kind) if out is None else _out_view(out, raw, "out")
    else:
        obj, oflat = None, _scratch(d, 1, _bits_dtype(d, IN))
    nv = fmt.scale_rule == "nvfp4"
    tamax = _zeros64(d, 1) if nv else _scratch(d, 1, np.int64)
    stream = d.stream
    if nv and n:                                             # the tensor amax, on the device
        _amax(raw, (1, 1, n, 1, n), tamax)
    NARROW = _narrowing(type(fmt.element), kind, core.SRC_FLOAT64)
    T = _threads()
    dims = tuple(np.int64(v) for v in (geo.batch, geo.R, geo.C, geo.tr, geo.tc))
    if n and (fmt.block_size == "tensor" or geo.tile > cuda_kernels.WIDE_PER_THREAD * T):
        amax = _zeros64(d, geo.blocks)
        _amax(raw, dims, amax)
        svals = _scratch(d, geo.blocks, np.float64)
        blocks, threads = _launch_shape(geo.blocks)
        _launch(cuda_kernels.scale_kernel(IN, FS, CS, BC, want_codes), blocks, threads, stream,
                amax, tamax, scales, svals)
        blocks, threads = _launch_shape(n)
        _launch(cuda_kernels.element_kernel(IN, IN, FE, CE, BC, NARROW, want_codes, want_out),
                blocks, threads, stream, raw.flat, svals, key, *dims, codes, oflat)
    elif n:
        G = _group_size(geo.tile, T)
        rounds = -(-geo.blocks // (T // G))
        kernel = cuda_kernels.group_kernel(IN, IN, FE, CE, FS, CS, BC, NARROW, want_codes,
                                           want_out, T)
        _launch(kernel, max(1, min(rounds, _grid_cap())), T, stream, raw.flat, tamax, key,
                *dims, np.int64(G), codes, scales, oflat)
    return _BlockRun(raw=raw, codes=codes_obj, scales=scales_obj, tamax=tamax, out=obj)


def _refuse_nonfinite(fmt, raw: _Raw) -> None:
    """``ValueError`` when ``raw`` holds NaN/inf and ``fmt``'s scale format has no NaN to mark
    such a block, as the CPU's encode refuses it (one device reduction and synchronisation)."""
    n = int(raw.flat.size)
    if not n:
        return
    m = _zeros64(raw.dev, 1)
    _amax(raw, (1, 1, n, 1, n), m)
    if cuda_kernels.nonfinite(np.int64(_read(m, raw.dev)[0]), _kind_in(raw) == F64):
        raise ValueError(f"x holds NaN or inf, and the scale format {fmt.scale_format} of {fmt} "
                         f"has no NaN to mark such a block: encode refuses it (quantize gives "
                         f"NaN there)")


def _amax(raw: _Raw, dims: tuple, amax) -> None:
    """Launch the grid-wide amax reduction of ``raw`` in the blocks ``dims`` = ``(batch, R, C,
    tr, tc)`` into the zeroed int64 ``amax`` (one entry per block)."""
    T = _threads()
    chunks = -(-int(raw.flat.size) // (cuda_kernels.CHUNK_PER_THREAD * T))
    _launch(cuda_kernels.amax_kernel(_kind_in(raw), T), max(1, min(chunks, _grid_cap())), T,
            raw.dev.stream, raw.flat, *(np.int64(v) for v in dims), amax)


def _host_tensor_scale(run: _BlockRun) -> float:
    """The tensor scale as a Python float (one synchronisation), by the kernels' own rule."""
    m = int(_read(run.tamax, run.raw.dev)[0])
    return float(cuda_kernels.tensor_scale_of(np.int64(m), run.raw.dev.kind == "float64"))


@_in_device_context
def block_encode(fmt, x, rounding: str = "rne", saturate: bool = True, seed: int | None = None,
                 sr_bits: int | None = None):
    """:meth:`fpformat.BlockFormat.encode` on the GPU: a ``BlockEncoding`` whose ``codes`` and
    ``scales`` are arrays of ``x``'s kind (scales as float32 values when the format has no scale
    format, as on the CPU).  ``tensor_scale`` (``"nvfp4"``) is a Python float: this call waits
    for the GPU to read it."""
    run = _run_blocks(fmt, x, rounding, saturate, seed, sr_bits, want_codes=True, want_out=False)
    if fmt.scale_format is not None and not fmt.scale_format.has_nan:
        _refuse_nonfinite(fmt, run.raw)
    scales = run.scales
    if fmt.scale_format is None:
        scales = _as_float32(run.raw.dev, scales)
    tscale = _host_tensor_scale(run) if fmt.scale_rule == "nvfp4" else None
    return BlockEncoding(codes=run.codes, scales=scales, tensor_scale=tscale, format=fmt,
                         shape=run.raw.shape, dtype=run.raw.dev.kind)


def _as_float32(d: _Device, bits_obj):
    if d.family == "torch":
        import torch  # optional: only for torch CUDA tensors
        return bits_obj.view(torch.float32)
    return bits_obj.view(np.float32)


@_in_device_context
def block_quantize(fmt, x, rounding: str = "rne", saturate: bool = True, seed: int | None = None,
                   sr_bits: int | None = None, out=None):
    """:meth:`fpformat.BlockFormat.quantize` on the GPU: ``x``'s dtype, shape and kind, the
    value ``element x scale`` rounded once to x's dtype, as on the CPU.  Writes values only (no
    codes or scales); ``out``: a CUDA array of x's dtype and shape (``x`` itself: in place)."""
    return _run_blocks(fmt, x, rounding, saturate, seed, sr_bits, want_codes=False,
                       want_out=True, out=out).out


@_in_device_context
def block_decode(fmt, enc: BlockEncoding, dtype=np.float64):
    """:meth:`fpformat.BlockFormat.decode` of an encoding whose arrays are on the GPU (from
    :func:`block_encode`): values as ``dtype`` (float64 default), the codes' kind.  Codes outside
    their formats raise ``ValueError`` (one synchronisation, where the dtypes can hold such)."""
    codes = _raw(enc.codes, floats=False, name="enc.codes")
    if codes.shape != tuple(enc.shape):
        raise ValueError(f"enc.codes has shape {codes.shape}, the encoding says {enc.shape}")
    geo = _geometry(fmt, codes.shape)
    sf, el = fmt.scale_format, fmt.element
    scales = _raw(enc.scales, floats=sf is None, name="enc.scales")
    if scales.shape != geo.sshape:
        raise ValueError(f"enc.scales has shape {scales.shape}, expected {geo.sshape}")
    name = float_kind(dtype)
    d = codes.dev
    B, FE, _, FS, _ = block_params(fmt, 1, None, "rne", True, None)
    BC = cuda_kernels.block_constants(B)
    elimit = 1 << el.bits
    slimit = 1 << (32 if sf is None else sf.bits)
    check = _may_exceed(codes, elimit) or (sf is not None and _may_exceed(scales, slimit))
    obj, out = _alloc(d, codes.shape, name)
    n = int(codes.flat.size)
    if n:
        bad = _zeros64(d, 1) if check else _scratch(d, 1, np.int64)
        ts = float(enc.tensor_scale) if fmt.scale_rule == "nvfp4" else 1.0
        kernel = cuda_kernels.block_decode_kernel(
            FE, float(2.0 ** (el.emin - el.man_bits)), elimit, FS,
            float(2.0 ** (sf.emin - sf.man_bits)) if sf is not None else 1.0, slimit, BC, check,
            _narrowing(type(el), name, core.SRC_FLOAT64))
        blocks, threads = _launch_shape(n)
        dims = tuple(np.int64(v) for v in (geo.batch, geo.R, geo.C, geo.tr, geo.tc))
        _launch(kernel, blocks, threads, d.stream, codes.flat, scales.flat, np.float64(ts),
                *dims, out, bad)
        if check and int(_read(bad, d)[0]):
            raise ValueError(f"codes must be in 0..{elimit - 1} for the {el.bits}-bit element "
                             f"format {el}" + ("" if sf is None else
                                               f" and scales in 0..{slimit - 1} for {sf}"))
    return obj
