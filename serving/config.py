"""The view catalog and the API keys.

The catalog (`catalog.json`, or `--catalog FILE`) lists what the API exposes,
with tiers, consistency, roles and the tenant column; nothing else is served.
API keys map to a tenant and a role: `{"<key>": {"tenant_id": "acme", "role":
"reader" | "admin"}}`, from `--api_keys FILE` or the same JSON in the
environment variable `ANALYTICS_API_KEYS`; never in the code or the template.
"""
import json
import os
import re
from typing import Dict, NamedTuple, Optional, Tuple

__all__ = ['Caller', 'Exposure', 'Catalog', 'load_catalog', 'load_api_keys',
           'ROLES', 'DEFAULT_CATALOG', 'API_KEYS_ENV']

ROLES = ('reader', 'admin')
DEFAULT_CATALOG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               'catalog.json')
API_KEYS_ENV = 'ANALYTICS_API_KEYS'
_IDENTIFIER = re.compile(r'[a-z_][a-z0-9_]{0,63}')
_TIERS = ('hot', 'cold')
# The contract's tenant_id: also a safe path segment for the cold tier's folders.
_TENANT = re.compile(r'[a-z0-9][a-z0-9_-]{0,63}')
_CONSISTENCY = ('eventual', 'read-after-write')


class Caller(NamedTuple):
  tenant_id: str
  role: str

  @property
  def is_admin(self):
    return self.role == 'admin'


class Exposure(NamedTuple):
  """One catalog entry."""
  name: str
  tiers: Tuple[str, ...]
  consistency: str
  roles: Tuple[str, ...]
  tenant_column: str
  time_column: str
  freshness_column: str
  key_consistency: Optional[str] = None


class Catalog(NamedTuple):
  views: Dict[str, Exposure]
  events: Exposure


def _exposure(name, entry) -> Exposure:
  for field in ('tenant_column', 'time_column', 'freshness_column'):
    if not _IDENTIFIER.fullmatch(entry.get(field, '')):
      raise ValueError('catalog: %s.%s must be a column name' % (name, field))
  if not _IDENTIFIER.fullmatch(name):
    raise ValueError('catalog: %r is not a table name' % name)
  tiers = tuple(entry['tiers'])
  if not tiers or set(tiers) - set(_TIERS):
    raise ValueError('catalog: %s.tiers must be among %s' % (name, _TIERS))
  roles = tuple(entry['roles'])
  if set(roles) - set(ROLES):
    raise ValueError('catalog: %s.roles must be among %s' % (name, ROLES))
  for field in ('consistency', 'key_consistency'):
    if entry.get(field) not in _CONSISTENCY + ((None,) if field ==
                                               'key_consistency' else ()):
      raise ValueError('catalog: %s.%s must be one of %s' % (
          name, field, _CONSISTENCY))
  return Exposure(name, tiers, entry['consistency'], roles,
                  entry['tenant_column'], entry['time_column'],
                  entry['freshness_column'], entry.get('key_consistency'))


def load_catalog(path: Optional[str] = None) -> Catalog:
  with open(path or DEFAULT_CATALOG, encoding='utf-8') as f:
    config = json.load(f)
  views = {name: _exposure(name, entry)
           for name, entry in config.get('views', {}).items()}
  for view in views.values():
    if 'cold' in view.tiers:
      raise ValueError('catalog: %s: only events are kept in the cold tier'
                       % view.name)
  return Catalog(views, _exposure('events', config['events']))


def load_api_keys(path: Optional[str] = None,
                  environ=os.environ) -> Dict[str, Caller]:
  """Keys from `path`, else from $ANALYTICS_API_KEYS; ValueError if neither
  or if an entry is malformed (the message never contains a key)."""
  if path:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  elif environ.get(API_KEYS_ENV):
    text = environ[API_KEYS_ENV]
  else:
    raise ValueError('no API keys: give --api_keys FILE or set %s' % API_KEYS_ENV)
  try:
    config = json.loads(text)
  except ValueError:
    raise ValueError('API keys: not a JSON object') from None
  keys = {}
  for number, (key, entry) in enumerate(sorted(config.items()), 1):
    if not isinstance(entry, dict) or entry.get('role') not in ROLES or not \
        _TENANT.fullmatch(str(entry.get('tenant_id'))) or len(key) < 16:
      raise ValueError('API keys: entry %d needs a key of 16+ characters, a '
                       'tenant_id like the contract\'s (%s) and a role in %s'
                       % (number, _TENANT.pattern, ROLES))
    keys[key] = Caller(entry['tenant_id'], entry['role'])
  return keys
