"""The same HLR tests on PostgreSQL (several hubs share one database): upserts, row locks, charges.

The test functions are imported from the SQLite modules and collected again
here with ``engine`` overridden by a PostgreSQL engine in a schema of its own
(``hlr_<random>`` in the ``test`` database, dropped afterwards). Without a
server they skip (fail with STAFFETTA_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit

import pytest

from store.db import create_schema, make_engine
from tests.conftest import port_open, require_service
from tests.hlr.test_jobs import (  # noqa: F401 - collected again with the PostgreSQL engine
    test_out_of_credit_stops_and_resumes_after_a_top_up,
    test_results_files,
    test_stale_after_is_honoured,
    test_two_runners_on_one_job_never_charge_twice,
)
from tests.hlr.test_service import (  # noqa: F401
    test_100_concurrent_lookups_make_one_provider_call,
    test_miss_is_charged_hit_is_free,
    test_no_credit_refuses_and_keeps_nothing,
)

PG_URL = os.environ.get("STAFFETTA_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
pytestmark = pytest.mark.services


@pytest.fixture
def engine():
    u = urlsplit(PG_URL)
    require_service(port_open(u.hostname or "127.0.0.1", u.port or 5432),
                    f"PostgreSQL not reachable at {u.hostname}:{u.port or 5432}")
    import psycopg2

    dsn = PG_URL.replace("+psycopg2", "")
    schema = "hlr_" + uuid.uuid4().hex[:12]
    with psycopg2.connect(dsn) as c, c.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    e = make_engine(f"{PG_URL}?options=-csearch_path%3D{schema}")
    create_schema(e)
    yield e
    e.dispose()
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()
