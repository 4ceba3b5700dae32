"""Quantizers prepared for many calls: ``fmt.quantize`` with the format and its options fixed.

    q = Quantizer(get_format("nvfp4"), rounding="sr", saturate=True)
    y = q(x, seed=7)              # == get_format("nvfp4").quantize(x, "sr", True, seed=7)

A training step quantizes dozens of tensors of a few shapes.  Through ``fmt.quantize`` each call
checks its input again, plans the kernel again and converts the block scales it then drops:
some 20 microseconds of Python a call on a quiet machine and several times that inside a
training step, whose other work has pushed the interpreter out of the caches.  A
:class:`Quantizer` does that work once per input shape and keeps, per call, the random stream's
key, the output's allocation and the kernel launch: the same kernels with the same arguments,
so the same bits (tests hold the two together with no tolerance).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import block_core, block_kernels, core, kernels
from .block import BlockFormat
from .dispatch import seed_key, source_layout, threads_for
from .format import FloatFormat
from .presets import get_format
from .rounding import call_tuple, value_tuple

#: A prepared call: ``run(x, seed) -> quantized x`` for one input shape.
Run = Callable[[np.ndarray, object], np.ndarray]


class Quantizer:
    """``fmt.quantize(x, rounding, saturate, seed=seed, sr_bits=sr_bits)`` as ``q(x, seed)``.

    Float32 C-contiguous 2-D numpy arrays that a fused CPU kernel serves (element formats;
    block formats along the rows, down the columns and in 2-D tiles) take the prepared path;
    every other input (other dtypes, shapes, devices, integer formats) goes through
    ``fmt.quantize`` as it is.  ``ValueError`` for options ``fmt.quantize`` refuses, at
    construction.  Threads may share one: two preparing a new shape at once both prepare it,
    and either's run serves."""

    def __init__(self, fmt, rounding: str = "rne", saturate: bool = False,
                 sr_bits: int | None = None):
        self.fmt = get_format(fmt)
        self.rounding, self.saturate, self.sr_bits = rounding, saturate, sr_bits
        element = self.fmt.element if isinstance(self.fmt, BlockFormat) else self.fmt
        if isinstance(element, FloatFormat):
            call_tuple(element, rounding, saturate, sr_bits)      # refuses bad options now
        #: per input shape: its prepared run, or None where ``fmt.quantize`` serves it
        self._runs: dict[tuple[int, ...], Run | None] = {}

    def __repr__(self) -> str:
        return (f"Quantizer({self.fmt}, rounding={self.rounding!r}, saturate={self.saturate}, "
                f"sr_bits={self.sr_bits})")

    def __call__(self, x, seed: int | None = None):
        """``x`` quantized (a new array; ``x``'s type, dtype and shape); ``seed`` as in
        ``fmt.quantize`` (stochastic rounding only)."""
        if type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 \
                and x.flags.c_contiguous:
            try:
                run = self._runs[x.shape]
            except KeyError:
                run = self._runs[x.shape] = self._prepare(x.shape)
            if run is not None:
                return run(x, seed)
        return self.fmt.quantize(x, self.rounding, self.saturate, seed, self.sr_bits)

    def _prepare(self, shape: tuple[int, int]) -> Run | None:
        if shape[0] * shape[1] == 0:
            return None
        if isinstance(self.fmt, FloatFormat):
            return self._element_run()
        if isinstance(self.fmt, BlockFormat):
            return self._block_run(shape)
        return None

    def _element_run(self) -> Run | None:
        """The element kernel (:func:`fpformat.kernels.quantize`) on float32 bits."""
        fmt = self.fmt
        S = source_layout(fmt, np.float32)
        if S != core.SRC_FLOAT32 or not fmt.fits("float32"):
            return None
        F, C = fmt.params, call_tuple(fmt, self.rounding, self.saturate, self.sr_bits)
        V, mode = value_tuple(fmt, C, S), C[core.C_MODE]

        def run(x, seed):
            out = np.empty(x.shape, dtype=np.float32)
            kernels.run_quantize(S, F, C, V, x.reshape(-1).view(np.uint32),
                                 out.reshape(-1).view(np.uint32), seed_key(seed, mode))
            return out
        return run

    def _block_run(self, shape: tuple[int, int]) -> Run | None:
        """The fused block kernel of ``fmt.quantize`` (:meth:`BlockFormat._fused`) for
        ``shape``: the float32 MX kernel where it applies, else the general one."""
        fmt, rounding, saturate, sr_bits = self.fmt, self.rounding, self.saturate, self.sr_bits
        g = fmt.fused_geometry(shape)
        if g is None:
            return None
        if block_core.ocp_f32_applies(fmt, np.float32):
            tuples = block_core.kernel_tuples(fmt, rounding, saturate, sr_bits)
            L, k = g.shape[1], g.tile_rows if g.down_columns else g.k
            rows, cols = block_core.scale_shape(g.shape, k, g.down_columns)
            mode = tuples[1][core.C_MODE]
            codes = np.empty(1, dtype=fmt.element.dtype)     # a stand-in, never written

            def run(x, seed):
                out = np.empty(x.shape, dtype=np.float32)
                block_core.launch_ocp_f32(fmt, tuples, x.reshape(-1), L, k, seed_key(seed, mode),
                                          codes, np.empty(rows * cols, dtype=np.uint8),
                                          out.reshape(-1), False, True, g.down_columns)
                return out
            return run
        plan = block_kernels.kernel_plan(fmt, rounding, saturate, sr_bits)
        L, k, (grid_rows, grid_cols) = block_kernels.blocks_geometry(g.shape, g.k, g.tile_rows)
        nscales = grid_rows * grid_cols
        mode, nvfp4 = plan.CE[core.C_MODE], fmt.scale_rule == "nvfp4"
        codes = block_kernels.STAND_IN_CODES

        def run(x, seed):
            x1 = x.reshape(-1)
            xb = x1.view(np.uint32)
            out = np.empty(x.shape, dtype=np.float32)
            key = seed_key(seed, mode)
            with threads_for(x1.size) as threads:
                if not nvfp4:
                    tscale = None
                elif threads == 1:               # found by the kernel, in its one launch
                    tscale = block_kernels.FIND_TENSOR_SCALE
                else:
                    tscale = block_kernels.tensor_scale_bits(xb, threads)
                block_kernels.launch_blocks(plan, x1, xb, L, g.tile_rows, k, tscale, key, codes,
                                            np.empty(nscales, dtype=np.uint64),
                                            out.reshape(-1), True, threads)
            return out
        return run
