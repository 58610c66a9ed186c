"""`Producer`: build, check, serialise and emit, one call per business fact."""
from producer.envelope import build_event
from producer.serialize import serialize
from schemas.registry import load_registry

__all__ = ['Producer']


class Producer(object):
  """Sends events through an emitter; a context manager that flushes on exit.

  Args:
    emitter: a `FileEmitter`, `PubSubEmitter` or `KafkaEmitter`.
    fmt: `json` or `avro` (Confluent wire format).
    registry_path: the registry to check against (default: the shipped one).
  """

  def __init__(self, emitter, fmt='json', registry_path=None):
    self.emitter, self.fmt = emitter, fmt
    self.registry = load_registry(registry_path)
    self.sent = 0

  def send(self, event_type, payload, **envelope) -> dict:
    """Builds and sends one event; returns it. Raises ContractError (nothing
    sent) if the pipeline would not accept it."""
    event = build_event(event_type, payload, registry=self.registry, **envelope)
    self.send_event(event)
    return event

  def send_event(self, event: dict):
    """Sends an already built and checked envelope (e.g. a retry of one)."""
    self.emitter.emit(serialize(event, self.fmt, self.registry), event)
    self.sent += 1

  def close(self):
    self.emitter.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
