"""Test-wide settings: under CI (``CI`` set), hypothesis draws the same examples every run, so a
failure in CI reproduces locally with ``CI=true python -m pytest``.  ``train_env``: the setting
of tests that train (``pytestmark = pytest.mark.usefixtures("train_env")``)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

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
