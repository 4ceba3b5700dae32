"""The real-GPU check of fpformat's GPU path: one command, one JSON line per item.

    python benchmarks/gpu_check.py                 # on a machine with a GPU (under 10 minutes)
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_check.py --ci   # correctness items, simulator

Items (``"item"`` names it, ``"ok"`` says whether it passed; the rest are its figures):

* ``versions``: numba, numba-cuda, torch, the CUDA runtime and driver versions, the GPU's name
  and compute capability, the PTX ISA version numba-cuda writes and the driver it needs (not
  ok when the driver is older: every launch would fail; ``simulator: true`` under the
  simulator);
* ``gpu-tests``: ``pytest -m gpu tests/test_cuda_gpu.py tests/test_cuda_gemm_gpu.py``, its
  pass/fail/skip counts;
* ``exact``: one line per (kind, dtype): every element preset and every block preset
  (:mod:`fpformat.presets`, plus ``channel``/``tensor`` scaling, 2-D tiles and blocks along
  axis 0) under every rounding mode, on float32, float16 and bfloat16 data, through the public
  API (``quantize``, ``encode``, block ``decode``), compared with the CPU as raw bits -- NaN
  signs and payloads included; ``mismatches`` counts differing elements per combination;
* ``exact-mma``: :func:`fpformat.gemm.mma` on the device against the CPU for several units;
* ``compilations``: ``fpformat.cuda.compilations()`` before and after repeated calls with
  different data and shapes: after the first call of a (format, mode, dtype) no call compiles;
* ``bandwidth``: one line per kernel, its time as a fraction of a device-to-device copy of the
  same bytes (``benchmarks/bench_cuda.py``'s :func:`bandwidth`);
* ``host-time``: host microseconds per small call (launch overhead), without and with a sync;
* ``graph-capture``: quantize calls captured in a ``torch.cuda.graph`` and replayed on new data;
* ``edge``: a 0-d input, empty inputs and (full mode) an input of more than 2**31 elements.

``--ci`` runs the correctness items only (``versions``, ``exact``, ``exact-mma``,
``compilations``, ``edge`` without the huge input) on small inputs, and works under
``NUMBA_ENABLE_CUDASIM=1`` without torch CUDA: inputs are numba device arrays (float32 and
float16; bfloat16 exists on the GPU path as torch tensors only).  The exit status is 0 when
every item is ok, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from typing import Any, Callable, NamedTuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

# The simulator runs the kernels as Python on numpy scalars, where numpy warns about the
# wrapping integer arithmetic of the random-number generator.
warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)

MODES = ("rne", "rna", "rtz", "rtp", "rtn", "rto", "sr")
SEED = 7
#: Block formats beyond the presets: the training defaults and the layouts of the GPU kernels.
EXTRA_BLOCKS = ("e4m3/channel", "e4m3/tensor", "e4m3/16x16", "e2m1/32/e8m0@axis0")
#: Units of the exact-mma item: (unit, input format, output format).
MMA_UNITS = (("h100", "float8_e4m3fn", "float32"), ("h100", "float16", "float16"),
             ("a100", "bfloat16", "float32"), ("mi300x", "float8_e4m3fnuz", "float32"))


def emit(item: str, ok: bool, **fields) -> dict:
    """Print one item's JSON line (flushed: a slow later item must not hide it)."""
    line = {"item": item, "ok": bool(ok), **fields}
    print(json.dumps(line, default=str), flush=True)
    return line


def simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


# --------------------------------------------------------------------------------- arrays
class Backend:
    """How inputs reach the device: torch CUDA tensors (``torch``), or numba device arrays
    (``numba``, simulated ones included); results come back to the host as raw bits."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "torch":
            import torch
            self.torch = torch
        else:
            from numba import cuda
            self.cuda = cuda

    def dtypes(self) -> tuple[str, ...]:
        return ("float32", "float16", "bfloat16") if self.kind == "torch" else ("float32",
                                                                                "float16")

    def host(self, x32: np.ndarray, dtype: str) -> np.ndarray:
        """The host input of ``dtype``: a numpy array (ml_dtypes' bfloat16 for bfloat16, so that
        the CPU reference reads numpy data, NaN signs kept by ml_dtypes' conversion)."""
        if dtype == "bfloat16":
            import ml_dtypes
            return np.ascontiguousarray(x32.astype(ml_dtypes.bfloat16))
        return np.ascontiguousarray(x32.astype(dtype))

    def device(self, host: np.ndarray):
        """``host`` on the device with the same bits (a torch CUDA tensor, or a numba device
        array)."""
        host = np.require(host, requirements="C")          # keeps 0-d arrays 0-d
        if self.kind == "torch":
            torch = self.torch
            if host.dtype.name == "bfloat16":              # bit for bit: torch has no numpy
                return torch.from_numpy(host.view(np.int16)).view(torch.bfloat16).to("cuda")
            return torch.from_numpy(host).to("cuda")
        return self.cuda.to_device(host)


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def bits(x) -> np.ndarray:
    """Raw bits of a host or device result as a numpy array: floats reinterpreted as unsigned
    integers of their width, integer codes widened to uint64."""
    if hasattr(x, "detach"):                               # torch
        t = x.detach().cpu()
        if t.is_floating_point():      # torch lacks unsigned views: signed, then numpy's
            import torch
            t = t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
            return t.numpy().view(_UNSIGNED[t.element_size()])
        x = t.numpy()
    elif hasattr(x, "copy_to_host"):                       # numba (or simulated) device array
        x = x.copy_to_host()
    a = np.asarray(x)
    if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
        return a.view(_UNSIGNED[a.dtype.itemsize])
    return a.astype(np.uint64)


def differ(got, want) -> int:
    """Elements whose raw bits differ (all of them when the shapes differ)."""
    g, w = bits(got), bits(want)
    if g.shape != w.shape:
        return max(g.size, w.size, 1)
    return int(np.count_nonzero(g.reshape(-1) != w.reshape(-1)))


# --------------------------------------------------------------------------------- inputs
def element_data(fmt, n: int) -> np.ndarray:
    """float32 inputs for ``fmt``: its values, ties and their neighbours, range boundaries,
    specials (NaN of both signs, with payloads; infinities; zeros) and random values
    (:func:`fpformat.vectors.element_inputs`), ``n`` of them at most (specials always kept)."""
    from fpformat.vectors import element_inputs
    x, kinds = element_inputs(fmt, min(n, 1000), SEED)
    if x.size > n:
        keep = kinds == "special"
        rng = np.random.default_rng(SEED)
        others = np.flatnonzero(~keep)
        pick = rng.choice(others, size=max(n - int(keep.sum()), 0), replace=False)
        x = x[np.sort(np.concatenate([np.flatnonzero(keep), pick]))]
    return np.ascontiguousarray(x)


def block_data(rows: int, cols: int, specials: bool) -> np.ndarray:
    """float32 (rows, cols): Gaussian rows of magnitudes from 2**-30 to 2**30, a zero row, a
    row with an outlier; with ``specials`` NaN (both signs) and infinities in some rows."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((rows, cols)) * np.exp2(rng.uniform(-30, 30, (rows, 1)))
    x[1] = 0.0
    x[2, 3] = 3e4
    if specials:
        x[3, 5] = np.nan
        x[4, 1] = -np.inf
        x[5, 7] = np.inf
        x = x.astype(np.float32)
        x.view(np.uint32)[6, 2] = 0xFFC00001                 # a negative NaN with a payload
    return np.ascontiguousarray(x.astype(np.float32))


# --------------------------------------------------------------------------------- exactness
def _attempt(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except Exception as exc:  # the CPU's and the GPU's exceptions are compared by type
        return None, type(exc).__name__


def compare(label: str, cpu: Callable[[], Any], gpu: Callable[[], Any], out: dict) -> None:
    """Record in ``out[label]`` the mismatching elements of ``gpu()`` against ``cpu()`` (0 when
    both raise the same exception type; an error text when only one raises)."""
    want, werr = _attempt(cpu)
    try:
        got = gpu()
        gerr = None
    except Exception as exc:  # reported in the item's line
        got, gerr = None, f"{type(exc).__name__}: {exc}"
    if werr or gerr:
        if werr and gerr and gerr.startswith(werr):
            out[label] = 0
        else:
            out[label] = f"cpu raised {werr}, gpu raised {gerr}"
        return
    if isinstance(want, tuple):
        n = sum(differ(g, w) for g, w in zip(got, want))
    else:
        n = differ(got, want)
    out[label] = n


class Job(NamedTuple):
    """One format's share of the exactness item (run in a worker process)."""
    name: str
    backend: str                     # Backend kind
    n: int                           # elements per element-format input
    block: bool
    plan: tuple                      # (mode, with specials, dtype or None) triples
    shape: tuple[int, int]           # block inputs' shape


def plan(index: int, block: bool, ci: bool) -> tuple:
    """``(mode, with specials, dtype or None for every dtype)`` triples: every mode on every
    dtype, block formats on finite data and on data with NaN/inf.  In CI mode a block format
    gets two modes (rotating with ``index``, so the block formats together cover every mode),
    one on float32 and one on float16 data, one of them with specials: the simulator runs a
    Python thread per GPU thread."""
    if not block:
        return tuple((m, True, None) for m in MODES)
    if ci:
        first, second = MODES[index % len(MODES)], MODES[(index + 4) % len(MODES)]
        return ((first, index % 2 == 0, "float32"), (second, index % 2 == 1, "float16"))
    return tuple((m, s, None) for m in MODES for s in (False, True))


def exact_format(job: Job) -> dict:
    """Worker: one format's plan on every dtype; ``{label: mismatches or error}``."""
    from fpformat import get_format
    start = time.perf_counter()
    name, is_block = job.name, job.block
    be = Backend(job.backend)
    fmt = get_format(name)
    out: dict[str, Any] = {}
    for dtype in be.dtypes():
        inputs = {}
        decoded = False
        for mode, specials, only in job.plan:
            if only not in (None, dtype):
                continue
            if specials not in inputs:
                x32 = block_data(*job.shape, specials) if is_block else element_data(fmt, job.n)
                h = be.host(x32, dtype)
                inputs[specials] = (h, be.device(h))
            h, d = inputs[specials]
            tag = f"{name}:{dtype}:{mode}" + (":specials" if specials and is_block else "")
            if is_block:
                compare(f"{tag}:quantize", lambda: fmt.quantize(h, rounding=mode, seed=SEED),
                        lambda: fmt.quantize(d, rounding=mode, seed=SEED), out)

                def enc(x):
                    e = fmt.encode(x, rounding=mode, seed=SEED)
                    return e.codes, e.scales
                compare(f"{tag}:encode", lambda: enc(h), lambda: enc(d), out)
                if not decoded:                              # decoding a GPU encoding
                    decoded = True
                    compare(f"{tag}:decode", lambda: fmt.decode(fmt.encode(h)),
                            lambda: fmt.decode(fmt.encode(d)), out)
                continue
            compare(f"{tag}:encode", lambda: fmt.encode(h, rounding=mode, seed=SEED),
                    lambda: fmt.encode(d, rounding=mode, seed=SEED), out)
            if fmt.fits(dtype):
                compare(f"{tag}:quantize-sat",
                        lambda: fmt.quantize(h, rounding=mode, saturate=True, seed=SEED),
                        lambda: fmt.quantize(d, rounding=mode, saturate=True, seed=SEED), out)
    if not is_block and fmt.bits <= 16:                  # every code, decoded
        codes = np.arange(1 << fmt.bits, dtype=fmt.dtype)
        dc = be.device(codes)
        for want in ("float32", "float16"):
            if fmt.fits(want):
                compare(f"{name}:{want}:decode", lambda: fmt.decode(codes, dtype=want),
                        lambda: fmt.decode(dc, dtype=want), out)
    return {"format": name, "block": is_block, "results": out,
            "seconds": time.perf_counter() - start}


def exact_items(backend_kind: str, n: int, workers: int, formats: list[str] | None,
                ci: bool) -> list:
    from fpformat.presets import BLOCK_PRESETS, ELEMENT_PRESETS
    shape = (8, 32) if ci else (max(n // 64, 8), 64)
    jobs = [Job(f, backend_kind, n, False, plan(i, False, ci), shape)
            for i, f in enumerate(ELEMENT_PRESETS)]
    jobs += [Job(b, backend_kind, n, True, plan(i, True, ci), shape)
             for i, b in enumerate((*BLOCK_PRESETS, *EXTRA_BLOCKS))]
    if formats:
        jobs = [j for j in jobs if j.name in formats]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            done = list(pool.imap_unordered(exact_format, jobs))
    else:
        done = [exact_format(j) for j in jobs]
    lines = []
    for is_block in (False, True):
        kind = "block" if is_block else "element"
        rows = [d for d in done if d["block"] == is_block]
        merged = {k: v for d in rows for k, v in d["results"].items()}
        for dtype in Backend(backend_kind).dtypes():
            mine = {k: v for k, v in merged.items() if k.split(":")[1] == dtype}
            bad = {k: v for k, v in mine.items() if v != 0}
            lines.append(emit("exact", not bad and bool(mine), kind=kind, dtype=dtype,
                              formats=len(rows), combinations=len(mine), mismatches=bad,
                              seconds_all_dtypes=round(sum(d["seconds"] for d in rows), 1)))
    return lines


def exact_mma(backend: Backend) -> dict:
    from fpformat import get_format
    from fpformat.gemm import mma
    out: dict[str, Any] = {}
    rng = np.random.default_rng(SEED)
    for unit, fin, fout in MMA_UNITS:
        fi, fo = get_format(fin), get_format(fout)
        a = fi.quantize(rng.standard_normal((2, 5, 48)) * 8, saturate=True)
        b = fi.quantize(rng.standard_normal((48, 3)), saturate=True)
        c = fo.quantize(rng.standard_normal((5, 3)), saturate=True)
        a.reshape(-1)[3] = np.nan if fi.nan_codes else 0.0
        compare(f"{unit}:{fin}->{fout}", lambda: mma(a, b, c, unit, fi, fo),
                lambda: mma(backend.device(a.astype(np.float32)),
                            backend.device(b.astype(np.float32)),
                            backend.device(c.astype(np.float32)), unit, fi, fo), out)
    bad = {k: v for k, v in out.items() if v != 0}
    return emit("exact-mma", not bad, units=len(out), mismatches=bad)


# --------------------------------------------------------------------------------- items
def versions(ci: bool) -> dict:
    info: dict[str, Any] = {"simulator": simulator()}
    for pkg in ("numba", "numba-cuda", "torch", "cuda-bindings", "numpy"):
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg] = None
    ok = True
    if not simulator():
        from numba import cuda
        try:
            dev = cuda.get_current_device()
            name = dev.name
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            info["compute_capability"] = list(dev.compute_capability)
        except Exception as exc:  # no usable GPU: the item fails with the reason
            info["gpu_error"] = f"{type(exc).__name__}: {exc}"
            ok = False
        for key, get in (("cuda_driver", lambda: cuda.cudadrv.driver.driver.get_version()),
                         ("cuda_runtime", lambda: cuda.runtime.get_version())):
            try:
                info[key] = list(get())
            except Exception as exc:  # reported, not fatal
                info[key] = f"{type(exc).__name__}: {exc}"
        ptx = ptx_requirement(cuda, info.get("compute_capability"))
        info.update(ptx)
        if isinstance(ptx.get("ptx_needs_driver"), list) and isinstance(
                info.get("cuda_driver"), list):
            ok = ok and info["cuda_driver"] >= ptx["ptx_needs_driver"]
        try:
            import torch
            info["torch_cuda"] = torch.version.cuda
            info["torch_cuda_available"] = torch.cuda.is_available()
        except ImportError:
            info["torch_cuda"] = None
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=30)
            info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["nvidia_smi"] = f"{type(exc).__name__}: {exc}"
    return emit("versions", ok, **info)


def ptx_requirement(cuda, cc) -> dict:
    """The PTX ISA version numba-cuda's NVVM writes (a trivial kernel compiled for ``cc``) and
    the oldest CUDA driver that loads it (docs/gpu.md, "Drivers and toolkits")."""
    def probe(x):
        x[0] = 1.0
    try:
        from numba import types
        ptx, _ = cuda.compile_ptx(probe, (types.float32[::1],), cc=tuple(cc or (9, 0)))
        version = next(line.split()[1] for line in ptx.splitlines()
                       if line.startswith(".version"))
        from cuda.bindings.utils import get_minimal_required_cuda_ver_from_ptx_ver
        need = get_minimal_required_cuda_ver_from_ptx_ver(version)
        return {"ptx_version": version, "ptx_needs_driver": [need // 1000, need % 1000 // 10]}
    except Exception as exc:  # reported, not fatal: the launches below will tell
        return {"ptx_version": f"{type(exc).__name__}: {exc}"}


GPU_TESTS = ("tests/test_cuda_gpu.py", "tests/test_cuda_gemm_gpu.py")


class GpuTests(NamedTuple):
    """The ``-m gpu`` tests running in a child process (beside the other items: both compile
    kernels, and the machine has cores to spare)."""
    proc: subprocess.Popen
    tmp: tempfile.TemporaryDirectory
    start: float


def start_gpu_tests() -> GpuTests:
    tmp = tempfile.TemporaryDirectory()
    xml = os.path.join(tmp.name, "gpu.xml")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-m", "gpu", *GPU_TESTS,
                             f"--junitxml={xml}", "-p", "no:cacheprovider"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return GpuTests(proc, tmp, time.perf_counter())


def finish_gpu_tests(run: GpuTests, timeout: float) -> dict:
    """Wait for the tests (at most ``timeout`` seconds more) and report their counts."""
    try:
        output, _ = run.proc.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        run.proc.kill()
        run.proc.communicate()
        run.tmp.cleanup()
        return emit("gpu-tests", False, error="timed out",
                    seconds=round(time.perf_counter() - run.start, 1))
    seconds = round(time.perf_counter() - run.start, 1)
    xml = os.path.join(run.tmp.name, "gpu.xml")
    if not os.path.exists(xml):
        run.tmp.cleanup()
        return emit("gpu-tests", False, returncode=run.proc.returncode, output=output[-2000:])
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    run.tmp.cleanup()
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return emit("gpu-tests", counts["failures"] + counts["errors"] == 0 and passed > 0,
                passed=passed, failed=counts["failures"] + counts["errors"],
                skipped=counts["skipped"], failing=failed[:20], seconds=seconds,
                tail=output[-1500:] if run.proc.returncode else "")


def compilations(backend: Backend) -> dict:
    """Calls of one (format, mode, dtype) with different data and shapes: compilations()
    may grow on the first call of each, never after."""
    from fpformat import cuda as fc
    from fpformat import get_format
    if not hasattr(fc, "compilations"):
        return emit("compilations", False, error="fpformat.cuda.compilations() does not exist")
    rng = np.random.default_rng(SEED)
    groups = {"float8_e4m3fn": [(64,), (3, 50), (7,), (2, 2, 33)],
              "nvfp4": [(4, 64), (2, 32), (8, 16), (3, 48)],
              "e4m3/channel": [(4, 64), (2, 48), (5, 100)],
              "e4m3/tensor": [(4, 64), (100,), (3, 7)],
              "mxfp4": [(4, 64), (2, 96), (1, 32)]}
    report: dict[str, list[int]] = {}
    ok = True
    for name, shapes in groups.items():
        fmt = get_format(name)
        deltas = []
        for shape in shapes:
            x = (rng.standard_normal(shape) * np.exp2(rng.uniform(-8, 8))).astype(np.float32)
            before = fc.compilations()
            y = fmt.quantize(backend.device(x))
            bits(y)                                            # the call has finished
            deltas.append(fc.compilations() - before)
        report[name] = deltas
        ok = ok and all(d == 0 for d in deltas[1:])
    return emit("compilations", ok, new_compilations_per_call=report, total=fc.compilations())


def edge_cases(backend: Backend, huge: bool) -> list[dict]:
    from fpformat import get_format
    lines = []
    f, mx = get_format("float8_e4m3fn"), get_format("mxfp4")
    out: dict[str, Any] = {}
    zero_d = np.array(1.3, dtype=np.float32)
    compare("0-d:element:quantize", lambda: f.quantize(zero_d),
            lambda: f.quantize(backend.device(zero_d)), out)
    compare("0-d:element:encode", lambda: f.encode(zero_d),
            lambda: f.encode(backend.device(zero_d)), out)
    compare("0-d:block:quantize", lambda: mx.quantize(zero_d),
            lambda: mx.quantize(backend.device(zero_d)), out)
    bad = {k: v for k, v in out.items() if v != 0}
    lines.append(emit("edge", not bad, case="0-d", results=out))
    out = {}
    for shape in ((0,), (0, 32), (4, 0)):
        e = np.zeros(shape, np.float32)
        compare(f"{shape}:element:quantize", lambda: f.quantize(e),
                lambda: f.quantize(backend.device(e)), out)
        compare(f"{shape}:block:quantize", lambda: mx.quantize(e),
                lambda: mx.quantize(backend.device(e)), out)
        compare(f"{shape}:block:encode", lambda: (mx.encode(e).codes, mx.encode(e).scales),
                lambda: (mx.encode(backend.device(e)).codes,
                         mx.encode(backend.device(e)).scales), out)
    bad = {k: v for k, v in out.items() if v != 0}
    lines.append(emit("edge", not bad, case="empty", results=out))
    if huge:
        lines.append(huge_input(backend))
    return lines


def huge_input(backend: Backend) -> dict:
    """float16 tensors of 2**31 + 4096 elements (4 GiB): element and MX quantize; slices at the
    start, around 2**31 and at the end compared with the CPU."""
    import torch

    from fpformat import get_format
    n = (1 << 31) + 4096
    out: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        x = torch.randn(n, device="cuda", dtype=torch.float16)
        spots = [(0, 4096), ((1 << 31) - 2048, (1 << 31) + 2048), (n - 4096, n)]
        for name, view in (("float8_e4m3fn", x), ("mxfp4", x.view(-1, 32))):
            fmt = get_format(name)
            y = fmt.quantize(view).reshape(-1)
            for lo, hi in spots:
                xs = x[lo:hi].cpu()
                if name == "mxfp4":
                    xs = xs.view(-1, 32)
                want = fmt.quantize(xs.numpy())
                out[f"{name}:[{lo}:{hi}]"] = differ(y[lo:hi].cpu().numpy().reshape(want.shape),
                                                    want)
            del y
        del x
        torch.cuda.empty_cache()
    except Exception as exc:  # reported in the item's line
        return emit("edge", False, case="huge", elements=n,
                    error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc(limit=3))
    bad = {k: v for k, v in out.items() if v != 0}
    return emit("edge", not bad, case="huge", elements=n, results=out,
                seconds=round(time.perf_counter() - start, 1))


def bandwidth_items(n: int) -> list[dict]:
    from bench_cuda import bandwidth
    lines = []
    try:
        rows = bandwidth(n, repeat=10)
    except Exception as exc:  # reported in the item's line
        return [emit("bandwidth", False, error=f"{type(exc).__name__}: {exc}",
                     trace=traceback.format_exc(limit=4))]
    for r in rows:
        lines.append(emit("bandwidth", True, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                 for k, v in r.items()}))
    return lines


def host_time() -> dict:
    import torch

    from fpformat import get_format
    out = {}
    for name, shape in (("float8_e4m3fn", (1024,)), ("mxfp4", (32, 32)), ("nvfp4", (32, 32)),
                        ("e4m3/channel", (32, 32))):
        fmt = get_format(name)
        x = torch.randn(shape, device="cuda")
        for _ in range(3):
            fmt.quantize(x)
        torch.cuda.synchronize()
        calls = 200
        t0 = time.perf_counter()
        for _ in range(calls):
            fmt.quantize(x)
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        for _ in range(calls):
            fmt.quantize(x)
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        out[name] = {"us_per_call": round((t1 - t0) / calls * 1e6, 1),
                     "us_per_call_synced": round((t3 - t2) / calls * 1e6, 1)}
    return emit("host-time", True, **out)


def graph_capture() -> dict:
    import torch

    from fpformat import get_format
    out: dict[str, Any] = {}
    for name in ("float8_e4m3fn", "mxfp4", "nvfp4", "e4m3/channel", "e4m3/tensor"):
        fmt = get_format(name)
        try:
            x = torch.randn(64, 256, device="cuda")
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fmt.quantize(x)                                # warm-up: compile outside capture
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                y = fmt.quantize(x)
            x.copy_(torch.randn(64, 256, device="cuda") * 3)
            graph.replay()
            torch.cuda.synchronize()
            out[name] = differ(y, fmt.quantize(x))
        except Exception as exc:  # reported in the item's line
            out[name] = f"{type(exc).__name__}: {exc}"
    bad = {k: v for k, v in out.items() if v != 0}
    return emit("graph-capture", not bad, results=out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ci", action="store_true",
                   help="correctness items only, small inputs (works under the simulator)")
    p.add_argument("--n", type=int, default=None,
                   help="elements per exactness input (default 4096; --ci: 48)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for the exactness item (default: cores - 2, at most 12; "
                        "--ci: 1)")
    p.add_argument("--formats", default=None,
                   help="comma-separated format names: limit the exactness item to these")
    p.add_argument("--bandwidth-n", type=int, default=1 << 26,
                   help="float32 elements per bandwidth case (default 64M)")
    args = p.parse_args(argv)
    n = args.n if args.n is not None else (48 if args.ci else 4096)
    workers = args.workers if args.workers is not None else (
        1 if args.ci else max(1, min(12, (os.cpu_count() or 1) - 2)))
    if n < 16 or workers < 1:
        print("gpu_check: --n must be >= 16 and --workers >= 1", file=sys.stderr)
        return 2
    formats = set(filter(None, args.formats.split(","))) if args.formats else None
    start = time.perf_counter()
    lines = [versions(args.ci)]
    if not lines[0]["ok"]:
        return 1
    torch_ok = False
    if not simulator():
        try:
            import torch
            torch_ok = torch.cuda.is_available()
        except ImportError:
            pass
    backend = Backend("torch" if torch_ok else "numba")
    tests = None if args.ci else start_gpu_tests()
    lines += exact_items(backend.kind, n, workers, sorted(formats) if formats else None,
                         args.ci)
    lines.append(exact_mma(backend))
    lines.append(compilations(backend))
    lines += edge_cases(backend, huge=not args.ci and torch_ok)
    if tests is not None:
        lines.append(finish_gpu_tests(tests, timeout=360 - (time.perf_counter() - tests.start)))
    if not args.ci:
        if torch_ok:
            lines += bandwidth_items(args.bandwidth_n)
            lines.append(host_time())
            lines.append(graph_capture())
        else:
            lines.append(emit("bandwidth", False, error="needs torch with CUDA"))
    emit("summary", all(x["ok"] for x in lines), items=len(lines),
         failed=[x["item"] for x in lines if not x["ok"]],
         seconds=round(time.perf_counter() - start, 1))
    return 0 if all(x["ok"] for x in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
