"""Fixtures of the fault suite (helpers: tests/faults/__init__.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import make_library


@pytest.fixture(scope="package")
def fault_library(tmp_path_factory) -> list[Path]:
    """8 synthetic 12 s songs in five formats and 2 MIDI files: long enough on 2 CPUs that a
    run can be hit while it is committing parts. Written once for the fault suite: runs only
    read it (their databases and outputs are their own)."""
    return make_library(tmp_path_factory.mktemp("library"))
