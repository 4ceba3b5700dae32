"""Sweeps: a TOML spec -> a grid of training runs (+ PTQ of their checkpoints), run by local
worker processes or on a Ray cluster, resumable with nothing lost or repeated.

Spec (see specs/microsweep.toml and docs/training.md)::

    name = "micro"
    [grid]                       # the Cartesian product of these lists
    model = [[2, 32], [2, 64]]   # [layers, d_model]
    tokens = [131072, 262144]
    format = ["none", "e2m3", "e3m2"]
    block = [32, "channel"]      # ignored (collapsed) for format "none"
    targets = ["default"]        # comma lists of GEMM inputs, or "default"/"all"
    rounding = ["rne"]
    seed = [0]
    [train]                      # any other TrainConfig field, fixed for all runs
    seq_len = 64
    [corpus]                     # CorpusSpec fields
    max_bytes = 4194304
    [ptq]                        # optional: PTQ of every checkpoint of the selected runs
    formats = ["e2m1", "e3m2"]
    blocks = ["channel"]
    methods = ["rtn"]
    runs = "unquantized"         # or "all"
    [run]
    threads = 1                  # CPU threads per worker

Resuming: a run whose key is finished in the database is not trained again; a run that was
interrupted resumes from its last checkpoint; PTQ rows already present are skipped.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..progress import Progress
from . import store
from .data import CorpusSpec
from .ptq import PTQSpec
from .qlinear import QuantConfig, parse_block, parse_targets

GRID_KEYS = {"model", "tokens", "format", "block", "targets", "rounding", "seed"}


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep: the run configs (deduplicated), PTQ specs and which runs get PTQ."""

    name: str
    runs: tuple  # tuple[TrainConfig, ...]
    ptq: tuple[PTQSpec, ...] = ()
    ptq_runs: str = "unquantized"
    threads: int = 1

    def wants_ptq(self, cfg) -> bool:
        return bool(self.ptq) and (self.ptq_runs == "all" or not cfg.quant.active)


def _as_list(v, name: str) -> list:
    if not isinstance(v, list) or not v:
        raise ValueError(f"spec [grid].{name} must be a non-empty list, got {v!r}")
    return v


def parse_spec(spec: dict | str | Path) -> SweepSpec:
    """Parse a TOML file path or an already-loaded dict into a :class:`SweepSpec`."""
    from .trainer import TrainConfig
    if not isinstance(spec, dict):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"sweep spec not found: {path}")
        try:
            spec = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"sweep spec {path}: {exc}") from None
    unknown = set(spec) - {"name", "grid", "train", "corpus", "ptq", "run"}
    if unknown:
        raise ValueError(f"spec: unknown section(s) {sorted(unknown)}")
    grid = spec.get("grid") or {}
    bad = set(grid) - GRID_KEYS
    if bad:
        raise ValueError(f"spec [grid]: unknown key(s) {sorted(bad)}; allowed: {sorted(GRID_KEYS)}")
    models = _as_list(grid.get("model"), "model")
    for m in models:
        if not (isinstance(m, list) and len(m) == 2 and all(isinstance(v, int) for v in m)):
            raise ValueError(f"spec [grid].model entries must be [layers, d_model], got {m!r}")
    tokens = _as_list(grid.get("tokens"), "tokens")
    formats = _as_list(grid.get("format", ["none"]), "format")
    blocks = [parse_block(b) for b in _as_list(grid.get("block", ["channel"]), "block")]
    targets = [parse_targets(t) for t in _as_list(grid.get("targets", ["default"]), "targets")]
    roundings = _as_list(grid.get("rounding", ["rne"]), "rounding")
    seeds = _as_list(grid.get("seed", [0]), "seed")
    train_kw = dict(spec.get("train") or {})
    allowed = {f.name for f in fields(TrainConfig)} - {"layers", "d_model", "tokens", "quant", "seed", "corpus"}
    bad = set(train_kw) - allowed
    if bad:
        raise ValueError(f"spec [train]: unknown key(s) {sorted(bad)}")
    for k in ("betas", "ckpt_fracs"):
        if k in train_kw:
            train_kw[k] = tuple(train_kw[k])
    corpus_kw = dict(spec.get("corpus") or {})
    if "paths" in corpus_kw:
        corpus_kw["paths"] = tuple(corpus_kw["paths"])
    try:
        corpus = CorpusSpec(**corpus_kw)
    except TypeError as exc:
        raise ValueError(f"spec [corpus]: {exc}") from None
    runs, seen = [], set()
    for (layers, d), D, fmt, blk, tg, rnd, seed in itertools.product(
            models, tokens, formats, blocks, targets, roundings, seeds):
        if str(fmt).lower() == "none":
            q = QuantConfig()
        else:
            q = QuantConfig(fmt=fmt, block=blk, rounding=rnd, targets=tg, seed=seed)
        cfg = TrainConfig(layers=layers, d_model=d, tokens=int(D), quant=q, seed=seed, corpus=corpus, **train_kw)
        ident = repr(cfg.to_dict())
        if ident not in seen:
            seen.add(ident)
            runs.append(cfg)
    p = spec.get("ptq") or {}
    ptq = tuple(PTQSpec(f, b, m) for f in p.get("formats", []) for b in p.get("blocks", ["channel"])
                for m in p.get("methods", ["rtn"]))
    ptq_runs = p.get("runs", "unquantized")
    if ptq_runs not in ("unquantized", "all"):
        raise ValueError(f"spec [ptq].runs must be 'unquantized' or 'all', got {ptq_runs!r}")
    threads = int((spec.get("run") or {}).get("threads", 1))
    runs.sort(key=lambda c: (c.tokens, c.layers * c.d_model ** 2))   # small, short runs first
    return SweepSpec(name=str(spec.get("name", "sweep")), runs=tuple(runs), ptq=ptq, ptq_runs=ptq_runs,
                     threads=threads)


def _job(cfg_dict: dict, db: str, ckpt_dir: str | None, threads: int, ptq: list, device: str,
         cache_dir: str | None) -> tuple[str, float, int]:
    """One unit of work (runs in a worker process): train (or skip) then PTQ what is missing."""
    from .ptq import PTQSpec, ptq_run
    from .trainer import TrainConfig, train
    cfg = TrainConfig.from_dict(cfg_dict)
    try:
        r = train(cfg, db=db, device=device, ckpt_dir=ckpt_dir, progress=False, threads=threads,
                  cache_dir=cache_dir)
        n = 0
        if ptq:
            n = len(ptq_run(db, r.key, [PTQSpec(*p) for p in ptq], ckpt_dir=ckpt_dir, device="cpu",
                            cache_dir=cache_dir))
    except Exception as exc:          # recorded as 'failed' by train(); the sweep goes on
        return "", float("nan"), f"{type(exc).__name__}: {exc}"
    return r.key, r.val_loss, n


@dataclass
class SweepReport:
    """What :func:`run_sweep` did: counts of runs total / already done / run now, PTQ rows."""

    total: int
    already_done: int
    ran: int
    ptq_rows: int
    results: list = field(default_factory=list)
    failed: list = field(default_factory=list)   # error messages of runs that raised


def pending_runs(spec: SweepSpec, db: str | Path, cache_dir=None) -> tuple[list, int]:
    """(runs still to do as (cfg, key, ptq specs) tuples, number already complete)."""
    from .data import load_corpus
    from .trainer import run_identity
    finished = store.finished_keys(db)
    todo, done = [], 0
    corpora: dict = {}
    for cfg in spec.runs:
        if cfg.corpus not in corpora:
            corpora[cfg.corpus] = load_corpus(cfg.corpus, None, cache_dir)
        _, key = run_identity(cfg, corpora[cfg.corpus], "bytes")
        ptq = [(p.fmt, p.block, p.method) for p in spec.ptq] if spec.wants_ptq(cfg) else []
        missing_ptq = False
        if ptq and key in finished:
            have = store.ptq_done(db, key)
            fracs = len({max(int(round(cfg.steps * f)), 1) for f in cfg.ckpt_fracs})
            missing_ptq = len(have) < fracs * len(ptq)
        if key in finished and not missing_ptq:
            done += 1
        else:
            todo.append((cfg, key, ptq))
    return todo, done


def run_sweep(spec: SweepSpec | dict | str | Path, db: str | Path, *, workers: int = 1,
              backend: str = "local", device: str = "cpu", ckpt_dir: str | Path | None = None,
              progress: bool = True, cache_dir: str | Path | None = None,
              max_runs: int | None = None) -> SweepReport:
    """Run every pending run of ``spec`` into ``db``.

    workers: parallel worker processes (local) or concurrent tasks (ray).
    backend: ``"local"`` (multiprocessing, spawn) or ``"ray"`` (``ray.init()`` joins the
        cluster named by ``$RAY_ADDRESS`` or starts a local one).
    max_runs: do at most this many pending runs (a slice of the sweep), then stop.
    """
    if not isinstance(spec, SweepSpec):
        spec = parse_spec(spec)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("backend 'ray' needs the ray package: pip install 'fpx-explorer[ray]'") from None
    db = str(db)
    store.connect(db).close()
    todo, done = pending_runs(spec, db, cache_dir)
    if max_runs is not None:
        todo = todo[:max_runs]
    ck = None if ckpt_dir is None else str(ckpt_dir)
    cd = None if cache_dir is None else str(cache_dir)
    jobs = [(cfg.to_dict(), db, ck, spec.threads, ptq, device, cd) for cfg, _, ptq in todo]
    report = SweepReport(total=len(spec.runs), already_done=done, ran=0, ptq_rows=0)
    with Progress(len(jobs), f"sweep {spec.name}", unit="run", enabled=progress) as bar:
        def collect(res):
            key, vl, n = res
            if isinstance(n, str):
                report.failed.append(n)
                bar.update(1, failed=len(report.failed))
                return
            report.ran += 1
            report.ptq_rows += n
            report.results.append({"key": key, "val_loss": vl, "ptq_rows": n})
            bar.update(1, last=f"{vl:.3f}")
        if not jobs:
            pass                       # everything already in the database
        elif backend == "ray":
            _run_ray(jobs, workers, collect)
        elif workers == 1:
            for j in jobs:
                collect(_job(*j))
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, maxtasksperchild=8) as pool:
                for res in pool.imap_unordered(_star, jobs, chunksize=1):
                    collect(res)
    return report


def _star(args):
    return _job(*args)


def _run_ray(jobs: list, workers: int, collect) -> None:
    import ray
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True,
                 include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(_job)
    pending, queue = [], list(jobs)
    while queue or pending:
        while queue and len(pending) < workers:
            pending.append(remote.remote(*queue.pop(0)))
        ready, pending = ray.wait(pending, num_returns=1)
        collect(ray.get(ready[0]))
