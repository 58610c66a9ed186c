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
