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


@pytest.fixture(scope='session')
def bigquery_emulator(tmp_path_factory):
  """A real BigQuery REST API (the local emulator) for the whole session."""
  from tests.servers import BigQueryEmulator
  server = BigQueryEmulator(str(tmp_path_factory.mktemp('bigquery'))).start()
  try:
    yield server
  finally:
    server.stop()
