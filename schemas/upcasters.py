"""Upcasters: functions that lift a payload from one major version to the next.

The registry names them per event type (`"upcasters": {"v1": "purchase_v1_to_v2"}`),
so a v1 record and a v2 record land in the same table shape. An upcaster is exact
or refuses: where the old value has no exact value in the new shape it raises
`ValueError` naming the field, and the record becomes a `schema_violation` dead
letter (nothing rounded, nothing invented) that a repair can fix and replay.
"""
import decimal

from iso4217 import Currency

__all__ = ['named', 'purchase_v1_to_v2', 'minor_units', 'UPCASTERS']

_INT64_MAX = 2 ** 63 - 1


def minor_units(currency: str) -> int:
  """ISO 4217 minor-unit digits of a currency code (2 where ISO gives none,
  e.g. `XXX`); raises ValueError for a code ISO 4217 does not list."""
  try:
    exponent = Currency(currency).exponent
  except ValueError:
    raise ValueError('payload.currency: %r is not an ISO 4217 currency, so '
                     'its minor units are unknown' % currency) from None
  return 2 if exponent is None else exponent


def purchase_v1_to_v2(payload: dict) -> dict:
  """purchase v1 (`amount`, a number) -> v2 (`amount_minor`, an integer in the
  currency's minor units): 12.5 EUR -> 1250; 12.345 EUR or 0.5 JPY refuse."""
  amount = payload['amount']
  digits = minor_units(payload['currency'])
  # repr() of a float is the shortest text that reads back as the same float,
  # so 0.1 counts as 0.1, not as 0.1000000000000000055...
  exact = decimal.Decimal(repr(amount) if isinstance(amount, float) else amount)
  minor = exact.scaleb(digits)
  if minor != minor.to_integral_value():
    raise ValueError('payload.amount: %s %s has more decimals than the '
                     'currency\'s %d minor digits; it cannot become amount_minor '
                     'exactly' % (amount, payload['currency'], digits))
  if minor > _INT64_MAX:
    raise ValueError('payload.amount: %s %s is too large for a 64-bit '
                     'amount_minor' % (amount, payload['currency']))
  upcast = {k: v for k, v in payload.items() if k != 'amount'}
  upcast['amount_minor'] = int(minor)
  return upcast


UPCASTERS = {'purchase_v1_to_v2': purchase_v1_to_v2}


def named(name: str):
  """The upcaster a registry names; a configuration error if there is none."""
  try:
    return UPCASTERS[name]
  except KeyError:
    raise ValueError('registry: no upcaster named %r (known: %s)' % (
        name, ', '.join(sorted(UPCASTERS)))) from None
