"""Test-wide settings: under CI (``CI`` set), hypothesis draws the same examples every run, so a
failure in CI reproduces locally with ``CI=true python -m pytest``."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
