"""Keep numba's on-disk cache honest about the scalar core.

numba's cache (``cache=True``) checks only the timestamp of the file that *defines* a kernel;
the kernels inline :mod:`fpformat.core` and its siblings, so an edit to the core alone would
leave stale machine code in use.  At import, a hash of the numeric sources is compared with the
one recorded beside the cache; when it differs, this package's cached kernels are deleted (numba
recompiles them on first use) and the new hash is recorded.  A read-only install or a custom
``NUMBA_CACHE_DIR`` is left alone (nothing there is edited in place).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Every module whose source is compiled into a cached kernel.
_SOURCES = ("core.py", "kernels.py", "block_core.py", "block_kernels.py", "gemm_core.py",
            "gemm.py", "rounding.py")
_STAMP = "fpformat-core.sha256"


def invalidate_stale_cache(pkg: Path | None = None) -> bool:
    """Delete the numba cache files of the package in ``pkg`` (default: fpformat) if its numeric
    sources changed since they were written.  Returns whether anything was deleted."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return False
    pkg = Path(__file__).resolve().parent if pkg is None else Path(pkg)
    h = hashlib.sha256()
    for name in _SOURCES:
        p = pkg / name
        if p.exists():
            h.update(p.read_bytes())
    digest = h.hexdigest()
    cache = pkg / "__pycache__"
    stamp = cache / _STAMP
    try:
        if stamp.exists() and stamp.read_text().strip() == digest:
            return False
        removed = False
        if cache.is_dir():
            for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
                f.unlink(missing_ok=True)
                removed = True
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest + "\n")
        return removed
    except OSError:                   # read-only install: its cache cannot go stale by editing
        return False
