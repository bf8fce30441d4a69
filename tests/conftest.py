"""The fixtures; what they are built from lives in tests/support/."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.support.components import PgCluster, postgres_cluster, postgres_missing
from tests.support.logs import tether_records
from tests.support.server import serve
from tests.support.tls import Certs


@pytest.fixture
def run() -> Any:
    """``with run(app, **options) as srv:`` — the in-process server as a fixture."""
    return serve


@pytest.fixture
def tether_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog with Tether's error (DEBUG and up) and access records in it."""
    with tether_records(caplog) as records:
        yield records


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL 15 cluster for the session (skipped where it is not installed)."""
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (trustme), per module."""
    pytest.importorskip("trustme")
    return Certs(tmp_path_factory.mktemp("certs"))
