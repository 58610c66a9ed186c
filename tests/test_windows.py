"""Event-time views: TestStream drives the watermark on BundleBasedDirectRunner
with --streaming; batch views on FnApiRunner equal a plain-Python computation."""
import datetime

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import RawRecord
from tests.helpers import as_json, envelope, options
from transforms.decode import decode_and_validate
from transforms.views import window_starts
from transforms.windows import LATE_EVENTS, ViewPolicy, WindowedViews

UTC = datetime.timezone.utc
T0 = 1709287200  # 2024-03-01T10:00:00Z
LATENESS = 600


def _at(seconds, user='u1', event_type='page_view', **kw):
  when = datetime.datetime.fromtimestamp(T0 + seconds, UTC)
  text = when.strftime('%Y-%m-%dT%H:%M:%S') + 'Z'
  event = decode_and_validate(RawRecord(as_json(envelope(
      event_type, event_time=text, ingested_at=text, trace_id='t%s' % seconds,
      payload__user_id=user, **kw))))[0]
  return beam.window.TimestampedValue(event, T0 + seconds)


def _streaming():
  opts = options(runner='BundleBasedDirectRunner')
  opts.view_as(StandardOptions).streaming = True
  return opts


def _minute_rows(rows):
  return rows | beam.Map(lambda r: (
      r['window_start'].strftime('%H:%M'), r['event_type'], r['event_count'],
      r['pane_timing']))


def test_on_time_late_and_too_late_panes_of_the_minute_view():
  stream = (TestStream()
            .advance_watermark_to(T0)
            .add_elements([_at(5), _at(10, 'u2')])
            # window 10:00-10:01 closes: ON_TIME pane with 2
            .advance_watermark_to(T0 + 120)
            # late but within the 600 s lateness: LATE pane with 3
            .add_elements([_at(20, 'u3')])
            # past the window end + lateness
            .advance_watermark_to(T0 + 60 + LATENESS + 1)
            .add_elements([_at(30, 'u4', payload__url='/too-late')])
            .advance_watermark_to_infinity())
  with TestPipeline(options=_streaming()) as p:
    views = p | stream | WindowedViews(ViewPolicy(
        allowed_lateness_s=LATENESS, beam_lateness_margin_s=3600, streaming=True))
    assert_that(_minute_rows(views['event_counts_1m']), equal_to([
        ('10:00', 'page_view', 2, 'ON_TIME'),
        ('10:00', 'page_view', 3, 'LATE')]), label='minute_panes')
    assert_that(views[LATE_EVENTS] | beam.Map(lambda d: (
        d.error_kind, 'event_counts_1m' in d.error_message,
        'user_activity_hourly' in d.error_message, b'/too-late' in d.raw)),
        equal_to([('late_event', True, False, True)]), label='late_letter')
    # The hourly window (10:00-11:00) was not missed: the event counts there.
    assert_that(views['user_activity_hourly'] | beam.Map(
        lambda r: (r['user_id'], r['event_count'], r['pane_timing'])),
        equal_to([('u1', 1, 'ON_TIME'), ('u2', 1, 'ON_TIME'), ('u3', 1, 'ON_TIME'),
                  ('u4', 1, 'ON_TIME')]), label='hourly')


def test_sliding_view_counts_distinct_users_in_three_windows():
  stream = (TestStream()
            .advance_watermark_to(T0)
            .add_elements([_at(400), _at(410), _at(420, 'u2')])
            .advance_watermark_to_infinity())
  with TestPipeline(options=_streaming()) as p:
    views = p | stream | WindowedViews(ViewPolicy(streaming=True))
    assert_that(views['active_users_15m'] | beam.Map(lambda r: (
        r['window_start'].strftime('%H:%M'), r['window_end'].strftime('%H:%M'),
        r['active_users'])), equal_to([
            ('09:55', '10:10', 2), ('10:00', '10:15', 2), ('10:05', '10:20', 2)]))


def test_sliding_view_late_for_its_oldest_window_only():
  # Event at 10:04 is in windows starting 09:50, 09:55, 10:00; the watermark
  # passes the 09:50 window's end + lateness (10:05 + 600 s) but not the others'
  # (its minute window 10:04-10:05 is missed too).
  stream = (TestStream()
            .advance_watermark_to(T0)
            .add_elements([_at(200)])
            .advance_watermark_to(T0 + 300 + LATENESS + 5)
            .add_elements([_at(240, 'u2')])
            .advance_watermark_to_infinity())
  with TestPipeline(options=_streaming()) as p:
    views = p | stream | WindowedViews(ViewPolicy(
        allowed_lateness_s=LATENESS, beam_lateness_margin_s=3600, streaming=True))
    panes = views['active_users_15m'] | beam.Map(lambda r: (
        r['window_start'].strftime('%H:%M'), r['active_users'], r['pane_timing']))
    # 09:50 missed u2 (no late pane); the other two windows count it late.
    assert_that(panes, equal_to([
        ('09:50', 1, 'ON_TIME'), ('09:55', 1, 'ON_TIME'), ('09:55', 2, 'LATE'),
        ('10:00', 1, 'ON_TIME'), ('10:00', 2, 'LATE')]), label='sliding')
    assert_that(views[LATE_EVENTS] | beam.Map(lambda d: d.error_message.split(':')[0]),
                equal_to(['too late for event_counts_1m, active_users_15m']),
                label='late')


def test_batch_views_equal_plain_python():
  events = [_at(s, 'u%d' % (s % 7), ['page_view', 'click', 'purchase'][s % 3])
            for s in range(0, 7200, 37)]
  expected = {}
  for tv in events:
    e = tv.value
    t = int(e.event_time.timestamp() * 1000000)
    for start in window_starts(t, 60, 60):
      key = (start, e.tenant_id, e.event_type)
      expected[key] = expected.get(key, 0) + 1
  with TestPipeline(options=options()) as p:
    views = p | beam.Create([tv.value for tv in events]) | WindowedViews(ViewPolicy())
    assert_that(views['event_counts_1m'] | beam.Map(lambda r: (
        (int(r['window_start'].replace(tzinfo=UTC).timestamp() * 1000000),
         r['tenant_id'], r['event_type']), r['event_count'], r['pane_timing'])),
        equal_to([(k, v, 'ON_TIME') for k, v in expected.items()]))


def test_early_firing_gives_an_early_pane_before_the_on_time_pane():
  stream = (TestStream()
            .advance_watermark_to(T0)
            .add_elements([_at(5), _at(6, 'u2')])
            .advance_processing_time(11)   # past --early_firing_s 10
            .add_elements([_at(7, 'u3')])
            .advance_watermark_to(T0 + 120)
            .advance_watermark_to_infinity())
  with TestPipeline(options=_streaming()) as p:
    views = p | stream | WindowedViews(ViewPolicy(
        allowed_lateness_s=LATENESS, early_firing_s=10,
        beam_lateness_margin_s=3600, streaming=True))
    assert_that(_minute_rows(views['event_counts_1m']), equal_to([
        ('10:00', 'page_view', 2, 'EARLY'),
        ('10:00', 'page_view', 3, 'ON_TIME')]))
