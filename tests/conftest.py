"""Shared test helpers."""

from __future__ import annotations

import importlib
import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str):
    """Import `module`, or skip the test when it is absent — except in CI, where it must be there."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"{module} is required in CI (CI=true) but cannot be imported: {exc}")
        pytest.skip(f"{module} is not installed")
