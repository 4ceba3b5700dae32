"""``fpx sweep``: run a grid of training runs (and PTQ) from a TOML spec into a results database."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep", help="run a grid of training runs from a TOML spec (resumable)",
        description="Run every run of a TOML sweep spec (see specs/microsweep.toml) that the "
                    "database does not already hold finished; interrupted runs resume from their "
                    "checkpoints. Safe to kill and restart: SIGINT/SIGTERM (Ctrl-C, kill PID) "
                    "makes the workers save a resume point and exit (exit code 130); a second "
                    "signal stops at once; workers die with the sweep even on kill -9. A run "
                    "another live process is training is skipped (exit code 1).")
    p.add_argument("spec", help="TOML sweep spec")
    p.add_argument("--db", required=True, help="results database (SQLite)")
    p.add_argument("--workers", type=int, default=1, help="parallel workers (default 1)")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local processes (default) or a Ray cluster ($RAY_ADDRESS or a local one)")
    p.add_argument("--device", default="cpu", help="device for every run (default cpu)")
    p.add_argument("--ckpt-dir", default=None, help="checkpoint folder (default: <db>.ckpt)")
    p.add_argument("--max-runs", type=int, default=None,
                   help="run at most this many pending runs, an integer >= 1 (default: all)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would run, run nothing (the database is only read)")
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    # explorer.train imports torch: loaded only when this command runs, not for `fpx --help`.
    from ..train.sweep import check_max_runs, parse_spec, pending_runs, run_sweep
    spec = parse_spec(args.spec)
    check_max_runs(args.max_runs)
    if args.workers < 1:
        raise ValueError(f"--workers: must be an integer >= 1, got {args.workers}")
    if args.dry_run:
        # Read-only: a dry run neither creates the database nor changes its tables or journal.
        todo, done = pending_runs(spec, args.db)
        if args.max_runs is not None:
            todo = todo[:args.max_runs]
        rows = [{"key": k, "layers": c.layers, "d_model": c.d_model, "tokens": c.tokens,
                 "format": c.quant.fmt or "none", "block": c.quant.block if c.quant.fmt else None,
                 "recipe": c.quant.recipe, "ptq": len(p)} for c, k, p in todo]
        if args.json:
            print(json.dumps({"total": len(spec.runs), "already_done": done, "pending": rows}))
        else:
            print(f"{spec.name}: {len(spec.runs)} runs, {done} done, {len(rows)} to run")
            for r in rows:
                print(f"  {r['key']}  L={r['layers']} d={r['d_model']} D={r['tokens']} "
                      + (f"recipe={r['recipe']}" if r["recipe"] else
                         f"{r['format']} block={r['block']}"))
        return 0
    rep = run_sweep(spec, args.db, workers=args.workers, backend=args.backend, device=args.device,
                    ckpt_dir=args.ckpt_dir, progress=not args.no_progress, max_runs=args.max_runs)
    summary = {"total": rep.total, "already_done": rep.already_done, "ran": rep.ran,
               "ptq_rows": rep.ptq_rows, "failed": len(rep.failed), "busy": len(rep.busy),
               "interrupted": rep.interrupted, "db": args.db}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{spec.name}: {rep.total} runs; {rep.already_done} were already done, ran {rep.ran} "
              f"now; {rep.ptq_rows} PTQ rows written; results in {args.db}")
    if rep.interrupted:
        left = rep.total - rep.already_done - rep.ran - len(rep.failed) - len(rep.busy)
        print(f"stopped by a signal: {left} run(s) left (interrupted ones saved a resume point); "
              f"run the same command again to resume", file=sys.stderr)
        return 130
    if rep.failed:
        print(f"{len(rep.failed)} run(s) failed (status 'failed' in the database; rerun to retry); "
              f"first error: {rep.failed[0]}", file=sys.stderr)
        return 1
    if rep.busy:
        # Not done, so not success: a script chaining `fpx sweep && fpx fit` must not fit yet.
        print(f"{len(rep.busy)} run(s) skipped: another live process is training them; run the "
              f"same command again once it is done. First: {rep.busy[0]}", file=sys.stderr)
        return 1
    return 0
