"""Fixtures of the integration tests: a private redis-server per module, for tests that need a
keyspace nobody else touches (other suites share the server on 6379)."""

from __future__ import annotations

import pytest

from tests.redis_server import PrivateRedis


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
