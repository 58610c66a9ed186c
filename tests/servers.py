"""Real servers the tests start themselves on free loopback ports."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

__all__ = ['free_port', 'RedisServer', 'BigQueryEmulator', 'BeamJobService',
           'ApiServer', 'PrometheusServer', 'PubSubEmulator']

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class _ServerProcess(object):
  """A server process: started, polled until `_ready()`, stopped. Restartable."""

  name = 'server'
  timeout_s = 30

  def __init__(self):
    self.process = None

  def _command(self):
    raise NotImplementedError

  def _ready(self) -> bool:
    raise NotImplementedError

  def _popen(self):
    return subprocess.Popen(
        self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

  def start(self):
    self.process = self._popen()
    deadline = time.monotonic() + self.timeout_s
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        error = self.process.stderr.read().decode()[-2000:] \
            if self.process.stderr else ''
        self.process = None
        raise RuntimeError('%s exited at start: %s' % (self.name, error))
      try:
        if self._ready():
          return self
      except OSError:
        pass  # not listening yet: poll again
      time.sleep(0.1)
    self.stop()
    raise RuntimeError('%s did not answer within %d s' % (self.name, self.timeout_s))

  def stop(self):
    if self.process is not None:
      self.process.terminate()
      self.process.wait(timeout=10)
      self.process = None


class RedisServer(_ServerProcess):
  """A `redis-server` process (Debian's package) on a free loopback port."""

  name = 'redis-server'
  timeout_s = 10

  def __init__(self, port=None):
    super().__init__()
    self.binary = shutil.which('redis-server')
    if self.binary is None:
      raise RuntimeError('redis-server is not installed: apt-get install '
                         'redis-server (run_tests.sh does this as root)')
    self.port = port or free_port()

  @property
  def url(self):
    return 'redis://127.0.0.1:%d/0' % self.port

  def _command(self):
    return [self.binary, '--port', str(self.port), '--bind', '127.0.0.1',
            '--save', '', '--appendonly', 'no']

  def _ready(self):
    with socket.create_connection(('127.0.0.1', self.port), timeout=0.2) as s:
      s.sendall(b'PING\r\n')
      return s.recv(16).startswith(b'+PONG')


class BigQueryEmulator(_ServerProcess):
  """The local BigQuery emulator (`local-bigquery`, in .bqvenv, Python 3.13)
  serving the BigQuery REST API on a free loopback port."""

  name = 'the BigQuery emulator'

  def __init__(self, data_dir):
    super().__init__()
    self.binary = os.environ.get('ANALYTICS_BQ_EMULATOR') or os.path.join(
        _ROOT, '.bqvenv', 'bin', 'local-bigquery')
    if not os.path.exists(self.binary):
      raise RuntimeError('the BigQuery emulator is not installed: run '
                         'scripts/bootstrap_bigquery_emulator.sh (run_tests.sh does)')
    self.data_dir = data_dir
    self.port, self.grpc_port = free_port(), free_port()

  @property
  def endpoint(self):
    return 'http://127.0.0.1:%d' % self.port

  def client(self, project='test-proj'):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery
    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options={'api_endpoint': self.endpoint})

  def _command(self):
    return [self.binary, 'serve', '--host', '127.0.0.1', '--port', str(self.port),
            '--grpc-port', str(self.grpc_port), '--data-dir', self.data_dir]

  def _ready(self):
    try:
      urllib.request.urlopen(
          self.endpoint + '/bigquery/v2/projects/test-proj/datasets', timeout=1)
    except urllib.error.HTTPError:
      pass  # any HTTP answer means the server is up
    return True


class BeamJobService(_ServerProcess):
  """Beam's own Python job service (the Fn API path Flink and Dataflow use)."""

  name = 'the Beam job service'

  def __init__(self):
    super().__init__()
    self.port = free_port()

  @property
  def endpoint(self):
    return 'localhost:%d' % self.port

  def _command(self):
    return [sys.executable, '-m',
            'apache_beam.runners.portability.local_job_service_main',
            '--port', str(self.port)]

  def _ready(self):
    socket.create_connection(('127.0.0.1', self.port), timeout=0.2).close()
    return True


class ApiServer(_ServerProcess):
  """The serving layer, `python -m serving`, on a free loopback port."""

  name = 'the serving API'

  def __init__(self, *flags, env=None):
    super().__init__()
    self.port = free_port()
    self.flags, self.env = list(flags), env

  @property
  def url(self):
    return 'http://127.0.0.1:%d' % self.port

  def _command(self):
    return [sys.executable, '-m', 'serving', '--port', str(self.port)] + self.flags

  def _popen(self):
    environ = dict(os.environ, PYTHONPATH=_ROOT, **(self.env or {}))
    return subprocess.Popen(self._command(), cwd=_ROOT, env=environ,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

  def _ready(self):
    try:
      urllib.request.urlopen(self.url + '/v1/catalog', timeout=1)
    except urllib.error.HTTPError as e:
      return e.code == 401
    return True


class PrometheusServer(_ServerProcess):
  """A real Prometheus (Debian's `prometheus` package, 2.42) on a free
  loopback port, with its own config, rules and storage in `folder`."""

  name = 'prometheus'

  def __init__(self, folder, config):
    super().__init__()
    self.binary = shutil.which('prometheus')
    if self.binary is None:
      raise RuntimeError('prometheus is not installed: apt-get install '
                         'prometheus (run_tests.sh does this as root)')
    self.folder, self.port = folder, free_port()
    self.config = os.path.join(folder, 'prometheus.yml')
    with open(self.config, 'w') as f:
      f.write(config)

  @property
  def url(self):
    return 'http://127.0.0.1:%d' % self.port

  def _command(self):
    return [self.binary, '--config.file', self.config,
            '--storage.tsdb.path', os.path.join(self.folder, 'data'),
            '--web.listen-address', '127.0.0.1:%d' % self.port,
            '--log.level', 'warn']

  def _ready(self):
    urllib.request.urlopen(self.url + '/-/ready', timeout=1)
    return True

  def api(self, path):
    """A JSON answer of its HTTP API (`path` under /api/v1/)."""
    import json
    with urllib.request.urlopen(self.url + '/api/v1/' + path, timeout=5) as r:
      return json.load(r)['data']


class PubSubEmulator(_ServerProcess):
  """Google's Pub/Sub emulator (Debian's `google-cloud-cli-pubsub-emulator`,
  on Debian 12 machines of this kind; Java 17) on a free loopback port,
  started as `gcloud beta emulators pubsub start`. gcloud starts a Java child:
  the whole process group is stopped."""

  name = 'the Pub/Sub emulator'
  timeout_s = 60

  def __init__(self, project='test-proj'):
    super().__init__()
    self.gcloud = shutil.which('gcloud')
    if self.gcloud is None:
      raise RuntimeError('gcloud is not installed (Debian 13 machines of this '
                         'kind lack Google\'s packages)')
    self.project, self.port = project, free_port()

  @property
  def host(self):
    return '127.0.0.1:%d' % self.port

  def _command(self):
    return [self.gcloud, 'beta', 'emulators', 'pubsub', 'start',
            '--host-port=%s' % self.host, '--project=%s' % self.project,
            '--quiet']

  def _popen(self):
    return subprocess.Popen(self._command(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

  def _ready(self):
    urllib.request.urlopen('http://%s/v1/projects/%s/topics' % (
        self.host, self.project), timeout=1)
    return True

  def stop(self):
    if self.process is None:
      return
    import signal
    from benchmarks.processes import child_pids
    family = [self.process.pid]
    for pid in family:  # gcloud, its Java child, and theirs
      family.extend(child_pids(pid))
    for pid in reversed(family):
      try:
        os.kill(pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
    self.process.wait(timeout=20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(
        os.path.exists('/proc/%d' % pid) for pid in family[1:]):
      time.sleep(0.1)
    self.process = None
