"""Upcasters: functions that lift a payload from one major version to the next.

The registry names them per event type (`"upcasters": {"v1": "purchase_v1_to_v2"}`),
so a v1 record and a v2 record land in the same table shape. An upcast is
total on what the older version accepts: a new version never turns a record
an accepted version allows into a dead letter (contract section 1). Where the
old value has no exact value in the new shape, the new field stays empty and
the old value is kept exactly beside it; the decode step counts such records
(`upcast_inexact`, see `is_inexact`). Nothing is rounded, nothing refused.
"""
import decimal

from iso4217 import Currency

__all__ = ['named', 'purchase_v1_to_v2', 'minor_units', 'is_inexact',
           'exact_decimal', 'UPCASTERS']

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


def exact_decimal(amount) -> decimal.Decimal:
  """A v1 amount (JSON or Avro number) as the exact decimal it was sent as.

  `repr()` of a float is the shortest text that reads back as the same float,
  so 0.1 counts as 0.1, not as 0.1000000000000000055...; an integer (2^70
  included) is exact as it is. (A JSON literal with more significant digits
  than a double holds was read as the nearest double by then: its text is
  that double's shortest form.)"""
  return decimal.Decimal(repr(amount) if isinstance(amount, float) else amount)


def _plain(value: decimal.Decimal) -> str:
  """Decimal text without an exponent (`1E-5` -> `0.00001`)."""
  return format(value, 'f')


def purchase_v1_to_v2(payload: dict) -> dict:
  """purchase v1 (`amount`, a number) -> v2 (`amount_minor`, an integer in the
  currency's minor units): 12.5 EUR -> 1250, with `amount_decimal` "12.5"
  (the amount as sent). Where minor units cannot hold the amount exactly
  (12.345 EUR, 0.5 JPY, an amount past a 64-bit `amount_minor`, a code ISO
  4217 does not list) `amount_minor` is null and `amount_decimal` still
  holds it exactly."""
  exact = exact_decimal(payload['amount'])
  upcast = {k: v for k, v in payload.items() if k != 'amount'}
  upcast['amount_minor'] = None
  upcast['amount_decimal'] = _plain(exact)
  try:
    digits = minor_units(payload['currency'])
  except ValueError:
    return upcast
  with decimal.localcontext() as context:
    context.prec = max(28, len(exact.as_tuple().digits) + digits + 2)
    minor = exact.scaleb(digits)
    if minor == minor.to_integral_value() and minor <= _INT64_MAX:
      upcast['amount_minor'] = int(minor)
  return upcast


def is_inexact(event_type: str, payload: dict) -> bool:
  """Whether an upcast kept an amount that minor units cannot hold (its
  `amount_minor` empty, the amount in `amount_decimal`): counted."""
  return (event_type == 'purchase' and 'amount_decimal' in payload
          and payload.get('amount_minor') is None)


UPCASTERS = {'purchase_v1_to_v2': purchase_v1_to_v2}


def named(name: str):
  """The upcaster a registry names; a configuration error if there is none."""
  try:
    return UPCASTERS[name]
  except KeyError:
    raise ValueError('registry: no upcaster named %r (known: %s)' % (
        name, ', '.join(sorted(UPCASTERS)))) from None
