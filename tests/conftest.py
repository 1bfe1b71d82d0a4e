import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from ._redis import RedisPlace, RedisServer, forget, redis_for_tests, unique_prefix

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("stress", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# -- Redis: a private server for the session, or the shared one; a prefix per test --


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for the tests that need one: a private redis-server (no persistence)
    started from the installed binary, else the one on 127.0.0.1:6379."""
    with redis_for_tests(tmp_path_factory.mktemp("redis")) as url:
        if url is None:
            pytest.skip("needs Redis: no redis-server binary, and none on 127.0.0.1:6379")
        yield url


@pytest.fixture
def redis_place(redis_url: str) -> Iterator[RedisPlace]:
    """A key prefix of this test's own on the tests' Redis (its keys deleted after)."""
    place = RedisPlace(redis_url, unique_prefix())
    yield place
    forget(place)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own with AOF ``appendfsync always`` (to restart
    or kill it)."""
    try:
        server = RedisServer(tmp_path, fsync="always")
    except FileNotFoundError:
        pytest.skip("needs the redis-server binary (this test restarts its own Redis)")
    server.start()
    yield server
    server.stop()
