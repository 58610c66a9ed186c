import datetime

import pytest

from transforms.ingest.timestamps import format_utc, parse_rfc3339

UTC = datetime.timezone.utc


@pytest.mark.parametrize('text, expected', [
    ('2024-03-01T10:00:00Z', datetime.datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ('2024-03-01t10:00:00z', datetime.datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ('2024-03-01T12:00:00+02:00', datetime.datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ('2024-03-01T09:30:00-00:30', datetime.datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ('2024-03-01T10:00:00.1234569Z',
     datetime.datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ('2024-02-29T00:00:00Z', datetime.datetime(2024, 2, 29, tzinfo=UTC)),
    ('0001-01-01T00:00:00Z', datetime.datetime(1, 1, 1, tzinfo=UTC)),
    ('9999-12-31T23:59:59.999999Z',
     datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
])
def test_parse_rfc3339_valid_forms_normalise_to_utc(text, expected):
  assert parse_rfc3339(text) == expected


@pytest.mark.parametrize('text', [
    '2024-03-01T10:00:00',          # no zone
    '2024-03-01 10:00:00Z',         # space separator
    '2024-02-30T00:00:00Z',         # not a real date
    '2023-02-29T00:00:00Z',         # not a leap year
    '2024-03-01T23:59:60Z',         # leap second
    '2024-03-01T24:00:00Z',
    '2024-03-01T10:00:00+24:00',
    '2024-03-01T10:00:00+0200',
    '0000-01-01T00:00:00Z',         # year 0000
    '0001-01-01T00:00:00+00:01',    # before 0001-01-01T00:00:00Z in UTC
    '9999-12-31T23:59:59-00:01',    # after 9999-12-31T23:59:59.999999Z in UTC
    '２０２４-03-01T10:00:00Z',      # non-ASCII digits
    '2024-03-01T10:00:00.Z',
    '2024-3-01T10:00:00Z',
    '',
    None,
    1709287200,
])
def test_parse_rfc3339_rejects_invalid(text):
  assert parse_rfc3339(text) is None


def test_format_utc_is_microsecond_z():
  value = datetime.datetime(2024, 3, 1, 12, 0, 0, 5,
                            tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
  assert format_utc(value) == '2024-03-01T10:00:00.000005Z'
