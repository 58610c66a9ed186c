import pytest

from tests.servers import BeamJobService, BigQueryEmulator, RedisServer


def _running(server):
  """Yields a started server and stops it afterwards."""
  server.start()
  try:
    yield server
  finally:
    server.stop()


@pytest.fixture
def redis_server():
  """A fresh real redis-server for one test, stopped after it."""
  yield from _running(RedisServer())


@pytest.fixture(scope='session')
def bigquery_emulator(tmp_path_factory):
  """A real BigQuery REST API (the local emulator) for the whole session."""
  yield from _running(BigQueryEmulator(str(tmp_path_factory.mktemp('bigquery'))))


@pytest.fixture(scope='session')
def job_service():
  """Beam's own Python job service, for PortableRunner runs."""
  yield from _running(BeamJobService())
