"""Test-wide settings: under CI (``CI`` set), hypothesis draws the same examples every run, so a
failure in CI reproduces locally with ``CI=true python -m pytest``.  ``train_env``: the setting
of tests that train (``pytestmark = pytest.mark.usefixtures("train_env")``)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from procs import start_cuda_child, stop_started_children

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def train_env(tmp_path_factory, monkeypatch):
    """Training tests: one session-wide ``FPX_CACHE`` (corpus and kernels cached once, nothing
    written to the user's cache) and one thread for torch and the numba kernels."""
    monkeypatch.setenv("FPX_CACHE", str(tmp_path_factory.getbasetemp() / "fpxcache"))
    from explorer.train.trainer import set_threads
    set_threads(1)


#: The CUDA simulator children behind the ``sim`` fixtures (tests/test_cuda.py, about 100 s of
#: one core; tests/test_cuda_gemm.py): started as soon as the tests are collected, so that they
#: run beside the tests before them.
_CHILD_OF_MODULE = {"test_cuda.py": ("cuda_child.py", "sim", True),
                    "test_cuda_gemm.py": ("cuda_gemm_child.py", "sim", True)}


def pytest_collection_finish(session):
    for item in session.items:
        child = _CHILD_OF_MODULE.get(item.path.name)
        if child is not None and "sim" in item.fixturenames:
            start_cuda_child(*child)


def pytest_sessionfinish(session):
    stop_started_children()
