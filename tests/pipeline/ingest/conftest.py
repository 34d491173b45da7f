"""One private `ray start --head` for the `ray job submit` tests of this package."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ray_cluster import PrivateRayHead

#: GCS and dashboard ports of the shared test head (fixed: the job's recorded dashboard URL is checked).
HEAD_PORT = 6390
DASHBOARD_PORT = 8270


@pytest.fixture(scope="package")
def ray_head() -> Iterator[PrivateRayHead]:
    """A head shared by the job-submission tests (each submits its own jobs with their own
    databases; starting a head takes seconds of CPU). Torn down by killing exactly its own
    processes, which must all be gone afterwards."""
    head = PrivateRayHead(HEAD_PORT, DASHBOARD_PORT)
    head.start()
    try:
        yield head
    finally:
        head.stop()
    assert not head.processes(), "Ray processes of the test head survived"
