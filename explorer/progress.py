"""A dependency-free progress bar with rate and ETA, written to stderr.

Silent when stderr is not a terminal unless ``force=True`` (so logs and CI stay clean), and
always silent with ``enabled=False``.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "training", unit="tok") as bar: bar.update(n, loss=2.3)``."""

    def __init__(self, total: float, desc: str = "", unit: str = "it", enabled: bool = True,
                 force: bool = False, stream=None, min_interval: float = 0.2):
        self.total = float(total)
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.enabled = enabled and (force or isatty)
        self.n = 0.0
        self.start = time.perf_counter()
        self._last = 0.0
        self.min_interval = min_interval
        self.postfix: dict[str, object] = {}

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1, **postfix) -> None:
        self.n += n
        self.postfix.update(postfix)
        now = time.perf_counter()
        if now - self._last >= self.min_interval or self.n >= self.total:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        if not self.enabled:
            return
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        frac = min(self.n / self.total, 1.0) if self.total > 0 else 1.0
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        width = 24
        filled = int(frac * width)
        bar = "#" * filled + "-" * (width - filled)
        post = " ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
        line = (f"\r{self.desc} [{bar}] {frac * 100:5.1f}% {_si(self.n)}/{_si(self.total)} "
                f"{_si(rate)}{self.unit}/s ETA {_hms(eta)} {post}")
        self.stream.write(line[:160].ljust(80))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _hms(s: float) -> str:
    if s == float("inf") or s != s:
        return "--:--"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"
