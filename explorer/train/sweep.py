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

``[[grid]]`` (an array of tables) instead of ``[grid]`` gives several grids whose runs are
pooled (duplicates removed), e.g. a full grid plus seed replicates of a few of its points.

Resuming: a run whose key is finished in the database is not trained again; a run that was
interrupted resumes from its last checkpoint; PTQ rows already present are skipped.

Stopping: SIGINT or SIGTERM to the sweep process (Ctrl-C, ``kill PID``) asks every worker to
save its resume point at the next training step and exit; queued runs are not started; the
database is left consistent (finished rows untouched, interrupted runs 'running' with a
``last.pt``).  A second signal stops at once (workers are terminated; the resume point is then
up to ``ckpt_every_s`` old).  With ``--backend ray`` pending tasks are cancelled and a Ray
instance the sweep started itself is shut down.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import multiprocessing as mp
import os
import signal
import threading
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..blocks import parse_block
from ..progress import Progress
from . import store
from .data import CorpusSpec, load_corpus
from .ptq import PTQSpec, ptq_run
from .qlinear import QuantConfig, parse_targets
from .trainer import (
    RunInterrupted,
    TrainConfig,
    run_identity,
    set_stop_event,
    stop_requested,
    train,
)

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


def _grid_runs(grid: dict, train_kw: dict, corpus: CorpusSpec) -> list:
    """The TrainConfigs of one ``[grid]`` table (Cartesian product of its lists)."""
    bad = set(grid) - GRID_KEYS
    if bad:
        raise ValueError(f"spec [grid]: unknown key(s) {sorted(bad)}; "
                         f"allowed: {sorted(GRID_KEYS)}")
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
    out = []
    for (layers, d), D, fmt, blk, tg, rnd, seed in itertools.product(
            models, tokens, formats, blocks, targets, roundings, seeds):
        if str(fmt).lower() == "none":
            q = QuantConfig()
        else:
            q = QuantConfig(fmt=fmt, block=blk, rounding=rnd, targets=tg, seed=seed)
        out.append(TrainConfig(layers=layers, d_model=d, tokens=int(D), quant=q, seed=seed,
                               corpus=corpus, **train_kw))
    return out


def parse_spec(spec: dict | str | Path) -> SweepSpec:
    """Parse a TOML file path or an already-loaded dict into a :class:`SweepSpec`."""
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
    grids = spec.get("grid")
    if isinstance(grids, dict):
        grids = [grids]
    if not isinstance(grids, list) or not grids or not all(isinstance(g, dict) for g in grids):
        raise ValueError("spec needs a [grid] table or [[grid]] tables")
    train_kw = dict(spec.get("train") or {})
    allowed = {f.name for f in fields(TrainConfig)} - {"layers", "d_model", "tokens", "quant",
                                                       "seed", "corpus"}
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
    for grid in grids:
        for cfg in _grid_runs(grid, train_kw, corpus):
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
    return SweepSpec(name=str(spec.get("name", "sweep")), runs=tuple(runs), ptq=ptq,
                     ptq_runs=ptq_runs, threads=threads)


def _job(cfg_dict: dict, db: str, ckpt_dir: str | None, threads: int, ptq: list, device: str,
         cache_dir: str | None) -> dict:
    """One unit of work (runs in a worker process): train (or skip) then PTQ what is missing.

    Returns ``{"key", "val_loss", "ptq_rows", "error", "interrupted"}``; never raises for a
    failing run (train() records it as 'failed') nor for a requested stop.
    """
    out = {"key": "", "val_loss": float("nan"), "ptq_rows": 0, "error": None, "interrupted": False}
    if stop_requested():               # queued before the stop: do not start it
        out["interrupted"] = True
        return out
    cfg = TrainConfig.from_dict(cfg_dict)
    try:
        r = train(cfg, db=db, device=device, ckpt_dir=ckpt_dir, progress=False, threads=threads,
                  cache_dir=cache_dir)
        out["key"], out["val_loss"] = r.key, r.val_loss
        if ptq and not stop_requested():
            out["ptq_rows"] = len(ptq_run(db, r.key, [PTQSpec(*p) for p in ptq], ckpt_dir=ckpt_dir,
                                          device="cpu", cache_dir=cache_dir))
    except RunInterrupted:
        out["interrupted"] = True
    except Exception as exc:          # recorded as 'failed' by train(); the sweep goes on
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


@dataclass
class SweepReport:
    """What :func:`run_sweep` did: counts of runs total / already done / run now, PTQ rows."""

    total: int
    already_done: int
    ran: int
    ptq_rows: int
    results: list = field(default_factory=list)
    failed: list = field(default_factory=list)   # error messages of runs that raised
    interrupted: bool = False    # stopped by SIGINT/SIGTERM before every pending run was done


def pending_runs(spec: SweepSpec, db: str | Path, cache_dir=None) -> tuple[list, int]:
    """(runs still to do as (cfg, key, ptq specs) tuples, number already complete)."""
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
            missing_ptq = len(have) < len(cfg.ckpt_steps) * len(ptq)
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
            import ray  # noqa: F401  (optional dependency: only the ray backend needs it)
        except ImportError:
            raise ValueError("backend 'ray' needs the ray package: "
                             "pip install 'fpx-explorer[ray]'") from None
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
        def collect(res: dict) -> None:
            if res["interrupted"]:
                report.interrupted = True
                return
            if res["error"] is not None:
                report.failed.append(res["error"])
                bar.update(1, failed=len(report.failed))
                return
            report.ran += 1
            report.ptq_rows += res["ptq_rows"]
            report.results.append({k: res[k] for k in ("key", "val_loss", "ptq_rows")})
            bar.update(1, last=f"{res['val_loss']:.3f}")

        if not jobs:
            pass                       # everything already in the database
        elif backend == "ray":
            _run_ray(jobs, workers, collect, report)
        else:
            _run_local(jobs, workers, collect, report)
    return report


class _StopSignals:
    """While active (main thread only): the first SIGINT/SIGTERM sets ``event`` (a graceful
    stop); a second one raises KeyboardInterrupt (stop now).  Restores the old handlers."""

    def __init__(self, event) -> None:
        self.event = event
        self.old: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt(f"second signal {signum}: stopping now")
        self.event.set()

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)


def _worker_init(event) -> None:
    """Worker processes: share the sweep's stop flag; SIGINT (a terminal's Ctrl-C reaches the
    whole process group) is left to the parent, SIGTERM sent to a worker stops the sweep."""
    set_stop_event(event)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: event.set())


def _run_local(jobs: list, workers: int, collect, report: SweepReport) -> None:
    """Run ``jobs`` in ``workers`` spawned processes (in this process when workers == 1)."""
    if workers == 1:
        stop = threading.Event()
        set_stop_event(stop)
        try:
            with _StopSignals(stop):
                for j in jobs:
                    if stop.is_set():
                        report.interrupted = True
                        break
                    collect(_job(*j))
        finally:
            set_stop_event(None)
        return
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    # No max_tasks_per_child: with it, CPython 3.11-3.13 can stop replacing workers and hang
    # (python/cpython#115634).
    ex = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(stop,))
    try:
        with _StopSignals(stop):
            futures = {ex.submit(_job, *j) for j in jobs}
            while futures:
                if stop.is_set():
                    report.interrupted = True
                    for f in futures:
                        f.cancel()          # not started yet: dropped
                    futures = {f for f in futures if not f.cancelled()}
                done, futures = cf.wait(futures, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    collect(f.result())
            ex.shutdown(wait=True)      # inside: a second signal while workers exit -> below
    except BaseException:
        # Stop now: workers are killed mid-step (their last.pt is at most ckpt_every_s old;
        # SQLite rolls back any half-done write).
        stop.set()
        for proc in list((getattr(ex, "_processes", None) or {}).values()):
            proc.kill()                 # SIGTERM would only ask for the graceful stop again
        ex.shutdown(wait=True, cancel_futures=True)
        raise


def _run_ray(jobs: list, workers: int, collect, report: SweepReport) -> None:
    """Run ``jobs`` as Ray tasks, at most ``workers`` at a time.  A Ray instance started here
    (none was initialised: ``$RAY_ADDRESS`` or a new local one) is shut down at the end."""
    import ray  # optional dependency: only the ray backend needs it
    started = not ray.is_initialized()
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False)
    stop = threading.Event()
    pending: list = []
    try:
        with _StopSignals(stop):
            remote = ray.remote(num_cpus=1)(_job)
            queue = list(jobs)
            while queue or pending:
                if stop.is_set():
                    report.interrupted = True
                    break
                while queue and len(pending) < workers:
                    pending.append(remote.remote(*queue.pop(0)))
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                for ref in ready:
                    collect(ray.get(ref))
    finally:
        for ref in pending:           # interrupted: the runs resume from last.pt next time
            ray.cancel(ref)
        if started:
            ray.shutdown()
