"""``fpx train``: one quantized (or baseline) training run, recorded in a results database."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train one small LLaMA-style model with quantized GEMM inputs",
        description="Train one LLaMA-style decoder on byte-level tokens (default corpus: this "
                    "Python's standard library sources) with chosen GEMM inputs quantized, and "
                    "record it in a results database. A run already finished in --db is not "
                    "trained again.")
    p.add_argument("--layers", type=int, required=True, help="transformer blocks")
    p.add_argument("--d-model", type=int, required=True,
                   help="residual width (heads of <= 64 dims)")
    p.add_argument("--tokens", type=int, required=True, help="training tokens D")
    p.add_argument("--format", default="none",
                   help="element format (e2m3, float8_e4m3fn, mxfp4, ...) or 'none'")
    p.add_argument("--recipe", default=None, metavar="NAME|FILE.toml",
                   help="a preset training recipe (fpx recipes lists them: te-nvfp4, "
                        "deepseek-v3, ...) or a recipe TOML file (docs/recipes.md): it sets "
                        "every GEMM input's format, blocks and rounding, the Hadamard "
                        "transforms and the accumulator, so --format, --block, --targets, "
                        "--rounding, --accumulator and --matrix-unit(-format) are not given "
                        "with it")
    # None defaults: an option the user gave can be told from one left alone (a quantization
    # option given with --format none has no effect, and the user is told so).
    p.add_argument("--block", default=None,
                   help="block size: an int, 'channel', 'tensor' or 'none' (default: channel)")
    p.add_argument("--targets", default=None,
                   help="comma list of GEMM inputs: fwd_x,fwd_w,dgrad_dy,dgrad_w,wgrad_dy,"
                        "wgrad_x; 'default' = fwd_w,dgrad_w,wgrad_x (the default); 'all'")
    p.add_argument("--rounding", default=None,
                   help="rne, rna, rtz, rtp, rtn, rto or sr (default rne)")
    p.add_argument("--seed", type=int, default=0,
                   help="initialisation, batch order and stochastic-rounding seed, >= 0 "
                        "(default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--db", default=None, help="results database (SQLite); default: none")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: by size)")
    p.add_argument("--eval-tokens", type=int, default=32768,
                   help="held-out tokens for validation loss")
    p.add_argument("--corpus", nargs="*", default=[],
                   help="text files/folders (default: stdlib sources)")
    p.add_argument("--max-bytes", type=int, default=8 * 2**20, help="corpus size cap in bytes")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16 autocast (CUDA)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch and numba)")
    p.add_argument("--ckpt-dir", default=None, help="checkpoint folder (default: <db>.ckpt)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--ptq", default="", help="after training, PTQ the checkpoints to these comma-"
                                             "separated formats (needs --db)")
    p.add_argument("--ptq-block", default=None, help="block for --ptq (default channel)")
    p.add_argument("--ptq-method", default=None, choices=["rtn", "gptq"],
                   help="PTQ method for --ptq (default rtn)")
    p.add_argument("--accumulator", default=None,
                   help="run every quantized layer's GEMMs through an emulated accumulator, e.g. "
                        "e8m13/rtz or e8m13/rtz/chunk128 (slow, exact; small models)")
    p.add_argument("--matrix-unit", default=None, metavar="UNIT",
                   help="run every quantized layer's GEMMs (forward and both backward) through a "
                        "matrix unit: a preset (h100, a100, b200, ...) or a spec like "
                        "fma16/x2/rtz; inputs rounded into --matrix-unit-format, float32 output "
                        "(slow, bit-exact; small models)")
    p.add_argument("--matrix-unit-format", default=None, metavar="IN",
                   help="the matrix unit's input format (default float16; e.g. bfloat16, "
                        "float8_e4m3fn)")
    p.add_argument("--promotion", default=None, type=int, metavar="N",
                   help="with --matrix-unit: promote the unit's partial sums into float32 every "
                        "N products, the inputs' block scales applied there (the unit reads "
                        "their element values; DeepSeek-V3 on Hopper: 128)")
    p.add_argument("--capture", default=None, metavar="OUT.npz",
                   help="after training, save the weights, activations and output gradients of "
                        "every linear layer on a held-out batch (for fpx recommend --tensors)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


#: The options a recipe sets itself, with what it sets: refused beside --recipe.
RECIPE_SETS = (("format", "the format of every GEMM input"),
               ("block", "every GEMM input's blocks"),
               ("targets", "which GEMM inputs are quantized"),
               ("rounding", "every GEMM input's rounding"),
               ("accumulator", "the accumulator"),
               ("matrix_unit", "the GEMMs' arithmetic"),
               ("matrix_unit_format", "the GEMMs' arithmetic"),
               ("promotion", "the GEMMs' arithmetic"))


def _check_recipe_options(args: argparse.Namespace) -> None:
    """``ValueError`` naming the first option given beside ``--recipe`` that the recipe sets
    itself (``--format none``, the default, is not one)."""
    for name, what in RECIPE_SETS:
        value = getattr(args, name)
        if value is None or (name == "format" and value.lower() == "none"):
            continue
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"{flag} cannot be given with --recipe: the recipe sets {what}; drop "
                         f"{flag}, or change the recipe (fpx recipes {args.recipe} --toml > "
                         "my.toml, edit it, then --recipe my.toml)")


def _no_effect(args: argparse.Namespace) -> None:
    """Options that would do nothing in the chosen mode.

    Quantization options with ``--format none`` are a warning and are dropped from the run's
    identity (a baseline is one run, whatever a loop over formats passes along with it);
    quantization options beside ``--recipe`` are an error (:func:`_check_recipe_options`: the
    recipe sets them, so they would be ignored); ``--ptq-block``/``--ptq-method`` without
    ``--ptq`` are an error, since the PTQ they ask for would silently not happen."""
    if args.recipe is not None:
        _check_recipe_options(args)
    elif args.format.lower() == "none":
        given = [f"--{n}" for n in ("block", "targets", "rounding")
                 if getattr(args, n) is not None]
        if given:
            print(f"fpx train: warning: {', '.join(given)} "
                  f"{'has' if len(given) == 1 else 'have'} no effect with --format none "
                  "(nothing is quantized); ignored", file=sys.stderr)
            args.block = args.targets = args.rounding = None
    if not args.ptq:
        given = [o for o, v in (("--ptq-block", args.ptq_block), ("--ptq-method", args.ptq_method))
                 if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} need --ptq FORMATS (the formats the "
                             "checkpoints are quantized to); without it no PTQ runs")


def run(args: argparse.Namespace) -> int:
    # explorer.train imports torch: loaded only when this command runs, not for `fpx --help`.
    from ..train.data import CorpusSpec
    from ..train.pipeline import train_ptq_capture
    from ..train.ptq import PTQSpec
    from ..train.qlinear import TARGETS, OperandSpec, QuantConfig
    from ..train.recipes import get_recipe
    from ..train.trainer import TrainConfig
    # Every check below runs before train_ptq_capture writes anything (run row, checkpoints).
    _no_effect(args)
    if args.recipe is not None:
        q = get_recipe(args.recipe).quant_config(args.seed)
    else:
        block = "channel" if args.block is None else args.block
        targets = "default" if args.targets is None else args.targets
        rounding = "rne" if args.rounding is None else args.rounding
        q = QuantConfig(fmt=None if args.format.lower() == "none" else args.format, block=block,
                        rounding=rounding, targets=targets, seed=args.seed,
                        accumulator=args.accumulator, matrix_unit=args.matrix_unit,
                        matrix_unit_format=args.matrix_unit_format or "float16",
                        promotion=args.promotion)
        if args.matrix_unit_format is not None and args.matrix_unit is None:
            raise ValueError("--matrix-unit-format needs --matrix-unit (the unit whose input "
                             "format it is)")
        if q.fmt is not None:
            OperandSpec(q.fmt, q.block, q.rounding).build()      # unknown format -> error now
    cfg = TrainConfig(layers=args.layers, d_model=args.d_model, tokens=args.tokens, quant=q,
                      seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      eval_tokens=args.eval_tokens, precision=args.precision,
                      corpus=CorpusSpec(paths=tuple(args.corpus), max_bytes=args.max_bytes))
    ptq_specs = []
    if args.ptq:
        if args.db is None:
            raise ValueError("--ptq needs --db (PTQ results are stored beside the run)")
        ptq_specs = [PTQSpec(f.strip(), "channel" if args.ptq_block is None else args.ptq_block,
                             args.ptq_method or "rtn")
                     for f in args.ptq.split(",") if f.strip()]
        if not ptq_specs:
            raise ValueError(f"--ptq: no format in {args.ptq!r}; give comma-separated formats, "
                             "e.g. --ptq e2m1,e4m3")
    outcome = train_ptq_capture(cfg, db=args.db, device=args.device, ckpt_dir=args.ckpt_dir,
                                progress=not args.no_progress, compile=args.compile,
                                threads=args.threads, ptq=ptq_specs,
                                capture=args.capture or None)
    r = outcome.run
    # A recipe run's inputs each have their own spec: no one block; its targets are the GEMM
    # inputs it quantizes.
    quantized = [t for t in TARGETS if q.spec(t) is not None]
    fmt = args.format if q.recipe is None else f"recipe:{q.recipe}"
    out = {"key": r.key, "val_loss": r.val_loss, "params": r.params, "tokens": r.tokens,
           "format": fmt,
           "block": None if q.fmt is None or q.block is None else str(q.block),
           "targets": list(q.targets) if q.fmt else quantized if q.recipe else [],
           "skipped": r.skipped, "curve": r.curve,
           "wall_s": r.wall_s, "tokens_per_s": r.tokens_per_s, "ptq": list(outcome.ptq)}
    if q.recipe is not None:
        out["recipe"] = q.recipe
        out["recipe_hash"] = q.recipe_hash
    if q.accumulator is not None:
        out["accumulator"] = q.accumulator
    if q.matrix_unit is not None:
        out["matrix_unit"] = q.matrix_unit
        out["matrix_unit_format"] = q.matrix_unit_format
    if q.promotion is not None:
        out["promotion"] = q.promotion
    if args.json:
        print(json.dumps(out))
    else:
        state = "already in the database (not retrained)" if r.skipped else "trained"
        print(f"run {r.key}: {state}")
        if q.recipe is not None:
            what = (f"recipe {q.recipe} (hash {q.recipe_hash}; quantizes "
                    f"{','.join(quantized) or 'no GEMM input'})")
        else:
            what = f"format {args.format}" + (f" (block {q.block}, {','.join(q.targets)})"
                                              if q.fmt else "")
        print(f"N = {r.params} non-embedding GEMM parameters, D = {r.tokens} tokens, {what}")
        if q.accumulator is not None:
            print(f"GEMMs through the emulated accumulator {q.accumulator}")
        if q.matrix_unit is not None:
            print(f"GEMMs through matrix unit {q.matrix_unit} ({q.matrix_unit_format} inputs, "
                  "float32 output)" + (f", promoted into float32 every {q.promotion} products "
                                       "with the block scales" if q.promotion else ""))
        print(f"validation loss {r.val_loss:.4f} nats/token; {r.tokens_per_s:.0f} tok/s; "
              f"wall {r.wall_s:.1f} s")
        for row in outcome.ptq:
            print(f"  PTQ {row['fmt']} {row['method']} @ {row['ckpt_tokens']} tokens: "
                  f"{row['val_loss_before']:.4f} -> {row['val_loss_after']:.4f}")
    return 0
