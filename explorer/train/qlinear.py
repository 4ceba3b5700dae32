"""Quantized linear layers: each of the six GEMM inputs of ``y = x W^T + b`` optionally quantized.

A linear layer runs three GEMMs per training step, each with two inputs:

=============  ======================  =====================  ==========================
target name    GEMM                    operand                reduction (block) axis
=============  ======================  =====================  ==========================
``fwd_x``      forward  y  = x W^T     activation x           in-features
``fwd_w``      forward                 weight W               in-features
``dgrad_dy``   input grad dx = dy W    output gradient dy     out-features
``dgrad_w``    input grad              weight W               out-features
``wgrad_dy``   weight grad dW = dy^T x output gradient dy     tokens
``wgrad_x``    weight grad             activation x           tokens
=============  ======================  =====================  ==========================

Each target may have its own element format, block size and rounding (stochastic rounding
included).  Blocks always run along the GEMM's reduction axis, as hardware with block-scaled
inputs requires.  The default targets are Sun et al.'s three: ``fwd_w``, ``dgrad_w``,
``wgrad_x``.  Quantization goes through :func:`fpformat.torch.quantize_values` /
:func:`fpformat.torch.quantize` (fake quantization: values rounded into the format, kept in the
tensor's dtype; the GEMM itself then runs in that dtype, i.e. with a wide accumulator).

:func:`quantize_model` swaps the ``nn.Linear`` layers of any torch model for :class:`QuantLinear`
(the classifier stays unquantized unless asked); :func:`dequantize_model` reverses it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from explorer.accumulation import parse_accumulator
from explorer.blocks import parse_block
from fpformat import BlockFormat, FloatFormat, get_format
from fpformat.gemm_torch import emulated_mm, unit_mm
from fpformat.kernels import specialize
from fpformat.rounding import MODES
from fpformat.torch import quantize, quantize_values
from fpformat.units import get_unit


class PerTarget(NamedTuple):
    """One value per GEMM input (an operand quantizer, a seed...), named by target.

    The field order is :data:`TARGETS`; a target's index in it is part of its stochastic-rounding
    seed, so reordering the fields would change every seeded run."""

    fwd_x: Any
    fwd_w: Any
    dgrad_dy: Any
    dgrad_w: Any
    wgrad_dy: Any
    wgrad_x: Any


TARGETS: tuple[str, ...] = PerTarget._fields
DEFAULT_TARGETS = ("fwd_w", "dgrad_w", "wgrad_x")
HEAD_NAMES = ("head", "lm_head", "classifier", "output")


def _check_rounding(rounding: str) -> None:
    # Exact names only (fpformat itself also takes "RNE"): the name is part of the run key.
    if rounding not in MODES:
        raise ValueError(f"rounding must be one of {', '.join(MODES)}, got {rounding!r}")


def parse_targets(targets: object) -> tuple[str, ...]:
    """Normalise targets: a comma-separated string or a sequence of names from :data:`TARGETS`.

    ``"default"`` means :data:`DEFAULT_TARGETS`, ``"all"`` means all six.
    """
    if isinstance(targets, str):
        items = [t.strip() for t in targets.split(",") if t.strip()]
    else:
        items = list(targets)
    out: list[str] = []
    for t in items:
        if t == "default":
            out.extend(DEFAULT_TARGETS)
        elif t == "all":
            out.extend(TARGETS)
        elif t in TARGETS:
            out.append(t)
        else:
            raise ValueError(f"targets: unknown GEMM input {t!r}; choose from "
                             f"{', '.join(TARGETS)}, 'default' or 'all'")
    return tuple(t for t in TARGETS if t in out)   # canonical order, no duplicates


@dataclass(frozen=True)
class OperandSpec:
    """How one GEMM input is quantized.

    fmt: a format name for :func:`fpformat.get_format` (``"e2m3"``, ``"float8_e4m3fn"``,
        ``"mxfp4"``...).  Block presets (``mxfp4``...) carry their own scaling; then ``block``
        must be None.
    block: int block size, ``"channel"`` (one scale per row along the reduction axis),
        ``"tensor"`` (one scale) or None (cast the elements directly, no scale).  Scales follow
        Sun et al.: S = amax / max_elem, kept in float32.
    rounding: a rounding-mode name of :data:`fpformat.rounding.MODES` (``"rne"``, ``"sr"``...).
    """

    fmt: str
    block: int | str | None = "channel"
    rounding: str = "rne"

    def __post_init__(self) -> None:
        if not isinstance(self.fmt, str) or not self.fmt:
            raise TypeError(f"fmt must be a non-empty format name, got {self.fmt!r}")
        object.__setattr__(self, "block", parse_block(self.block))
        _check_rounding(self.rounding)

    def label(self) -> str:
        """A short string, e.g. ``"e2m3@32"``, ``"e4m3@channel"``, ``"mxfp4"``."""
        return self.fmt if self.block is None else f"{self.fmt}@{self.block}"

    def build(self):
        """The fpformat object (FloatFormat or BlockFormat) quantizing along the last axis."""
        f = get_format(self.fmt)
        if self.block is None:
            return f
        if getattr(f, "element", None) is not None:
            raise ValueError(f"format {self.fmt!r} is already a block format; use block 'none'")
        return BlockFormat(element=f, block_size=self.block, axis=-1, scale_format=None,
                           scale_rule="amax")


@dataclass(frozen=True)
class QuantConfig:
    """Which GEMM inputs are quantized and how.

    fmt/block/rounding: the spec shared by every target in ``targets`` (fmt None: nothing).
    targets: GEMM inputs quantized with that spec (default: Sun et al.'s three); with a ``fmt``
        it must name at least one (``ValueError`` otherwise: the run would claim a format it
        never used).
    overrides: ``((target, OperandSpec), ...)``: a target-specific spec; it applies even if the
        target is not in ``targets``.
    seed: base seed for stochastic rounding (combined with layer, target and step), >= 0.
    include_head: also quantize the classifier (``head``/``lm_head``/... Linear layers).
    attention: a spec for q, k and v before the attention products (forward only, gradient
        straight-through); None leaves the attention products unquantized.
    accumulator: None (torch's own GEMMs) or an accumulator spec for
        :func:`explorer.accumulation.parse_accumulator` (``"e8m13/rtz"``,
        ``"e8m13/rtz/chunk128"``, ``"bfloat16/pairwise"``...): all three GEMMs of every quantized
        layer then run through :func:`fpformat.gemm_torch.emulated_mm`, each addition rounded into
        that accumulator.
        A slow, exact path for small models: it measures what accumulator precision does to
        training.
    matrix_unit: None or a matrix unit (:func:`fpformat.units.get_unit`: a preset name like
        ``"h100"`` or a spec like ``"fma16/x2/rtz"``): all three GEMMs of every quantized layer
        then run through :func:`fpformat.gemm_torch.unit_mm` (:func:`fpformat.gemm.mma` with
        float32 output), their inputs rounded into ``matrix_unit_format`` after the run's own
        quantization.  Mutually exclusive with ``accumulator``.
    matrix_unit_format: the unit's input format (default ``"float16"``); used only with
        ``matrix_unit``.
    """

    fmt: str | None = None
    block: int | str | None = "channel"
    rounding: str = "rne"
    targets: tuple[str, ...] = DEFAULT_TARGETS
    overrides: tuple[tuple[str, OperandSpec], ...] = ()
    seed: int = 0
    include_head: bool = False
    attention: OperandSpec | None = None
    accumulator: str | None = None
    matrix_unit: str | None = None
    matrix_unit_format: str = "float16"

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", parse_targets(self.targets))
        if self.accumulator is not None:
            parse_accumulator(self.accumulator)          # ValueError naming the bad part
        if self.matrix_unit is not None:
            if self.accumulator is not None:
                raise ValueError(f"accumulator ({self.accumulator!r}) and matrix_unit "
                                 f"({self.matrix_unit!r}) are mutually exclusive: a matrix unit "
                                 "does its own accumulation; give one of them")
            unit, fmt = _check_matrix_unit(self.matrix_unit, self.matrix_unit_format)
            object.__setattr__(self, "matrix_unit", unit)
            object.__setattr__(self, "matrix_unit_format", fmt)
        object.__setattr__(self, "block", parse_block(self.block))
        if self.fmt is not None and (not isinstance(self.fmt, str) or self.fmt.lower() == "none"):
            if isinstance(self.fmt, str):
                object.__setattr__(self, "fmt", None)
            else:
                raise TypeError(f"fmt must be a format name or None, got {self.fmt!r}")
        _check_rounding(self.rounding)
        if self.fmt is not None and not self.targets:
            # The shared format applies to ``targets`` only: with none it would be recorded in
            # the run (its key, its exp_bits/man_bits) while nothing is quantized by it.
            raise ValueError(f"targets: empty, so format {self.fmt!r} would quantize nothing; "
                             f"give GEMM inputs from {', '.join(TARGETS)}, 'default' or 'all' "
                             "(or format 'none' for an unquantized run)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: must be an integer >= 0, got {self.seed!r}")
        for t, spec in self.overrides:
            if t not in TARGETS:
                raise ValueError(f"overrides: unknown GEMM input {t!r}")
            if not isinstance(spec, OperandSpec):
                raise TypeError(f"overrides[{t!r}] must be an OperandSpec, "
                                f"got {type(spec).__name__}")

    def spec(self, target: str) -> OperandSpec | None:
        """The spec for one GEMM input, or None if it stays unquantized."""
        for t, s in self.overrides:
            if t == target:
                return s
        if self.fmt is None or target not in self.targets:
            return None
        return OperandSpec(self.fmt, self.block, self.rounding)

    @property
    def active(self) -> bool:
        """True when at least one GEMM input (or the attention inputs) is quantized, or the
        GEMMs run through an emulated accumulator."""
        return (any(self.spec(t) is not None for t in TARGETS) or self.attention is not None
                or self.accumulator is not None or self.matrix_unit is not None)

    def to_dict(self) -> dict:
        """A JSON-able description (used in run configs and their hash)."""
        return {"fmt": self.fmt, "block": self.block, "rounding": self.rounding,
                "targets": list(self.targets),
                "overrides": [[t, s.fmt, s.block, s.rounding] for t, s in self.overrides],
                "seed": self.seed, "include_head": self.include_head,
                "attention": None if self.attention is None else
                [self.attention.fmt, self.attention.block, self.attention.rounding],
                # only when set, so configs (and run keys) without it are unchanged
                **({"accumulator": self.accumulator} if self.accumulator else {}),
                **({"matrix_unit": self.matrix_unit,
                    "matrix_unit_format": self.matrix_unit_format} if self.matrix_unit else {})}

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        """Inverse of :meth:`to_dict`."""
        att = d.get("attention")
        overrides = tuple((t, OperandSpec(f, b, r)) for t, f, b, r in d.get("overrides", []))
        return cls(fmt=d.get("fmt"), block=d.get("block", "channel"),
                   rounding=d.get("rounding", "rne"),
                   targets=tuple(d.get("targets", DEFAULT_TARGETS)), overrides=overrides,
                   seed=int(d.get("seed", 0)), include_head=bool(d.get("include_head", False)),
                   attention=None if att is None else OperandSpec(*att),
                   accumulator=d.get("accumulator"), matrix_unit=d.get("matrix_unit"),
                   matrix_unit_format=d.get("matrix_unit_format", "float16"))


def _check_matrix_unit(unit: object, in_format: object) -> tuple[str, str]:
    """The matrix unit and its input format, normalised (lower case: ``H100`` and ``h100`` are
    one run); ``ValueError`` naming ``matrix_unit`` or ``matrix_unit_format`` when the unit is
    unknown, has no preset for the format, or cannot take it."""
    if not isinstance(unit, str) or not unit.strip():
        raise ValueError(f"matrix_unit must be a unit preset name or spec, got {unit!r}")
    if not isinstance(in_format, str) or not in_format.strip():
        raise ValueError(f"matrix_unit_format must be a format name, got {in_format!r}")
    unit, in_format = unit.strip().lower(), in_format.strip()
    try:
        fi = get_format(in_format)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"matrix_unit_format {in_format!r}: {e}") from None
    if not isinstance(fi, FloatFormat):
        raise ValueError(f"matrix_unit_format must be an element format, got {in_format!r}")
    try:
        u = get_unit(unit, fi, "float32")
        u.tuples(fi, get_format("float32"))             # the unit can take these inputs
    except (TypeError, ValueError) as e:
        raise ValueError(f"matrix_unit {unit!r} with matrix_unit_format {in_format!r}: {e}"
                         ) from None
    return unit, in_format


class _UnitGemm:
    """A GEMM through a matrix unit (float32 output): ``a @ b`` by
    :func:`fpformat.gemm_torch.unit_mm`."""

    def __init__(self, unit: str, in_format: str):
        self.in_format = get_format(in_format)
        self.unit = get_unit(unit, self.in_format, "float32")

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return unit_mm(a, b, self.unit, self.in_format, "float32")


def _seed(base: int, layer: int, target: int, step: int) -> int:
    h = hashlib.blake2b(f"{base}/{layer}/{target}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def _seeds(base: int, layer: int, step: int) -> PerTarget:
    """The stochastic-rounding seed of every GEMM input of one layer at one optimizer step."""
    return PerTarget(*(_seed(base, layer, i, step) for i in range(len(TARGETS))))


class _Operand:
    """A resolved OperandSpec: the fpformat object plus rounding; quantizes along an axis."""

    def __init__(self, spec: OperandSpec):
        self.spec = spec
        self.fmt = spec.build()
        self.blocked = spec.block is not None or getattr(self.fmt, "element", None) is not None
        # Same values whichever axis the blocks run along: reusable across GEMMs.
        self.axis_free = not self.blocked or spec.block == "tensor"

    def __call__(self, t: torch.Tensor, axis: int, seed: int | None) -> torch.Tensor:
        """Quantize 2-D ``t`` with blocks along ``axis`` (0 or 1); no autograd."""
        seed = seed if self.spec.rounding == "sr" else None
        if axis == 1 or not self.blocked:
            return quantize_values(t.contiguous(), self.fmt, rounding=self.spec.rounding,
                                   saturate=True, seed=seed)
        q = quantize_values(t.t().contiguous(), self.fmt, rounding=self.spec.rounding,
                            saturate=True, seed=seed)
        return q.t()


def _mm(a: torch.Tensor, b: torch.Tensor, acc) -> torch.Tensor:
    """``a @ b``, through the emulated accumulator or the matrix unit when one is configured."""
    if acc is None:
        return a @ b
    if isinstance(acc, _UnitGemm):
        return acc(a.contiguous(), b.contiguous())
    return emulated_mm(a.contiguous(), b.contiguous(), acc)


def _reusable(op: _Operand) -> bool:
    """Whether the forward GEMM's quantized copy can serve a backward GEMM with the same spec:
    only when blocks do not depend on the axis and rounding is deterministic."""
    return op.axis_free and op.spec.rounding != "sr"


class _QGemm(torch.autograd.Function):
    """y = q(x) q(W)^T + b with quantized inputs in both backward GEMMs."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, weight: torch.Tensor, bias, layer: QuantLinear):
        ops = layer._ops
        cdtype = x2.dtype
        if torch.is_autocast_enabled(x2.device.type):
            cdtype = torch.get_autocast_dtype(x2.device.type)
        seeds = _seeds(layer.qcfg.seed, layer.layer_id, layer.step)
        qx = ops.fwd_x(x2, 1, seeds.fwd_x) if ops.fwd_x is not None else x2
        qw = ops.fwd_w(weight, 1, seeds.fwd_w) if ops.fwd_w is not None else weight
        with torch.autocast(x2.device.type, enabled=False):
            y = _mm(qx.to(cdtype), qw.to(cdtype).t(), layer._acc)
            if bias is not None:
                y = y + bias.to(cdtype)
        # Operands of the backward GEMMs, quantized now where the spec allows reuse.
        if ops.wgrad_x is None:
            xw = x2
        elif ops.fwd_x is ops.wgrad_x and _reusable(ops.wgrad_x):
            xw = qx
        else:
            xw = ops.wgrad_x(x2, 0, seeds.wgrad_x)
        if ops.dgrad_w is None:
            wd = weight
        elif ops.fwd_w is ops.dgrad_w and _reusable(ops.dgrad_w):
            wd = qw
        else:
            wd = ops.dgrad_w(weight, 0, seeds.dgrad_w)
        ctx.save_for_backward(xw, wd)
        ctx.has_bias = bias is not None
        ctx.cdtype = cdtype
        ctx.dgrad_dy = (ops.dgrad_dy, seeds.dgrad_dy)
        ctx.wgrad_dy = (ops.wgrad_dy, seeds.wgrad_dy)
        ctx.wdtype = weight.dtype
        ctx.acc = layer._acc
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        xw, wd = ctx.saved_tensors
        (op_dd, seed_dd), (op_wd, seed_wd) = ctx.dgrad_dy, ctx.wgrad_dy
        cd = ctx.cdtype
        gy = gy.contiguous()
        with torch.autocast(gy.device.type, enabled=False):
            gx = gw = gb = None
            if ctx.needs_input_grad[0]:
                g = op_dd(gy, 1, seed_dd) if op_dd is not None else gy
                gx = _mm(g.to(cd), wd.to(cd), ctx.acc)
            if ctx.needs_input_grad[1]:
                g = op_wd(gy, 0, seed_wd) if op_wd is not None else gy
                gw = _mm(g.to(cd).t(), xw.to(cd), ctx.acc).to(ctx.wdtype)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                gb = gy.sum(0).to(ctx.wdtype)
        return gx, gw, gb, None


class QuantLinear(nn.Linear):
    """An ``nn.Linear`` whose GEMM inputs are quantized per a :class:`QuantConfig`.

    ``step`` (set by the trainer each optimizer step) and ``layer_id`` feed the stochastic-rounding
    seeds, so a run is reproducible and resumes bit-identically.  With no spec active the layer
    computes exactly what ``nn.Linear`` computes (same values and gradients).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 qcfg: QuantConfig | None = None, layer_id: int = 0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.layer_id = layer_id
        self.step = 0
        self.set_config(qcfg or QuantConfig())

    def set_config(self, qcfg: QuantConfig) -> None:
        """Replace the quantization config (builds the fpformat objects once)."""
        if not isinstance(qcfg, QuantConfig):
            raise TypeError(f"qcfg must be a QuantConfig, got {type(qcfg).__name__}")
        self.qcfg = qcfg
        self._acc = None                 # the GEMM: None (torch), an Accumulator or a unit
        if qcfg.accumulator is not None:
            self._acc = parse_accumulator(qcfg.accumulator)
        elif qcfg.matrix_unit is not None:
            self._acc = _UnitGemm(qcfg.matrix_unit, qcfg.matrix_unit_format)
        cache: dict[OperandSpec, _Operand] = {}
        ops = []
        for t in TARGETS:
            s = qcfg.spec(t)
            if s is not None and s not in cache:
                cache[s] = _Operand(s)
            ops.append(None if s is None else cache[s])
        self._ops = PerTarget(*ops)

    @classmethod
    def from_linear(cls, lin: nn.Linear, qcfg: QuantConfig, layer_id: int = 0) -> QuantLinear:
        """A QuantLinear sharing ``lin``'s parameters (no copy)."""
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.in_features, q.out_features = lin.in_features, lin.out_features
        q.weight = lin.weight
        q.bias = lin.bias
        q.layer_id = layer_id
        q.step = 0
        q.set_config(qcfg)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not any(op is not None for op in self._ops) and self._acc is None:
            return super().forward(x)
        shape = x.shape
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            y = self._forward_only(x.reshape(-1, shape[-1]))
            return y.reshape(*shape[:-1], self.out_features)
        y = _QGemm.apply(x.reshape(-1, shape[-1]), self.weight, self.bias, self)
        return y.reshape(*shape[:-1], self.out_features)

    def _forward_only(self, x2: torch.Tensor) -> torch.Tensor:
        """The forward GEMM alone (evaluation): same values as the training forward."""
        ops = self._ops
        seeds = _seeds(self.qcfg.seed, self.layer_id, self.step)
        qx = ops.fwd_x(x2, 1, seeds.fwd_x) if ops.fwd_x is not None else x2
        qw = ops.fwd_w(self.weight, 1, seeds.fwd_w) if ops.fwd_w is not None else self.weight
        if self._acc is None:
            return torch.nn.functional.linear(qx, qw.to(qx.dtype), self.bias)
        y = _mm(qx, qw.to(qx.dtype).t(), self._acc)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        specs = [f"{t}={op.spec.label()}/{op.spec.rounding}"
                 for t, op in self._ops._asdict().items() if op is not None]
        return super().extra_repr() + (", " + ", ".join(specs) if specs else ", unquantized")


class _QKV:
    """Forward quantization of attention inputs with a straight-through gradient."""

    def __init__(self, spec: OperandSpec, seed: int):
        self.spec, self.fmt, self.seed = spec, spec.build(), seed

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return quantize(t, self.fmt, rounding=self.spec.rounding, saturate=True,
                        seed=self.seed if self.spec.rounding == "sr" else None)


def quantize_model(model: nn.Module, qcfg: QuantConfig) -> nn.Module:
    """Swap every ``nn.Linear`` of ``model`` (in place) for a :class:`QuantLinear` sharing its
    parameters; layers named like a classifier (:data:`HEAD_NAMES`) are skipped unless
    ``qcfg.include_head``.  Modules with a ``qk_quant`` attribute (our attention) get the
    ``qcfg.attention`` spec.  Returns ``model``.  Calling it again re-configures the layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(qcfg, QuantConfig):
        raise TypeError(f"qcfg must be a QuantConfig, got {type(qcfg).__name__}")
    counter = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if name in HEAD_NAMES and not qcfg.include_head:
                if isinstance(child, QuantLinear):
                    setattr(parent, name, _plain(child))
                continue
            if isinstance(child, QuantLinear):
                child.set_config(qcfg)
                child.layer_id = counter
            else:
                setattr(parent, name, QuantLinear.from_linear(child, qcfg, layer_id=counter))
            counter += 1
        if hasattr(parent, "qk_quant"):
            parent.qk_quant = None if qcfg.attention is None else _QKV(qcfg.attention, qcfg.seed)
    return model


def _plain(q: QuantLinear) -> nn.Linear:
    lin = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(lin)
    lin.in_features, lin.out_features = q.in_features, q.out_features
    lin.weight, lin.bias = q.weight, q.bias
    return lin


def dequantize_model(model: nn.Module) -> nn.Module:
    """Reverse :func:`quantize_model`: QuantLinear -> nn.Linear (same parameters), attention
    quantization off.  Returns ``model``."""
    for _, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantLinear):
                setattr(parent, name, _plain(child))
        if hasattr(parent, "qk_quant"):
            parent.qk_quant = None
    return model


def specialize_kernels(model: nn.Module) -> int:
    """Compile now the specialised fpformat kernels (format and mode as compile-time constants,
    ~3x faster per element than the generic ones) for every element-format operand of the
    model's QuantLinear layers, instead of after the first 64M elements of each.  For long runs
    (the trainer calls it for runs of 200 steps or more): about a second of compilation per new
    (format, mode) pair, cached on disk.  Block-scaled operands keep their own policy.
    Returns how many (format, rounding) pairs were specialised."""
    pairs = set()
    for m in model.modules():
        if isinstance(m, QuantLinear):
            for op in m._ops:
                if op is not None and isinstance(op.fmt, FloatFormat):
                    pairs.add((op.fmt, op.spec.rounding))
    for fmt, rounding in pairs:
        specialize(fmt, rounding, saturate=True)
    return len(pairs)


def set_quant_step(model: nn.Module, step: int) -> None:
    """Tell every QuantLinear the optimizer step (feeds the stochastic-rounding seeds)."""
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.step = step
