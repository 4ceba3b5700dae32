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
inputs requires; so the backward pass quantizes ``x`` and ``dy`` again, along the tokens, unless
a spec's ``copy`` says to requantize or reuse another GEMM's copy.  A target may instead use
delayed per-tensor scaling (:class:`DelayedScaling`), and a GEMM's two inputs may be rotated by
a random Hadamard transform first (:mod:`explorer.train.hadamard`).  Layers reading one
activation (q, k, v) share its rotated and quantized copies where these are the same for every
layer (:class:`_SharedInputs`).  The default targets are
Sun et al.'s three: ``fwd_w``, ``dgrad_w``, ``wgrad_x``; the field's recipes
(:mod:`explorer.train.recipes`) set all six.  Quantization goes through
:func:`fpformat.torch.quantize_values` / :func:`fpformat.torch.quantize` (fake quantization:
values rounded into the format, kept in the tensor's dtype; the GEMM itself then runs in that
dtype, i.e. with a wide accumulator).

:func:`quantize_model` swaps every GEMM module of a torch model for a quantized one sharing its
parameters: ``nn.Linear`` -> :class:`QuantLinear`, ``transformers``' ``Conv1D`` (GPT-2 family,
weight stored ``(in, out)``) and any type taught by :func:`register_gemm` -> :class:`QuantGemm`
(the classifier stays unquantized unless asked); it reports what it quantized and refuses a
model with nothing to quantize.  :func:`dequantize_model` reverses it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from dataclasses import dataclass, replace
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from explorer.accumulation import parse_accumulator
from explorer.blocks import parse_block
from explorer.train.hadamard import Rotation, check_hadamard_block, rotate, rotation
from fpformat import BlockFormat, FloatFormat, get_format
from fpformat.gemm_torch import emulated_mm, unit_mm
from fpformat.kernels import quantize_scaled_applies, specialize
from fpformat.prepared import Quantizer
from fpformat.rounding import MODES
from fpformat.torch import quantize, quantize_scaled_values, quantize_values, to_numpy
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


#: The GEMMs of a linear layer, by the name of their inputs' prefix.
GEMMS = ("fwd", "dgrad", "wgrad")
#: A backward GEMM input and the input of the other GEMM it may be copied from (``copy``).
COPY_SOURCES = {"wgrad_x": "fwd_x", "dgrad_w": "fwd_w", "wgrad_dy": "dgrad_dy"}
#: ``OperandSpec.copy``: own (quantized from the high-precision tensor along this GEMM's
#: reduction axis), requantize (the source's quantized copy quantized again along this axis),
#: reuse (the source's quantized copy as it is, its blocks along the source GEMM's axis).
COPIES = ("own", "requantize", "reuse")
AMAX_REDUCTIONS = ("max", "most_recent")
#: When a Hadamard transform's signs are drawn: once per run, or every optimizer step.
SIGN_DRAWS = ("fixed", "step")
#: Longest amax history (steps) of delayed scaling.
MAX_AMAX_HISTORY = 1 << 20


def gemm_of(target: str) -> str:
    """The GEMM a target is an input of: ``"wgrad_dy"`` -> ``"wgrad"``."""
    return target.split("_", 1)[0]


@dataclass(frozen=True)
class DelayedScaling:
    """Per-tensor scaling from the amax of earlier steps (Transformer Engine's ``DelayedScaling``).

    The element values are ``round_sat(x * s) * fl32(1 / s)`` with a float32 scale ``s``, the
    multiplication in float32.  At optimizer step ``t`` ``s`` comes from the amaxes (largest
    magnitudes) of this GEMM input at steps ``t - history .. t - 1``: ``s = fl32(fl32(max_elem /
    a) / 2**margin)`` with ``a`` their maximum (``reduce="max"``) or the latest one
    (``"most_recent"``); ``s`` starts at 1 and keeps its value while ``a`` is 0 or not finite,
    and an infinite ``s`` becomes float32's largest finite value.  Only training steps record an
    amax (evaluation uses the current scale); the state travels in checkpoints
    (:func:`quant_state`).
    """

    #: Steps of amax kept (Transformer Engine's ``amax_history_len``; its default is 1024).
    history: int = 1024
    #: ``"max"`` over the history or ``"most_recent"`` (``amax_compute_algo``).
    reduce: str = "max"
    #: The scale is divided by ``2**margin`` (headroom against growth between steps).
    margin: int = 0

    def __post_init__(self) -> None:
        h = self.history
        if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_AMAX_HISTORY:
            raise ValueError(f"amax_history: must be an int in 1..{MAX_AMAX_HISTORY} (steps), "
                             f"got {h!r}")
        if self.reduce not in AMAX_REDUCTIONS:
            raise ValueError(f"amax_reduce: must be one of {', '.join(AMAX_REDUCTIONS)}, "
                             f"got {self.reduce!r}")
        m = self.margin
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= 64:
            raise ValueError(f"margin: must be an int in 0..64 (powers of two), got {m!r}")


@dataclass(frozen=True)
class OperandSpec:
    """How one GEMM input is quantized.

    fmt: a format name for :func:`fpformat.get_format` (``"e2m3"``, ``"float8_e4m3fn"``,
        ``"mxfp4"``, ``"float8_e4m3fn/1x128"``...).  Block formats carry their own scaling
        (along the GEMM's reduction axis; 2-D tiles ``RxC`` with ``C`` along it); then ``block``
        must be None.
    block: int block size, ``"channel"`` (one scale per row along the reduction axis),
        ``"tensor"`` (one scale) or None (cast the elements directly, no scale).  Scales follow
        Sun et al.: S = amax / max_elem, kept in float32.
    rounding: a rounding-mode name of :data:`fpformat.rounding.MODES` (``"rne"``, ``"sr"``...).
    delayed: None (the scale comes from the tensor itself) or a :class:`DelayedScaling`: one
        float32 scale per tensor from an amax history; ``fmt`` must be an element format and
        ``block`` ``"tensor"``.
    copy: for the backward inputs ``wgrad_x``, ``dgrad_w`` and ``wgrad_dy`` (see
        :data:`COPY_SOURCES`): ``"own"`` (quantized from the high-precision tensor along this
        GEMM's reduction axis: the transposed operand gets its own blocks), ``"requantize"``
        (the source input's quantized copy, quantized again along this axis: DeepSeek-V3's
        1x128 -> 128x1 activations) or ``"reuse"`` (the source's quantized copy as it is; this
        spec must then equal the source's).
    """

    fmt: str
    block: int | str | None = "channel"
    rounding: str = "rne"
    delayed: DelayedScaling | None = None
    copy: str = "own"

    def __post_init__(self) -> None:
        if not isinstance(self.fmt, str) or not self.fmt:
            raise TypeError(f"fmt must be a non-empty format name, got {self.fmt!r}")
        object.__setattr__(self, "block", parse_block(self.block))
        _check_rounding(self.rounding)
        if self.copy not in COPIES:
            raise ValueError(f"copy: must be one of {', '.join(COPIES)}, got {self.copy!r}")
        if self.delayed is not None:
            if not isinstance(self.delayed, DelayedScaling):
                raise TypeError(f"delayed must be a DelayedScaling or None, "
                                f"got {type(self.delayed).__name__}")
            if self.block != "tensor":
                raise ValueError(f"delayed scaling keeps one scale per tensor: block must be "
                                 f"'tensor', got {self.block!r}")

    def label(self) -> str:
        """A short string, e.g. ``"e2m3@32"``, ``"e4m3@channel"``, ``"mxfp4"``,
        ``"float8_e4m3fn@tensor/delayed1024"``."""
        s = self.fmt if self.block is None else f"{self.fmt}@{self.block}"
        if self.delayed is not None:
            s += f"/delayed{self.delayed.history}"
        return s if self.copy == "own" else f"{s}/{self.copy}"

    def build(self):
        """The fpformat object (FloatFormat or BlockFormat) quantizing along the last axis
        (with ``delayed``: the element format the scaled values are rounded into)."""
        f = get_format(self.fmt)
        if self.block is None:
            return f
        if getattr(f, "element", None) is not None:
            raise ValueError(f"format {self.fmt!r} is already a block format; use block 'none'")
        if self.delayed is not None:
            if not isinstance(f, FloatFormat):
                raise ValueError(f"delayed scaling needs an element format, got {self.fmt!r}")
            return f
        return BlockFormat(element=f, block_size=self.block, axis=-1, scale_format=None,
                           scale_rule="amax")

    def to_list(self) -> list:
        """``[fmt, block, rounding]``, plus a dict of the fields set away from their defaults
        (so configs written before they existed keep their form and run keys)."""
        extra = {}
        if self.delayed is not None:
            d = self.delayed
            extra["delayed"] = [d.history, d.reduce, d.margin]
        if self.copy != "own":
            extra["copy"] = self.copy
        return [self.fmt, self.block, self.rounding, *([extra] if extra else [])]

    @classmethod
    def from_list(cls, items: list) -> OperandSpec:
        """Inverse of :meth:`to_list`."""
        fmt, block, rounding, *rest = items
        extra = rest[0] if rest else {}
        d = extra.get("delayed")
        return cls(fmt, block, rounding, None if d is None else DelayedScaling(*d),
                   extra.get("copy", "own"))


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
    promotion: None, or with ``matrix_unit`` the products per promotion: every GEMM runs that
        many products at a time through the unit from a zero addend and promotes each partial
        sum into float32 with its inputs' block scales applied there (DeepSeek-V3's FP8 GEMMs
        on Hopper, N_C = 128; :func:`fpformat.gemm.mma` with block scales).  The unit then reads
        the quantized inputs' element values (``matrix_unit_format`` should hold them), not
        their dequantized values; their blocks along each GEMM's reduction axis must be
        multiples of ``promotion`` long (or the whole axis: channel and tensor scales, or
        none), and none may use delayed scaling or NVFP4's two-level scales.
    transforms: ``((gemm, block, signs), ...)``: a random Hadamard transform of ``block`` (a
        power of two) elements applied along the reduction axis to both inputs of that GEMM
        (``"fwd"``, ``"dgrad"``, ``"wgrad"``) before they are quantized, so that the exact
        product is unchanged (:mod:`explorer.train.hadamard`).  Its sign vector is drawn from
        ``seed`` and the GEMM, shared by every layer: once for the run (``signs="fixed"``, as
        NVIDIA's NVFP4 recipe) or anew every optimizer step (``"step"``, as Tseng et al.).
    recipe, recipe_hash: the training recipe this config was built from
        (:mod:`explorer.train.recipes`): its name and the hash of its content; None otherwise.
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
    promotion: int | None = None
    transforms: tuple[tuple[str, int, str], ...] = ()
    recipe: str | None = None
    recipe_hash: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", parse_targets(self.targets))
        object.__setattr__(self, "transforms", _check_transforms(self.transforms))
        if (self.recipe is None) != (self.recipe_hash is None) or not all(
                v is None or (isinstance(v, str) and v) for v in (self.recipe, self.recipe_hash)):
            raise ValueError(f"recipe and recipe_hash: give both (non-empty strings) or "
                             f"neither, got {self.recipe!r} and {self.recipe_hash!r}")
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
        self._check_copies()
        self._check_promotion()

    def _check_promotion(self) -> None:
        """``promotion``: an int >= 1, with a matrix unit, and every quantized input's scales
        constant over each promotion's products (see the class docstring)."""
        n = self.promotion
        if n is None:
            return
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"promotion must be None or an int >= 1 (products per promotion), "
                             f"got {n!r}")
        if self.matrix_unit is None:
            raise ValueError(f"promotion ({n}) needs a matrix_unit: it says how often the "
                             f"unit's partial sums are promoted (without a unit, an "
                             f"accumulator's /chunk{n} does that)")
        for t in TARGETS:
            s = self.spec(t)
            if s is None:
                continue
            if s.delayed is not None:
                raise ValueError(f"{t}: delayed scaling is not supported with promotion (its "
                                 f"per-tensor scale is not a block scale the promotion "
                                 f"applies); use current scaling")
            f = s.build()
            if isinstance(f, BlockFormat) and f.scale_rule == "nvfp4":
                raise ValueError(f"{t}: {s.label()} has two-level scales (E4M3 times a float32 "
                                 f"tensor scale), which Blackwell's tensor cores apply inside "
                                 f"the block product; promotion models Hopper's, which apply "
                                 f"one float32 scale per block at each promotion. Use a matrix "
                                 f"unit without promotion, or MX/float32 block scales")
            if not isinstance(f, BlockFormat) or f.block_size in ("channel", "tensor"):
                continue
            # A block runs along its own GEMM's reduction axis (a tile's columns); a reused copy,
            # made for the other GEMM, is read across its blocks (a tile's rows).
            if s.copy == "reuse":
                along = 1 if f.tile is None else f.tile[0]
            else:
                along = f.block_size if f.tile is None else f.tile[1]
            if along % n:
                raise ValueError(f"{t}: blocks of {s.label()} are {along} long along the "
                                 f"reduction axis, not a multiple of promotion ({n}), so one "
                                 f"promotion would span two scales; use blocks of a multiple "
                                 f"of {n}")

    def _check_copies(self) -> None:
        """``copy`` other than 'own' only where a quantized source exists, with no transform
        on either GEMM (a copy would carry the other GEMM's rotation), and 'reuse' only of an
        equal spec."""
        hadamard = {g for g, _, _ in self.transforms}
        for t in TARGETS:
            s = self.spec(t)
            if s is None or s.copy == "own":
                continue
            src = COPY_SOURCES.get(t)
            if src is None:
                raise ValueError(f"{t}: copy {s.copy!r} applies to the backward inputs "
                                 f"{', '.join(COPY_SOURCES)} only; use copy 'own'")
            ss = self.spec(src)
            if ss is None:
                raise ValueError(f"{t}: copy {s.copy!r} needs {src} quantized (its copy is "
                                 f"what {t} starts from); quantize {src} or use copy 'own'")
            rotated = [g for g in (gemm_of(t), gemm_of(src)) if g in hadamard]
            if rotated:
                raise ValueError(f"{t}: copy {s.copy!r} cannot be combined with the Hadamard "
                                 f"transform on the {rotated[0]} GEMM (the copy would carry "
                                 "its rotation); use copy 'own'")
            if s.copy == "reuse" and replace(s, copy="own") != replace(ss, copy="own"):
                raise ValueError(f"{t}: copy 'reuse' uses {src}'s quantized copy as it is, so "
                                 f"its spec must be {src}'s ({ss.label()}/{ss.rounding}), got "
                                 f"{s.label()}/{s.rounding}")

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
        """True when the GEMMs differ from torch's (:attr:`computes_gemms`) or the attention
        inputs are quantized."""
        return self.computes_gemms or self.attention is not None

    @property
    def computes_gemms(self) -> bool:
        """True when the GEMMs differ from torch's: some GEMM input is quantized or rotated,
        or the GEMMs run through an emulated accumulator or matrix unit."""
        return (any(self.spec(t) is not None for t in TARGETS) or bool(self.transforms)
                or self.accumulator is not None or self.matrix_unit is not None)

    @property
    def delayed(self) -> bool:
        """Whether some GEMM input uses delayed scaling (state that checkpoints must carry)."""
        return any(s is not None and s.delayed is not None for s in map(self.spec, TARGETS))

    def to_dict(self) -> dict:
        """A JSON-able description (used in run configs and their hash)."""
        return {"fmt": self.fmt, "block": self.block, "rounding": self.rounding,
                "targets": list(self.targets),
                "overrides": [[t, *s.to_list()] for t, s in self.overrides],
                "seed": self.seed, "include_head": self.include_head,
                "attention": None if self.attention is None else
                [self.attention.fmt, self.attention.block, self.attention.rounding],
                # only when set, so configs (and run keys) without it are unchanged
                **({"accumulator": self.accumulator} if self.accumulator else {}),
                **({"matrix_unit": self.matrix_unit,
                    "matrix_unit_format": self.matrix_unit_format} if self.matrix_unit else {}),
                **({"promotion": self.promotion} if self.promotion is not None else {}),
                **({"transforms": [list(t) for t in self.transforms]} if self.transforms else {}),
                **({"recipe": self.recipe, "recipe_hash": self.recipe_hash}
                   if self.recipe else {})}

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        """Inverse of :meth:`to_dict`."""
        att = d.get("attention")
        overrides = tuple((o[0], OperandSpec.from_list(o[1:])) for o in d.get("overrides", []))
        return cls(fmt=d.get("fmt"), block=d.get("block", "channel"),
                   rounding=d.get("rounding", "rne"),
                   targets=tuple(d.get("targets", DEFAULT_TARGETS)), overrides=overrides,
                   seed=int(d.get("seed", 0)), include_head=bool(d.get("include_head", False)),
                   attention=None if att is None else OperandSpec(*att),
                   accumulator=d.get("accumulator"), matrix_unit=d.get("matrix_unit"),
                   matrix_unit_format=d.get("matrix_unit_format", "float16"),
                   promotion=d.get("promotion"),
                   transforms=tuple(tuple(t) for t in d.get("transforms", ())),
                   recipe=d.get("recipe"), recipe_hash=d.get("recipe_hash"))


def _check_transforms(transforms: object) -> tuple[tuple[str, int, str], ...]:
    """``((gemm, block, signs), ...)`` in :data:`GEMMS` order; ``ValueError`` naming a bad
    entry."""
    if not isinstance(transforms, (tuple, list)):
        raise ValueError(f"transforms: must be a sequence of (gemm, block, signs), "
                         f"got {transforms!r}")
    out = {}
    for item in transforms:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"transforms: each entry is (gemm, block, signs), got {item!r}")
        g, b, signs = item
        if g not in GEMMS:
            raise ValueError(f"transforms: unknown GEMM {g!r}; choose from {', '.join(GEMMS)}")
        if g in out:
            raise ValueError(f"transforms: GEMM {g!r} given twice")
        if signs not in SIGN_DRAWS:
            raise ValueError(f"transforms: signs of the {g} GEMM must be one of "
                             f"{', '.join(SIGN_DRAWS)}, got {signs!r}")
        out[g] = (g, check_hadamard_block(b), signs)
    return tuple(out[g] for g in GEMMS if g in out)


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


class _Factored(NamedTuple):
    """A quantized GEMM input as a promoting matrix unit reads it (:attr:`QuantConfig.promotion`):
    ``values``, the dequantized tensor (bit for bit the quantizer's output), and its two
    factors, ``elements`` (float64, the element values) and ``scales`` (float64, each element's
    block scale; None: all 1).  :meth:`t` and :meth:`to` act as a tensor's do, so the GEMM code
    takes either; the factors keep their dtype (the unit computes in its own formats)."""

    values: torch.Tensor
    elements: torch.Tensor
    scales: torch.Tensor | None

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def t(self) -> _Factored:
        return _Factored(self.values.t(), self.elements.t(),
                         None if self.scales is None else self.scales.t())

    def to(self, dtype: torch.dtype) -> _Factored:
        return self._replace(values=self.values.to(dtype))


def _values(x: torch.Tensor | _Factored) -> torch.Tensor:
    """The dequantized tensor of a GEMM input, factored or not."""
    return x.values if isinstance(x, _Factored) else x


def _promoted_operand(x: torch.Tensor | _Factored, k_axis: int, every: int, pname: str):
    """``(element values, block scales or None)`` of a GEMM input for
    :func:`fpformat.gemm_torch.unit_mm` promoting ``every`` products: the scales of the first
    element of each promotion along the reduction axis ``k_axis`` (0 or 1); ``ValueError``
    naming ``pname`` when they change within one (the config's check makes that impossible)."""
    if not isinstance(x, _Factored):
        return x, None
    if x.scales is None:
        return x.elements, None
    s = x.scales
    first = s[:, ::every] if k_axis == 1 else s[::every, :]
    spread = first.repeat_interleave(every, dim=k_axis).narrow(k_axis, 0, s.shape[k_axis])
    if not bool(((spread == s) | (spread.isnan() & s.isnan())).all()):
        raise ValueError(f"{pname}: its scales change within a promotion of {every} products; "
                         f"its blocks along the reduction axis must be multiples of {every}")
    return x.elements, first


class _UnitGemm:
    """A GEMM through a matrix unit (float32 output): ``a @ b`` by
    :func:`fpformat.gemm_torch.unit_mm`; with ``promotion``, of the inputs' factors
    (:class:`_Factored`), the block scales applied at each promotion."""

    def __init__(self, unit: str, in_format: str, promotion: int | None = None):
        self.in_format = get_format(in_format)
        self.unit = get_unit(unit, self.in_format, "float32")
        self.promotion = promotion

    def __call__(self, a: torch.Tensor | _Factored, b: torch.Tensor | _Factored) -> torch.Tensor:
        if self.promotion is None:
            return unit_mm(a, b, self.unit, self.in_format, "float32")
        ea, sa = _promoted_operand(a, 1, self.promotion, "a")
        eb, sb = _promoted_operand(b, 0, self.promotion, "b")
        like = _values(a)
        y = unit_mm(ea, eb, self.unit, self.in_format, "float32", a_scale=sa, b_scale=sb,
                    block_k=self.promotion)
        return y.to(device=like.device, dtype=like.dtype)


def _seed(base: int, layer: int, target: int, step: int) -> int:
    h = hashlib.blake2b(f"{base}/{layer}/{target}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


class _Seeds:
    """The stochastic-rounding seed of every GEMM input of one layer at one optimizer step, read
    as ``seeds.fwd_x`` (:data:`TARGETS`), each derived when first read: a hash costs a few
    microseconds, and inputs that round to nearest never read theirs."""

    __slots__ = ("_base", "_layer", "_step", "_derived")

    def __init__(self, base: int, layer: int, step: int):
        self._base, self._layer, self._step = base, layer, step
        self._derived: dict[str, int] = {}

    def __getattr__(self, target: str) -> int:
        derived = self._derived.get(target)
        if derived is None:
            if target not in TARGETS:
                raise AttributeError(f"no GEMM input {target!r}; the inputs are {TARGETS}")
            derived = _seed(self._base, self._layer, TARGETS.index(target), self._step)
            self._derived[target] = derived
        return derived


def _no_autocast(device_type: str):
    """``torch.autocast(device_type, enabled=False)`` where autocast is on, else a null context
    (entering and leaving autocast costs some 20 microseconds, twice per layer and step)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class _Operand:
    """A resolved OperandSpec: the fpformat object plus rounding; quantizes along an axis."""

    def __init__(self, spec: OperandSpec):
        self.spec = spec
        self.fmt = spec.build()
        self.blocked = spec.block is not None or getattr(self.fmt, "element", None) is not None
        # Same values whichever axis the blocks run along: reusable across GEMMs.
        self.axis_free = not self.blocked or spec.block == "tensor"
        self.fmt_axis0 = _down_columns(self.fmt)
        #: float32 CPU tensors' path, by axis: fpformat's prepared quantizers (quantize_values'
        #: per-call work cost 4-5 ms of a 65 ms te-nvfp4 step at L=2 d=64, docs/recipes.md)
        self.prepared = tuple(Quantizer(f, spec.rounding, saturate=True)
                              for f in (self.fmt_axis0, self.fmt))

    def __call__(self, t: torch.Tensor, axis: int, seed: int | None) -> torch.Tensor:
        """Quantize 2-D ``t`` with blocks along ``axis`` (0 or 1), in place in ``t``'s layout
        (no transposed copy; stochastic rounding draws element ``i``'s bits from its flat index
        in ``t``); no autograd."""
        if t.dtype == torch.float32 and t.device.type == "cpu":
            return torch.from_numpy(self.prepared[axis](t.detach().contiguous().numpy(), seed))
        return quantize_values(t.contiguous(), self.fmt if axis == 1 else self.fmt_axis0,
                               rounding=self.spec.rounding, saturate=True, seed=seed)

    def factors(self, t: torch.Tensor, axis: int, seed: int | None) -> _Factored:
        """:meth:`__call__`'s copy with its element values and scales (:class:`_Factored`),
        computed on the CPU (the promoting unit runs there)."""
        fmt = self.fmt if axis == 1 else self.fmt_axis0
        x = to_numpy(t.detach().cpu().contiguous())
        if isinstance(fmt, BlockFormat):
            enc = fmt.encode(x, rounding=self.spec.rounding, saturate=True, seed=seed)
            elements, scales = fmt.factors(enc)
            values = fmt.decode(enc)
        else:
            elements = values = np.asarray(fmt.quantize(x, rounding=self.spec.rounding,
                                                        saturate=True, seed=seed), np.float64)
            scales = None
        return _Factored(torch.from_numpy(values).to(device=t.device, dtype=t.dtype),
                         torch.from_numpy(elements),
                         None if scales is None else torch.from_numpy(scales))


def _down_columns(fmt):
    """``fmt`` with its blocks along axis 0 instead of the last axis: a 2-D tile transposed,
    a 1-D block or channel moved to axis 0; element formats and tensor scaling as they are."""
    if not isinstance(fmt, BlockFormat):
        return fmt
    if fmt.tile is not None:
        return replace(fmt, tile=fmt.tile[::-1])
    return fmt if fmt.block_size == "tensor" else replace(fmt, axis=0)


class _DelayedScale:
    """The state of one delayed-scaled GEMM input (:class:`DelayedScaling`): its amax history
    (float32, newest first) and the scale the next call uses (float32)."""

    def __init__(self, delayed: DelayedScaling, element: FloatFormat):
        self.delayed = delayed
        self.max_elem = torch.tensor(element.max, dtype=torch.float32)
        self.max_elem32 = np.float32(element.max)
        self.history = torch.zeros(delayed.history, dtype=torch.float32)
        self.scale = torch.ones((), dtype=torch.float32)
        #: float32 CPU data takes fpformat's fused pass (scale, round, unscale, amax)
        self.fused = quantize_scaled_applies(element)

    def __call__(self, op: _Operand, t: torch.Tensor, seed: int | None,
                 record: bool) -> torch.Tensor:
        """``t`` quantized with the current scale; ``record``: then push its amax and update
        the scale for the next step."""
        if self.history.device != t.device:
            self.load(self.history.to(t.device), self.scale.to(t.device))
        if self.fused and t.device.type == "cpu" and t.dtype == torch.float32:
            y, amax = quantize_scaled_values(t, op.fmt, float(self.scale), op.spec.rounding,
                                             True, seed)
            if record:
                self._record_value(amax)
            return y
        x = t.to(torch.float32) * self.scale
        q = quantize_values(x, op.fmt, rounding=op.spec.rounding, saturate=True, seed=seed)
        y = q.mul_(torch.reciprocal(self.scale)).to(t.dtype)     # q is ours: scale in place
        if record:
            lo, hi = t.detach().aminmax()                 # one pass, NaN propagates
            self._record(torch.maximum(-lo, hi).to(torch.float32))
        return y

    def _record_value(self, amax: float) -> None:
        """:meth:`_record` for a CPU state (the fused pass's only: it runs on CPU data, after
        :meth:`__call__` moved the state there) and an amax given as a number: the same float32
        operations on the state's numpy views, without a dozen tensor ops on single values
        (about 0.1 ms a call; 42 calls make a tenth of an L=2 d=64 step)."""
        h = self.history.numpy()
        h[1:] = h[:-1].copy()
        h[0] = amax
        a = h.max() if self.delayed.reduce == "max" else h[0]       # float32; NaN propagates
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            new = self.max_elem32 / a / np.float32(2.0 ** self.delayed.margin)
        if np.isinf(new):
            new = np.finfo(np.float32).max
        if np.isfinite(a) and a > 0:
            self.scale = torch.tensor(new, dtype=torch.float32)

    def _record(self, amax: torch.Tensor) -> None:
        """Push ``amax`` (a float32 tensor on the state's device) into the history and set the
        next scale: ``max_elem / amax_reduced / 2**margin`` (float32; the largest float32 for
        an infinite quotient), kept as it was when the reduced amax is 0, NaN or inf."""
        self.history = torch.roll(self.history, 1)
        self.history[0] = amax
        a = self.history.amax() if self.delayed.reduce == "max" else self.history[0]
        new = self.max_elem / a / 2.0 ** self.delayed.margin
        new = torch.where(torch.isinf(new), torch.finfo(torch.float32).max, new)
        self.scale = torch.where(torch.isfinite(a) & (a > 0), new, self.scale)

    def load(self, history: torch.Tensor, scale: torch.Tensor) -> None:
        """Replace the state (from a checkpoint); ``ValueError`` when the shapes do not fit."""
        if not isinstance(history, torch.Tensor) or history.shape != (self.delayed.history,):
            raise ValueError(f"amax history: expected {self.delayed.history} values, got "
                             f"{getattr(history, 'shape', type(history).__name__)}")
        if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
            raise ValueError(f"scale: expected one value, got "
                             f"{getattr(scale, 'shape', type(scale).__name__)}")
        self.history = history.to(torch.float32).clone()
        self.scale = scale.to(torch.float32).reshape(()).clone()


class _SharedInputs:
    """Rotated and quantized copies of the last activations quantized GEMMs read, for the next
    layers that read the same tensor (in a decoder q, k and v read one normed activation, gate
    and up another).

    A copy is a function of the tensor's values and of what is applied to it: the Hadamard
    rotation with its axis, then the operand spec (format, block direction, rounding) with its
    axis.  So a layer asking again for the same copy gets the one already made, bit for bit the
    same; stochastic rounding (seeded per layer) and delayed scaling (a scale per layer) are not
    asked for here.  A tensor is recognised by its memory (data pointer, shape, strides, dtype,
    device) and by its version counter, which every in-place torch operation advances; holding
    it (detached: the autograd graph is not kept) keeps that memory from passing to another
    tensor while its copies are held.  The last :data:`SOURCES` tensors are held (an activation
    and its forward copy, which a backward input may requantize); an older one's copies are
    dropped."""

    #: How many source tensors (with their copies) are held.
    SOURCES = 2

    def __init__(self):
        #: (source, its version when held, {key: (rotation, copy)}), the newest last
        self._held: list[tuple[torch.Tensor, int, dict[tuple, tuple[Any, torch.Tensor]]]] = []

    def _copies_of(self, t: torch.Tensor) -> dict[tuple, tuple[Any, torch.Tensor]]:
        for s, version, copies in self._held:
            if (t._version == version and t.data_ptr() == s.data_ptr() and t.shape == s.shape
                    and t.stride() == s.stride() and t.dtype == s.dtype
                    and t.device == s.device):
                return copies
        copies: dict[tuple, tuple[Any, torch.Tensor]] = {}
        self._held = (self._held + [(t.detach(), t._version, copies)])[-self.SOURCES:]
        return copies

    def get(self, t: torch.Tensor, key: tuple, rot: Rotation | None,
            make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The copy of ``t`` named by ``key`` after rotation ``rot`` (a rotation is told by
        identity: held here with the copy, so its id is not reused meanwhile); ``make()`` makes
        it when it is not held, and for an inference tensor (``torch.inference_mode``), which
        has no version counter to tell an in-place change by."""
        if t.is_inference():
            return make()
        copies = self._copies_of(t)
        key = key + (id(rot),)
        held = copies.get(key)
        if held is not None and held[0] is rot:
            return held[1]
        copy = make()
        copies[key] = (rot, copy)
        return copy


#: The GEMM inputs :class:`_SharedInputs` serves: the activation, which several layers read.
SHARED_TARGETS = ("fwd_x", "wgrad_x")


def _as(t, dtype: torch.dtype):
    """``t.to(dtype)``, skipped where ``t`` has it (a no-op ``to`` still costs a call through
    torch's argument parser, a dozen a layer and step)."""
    return t if t.dtype == dtype else t.to(dtype)


def _mm(a: torch.Tensor, b: torch.Tensor, acc, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` plus ``bias`` (a row added to every row; None: nothing), through the emulated
    accumulator or the matrix unit when one is configured, the bias added to their result.
    Without either, the bias is added inside the GEMM (``addmm``), as ``nn.Linear`` and so the
    evaluation forward's ``F.linear`` add it: with 512 or more products per output the sum
    rounds differently from ``a @ b + bias``."""
    if acc is None:
        return a @ b if bias is None else torch.addmm(bias, a, b)
    y = acc(a, b) if isinstance(acc, _UnitGemm) else emulated_mm(a.contiguous(), b.contiguous(),
                                                                  acc)
    return y if bias is None else y.add_(bias)      # y is the GEMM's new tensor


class _QGemm(torch.autograd.Function):
    """y = q(x) q(W)^T + b with quantized inputs in both backward GEMMs.

    Each GEMM's inputs are rotated along its reduction axis first when the config asks for a
    Hadamard transform there; the backward inputs are quantized (or copied, per their spec's
    ``copy``) in the forward for x and W, in the backward for dy."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, weight: torch.Tensor, bias, layer: _QuantGemmMixin):
        cdtype = x2.dtype
        if torch.is_autocast_enabled(x2.device.type):
            cdtype = torch.get_autocast_dtype(x2.device.type)
        seeds = _Seeds(layer.qcfg.seed, layer.layer_id, layer.step)
        rot = layer._rotations()
        qx = layer._input_copy("fwd_x", x2, rot.fwd, 1, seeds, True)
        qw = layer._quant("fwd_w", rotate(weight, rot.fwd, 1), 1, seeds, True)
        with _no_autocast(x2.device.type):
            y = _mm(_as(qx, cdtype), _as(qw, cdtype).t(), layer._acc,
                    None if bias is None else _as(bias, cdtype))
        xw = layer._backward_input("wgrad_x", x2, qx, rot.wgrad, seeds)
        wd = layer._backward_input("dgrad_w", weight, qw, rot.dgrad, seeds)
        if isinstance(xw, _Factored) or isinstance(wd, _Factored):
            ctx.factored = (xw, wd)                      # not tensors: held as they are
        else:
            ctx.save_for_backward(xw, wd)
        ctx.has_bias = bias is not None
        ctx.cdtype = cdtype
        ctx.seeds = seeds
        ctx.layer = layer
        ctx.rot = rot
        ctx.wdtype = weight.dtype
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        xw, wd = getattr(ctx, "factored", None) or ctx.saved_tensors
        layer, seeds, cd = ctx.layer, ctx.seeds, ctx.cdtype
        rot = ctx.rot
        gy = gy.contiguous()
        with _no_autocast(gy.device.type):
            gx = gw = gb = None
            gd = None
            wgrad_copies = ctx.needs_input_grad[1] and layer._copies.wgrad_dy != "own"
            if ctx.needs_input_grad[0] or wgrad_copies:
                gd = layer._quant("dgrad_dy", rotate(gy, rot.dgrad, 1), 1, seeds, True)
            if ctx.needs_input_grad[0]:
                gx = _mm(_as(gd, cd), _as(wd, cd), layer._acc)
            if ctx.needs_input_grad[1]:
                g = layer._backward_input("wgrad_dy", gy, gd, rot.wgrad, seeds)
                gw = _as(_mm(_as(g, cd).t(), _as(xw, cd), layer._acc), ctx.wdtype)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                gb = _as(gy.sum(0), ctx.wdtype)
        return gx, gw, gb, None


@functools.lru_cache(maxsize=256)
def _rotation(block: int, seed: int, gemm: int, step: int) -> Rotation:
    """The Hadamard rotation of one GEMM (float32, with its weights for the fast transform):
    signs from ``(seed, gemm, step)`` (``step`` -1: the run's fixed signs)."""
    return rotation(block, _seed(seed, -1, len(TARGETS) + gemm, step))


class _PerGemm(NamedTuple):
    """One value per GEMM of a linear layer (a Hadamard rotation...), in :data:`GEMMS` order."""

    fwd: Any
    dgrad: Any
    wgrad: Any


class _QuantGemmMixin:
    """The quantized GEMM ``y = x W^T + b`` shared by :class:`QuantLinear` and :class:`QuantGemm`:
    the config, its operand quantizers, the seeds' ``layer_id``/``step``, and the forward.  The
    caller hands the weight in ``(out, in)`` orientation (a transposed view for modules that store
    it ``(in, out)``; autograd transposes its gradient back)."""

    def set_config(self, qcfg: QuantConfig) -> None:
        """Replace the quantization config (builds the fpformat objects once; delayed-scaling
        state starts afresh)."""
        if not isinstance(qcfg, QuantConfig):
            raise TypeError(f"qcfg must be a QuantConfig, got {type(qcfg).__name__}")
        self.qcfg = qcfg
        self._acc = None                 # the GEMM: None (torch), an Accumulator or a unit
        if qcfg.accumulator is not None:
            self._acc = parse_accumulator(qcfg.accumulator)
        elif qcfg.matrix_unit is not None:
            self._acc = _UnitGemm(qcfg.matrix_unit, qcfg.matrix_unit_format, qcfg.promotion)
        #: the quantizers hand the GEMMs their copies' factors (:class:`_Factored`)
        self._factored = qcfg.promotion is not None
        cache: dict[OperandSpec, _Operand] = {}
        ops = []
        self._delayed: dict[str, _DelayedScale] = {}
        for t in TARGETS:
            s = qcfg.spec(t)
            if s is not None and s not in cache:
                cache[s] = _Operand(s)
            ops.append(None if s is None else cache[s])
            if s is not None and s.delayed is not None and s.copy != "reuse":
                self._delayed[t] = _DelayedScale(s.delayed, cache[s].fmt)
        self._ops = PerTarget(*ops)
        self._copies = PerTarget(*(op.spec.copy if op is not None else "own" for op in ops))
        if getattr(self, "_shared", None) is None:    # quantize_model gives a model's layers one
            self._shared = _SharedInputs()

    def _rotations(self) -> _PerGemm:
        """The Hadamard rotation (float32) of each transformed GEMM at the current step, else
        None: signs from the run's seed and the GEMM (and the step for ``signs="step"``), the
        same in every layer."""
        held = getattr(self, "_rotations_held", None)
        if held is not None and held[0] is self.qcfg and held[1] == self.step:
            return held[2]
        out = []
        for g in GEMMS:
            spec = next((t for t in self.qcfg.transforms if t[0] == g), None)
            if spec is None:
                out.append(None)
                continue
            _, block, signs = spec
            step = self.step if signs == "step" else -1
            out.append(_rotation(block, self.qcfg.seed, GEMMS.index(g), step))
        rotations = _PerGemm(*out)
        # the forward asks once a step and evaluation again: keep this step's
        self._rotations_held = (self.qcfg, self.step, rotations)
        return rotations

    @property
    def quantizes(self) -> bool:
        """Whether any GEMM input is quantized, a GEMM's inputs are rotated, or the GEMMs run
        through an emulated accumulator or matrix unit (False: the layer computes exactly what
        the plain module computes)."""
        return (any(op is not None for op in self._ops) or self._acc is not None
                or bool(self.qcfg.transforms))

    def _quant(self, target: str, t: torch.Tensor, axis: int, seeds: _Seeds,
               record: bool) -> torch.Tensor:
        """``t`` (2-D) quantized per ``target``'s spec with blocks along ``axis``; unchanged
        when the target is unquantized.  ``record``: a training call (delayed scaling pushes
        this step's amax)."""
        op = getattr(self._ops, target)
        if op is None:
            return t
        # only stochastic rounding reads its seed (deriving one costs a hash; fpformat ignores
        # a seed in the other modes)
        seed = getattr(seeds, target) if op.spec.rounding == "sr" else None
        delayed = self._delayed.get(target)
        if delayed is not None:
            return delayed(op, t, seed, record)
        if self._factored:
            return op.factors(t, axis, seed)
        return op(t, axis, seed)

    def _input_copy(self, target: str, t: torch.Tensor, rotation: Rotation | None, axis: int,
                    seeds: _Seeds, record: bool) -> torch.Tensor:
        """``t`` rotated along ``axis`` and quantized per ``target``'s spec with blocks along
        ``axis``; for the activation's targets (:data:`SHARED_TARGETS`) the copies another
        layer already made of the same tensor are reused (:class:`_SharedInputs`), except a
        stochastically rounded or delayed-scaled quantization, which is this layer's own."""
        op = getattr(self._ops, target)
        if target not in SHARED_TARGETS or (op is None and rotation is None):
            return self._quant(target, rotate(t, rotation, axis), axis, seeds, record)
        shared = self._shared
        rotated = t if rotation is None else shared.get(
            t, ("rotated", axis), rotation, lambda: rotate(t, rotation, axis))
        if op is None or op.spec.rounding == "sr" or target in self._delayed:
            return self._quant(target, rotated, axis, seeds, record)
        return shared.get(t, (op.spec, axis, self._factored), rotation,
                          lambda: self._quant(target, rotated, axis, seeds, record))

    def _backward_input(self, target: str, t: torch.Tensor, source_copy: torch.Tensor | None,
                        rotation: Rotation | None, seeds: _Seeds) -> torch.Tensor:
        """The input ``target`` of a backward GEMM, which reduces along ``t``'s axis 0: from the
        high-precision ``t`` (rotated, quantized along axis 0), or from ``source_copy`` (the
        quantized input of :data:`COPY_SOURCES`' GEMM) per the spec's ``copy``."""
        op = getattr(self._ops, target)
        copy = getattr(self._copies, target)
        if copy == "reuse":
            return source_copy
        if copy == "requantize":
            return self._input_copy(target, _values(source_copy), None, 0, seeds, True)
        source = COPY_SOURCES[target]
        if (op is not None and op is getattr(self._ops, source) and op.axis_free
                and op.spec.rounding != "sr" and target not in self._delayed
                and not self.qcfg.transforms):
            return source_copy        # the same values the quantizer would give: skip it
        return self._input_copy(target, t, rotation, 0, seeds, True)

    def _gemm(self, x: torch.Tensor, weight: torch.Tensor, bias, out_features: int):
        """``x (..., in) -> (..., out)`` through the quantized GEMM; ``weight`` is ``(out, in)``."""
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
            y = self._forward_only(x2, weight, bias)
        else:
            y = _QGemm.apply(x2, weight, bias, self)
        return y.reshape(*shape[:-1], out_features)

    def _forward_only(self, x2: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        """The forward GEMM alone (evaluation): same values as the training forward; records
        no amax."""
        seeds = _Seeds(self.qcfg.seed, self.layer_id, self.step)
        rot = self._rotations().fwd
        qx = self._input_copy("fwd_x", x2, rot, 1, seeds, False)
        qw = self._quant("fwd_w", rotate(weight, rot, 1), 1, seeds, False)
        return _mm(qx, qw.to(qx.dtype).t(), self._acc,
                   None if bias is None else _as(bias, qx.dtype))

    def _specs_repr(self) -> str:
        specs = [f"{t}={op.spec.label()}/{op.spec.rounding}"
                 for t, op in self._ops._asdict().items() if op is not None]
        specs += [f"{g}=hadamard{b}/{signs}" for g, b, signs in self.qcfg.transforms]
        return ", " + ", ".join(specs) if specs else ", unquantized"


class QuantLinear(_QuantGemmMixin, nn.Linear):
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
        if not self.quantizes:
            return super().forward(x)
        return self._gemm(x, self.weight, self.bias, self.out_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._specs_repr()


class QuantGemm(_QuantGemmMixin, nn.Module):
    """The quantized replacement of a registered GEMM module (:func:`register_gemm`) other than
    ``nn.Linear``: ``y = x W^T + b`` (``layout="out_in"``) or ``y = x W + b`` (``"in_out"``, e.g.
    ``transformers``' ``Conv1D``), every GEMM input quantized per a :class:`QuantConfig` as in
    :class:`QuantLinear`, blocks along each GEMM's reduction axis whichever way the weight is
    stored.

    It holds the module's own weight and bias parameters (shared, not copied) under their own
    attribute names, so ``state_dict`` keys and shapes and tied weights are unchanged;
    :func:`dequantize_model` puts the original module back.  With no spec active it computes
    ``F.linear(x, W_out_in, b)``, for ``Conv1D`` the same ``addmm`` as the module itself.
    """

    def __init__(self, module: nn.Module, gemm: GemmType, qcfg: QuantConfig, layer_id: int = 0):
        super().__init__()
        w = getattr(module, gemm.weight, None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            raise ValueError(f"{type(module).__name__}.{gemm.weight}: expected a 2-D weight "
                             f"tensor for GEMM type {gemm.module_type}, got "
                             f"{type(w).__name__ if not isinstance(w, torch.Tensor) else w.shape}")
        b = None if gemm.bias is None else getattr(module, gemm.bias, None)
        self.gemm = gemm
        self._weight_name, self._bias_name = gemm.weight, gemm.bias
        setattr(self, gemm.weight, w)
        if gemm.bias is not None:
            setattr(self, gemm.bias, b)
        if gemm.layout == "out_in":
            self.out_features, self.in_features = w.shape
        else:
            self.in_features, self.out_features = w.shape
        if b is not None and tuple(b.shape) != (self.out_features,):
            raise ValueError(f"{type(module).__name__}.{gemm.bias}: expected shape "
                             f"({self.out_features},) for weight {tuple(w.shape)} stored "
                             f"{gemm.layout}, got {tuple(b.shape)}")
        self.layer_id = layer_id
        self.step = 0
        self.set_config(qcfg)
        object.__setattr__(self, _ORIGINAL, module)      # what dequantize_model puts back

    @property
    def weight_out_in(self) -> torch.Tensor:
        """The weight as ``(out, in)``: the parameter itself or its transposed view."""
        w = getattr(self, self._weight_name)
        return w if self.gemm.layout == "out_in" else w.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input's last dimension is {x.shape[-1]}, expected in_features="
                             f"{self.in_features}")
        bias = None if self._bias_name is None else getattr(self, self._bias_name)
        if not self.quantizes:
            return torch.nn.functional.linear(x, self.weight_out_in, bias)
        return self._gemm(x, self.weight_out_in, bias, self.out_features)

    def extra_repr(self) -> str:
        return (f"{self.gemm.module_type}, in_features={self.in_features}, "
                f"out_features={self.out_features}, layout={self.gemm.layout}"
                + self._specs_repr())


class _QKV:
    """Forward quantization of attention inputs with a straight-through gradient."""

    def __init__(self, spec: OperandSpec, seed: int):
        self.spec, self.fmt, self.seed = spec, spec.build(), seed

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return quantize(t, self.fmt, rounding=self.spec.rounding, saturate=True,
                        seed=self.seed if self.spec.rounding == "sr" else None)


#: What a registered GEMM module's ``build`` is called with: ``(module, qcfg, layer_id)``; it
#: returns the quantized replacement (see :func:`register_gemm`).
GemmBuild = Callable[[nn.Module, QuantConfig, int], nn.Module]
LAYOUTS = ("out_in", "in_out")
# The module a replacement stands for, kept outside ``_modules`` (not a child: no state_dict keys,
# no second visit) so that dequantize_model and a re-configuring quantize_model can reach it.
_ORIGINAL = "_fpx_gemm_original"


@dataclass(frozen=True)
class GemmType:
    """A kind of module that computes one GEMM, ``y = x W^T + b``, as :func:`quantize_model`
    knows it (see :func:`register_gemm`).

    module_type: the class as ``"package.module.QualName"`` (subclasses match too).
    layout: how the 2-D weight is stored: ``"out_in"`` (``nn.Linear``: ``y = x W^T + b``) or
        ``"in_out"`` (``transformers``' ``Conv1D``: ``y = x W + b``).
    weight, bias: the attribute names of the weight and bias (bias None: the module has none).
    build: ``build(module, qcfg, layer_id) -> replacement``, or None for the default
        (:class:`QuantLinear` for ``nn.Linear``, :class:`QuantGemm` for anything else).
    """

    module_type: str
    layout: str = "out_in"
    weight: str = "weight"
    bias: str | None = "bias"
    build: GemmBuild | None = None


_GEMM_TYPES: dict[str, GemmType] = {}


def _type_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_gemm(module_type: type | str, *, layout: str = "out_in", weight: str = "weight",
                  bias: str | None = "bias", build: GemmBuild | None = None) -> GemmType:
    """Teach :func:`quantize_model` a GEMM module type; returns its :class:`GemmType`.

    module_type: an ``nn.Module`` subclass, or its path ``"package.module.QualName"`` (so a
        library's class can be named without importing the library).  Subclasses match too; the
        most derived registered class wins.  Registering a type again replaces its entry.
    layout: ``"out_in"`` when the module computes ``y = x W^T + b`` with ``W`` of shape
        ``(out, in)`` (``nn.Linear``), ``"in_out"`` when it computes ``y = x W + b`` with ``W``
        of shape ``(in, out)`` (``transformers``' ``Conv1D``).  Blocks then run along each
        GEMM's reduction axis whichever way ``W`` is stored.
    weight, bias: attribute names of the 2-D weight and of the bias (``bias=None``: none).
    build: ``build(module, qcfg, layer_id) -> nn.Module``, the quantized replacement, for
        modules whose forward is more than that GEMM; it should share the module's parameters
        (training must update the model's own weights), and subclassing :class:`QuantGemm`
        gives it stochastic-rounding steps and :func:`specialize_kernels`.  None: the default
        replacement, :class:`QuantGemm` (:class:`QuantLinear` for ``nn.Linear``), which refuses
        modules holding parameters, buffers or submodules besides ``weight`` and ``bias``.
    :func:`dequantize_model` puts the original module back in every case.
    """
    if isinstance(module_type, type):
        if not issubclass(module_type, nn.Module):
            raise ValueError(f"module_type must be a torch.nn.Module subclass or a "
                             f"'package.module.ClassName' path, got class {module_type!r}")
        path = _type_path(module_type)
    elif isinstance(module_type, str) and "." in module_type.strip(".") and \
            all(p.isidentifier() for p in module_type.split(".")):
        path = module_type
    else:
        raise ValueError(f"module_type must be a torch.nn.Module subclass or a "
                         f"'package.module.ClassName' path, got {module_type!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not isinstance(weight, str) or not weight.isidentifier():
        raise ValueError(f"weight must be an attribute name, got {weight!r}")
    if bias is not None and (not isinstance(bias, str) or not bias.isidentifier()
                             or bias == weight):
        raise ValueError(f"bias must be None or an attribute name other than weight, "
                         f"got {bias!r}")
    if build is not None and not callable(build):
        raise ValueError(f"build must be None or a callable (module, qcfg, layer_id) -> "
                         f"nn.Module, got {type(build).__name__}")
    g = GemmType(path, layout, weight, bias, build)
    _GEMM_TYPES[path] = g
    return g


def gemm_types() -> tuple[GemmType, ...]:
    """The registered GEMM module types, in registration order."""
    return tuple(_GEMM_TYPES.values())


register_gemm(nn.Linear, layout="out_in")
# transformers (a test dependency only, never imported here) computes the GEMMs of the GPT-2
# family in Conv1D, y = x W + b with W stored (in, out); named by path so explorer runs without
# it.  Older releases defined the class in modeling_utils.
register_gemm("transformers.pytorch_utils.Conv1D", layout="in_out")
register_gemm("transformers.modeling_utils.Conv1D", layout="in_out")


def _gemm_type_of(module: nn.Module) -> GemmType | None:
    """The registered type of a plain (not yet quantized) module, or None."""
    for cls in type(module).__mro__:
        g = _GEMM_TYPES.get(_type_path(cls))
        if g is not None:
            return g
    return None


def _replaced_type(module: nn.Module) -> GemmType | None:
    """The GEMM type a replacement made by :func:`quantize_model` (or a user's QuantLinear)
    stands for; None for any other module."""
    orig = module.__dict__.get(_ORIGINAL)
    if orig is not None:
        return _gemm_type_of(orig)
    if isinstance(module, QuantGemm):
        return module.gemm
    if isinstance(module, QuantLinear):
        return _GEMM_TYPES[_type_path(nn.Linear)]
    return None


def _check_plain_state(module: nn.Module, g: GemmType) -> None:
    """The default replacements keep only weight and bias: refuse a module holding more."""
    own = {g.weight, *(() if g.bias is None else (g.bias,))}
    extra = ([n for n, _ in module.named_parameters(recurse=False) if n not in own]
             + [n for n, _ in module.named_buffers(recurse=False)]
             + [n for n, _ in module.named_children()])
    if extra:
        raise ValueError(f"{type(module).__name__} holds {', '.join(extra)} besides "
                         f"{' and '.join(sorted(own))}; the default quantized replacement "
                         "would drop them: register its type with register_gemm(..., build=...)")


def _build(module: nn.Module, g: GemmType, qcfg: QuantConfig, layer_id: int) -> nn.Module:
    if g.build is not None:
        rep = g.build(module, qcfg, layer_id)
        if not isinstance(rep, nn.Module):
            raise TypeError(f"build for {g.module_type} must return an nn.Module, got "
                            f"{type(rep).__name__}")
    else:
        _check_plain_state(module, g)
        if isinstance(module, nn.Linear) and g.layout == "out_in" and g.weight == "weight":
            rep = QuantLinear.from_linear(module, qcfg, layer_id=layer_id)
        else:
            rep = QuantGemm(module, g, qcfg, layer_id=layer_id)
    if rep is not module:
        object.__setattr__(rep, _ORIGINAL, module)
    return rep


def _install(child: nn.Module, g: GemmType, qcfg: QuantConfig, layer_id: int) -> nn.Module:
    """``child`` quantized per ``qcfg``: re-configured in place when it is already one of ours,
    else a new replacement (built from the original module when ``child`` is a user-built one)."""
    if isinstance(child, _QuantGemmMixin):
        child.set_config(qcfg)
        child.layer_id = layer_id
        return child
    orig = child.__dict__.get(_ORIGINAL, child)
    return _build(orig, g, qcfg, layer_id)


def _restore(child: nn.Module) -> nn.Module:
    """The plain module a replacement stands for, holding the replacement's current parameters
    (a QuantLinear built directly becomes an ``nn.Linear``); any other module unchanged."""
    orig = child.__dict__.get(_ORIGINAL)
    if orig is None:
        return _plain(child) if isinstance(child, QuantLinear) else child
    if isinstance(child, _QuantGemmMixin):
        names = ((child._weight_name, child._bias_name) if isinstance(child, QuantGemm)
                 else ("weight", "bias"))
        for n in names:
            if n is not None and getattr(orig, n) is not getattr(child, n):
                setattr(orig, n, getattr(child, n))
    return orig


def _output_embeddings(model: nn.Module) -> nn.Module | None:
    """The classifier of a Hugging Face model (``get_output_embeddings()``), or None."""
    get = getattr(model, "get_output_embeddings", None)
    if not callable(get):
        return None
    try:
        out = get()
    except (NotImplementedError, AttributeError):
        return None
    return out if isinstance(out, nn.Module) else None


@dataclass(frozen=True)
class QuantizedGemms:
    """What :func:`quantize_model` did.

    names: qualified names of the GEMM modules now carrying the config, by ``layer_id``.
    skipped: ``(name, reason)`` of the GEMM modules left unquantized (classifier heads without
        ``include_head``; ``nn.MultiheadAttention``'s ``out_proj``, whose weight that module
        uses directly, never calling its forward).
    quantizes: whether the config quantizes any GEMM input, rotates one, or runs the GEMMs
        through an emulated accumulator or matrix unit (False for an attention-only config).
    attention: how many attention modules quantize q, k, v (``qcfg.attention``).
    """

    names: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    quantizes: bool
    attention: int

    @property
    def count(self) -> int:
        """How many GEMM modules compute a quantized GEMM (0 when the config quantizes none of
        the GEMM inputs)."""
        return len(self.names) if self.quantizes else 0

    def __str__(self) -> str:
        s = f"{self.count} of {len(self.names) + len(self.skipped)} GEMM modules quantized"
        if self.skipped:
            s += " (unquantized: " + ", ".join(f"{n}: {r}" for n, r in self.skipped) + ")"
        return s


def quantize_model(model: nn.Module, qcfg: QuantConfig) -> QuantizedGemms:
    """Swap every GEMM module of ``model`` (in place) for a quantized one sharing its parameters.

    GEMM modules are those of a registered type (:func:`register_gemm`): ``nn.Linear`` (becomes
    :class:`QuantLinear`), ``transformers``' ``Conv1D`` (the GPT-2 family; becomes a
    :class:`QuantGemm` with its weight read as ``(in, out)``) and whatever else was registered.
    The classifier (a GEMM module named like :data:`HEAD_NAMES`, or a Hugging Face model's
    ``get_output_embeddings()``) is skipped unless ``qcfg.include_head``.  Modules with a
    ``qk_quant`` attribute (our attention) get the ``qcfg.attention`` spec.  ``layer_id`` (a
    stochastic-rounding seed input) numbers the quantized modules: each parent's GEMM children
    first, then its other children depth first.  Calling it again re-configures the layers; a
    module reachable under two names is one GEMM, replaced once.

    Returns a :class:`QuantizedGemms` (``.count`` GEMMs quantized, their names, what was
    skipped).  ``ValueError`` naming the model's class and the registered types when the model
    has no GEMM module to quantize (none found, or only heads without ``include_head``), when
    ``model`` is itself a GEMM module (it cannot be swapped in place: wrap it), or when
    ``qcfg.attention`` is set and no module takes it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(qcfg, QuantConfig):
        raise TypeError(f"qcfg must be a QuantConfig, got {type(qcfg).__name__}")
    cls = type(model).__name__
    if _replaced_type(model) is not None or _gemm_type_of(model) is not None:
        raise ValueError(f"model ({cls}) is itself a GEMM module; quantize_model replaces "
                         f"submodules in place: pass a container, e.g. nn.Sequential(model)")
    if qcfg.attention is not None and not any(hasattr(m, "qk_quant") for m in model.modules()):
        raise ValueError(f"attention: {cls} has no attention module with a qk_quant hook "
                         "(explorer.train.model's Attention); its attention products cannot be "
                         "quantized, so attention must be None for it")
    head = _output_embeddings(model)
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    done: dict[int, nn.Module] = {}           # id(module met) -> what stands there now
    seen: set[int] = set()
    attention = 0
    shared = _SharedInputs()            # layers reading one activation quantize it once

    def visit(parent: nn.Module, prefix: str) -> None:
        nonlocal attention
        seen.add(id(parent))
        # _modules, not named_children(): that one lists a module held twice by one parent once.
        kids = [(n, c) for n, c in parent._modules.items() if c is not None]
        gemm_kids = set()
        for name, child in kids:
            g = _replaced_type(child) or _gemm_type_of(child)
            if g is None:
                continue
            gemm_kids.add(id(child))
            if id(child) not in done:
                full = prefix + name
                if isinstance(parent, nn.MultiheadAttention):
                    rep = _restore(child)
                    skipped.append((full, "nn.MultiheadAttention uses its weight directly"))
                elif (name in HEAD_NAMES or child is head) and not qcfg.include_head:
                    rep = _restore(child)
                    skipped.append((full, "classifier head (include_head=False)"))
                else:
                    rep = _install(child, g, qcfg, len(names))
                    rep._shared = shared
                    names.append(full)
                done[id(child)] = rep
            if done[id(child)] is not child:
                setattr(parent, name, done[id(child)])
        for name, child in kids:
            if id(child) not in gemm_kids and id(child) not in seen:
                visit(child, prefix + name + ".")
        if hasattr(parent, "qk_quant"):
            parent.qk_quant = None if qcfg.attention is None else _QKV(qcfg.attention, qcfg.seed)
            attention += qcfg.attention is not None

    visit(model, "")
    if not names:
        kinds = ", ".join(g.module_type for g in gemm_types())
        if skipped:
            raise ValueError(f"{cls} has no GEMM module to quantize: its only ones are "
                             f"{', '.join(f'{n} ({r})' for n, r in skipped)}; pass "
                             "include_head=True to quantize a classifier head")
        raise ValueError(f"{cls} has no GEMM module to quantize: none of its modules is of a "
                         f"registered GEMM type ({kinds}); register its GEMM modules' class "
                         "with explorer.train.qlinear.register_gemm")
    return QuantizedGemms(tuple(names), tuple(skipped), qcfg.computes_gemms, attention)


def _plain(q: QuantLinear) -> nn.Linear:
    lin = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(lin)
    lin.in_features, lin.out_features = q.in_features, q.out_features
    lin.weight, lin.bias = q.weight, q.bias
    return lin


def dequantize_model(model: nn.Module) -> nn.Module:
    """Reverse :func:`quantize_model`: every quantized GEMM module back to the module it replaced
    (a directly built QuantLinear becomes an ``nn.Linear``), same parameters; attention
    quantization off.  Returns ``model``."""
    restored: dict[int, nn.Module] = {}
    for _, parent in list(model.named_modules()):
        # _modules, not named_children(): a module held under two names is listed under both,
        # and restored once, so the two names share one module again
        for name, child in list(parent._modules.items()):
            if child is not None and _replaced_type(child) is not None:
                rep = restored.setdefault(id(child), _restore(child))
                if rep is not child:
                    setattr(parent, name, rep)
        if hasattr(parent, "qk_quant"):
            parent.qk_quant = None
    return model


def specialize_kernels(model: nn.Module) -> int:
    """Compile now the specialised fpformat kernels (format and mode as compile-time constants,
    several times faster per element than the generic ones) for every operand of the model's
    quantized GEMM modules, element and block formats alike, instead of after the first 64M
    elements of each.  For long runs (the trainer calls it for runs of 200 steps or more):
    compiled once per new (format, mode) pair and cached on disk: about a second for an element
    format, 10 to 30 seconds for a block format (MX formats the least, NVFP4 the most).
    Returns how many (format, rounding) pairs were specialised."""
    pairs = set()
    for m in model.modules():
        if isinstance(m, _QuantGemmMixin):
            for op in m._ops:
                if op is not None:
                    pairs.add((op.fmt, op.spec.rounding))
    for fmt, rounding in pairs:
        if isinstance(fmt, FloatFormat):
            specialize(fmt, rounding, saturate=True)
        elif isinstance(fmt, BlockFormat):
            fmt.specialize(rounding, saturate=True)
    return len(pairs)


def set_quant_step(model: nn.Module, step: int) -> None:
    """Tell every quantized GEMM module (QuantLinear, QuantGemm) the optimizer step (feeds the
    stochastic-rounding seeds)."""
    for m in model.modules():
        if isinstance(m, _QuantGemmMixin):
            m.step = step


def quant_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The delayed-scaling state of every quantized GEMM module (CPU tensors), keyed
    ``"<module name>:<target>:amax_history"`` and ``...:scale``: what a checkpoint must carry so
    that a resumed run scales exactly as an uninterrupted one.  Empty without delayed scaling."""
    out: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, _QuantGemmMixin):
            for t, st in m._delayed.items():
                out[f"{name}:{t}:amax_history"] = st.history.detach().cpu().clone()
                out[f"{name}:{t}:scale"] = st.scale.detach().cpu().clone()
    return out


def load_quant_state(model: nn.Module, state: dict) -> None:
    """Put :func:`quant_state`'s dict back.  ``ValueError`` naming the first key that is
    missing, unexpected or of the wrong shape (the model's config must match the saved one)."""
    if not isinstance(state, dict):
        raise ValueError(f"quant state: expected a dict, got {type(state).__name__}")
    expected = set()
    for name, m in model.named_modules():
        if isinstance(m, _QuantGemmMixin):
            for t, st in m._delayed.items():
                h, s = f"{name}:{t}:amax_history", f"{name}:{t}:scale"
                expected |= {h, s}
                if h not in state or s not in state:
                    raise ValueError(f"quant state: no delayed-scaling state for {name}:{t}")
                try:
                    st.load(state[h], state[s])
                except ValueError as e:
                    raise ValueError(f"quant state {name}:{t}: {e}") from None
    extra = sorted(set(state) - expected)
    if extra:
        raise ValueError(f"quant state: {extra[0]} belongs to no delayed-scaled GEMM input of "
                         "this model")
