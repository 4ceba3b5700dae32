"""Training-step cost of quantized models vs the unquantized model, side by side in one process.

Every model of a size starts from the same weights and trains on the same batch; the timed steps
are interleaved (one step of each model in turn, repeated) and the median of each is printed, so
machine load affects all alike.  A step is the trainer's: ``set_quant_step``, forward, loss,
backward, gradient clipping, AdamW (delayed-scaling recipes push their amax every step).  Not a
test.

Without ``--recipes``: Sun et al.'s default targets (fwd_w, dgrad_w, wgrad_x) in ``--format`` /
``--block``, one line per model size with the ratio quantized/unquantized (target <= 1.3x on
the CPU).  With ``--recipes``: one line per recipe and size with ms/step and the ratio to the
unquantized step.  A recipe with an accumulator or matrix-unit model is measured twice: with
the model (marked, excluded from the 1.5x bar; emulated GEMMs are orders of magnitude slower, so
``--unit-reps`` steps only, and a size is skipped when the step estimated from the previous size
exceeds ``--unit-limit-s``) and without it (the quantizers alone).  The last line names the
recipes (quantizers alone) over 1.5x and at which sizes.

    python3 benchmarks/bench_train_step.py [--format e4m3] [--block none] [--threads 1]
    python3 benchmarks/bench_train_step.py --recipes all [--threads 1]
    python3 benchmarks/bench_train_step.py --recipes sun2025,te-nvfp4,my.toml
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import NamedTuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from explorer.train.model import Decoder, ModelConfig, param_count  # noqa: E402
from explorer.train.qlinear import (  # noqa: E402
    QuantConfig,
    quantize_model,
    set_quant_step,
    specialize_kernels,
)
from explorer.train.recipes import Recipe, get_recipe, preset_names  # noqa: E402
from explorer.train.trainer import TrainConfig, set_threads  # noqa: E402

#: A recipe's quantizers alone may cost at most this many unquantized steps (issue 16).
BAR = 1.5
#: Untimed steps of every model before the timed ones (numba compilation, allocator).
WARMUP = 3
GRAD_CLIP = TrainConfig.__dataclass_fields__["grad_clip"].default


class Variant(NamedTuple):
    """One model of the comparison.

    label: what the output calls it.
    qcfg: its QuantConfig (None: the unquantized model).
    unit: it runs an accumulator or matrix-unit model (measured with fewer steps, excluded from
        the bar).
    """

    label: str
    qcfg: QuantConfig | None
    unit: bool = False


class Timing(NamedTuple):
    """One variant at one model size: median seconds per step over ``steps`` timed steps, or
    ``skipped`` (the reason) when it was not run."""

    variant: Variant
    size: tuple[int, int]
    median_s: float | None
    steps: int
    skipped: str | None = None


def recipe_variants(recipes: list[Recipe], seed: int = 0) -> list[Variant]:
    """The variants of ``recipes``: one per recipe, and for a recipe with an accumulator or
    matrix-unit model a second one with the quantizers alone."""
    out = []
    for r in recipes:
        if r.accumulator is None and r.matrix_unit is None:
            out.append(Variant(r.name, r.quant_config(seed)))
            continue
        model = (f"accumulator {r.accumulator}" if r.accumulator is not None
                 else f"matrix unit {r.matrix_unit}"
                 + (f", promotion {r.promotion}" if r.promotion else ""))
        out.append(Variant(f"{r.name} [{model}]", r.quant_config(seed), unit=True))
        out.append(Variant(f"{r.name} (quantizers only)", r.quantizers_only().quant_config(seed)))
    return out


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"2x64,4x128"`` -> ``[(2, 64), (4, 128)]`` (layers, d_model); ``ValueError`` naming
    ``--sizes`` otherwise."""
    out = []
    for s in text.split(","):
        parts = s.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"--sizes: expected LAYERSxD_MODEL items like 4x128, got {s!r}")
        out.append((int(parts[0]), int(parts[1])))
    return out


def parse_recipes(text: str) -> list[Recipe]:
    """``"all"`` (every preset) or a comma list of preset names and ``.toml`` paths."""
    names = preset_names() if text.strip() == "all" else [n.strip() for n in text.split(",")]
    if not names or any(not n for n in names):
        raise ValueError(f"--recipes: expected 'all' or a comma list of recipes, got {text!r}")
    recipes = [get_recipe(n) for n in names]
    seen = [r.name for r in recipes]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise ValueError(f"--recipes: recipe {twice[0]!r} named twice (its lines would clash)")
    return recipes


def train_step(model: Decoder, opt: torch.optim.Optimizer, step: int, x: torch.Tensor,
               y: torch.Tensor) -> float:
    """One training step as the trainer takes it; returns its wall time in seconds."""
    t = time.perf_counter()
    set_quant_step(model, step)
    loss = model.loss(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()
    return time.perf_counter() - t


def measure_size(variants: list[Variant], size: tuple[int, int], args: argparse.Namespace,
                 unit_estimates: dict[str, float]) -> list[Timing]:
    """Time every variant (the first is the unquantized model) at one model size.

    ``unit_estimates``: seconds per step each unit variant is expected to take at this size
    (from the previous size); a unit variant expected over ``args.unit_limit_s`` is skipped."""
    layers, d = size
    cfg = ModelConfig(layers=layers, d_model=d, max_seq_len=args.seq_len)
    torch.manual_seed(0)
    base = Decoder(cfg)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len), generator=gen)
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len), generator=gen)
    models, skipped = {}, {}
    for v in variants:
        est = unit_estimates.get(v.label)
        if v.unit and est is not None and est > args.unit_limit_s:
            skipped[v.label] = (f"skipped: about {est:.3g} s/step expected from the previous "
                                f"size (> --unit-limit-s {args.unit_limit_s:g})")
            continue
        m = Decoder(cfg)
        m.load_state_dict(base.state_dict())
        if v.qcfg is not None:
            quantize_model(m, v.qcfg)
            specialize_kernels(m)               # what the trainer does for long runs
        models[v.label] = [m, torch.optim.AdamW(m.parameters(), lr=1e-3), 0]

    def step(v: Variant) -> float:
        entry = models[v.label]
        dt = train_step(entry[0], entry[1], entry[2], x, y)
        entry[2] += 1
        return dt

    for v in variants:
        if v.label in models:
            for _ in range(1 if v.unit else WARMUP):
                step(v)
    times: dict[str, list[float]] = {v.label: [] for v in variants}
    for i in range(args.reps):
        for v in variants:
            if v.label in models and (not v.unit or i < args.unit_reps):
                times[v.label].append(step(v))
    return [Timing(v, size, statistics.median(times[v.label]) if times[v.label] else None,
                   len(times[v.label]), skipped.get(v.label)) for v in variants]


def over_bar(timings: list[Timing], bar: float = BAR) -> list[tuple[str, tuple[int, int], float]]:
    """``(label, size, ratio)`` of every measured non-unit variant whose median step exceeds
    ``bar`` times the unquantized step (the timing with ``qcfg`` None) of its size."""
    plain = {t.size: t.median_s for t in timings if t.variant.qcfg is None}
    return [(t.variant.label, t.size, t.median_s / plain[t.size]) for t in timings
            if t.variant.qcfg is not None and not t.variant.unit and t.median_s is not None
            and t.median_s > bar * plain[t.size]]


def print_size(timings: list[Timing], cfg: ModelConfig) -> None:
    plain = next(t for t in timings if t.variant.qcfg is None)
    layers, d = plain.size
    print(f"L={layers} d={d} N={param_count(cfg):>9,}: unquantized "
          f"{plain.median_s * 1e3:10.2f} ms/step", flush=True)
    width = max(len(t.variant.label) for t in timings)
    for t in timings:
        if t.variant.qcfg is None:
            continue
        if t.median_s is None:
            print(f"  {t.variant.label:<{width}}  {t.skipped}", flush=True)
            continue
        note = ""
        if t.variant.unit:
            note = f"  (model of the GEMM: not held to {BAR}x; median of {t.steps})"
        elif t.median_s > BAR * plain.median_s:
            note = f"  over {BAR}x"
        print(f"  {t.variant.label:<{width}}  {t.median_s * 1e3:10.2f} ms/step  "
              f"{t.median_s / plain.median_s:8.3f}x{note}", flush=True)


def run_recipes(args: argparse.Namespace, recipes: list[Recipe],
                sizes: list[tuple[int, int]]) -> list[Timing]:
    variants = [Variant("unquantized", None)] + recipe_variants(recipes)
    print(f"recipes {', '.join(r.name for r in recipes)}; {args.batch}x{args.seq_len} "
          f"tokens/step, {args.threads} thread(s), median of {args.reps} interleaved steps "
          f"after {WARMUP} untimed (accumulator/matrix-unit models: "
          f"{min(args.unit_reps, args.reps)} after 1)", flush=True)
    timings: list[Timing] = []
    estimates: dict[str, float] = {}
    prev_n = None
    for size in sizes:
        cfg = ModelConfig(layers=size[0], d_model=size[1], max_seq_len=args.seq_len)
        n = param_count(cfg)
        # An emulated GEMM costs about the same per multiply-add at every size, so its step
        # scales with N (GEMM weights) at a fixed number of tokens.
        estimates = {label: s * n / prev_n for label, s in estimates.items()}
        here = measure_size(variants, size, args, estimates)
        print_size(here, cfg)
        timings += here
        # a skipped model keeps its estimate, so a larger size is skipped too
        estimates = {t.variant.label: t.median_s if t.median_s is not None
                     else estimates[t.variant.label] for t in here if t.variant.unit}
        prev_n = n
    by_label: dict[str, list[str]] = {}
    for label, (layers, d), r in over_bar(timings):
        by_label.setdefault(label, []).append(f"{layers}x{d} ({r:.2f}x)")
    print(f"over {BAR}x (quantizers only; accumulator/matrix-unit models excluded): "
          + ("; ".join(f"{label} at {', '.join(at)}" for label, at in by_label.items())
             or "none"), flush=True)
    return timings


def run_format(args: argparse.Namespace, sizes: list[tuple[int, int]]) -> None:
    fmt, block = args.format or "e4m3", args.block or "none"
    print(f"format {fmt} block {block}, default targets (fwd_w, dgrad_w, wgrad_x), "
          f"{args.batch}x{args.seq_len} tokens/step, {args.threads} thread(s), "
          f"median of {args.reps}", flush=True)
    variants = [Variant("unquantized", None), Variant("quantized", QuantConfig(fmt=fmt,
                                                                               block=block))]
    for size in sizes:
        plain, quant = measure_size(variants, size, args, {})
        cfg = ModelConfig(layers=size[0], d_model=size[1], max_seq_len=args.seq_len)
        mp_, mq = plain.median_s, quant.median_s
        print(f"L={size[0]} d={size[1]} N={param_count(cfg):>9,}: unquantized {mp_ * 1e3:8.2f} "
              f"ms  quantized {mq * 1e3:8.2f} ms  ratio {mq / mp_:.3f}x  "
              f"({args.batch * args.seq_len / mq:,.0f} tok/s quantized)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default=None,
                    help="'all' (every preset) or a comma list of preset names / .toml paths")
    ap.add_argument("--format", default=None, help="without --recipes: element or block format "
                    "of the default targets (default e4m3)")
    ap.add_argument("--block", default=None,
                    help="without --recipes: int, channel, tensor or none (default none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15, help="timed steps per model")
    ap.add_argument("--unit-reps", type=int, default=1,
                    help="timed steps of a model with an accumulator or matrix unit")
    ap.add_argument("--unit-limit-s", type=float, default=120.0,
                    help="skip an accumulator/matrix-unit model at a size whose step is "
                    "expected (from the previous size) to take longer than this (seconds)")
    ap.add_argument("--sizes", default="2x64,4x128,4x256", help="LAYERSxD_MODEL list")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args(argv)
    try:
        for name, low in (("threads", 1), ("reps", 1), ("unit_reps", 1), ("seq_len", 1),
                          ("batch", 1)):
            if getattr(a, name) < low:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= {low}, got "
                                 f"{getattr(a, name)}")
        if not a.unit_limit_s > 0:
            raise ValueError(f"--unit-limit-s: must be > 0 seconds, got {a.unit_limit_s}")
        if a.recipes is not None and (a.format is not None or a.block is not None):
            raise ValueError("--format/--block: not with --recipes (a recipe names its formats)")
        sizes = parse_sizes(a.sizes)
        for layers, d in sizes:
            ModelConfig(layers=layers, d_model=d, max_seq_len=a.seq_len)
        recipes = parse_recipes(a.recipes) if a.recipes is not None else None
        if recipes is None:
            QuantConfig(fmt=a.format or "e4m3", block=a.block or "none")
    except (ValueError, FileNotFoundError) as e:
        print(f"bench_train_step: error: {e}", file=sys.stderr)
        return 2
    set_threads(a.threads)
    if recipes is None:
        run_format(a, sizes)
    else:
        run_recipes(a, recipes, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
