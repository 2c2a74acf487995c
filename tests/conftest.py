"""Fixtures of the cross-service tests; their shared steps are in support.py beside them."""

import sys
import tempfile
from pathlib import Path

import pytest

from socialrx_harness import procs
from socialrx_harness.postgres import LocalPostgres

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def own_postgres():
    """A PostgreSQL of the test's own, to stop and start (database `own`)."""
    data_dir = Path(tempfile.mkdtemp(prefix="socialrx-pg-own-"))
    server = LocalPostgres(data_dir, procs.free_port(), durable=False)
    server.start()
    server.create_database("own")
    yield server
    server.discard()
