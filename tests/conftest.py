import pytest

from tests.servers import RedisServer


@pytest.fixture
def redis_server():
  """A fresh real redis-server for one test, stopped after it."""
  server = RedisServer().start()
  try:
    yield server
  finally:
    server.stop()
