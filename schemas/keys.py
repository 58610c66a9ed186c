"""The deterministic idempotency key of contract section 1.

    sha256_hex(f"{source}:{event_type}:{business_id}:{event_time}")

`business_id` is the `order_id` of a purchase and `f"{user_id}:{url}"` of a page
view or a click (the registry's `x-business-id`); `event_time` is the string as
sent. Never a random id or the wall clock: a retry must carry the same key.
"""
import hashlib

from schemas.registry import default_registry

__all__ = ['business_id', 'idempotency_key', 'key_shard']


def business_id(event_type: str, payload: dict, registry=None) -> str:
  """The business fact's id, from the fields the registry names for the type."""
  registry = registry or default_registry()
  fields = registry.reader(event_type, 'v1').business_id
  return ':'.join(str(payload[f]) for f in fields)


def idempotency_key(source: str, event_type: str, business: str,
                    event_time: str) -> str:
  """The 64-hex-digit key producers put on an event."""
  text = '%s:%s:%s:%s' % (source, event_type, business, event_time)
  return hashlib.sha256(text.encode('utf-8')).hexdigest()


def key_shard(key: str, shards: int) -> int:
  """A stable shard of an idempotency key (its hex digest spreads evenly); not
  Python's `hash`, which differs between worker processes."""
  return int(key[:8], 16) % shards
