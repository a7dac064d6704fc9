"""The same HLR tests on PostgreSQL (several hubs share one database): upserts, row locks, charges.

The test functions are imported from the SQLite modules and collected again
here with ``engine`` overridden by a PostgreSQL engine in a schema of its own
(``hlr_<random>`` in the ``test`` database, dropped afterwards). Without a
server they skip (fail with STAFFETTA_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import os

import pytest

from staffetta.store.db import create_schema, make_engine
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
def engine(pg_schema_url):
    e = make_engine(pg_schema_url)
    create_schema(e)
    yield e
    e.dispose()
