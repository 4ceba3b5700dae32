"""Sweeps: a TOML spec -> a grid of training runs (+ PTQ of their checkpoints), run by local
worker processes or on a Ray cluster, resumable with nothing lost or repeated.

Spec (see specs/microsweep.toml and docs/training.md)::

    name = "micro"
    [grid]                       # the Cartesian product of these lists
    model = [[2, 32], [2, 64]]   # [layers, d_model]
    tokens = [131072, 262144]
    format = ["none", "e2m3", "e3m2"]
    block = [32, "channel"]      # ignored (collapsed) for format "none" and for recipe runs
    targets = ["default"]        # comma lists of GEMM inputs, or "default"/"all"
    rounding = ["rne"]
    seed = [0]
    # recipe = ["none", "te-nvfp4", "my.toml"]   # training recipes (see below)
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

``recipe`` (default ``["none"]``) is an axis of training recipes (:mod:`explorer.train.recipes`):
a preset name (:func:`~explorer.train.recipes.preset_names`), a path to a recipe ``.toml`` file
(relative to the spec file's folder), or ``"none"`` (no recipe: the run's ``format``).  A recipe
sets every GEMM input's format, blocks and rounding itself, so a grid with a recipe other than
``"none"`` allows no ``format`` other than ``"none"`` (``ValueError`` naming both keys; put
format runs and recipe runs in separate ``[[grid]]`` tables), and ``block``, ``targets`` and
``rounding`` collapse for its runs as they do for format ``"none"``.  A recipe run's quantization
is ``get_recipe(value).quant_config(seed)``: the run's seed also seeds the recipe's stochastic
rounding and Hadamard signs.

Every table and key is checked: an unknown one is a ``ValueError`` naming it, its section and
the allowed keys.  Numbers are ASCII: a value with another script's digits (``"３２"``, which
Python's ``int()`` would read as 32) is refused wherever it appears, except ``name`` and
``[corpus].paths``.

Resuming: a run whose key is finished in the database is not trained again; a run that was
interrupted resumes from its last checkpoint; PTQ rows already present are skipped.  Whoever
trains a run holds its claim in the database (:func:`explorer.train.store.mark_running`): a run
still held by another live process (a sweep running beside this one) is not trained but reported
in :attr:`SweepReport.busy`.

Workers die with the sweep: however the sweep process ends (``kill -9`` included), its local
worker processes are killed by the kernel (Linux ``PR_SET_PDEATHSIG``) or, elsewhere, by a
watchdog thread within 0.2 s, and none of them commits a database write once the sweep is gone.

Stopping: SIGINT or SIGTERM to the sweep process (Ctrl-C, ``kill PID``) asks every worker to
save its resume point at the next training step and exit; queued runs are not started; the
database is left consistent (finished rows untouched, interrupted runs 'running' with a
``last.pt``).  A second signal stops at once (workers are terminated; the resume point is then
up to ``ckpt_every_s`` old).  With ``--backend ray`` pending tasks are cancelled and a Ray
instance the sweep started itself is shut down.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import itertools
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..blocks import parse_block
from ..progress import Progress
from . import store
from .data import CorpusSpec, load_corpus
from .ptq import PTQSpec, ptq_run
from .qlinear import QuantConfig, parse_targets
from .recipes import get_recipe
from .trainer import (
    RunInterrupted,
    TrainConfig,
    run_identity,
    set_stop_event,
    stop_requested,
    train,
)

SECTIONS = ("name", "grid", "train", "corpus", "ptq", "run")
GRID_KEYS = {"model", "tokens", "format", "block", "targets", "rounding", "seed", "recipe"}
PTQ_KEYS = {"formats", "blocks", "methods", "runs"}
RUN_KEYS = {"threads"}
#: Exit status of a worker that found its sweep gone (it ends at once, committing nothing).
ORPHAN_EXIT = 75


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


def _check_keys(table: dict, allowed, where: str) -> None:
    """ValueError naming the unknown keys of ``table``, its section and the allowed keys."""
    bad = set(table) - set(allowed)
    if bad:
        raise ValueError(f"spec {where}: unknown key(s) {sorted(bad)}; allowed: {sorted(allowed)}")


def _table(spec: dict, section: str) -> dict:
    v = spec.get(section)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"spec [{section}] must be a table, got {v!r}")
    return v


def _ascii_digits(value, where: str) -> None:
    """Refuse digits of other scripts in ``value`` (recursively): ``int("３２")`` is 32, so a
    full-width or Devanagari digit would otherwise become a number nobody typed."""
    if isinstance(value, str):
        for ch in value:
            if not ch.isascii() and (ch.isdigit() or ch.isnumeric()):
                raise ValueError(f"spec {where}: {value!r} contains the non-ASCII digit {ch!r} "
                                 f"(U+{ord(ch):04X}); write numbers with the digits 0-9")
    elif isinstance(value, list):
        for v in value:
            _ascii_digits(v, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            _ascii_digits(k, where)
            _ascii_digits(v, f"{where}.{k}")


def _count(v, where: str, low: int) -> int:
    """An integer >= ``low`` from a TOML int, an integral float (``1e6``) or a string of ASCII
    digits; ValueError naming ``where`` otherwise (``int()`` would truncate 1.5 and read "３２")."""
    if isinstance(v, bool):
        n = None
    elif isinstance(v, int):
        n = v
    elif isinstance(v, float) and v.is_integer():
        n = int(v)
    elif isinstance(v, str) and v.strip().isascii() and v.strip().isdigit():
        n = int(v.strip())
    else:
        n = None
    if n is None or n < low:
        raise ValueError(f"spec {where}: expected an integer >= {low}, got {v!r}")
    return n


def _is_none(v) -> bool:
    return isinstance(v, str) and v.strip().lower() == "none"


def _grid_recipes(grid: dict, base_dir: Path) -> list:
    """The ``recipe`` axis of a grid: a :class:`~explorer.train.recipes.Recipe` per value, None
    for ``"none"``: preset names, or recipe files relative to ``base_dir``.  ``ValueError``
    (naming ``[grid].recipe``, and the presets for an unknown name) and ``FileNotFoundError``
    (a missing file)."""
    out = []
    for v in _as_list(grid.get("recipe", ["none"]), "recipe"):
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"spec [grid].recipe entries must be preset names, .toml paths or "
                             f"'none', got {v!r}")
        if _is_none(v):
            out.append(None)
            continue
        try:
            out.append(get_recipe(v.strip(), base_dir))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"spec [grid].recipe: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"spec [grid].recipe: {exc}") from None
    return out


def _grid_runs(grid: dict, train_kw: dict, corpus: CorpusSpec, base_dir: Path) -> list:
    """The TrainConfigs of one ``[grid]`` table (Cartesian product of its lists); recipe
    files are relative to ``base_dir``."""
    _check_keys(grid, GRID_KEYS, "[grid]")
    models = _as_list(grid.get("model"), "model")
    for m in models:
        if not (isinstance(m, list) and len(m) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in m)):
            raise ValueError(f"spec [grid].model entries must be [layers, d_model], got {m!r}")
    tokens = [_count(t, "[grid].tokens", 1) for t in _as_list(grid.get("tokens"), "tokens")]
    formats = _as_list(grid.get("format", ["none"]), "format")
    blocks = [parse_block(b) for b in _as_list(grid.get("block", ["channel"]), "block")]
    targets = [parse_targets(t) for t in _as_list(grid.get("targets", ["default"]), "targets")]
    roundings = _as_list(grid.get("rounding", ["rne"]), "rounding")
    seeds = [_count(v, "[grid].seed", 0) for v in _as_list(grid.get("seed", [0]), "seed")]
    recipes = _grid_recipes(grid, base_dir)
    with_recipe = [r.name for r in recipes if r is not None]
    with_format = [f for f in formats if not _is_none(f)]
    if with_recipe and with_format:
        raise ValueError(f"spec [grid]: recipe {with_recipe} and format {with_format} are "
                         f"exclusive in one grid (a recipe sets every GEMM input's format); give "
                         f"format ['none'] here, or put the format runs in their own [[grid]]")
    out = []
    for (layers, d), D, fmt, blk, tg, rnd, seed, recipe in itertools.product(
            models, tokens, formats, blocks, targets, roundings, seeds, recipes):
        if recipe is not None:
            q = recipe.quant_config(seed)
        elif _is_none(fmt):
            q = QuantConfig()
        else:
            q = QuantConfig(fmt=fmt, block=blk, rounding=rnd, targets=tg, seed=seed)
        out.append(TrainConfig(layers=layers, d_model=d, tokens=int(D), quant=q, seed=seed,
                               corpus=corpus, **train_kw))
    return out


def parse_spec(spec: dict | str | Path, *, base_dir: str | Path | None = None) -> SweepSpec:
    """Parse a TOML file path or an already-loaded dict into a :class:`SweepSpec`.

    ``base_dir``: the folder recipe files of ``[grid].recipe`` are relative to (default: the
    spec file's folder; for a dict, the current directory)."""
    base = None if base_dir is None else Path(base_dir)
    if not isinstance(spec, dict):
        path = Path(spec)
        base = path.parent if base is None else base
        if not path.is_file():
            raise FileNotFoundError(f"sweep spec not found: {path}")
        try:
            spec = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"sweep spec {path}: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"spec: expected a table of sections, got {type(spec).__name__}")
    _check_keys(spec, SECTIONS, "top level")
    for section in SECTIONS[1:]:      # before any value is used; names and paths are free text
        if section == "corpus":
            _ascii_digits({k: v for k, v in _table(spec, "corpus").items() if k != "paths"},
                          "[corpus]")
        elif section == "grid" and isinstance(spec.get("grid"), list):
            for g in spec["grid"]:
                _ascii_digits(g, "[[grid]]")
        else:
            _ascii_digits(_table(spec, section), f"[{section}]")
    grids = spec.get("grid")
    if isinstance(grids, dict):
        grids = [grids]
    if not isinstance(grids, list) or not grids or not all(isinstance(g, dict) for g in grids):
        raise ValueError("spec needs a [grid] table or [[grid]] tables")
    train_kw = dict(_table(spec, "train"))
    _check_keys(train_kw, {f.name for f in fields(TrainConfig)} - {
        "layers", "d_model", "tokens", "quant", "seed", "corpus"}, "[train]")
    for k in ("betas", "ckpt_fracs"):
        if k in train_kw and isinstance(train_kw[k], list):
            train_kw[k] = tuple(train_kw[k])
    corpus_kw = dict(_table(spec, "corpus"))
    _check_keys(corpus_kw, {f.name for f in fields(CorpusSpec)}, "[corpus]")
    if "paths" in corpus_kw:
        paths = corpus_kw["paths"]
        if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
            raise ValueError(f"spec [corpus].paths must be a list of file or folder names, "
                             f"got {paths!r}")
        corpus_kw["paths"] = tuple(paths)
    try:
        corpus = CorpusSpec(**corpus_kw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spec [corpus]: {exc}") from None
    runs, seen = [], set()
    for grid in grids:
        for cfg in _grid_runs(grid, train_kw, corpus, Path.cwd() if base is None else base):
            ident = repr(cfg.to_dict())
            if ident not in seen:
                seen.add(ident)
                runs.append(cfg)
    p = _table(spec, "ptq")
    _check_keys(p, PTQ_KEYS, "[ptq]")
    lists = {}
    for k, default in (("formats", []), ("blocks", ["channel"]), ("methods", ["rtn"])):
        v = p.get(k, default)
        if not isinstance(v, list) or (k != "formats" and not v):
            raise ValueError(f"spec [ptq].{k} must be a{'' if k == 'formats' else ' non-empty'} "
                             f"list, got {v!r}")
        lists[k] = v
    ptq = tuple(PTQSpec(f, b, m) for f in lists["formats"] for b in lists["blocks"]
                for m in lists["methods"])
    ptq_runs = p.get("runs", "unquantized")
    if ptq_runs not in ("unquantized", "all"):
        raise ValueError(f"spec [ptq].runs must be 'unquantized' or 'all', got {ptq_runs!r}")
    run_tbl = _table(spec, "run")
    _check_keys(run_tbl, RUN_KEYS, "[run]")
    threads = _count(run_tbl.get("threads", 1), "[run].threads", 1)
    runs.sort(key=lambda c: (c.tokens, c.layers * c.d_model ** 2))   # small, short runs first
    return SweepSpec(name=str(spec.get("name", "sweep")), runs=tuple(runs), ptq=ptq,
                     ptq_runs=ptq_runs, threads=threads)


def _job(cfg_dict: dict, db: str, ckpt_dir: str | None, threads: int, ptq: list, device: str,
         cache_dir: str | None, key: str | None = None) -> dict:
    """One unit of work (runs in a worker process): train (or skip) then PTQ what is missing.

    Returns ``{"key", "val_loss", "ptq_rows", "error", "interrupted", "busy"}``; never raises for
    a failing run (train() records it as 'failed'), a requested stop, nor a run another live
    process holds (``busy``: its message).  ``key`` (the run's key, when known) is released in
    the store afterwards, so a run stopped here is claimable at once by the next sweep.
    """
    out = {"key": key or "", "val_loss": float("nan"), "ptq_rows": 0, "error": None,
           "interrupted": False, "busy": None}
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
    except store.RunClaimed as exc:   # another live process trains it: not ours, not failed
        out["busy"] = str(exc)
    except Exception as exc:          # recorded as 'failed' by train(); the sweep goes on
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if key:
            try:
                store.release(db, key)
            except (OSError, ValueError):
                pass                  # the claim then lapses with this process
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
    busy: list = field(default_factory=list)     # runs another live process was training


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


def check_max_runs(max_runs: int | None) -> int | None:
    """``max_runs`` if valid: None (every pending run) or an integer >= 1.  ``0`` and negative
    values are refused (``todo[:-1]`` would silently drop the last run; to run nothing, use
    ``--dry-run``)."""
    if max_runs is None:
        return None
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise ValueError(f"--max-runs: must be an integer >= 1 (leave it out to run every "
                         f"pending run; --dry-run runs none), got {max_runs!r}")
    return max_runs


def run_sweep(spec: SweepSpec | dict | str | Path, db: str | Path, *, workers: int = 1,
              backend: str = "local", device: str = "cpu", ckpt_dir: str | Path | None = None,
              progress: bool = True, cache_dir: str | Path | None = None,
              max_runs: int | None = None) -> SweepReport:
    """Run every pending run of ``spec`` into ``db``.

    workers: parallel worker processes (local) or concurrent tasks (ray).
    backend: ``"local"`` (multiprocessing, spawn) or ``"ray"`` (``ray.init()`` joins the
        cluster named by ``$RAY_ADDRESS`` or starts a local one).
    max_runs: do at most this many pending runs (the first ones), then stop; None: all,
        otherwise an integer >= 1 (:func:`check_max_runs`).

    The database is checked (:func:`explorer.train.store.connect`: ``ValueError`` /
    ``PermissionError`` / ``OSError`` naming it) before any run starts.
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
    max_runs = check_max_runs(max_runs)
    db = str(db)
    store.connect(db).close()          # a bad --db fails here, before any worker starts
    todo, done = pending_runs(spec, db, cache_dir)
    if max_runs is not None:
        todo = todo[:max_runs]
    ck = None if ckpt_dir is None else str(ckpt_dir)
    cd = None if cache_dir is None else str(cache_dir)
    jobs = [(cfg.to_dict(), db, ck, spec.threads, ptq, device, cd, key)
            for cfg, key, ptq in todo]
    report = SweepReport(total=len(spec.runs), already_done=done, ran=0, ptq_rows=0)
    with Progress(len(jobs), f"sweep {spec.name}", unit="run", enabled=progress) as bar:
        def collect(res: dict) -> None:
            if res["interrupted"]:
                report.interrupted = True
                return
            if res["busy"] is not None:
                report.busy.append(res["busy"])
                bar.update(1, busy=len(report.busy))
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


PR_SET_PDEATHSIG = 1                     # <linux/prctl.h>


def _end_if_orphaned(parent: int) -> None:
    """End this process at once (no cleanup, nothing committed) if ``parent`` is no longer its
    parent: a worker whose sweep is gone has nobody to report to, and a resumed sweep may
    re-claim its run."""
    if os.getppid() != parent:
        os._exit(ORPHAN_EXIT)


def _watch_parent(parent: int, interval: float = 0.2) -> None:
    while True:
        _end_if_orphaned(parent)
        time.sleep(interval)


def _die_with_parent(parent: int, *, use_prctl: bool = True) -> None:
    """Make this process die with ``parent`` however the parent ends (``kill -9`` included).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, the kernel kills us when the parent exits; it
    fires when the *thread* that started us exits, which for the pool's workers is the thread
    blocked in :func:`run_sweep` for their whole life.  Everywhere (and in case prctl is
    unavailable): a daemon thread that ends the process within 0.2 s of ``os.getppid()``
    changing (re-parenting to init or a subreaper).  The parent may already be gone when this
    runs, hence the check after prctl.
    """
    if use_prctl and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass                        # no prctl: the watchdog below still works
    _end_if_orphaned(parent)
    threading.Thread(target=_watch_parent, args=(parent,), name="fpx-parent-watch",
                     daemon=True).start()


def _worker_init(event, parent: int | None = None) -> None:
    """Worker processes: share the sweep's stop flag; SIGINT (a terminal's Ctrl-C reaches the
    whole process group) is left to the parent, SIGTERM sent to a worker stops the sweep (or,
    once the sweep is gone, ends the worker at once: an idle orphan would never see the flag).
    The worker dies with the sweep process ``parent`` and commits no database write after it is
    gone (:func:`explorer.train.store.set_write_guard`)."""
    set_stop_event(event)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is None:
        signal.signal(signal.SIGTERM, lambda *_: event.set())
        return

    def on_term(*_) -> None:
        _end_if_orphaned(parent)
        event.set()
    signal.signal(signal.SIGTERM, on_term)
    _die_with_parent(parent)
    store.set_write_guard(lambda: _end_if_orphaned(parent))


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
    ex = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                initargs=(stop, os.getpid()))
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
