"""Real servers the tests start themselves on free loopback ports."""
import shutil
import socket
import subprocess
import time

__all__ = ['free_port', 'RedisServer']


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class RedisServer(object):
  """A `redis-server` process (Debian's package) on a free loopback port."""

  def __init__(self, port=None):
    self.binary = shutil.which('redis-server')
    if self.binary is None:
      raise RuntimeError('redis-server is not installed: apt-get install redis-server '
                         '(.ci/run does this)')
    self.port = port or free_port()
    self.process = None

  @property
  def url(self):
    return 'redis://127.0.0.1:%d/0' % self.port

  def start(self):
    self.process = subprocess.Popen(
        [self.binary, '--port', str(self.port), '--bind', '127.0.0.1',
         '--save', '', '--appendonly', 'no'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
      try:
        with socket.create_connection(('127.0.0.1', self.port), timeout=0.2) as s:
          s.sendall(b'PING\r\n')
          if s.recv(16).startswith(b'+PONG'):
            return self
      except OSError:
        time.sleep(0.05)
    self.stop()
    raise RuntimeError('redis-server did not answer on port %d' % self.port)

  def stop(self):
    if self.process is not None:
      self.process.terminate()
      self.process.wait(timeout=10)
      self.process = None


class BigQueryEmulator(object):
  """The local BigQuery emulator (`local-bigquery`, in .bqvenv, Python 3.13)
  serving the BigQuery REST API on a free loopback port."""

  def __init__(self, data_dir):
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    self.binary = os.environ.get('ANALYTICS_BQ_EMULATOR') or os.path.join(
        root, '.bqvenv', 'bin', 'local-bigquery')
    if not os.path.exists(self.binary):
      raise RuntimeError('the BigQuery emulator is not installed: run '
                         'scripts/bootstrap_bigquery_emulator.sh (run_tests.sh does)')
    self.data_dir = data_dir
    self.port, self.grpc_port = free_port(), free_port()
    self.process = None

  @property
  def endpoint(self):
    return 'http://127.0.0.1:%d' % self.port

  def client(self, project='test-proj'):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery
    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options={'api_endpoint': self.endpoint})

  def start(self):
    import urllib.request
    self.process = subprocess.Popen(
        [self.binary, 'serve', '--host', '127.0.0.1', '--port', str(self.port),
         '--grpc-port', str(self.grpc_port), '--data-dir', self.data_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
      try:
        urllib.request.urlopen(
            self.endpoint + '/bigquery/v2/projects/test-proj/datasets', timeout=1)
        return self
      except OSError as e:
        if getattr(e, 'code', None):  # an HTTP answer: the server is up
          return self
        time.sleep(0.2)
    self.stop()
    raise RuntimeError('the BigQuery emulator did not answer on %d' % self.port)

  def stop(self):
    if self.process is not None:
      self.process.terminate()
      self.process.wait(timeout=10)
      self.process = None


class BeamJobService(object):
  """Beam's own Python job service (the Fn API path Flink and Dataflow use)."""

  def __init__(self):
    self.port = free_port()
    self.process = None

  @property
  def endpoint(self):
    return 'localhost:%d' % self.port

  def start(self):
    import sys
    self.process = subprocess.Popen(
        [sys.executable, '-m',
         'apache_beam.runners.portability.local_job_service_main',
         '--port', str(self.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
      try:
        socket.create_connection(('127.0.0.1', self.port), timeout=0.2).close()
        return self
      except OSError:
        time.sleep(0.1)
    self.stop()
    raise RuntimeError('the job service did not listen on %d' % self.port)

  def stop(self):
    if self.process is not None:
      self.process.terminate()
      self.process.wait(timeout=10)
      self.process = None
