"""Keep numba's on-disk cache honest about the scalar core.

numba's cache (``cache=True``) checks only the timestamp of the file that *defines* a kernel;
the kernels inline :mod:`fpformat.core` and its siblings, so an edit to the core alone would
leave stale machine code in use.  At import, a hash of the numeric sources is compared with the
one recorded beside the cache; when it differs, this package's cached kernels are deleted (numba
recompiles them on first use) and the new hash is recorded.  The cache is where numba puts it:
the package's ``__pycache__``, or under ``NUMBA_CACHE_DIR`` when that is set (numba's own
sub-folder for the package's directory).  A read-only install is left alone (nothing there is
edited in place).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from numba.core.caching import UserProvidedCacheLocator

# Every module whose source is compiled into a cached kernel.
_SOURCES = ("core.py", "kernels.py", "block_core.py", "block_kernels.py", "gemm_core.py",
            "gemm.py", "rounding.py", "unit_core.py", "cuda_kernels.py", "cuda_gemm.py")
_STAMP = "fpformat-core.sha256"


def invalidate_stale_cache(pkg: Path | None = None) -> bool:
    """Delete the numba cache files of the package in ``pkg`` (default: fpformat) if its numeric
    sources changed since they were written.  Returns whether anything was deleted."""
    # numba names the folder after the kernels' file path as imported (absolute, unresolved)
    pkg = Path(os.path.abspath(__file__)).parent if pkg is None else Path(pkg)
    h = hashlib.sha256()
    for name in _SOURCES:
        p = pkg / name
        if p.exists():
            h.update(p.read_bytes())
    digest = h.hexdigest()
    cache = cache_dir(pkg)
    stamp = cache / _STAMP
    try:
        if stamp.exists() and stamp.read_text().strip() == digest:
            return False
        removed = False
        if cache.is_dir():
            for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
                f.unlink(missing_ok=True)
                removed = True
        cache.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
        return removed
    except OSError:                   # read-only install: its cache cannot go stale by editing
        return False


def cache_dir(pkg: Path) -> Path:
    """Where numba keeps the cached kernels of the modules in ``pkg``: under ``NUMBA_CACHE_DIR``
    (read at call time, as numba reads it at import) in the sub-folder numba names after the
    package's directory, else the package's ``__pycache__``."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    if root:
        subpath = UserProvidedCacheLocator.get_suitable_cache_subpath(str(pkg / "core.py"))
        return Path(root) / subpath
    return pkg / "__pycache__"
