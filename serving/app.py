"""The HTTP API and the dashboard (FastAPI).

    GET /v1/catalog                      what the caller may read
    GET /v1/views/{view}?start=&end=     a view's rows, RFC 3339 bounds on window_start
    GET /v1/events?start=&end=           events, bounds on event_time (hot and cold)
    GET /v1/events/{idempotency_key}     one event (read-after-write on hot)
    GET /metrics                         Prometheus metrics (admin keys only)
    GET /                                the dashboard (assets under /static)

Every call needs `X-API-Key`: an unknown or missing key is 401, a view outside
the caller's role 403, a view the catalog does not list 404. Rows are always
filtered by the caller's tenant (an admin sees every tenant). Each answer
carries `tiers`, `staleness_seconds` (now minus the newest `updated_at` /
`processed_at` among the rows read), `consistency` and, for views, the newest
final window, in the body and as `X-` headers.

`/metrics` (`serving/metrics.py`) is read with an admin key, as Prometheus
sends it (`Authorization: Bearer <key>`) or as `X-API-Key`: it carries
aggregates of every tenant (counts per tenant, never a row), so a reader key
gets 403.
"""
import datetime
import math
import os
import re

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from fastapi.staticfiles import StaticFiles

from serving import metrics, queries
from serving.backends import Unavailable
from transforms.ingest.timestamps import format_utc, parse_rfc3339

__all__ = ['create_app', 'MAX_URL_BYTES']

_UTC = datetime.timezone.utc
_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
_KEY = re.compile(r'[0-9a-f]{64}')
MAX_URL_BYTES = 2048


def _json_value(value):
  if isinstance(value, datetime.datetime):
    return format_utc(value)
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _bound(value, name):
  parsed = parse_rfc3339(value)
  if parsed is None:
    raise HTTPException(400, '%s: not an RFC 3339 timestamp with a zone' % name)
  return parsed


def _range(start, end):
  start, end = _bound(start, 'start'), _bound(end, 'end')
  if not start < end:
    raise HTTPException(400, 'start must be before end')
  return start, end


def create_app(hot, cold, catalog, api_keys, hot_retention_days=7.0,
               clock=lambda: datetime.datetime.now(_UTC)):
  """The ASGI app over a hot backend, a cold backend (or None) and a catalog."""
  app = FastAPI(title='beam-realtime-analytics serving', docs_url=None,
                redoc_url=None, openapi_url=None)

  @app.middleware('http')
  async def limit_requests(request: Request, call_next):
    if len(str(request.url).encode()) > MAX_URL_BYTES:
      return JSONResponse({'detail': 'request URL too long'}, status_code=414)
    length = request.headers.get('content-length')
    if (length and length != '0') or request.headers.get('transfer-encoding'):
      return JSONResponse({'detail': 'requests carry no body'}, status_code=413)
    return await call_next(request)

  @app.exception_handler(RequestValidationError)
  async def bad_request(request, exc):
    return JSONResponse({'detail': 'bad request: %s' % '; '.join(
        '%s: %s' % ('.'.join(str(p) for p in e['loc']), e['msg'])
        for e in exc.errors())}, status_code=400)

  @app.exception_handler(Unavailable)
  async def unavailable(request, exc):
    return JSONResponse({'detail': str(exc)}, status_code=503,
                        headers={'Retry-After': '1'})

  def caller(x_api_key: str = Header(default='', max_length=256)):
    found = api_keys.get(x_api_key) if x_api_key else None
    if found is None:
      raise HTTPException(401, 'a valid X-API-Key header is required',
                          headers={'WWW-Authenticate': 'X-API-Key'})
    return found

  def allowed(exposure, who):
    if who.role not in exposure.roles:
      raise HTTPException(403, 'role %s may not read %s' % (who.role, exposure.name))

  def respond(answer, exposure, consistency, freshness, extra=None):
    now = clock()
    newest = max((r[freshness] for r in answer.rows if r.get(freshness)),
                 default=None)
    staleness = round((now - newest).total_seconds(), 3) if newest else None
    body = {'rows': [{k: _json_value(v) for k, v in r.items()}
                     for r in answer.rows],
            'tiers': answer.tiers, 'staleness_seconds': staleness,
            'consistency': consistency, 'truncated': answer.truncated}
    body.update(extra or {})
    headers = {'X-Tiers': ','.join(answer.tiers), 'X-Consistency': consistency,
               'X-Staleness-Seconds': '' if staleness is None else str(staleness),
               'Cache-Control': 'no-store'}
    if extra and extra.get('newest_complete_window'):
      headers['X-Newest-Complete-Window'] = extra['newest_complete_window']
    return JSONResponse(body, headers=headers)

  limit_query = Query(1000, ge=1, le=queries.MAX_LIMIT)

  @app.get('/v1/catalog')
  def list_catalog(who=Depends(caller)):
    views = []
    for exposure in sorted(catalog.views.values()):
      if who.role in exposure.roles:
        newest = queries.newest_window(hot, exposure, who)
        views.append({'name': exposure.name, 'tiers': list(exposure.tiers),
                      'consistency': exposure.consistency,
                      'newest_complete_window': newest and format_utc(newest)})
    events = catalog.events
    return {'tenant_id': who.tenant_id, 'role': who.role, 'views': views,
            'events': {'tiers': list(events.tiers),
                       'consistency': events.consistency,
                       'key_consistency': events.key_consistency}}

  @app.get('/v1/views/{view}')
  def get_view(view: str, start: str = Query(..., max_length=64),
               end: str = Query(..., max_length=64), limit: int = limit_query,
               who=Depends(caller)):
    exposure = catalog.views.get(view)
    if exposure is None:
      raise HTTPException(404, 'no view named %r in the catalog' % view[:64])
    allowed(exposure, who)
    lo, hi = _range(start, end)
    answer = queries.view_rows(hot, exposure, who, lo, hi, limit)
    newest = queries.newest_window(hot, exposure, who)
    return respond(answer, exposure, exposure.consistency,
                   exposure.freshness_column,
                   {'newest_complete_window': newest and format_utc(newest)})

  @app.get('/v1/events')
  def get_events(start: str = Query(..., max_length=64),
                 end: str = Query(..., max_length=64), limit: int = limit_query,
                 who=Depends(caller)):
    exposure = catalog.events
    allowed(exposure, who)
    lo, hi = _range(start, end)
    boundary = clock() - datetime.timedelta(days=hot_retention_days)
    answer = queries.event_rows(hot, cold, exposure, who, lo, hi, limit, boundary)
    return respond(answer, exposure, exposure.consistency,
                   exposure.freshness_column,
                   {'hot_boundary': format_utc(boundary)})

  @app.get('/v1/events/{key}')
  def get_event(key: str, who=Depends(caller)):
    exposure = catalog.events
    allowed(exposure, who)
    if not _KEY.fullmatch(key):
      raise HTTPException(400, 'an idempotency key is 64 lowercase hex digits')
    answer = queries.event_by_key(hot, cold, exposure, who, key)
    if not answer.rows:
      raise HTTPException(404, 'no event %s for this caller' % key)
    return respond(answer, exposure, exposure.key_consistency or
                   exposure.consistency, exposure.freshness_column)

  @app.get('/metrics', include_in_schema=False)
  def prometheus_metrics(authorization: str = Header(default='', max_length=256),
                         x_api_key: str = Header(default='', max_length=256)):
    key = authorization[len('Bearer '):] if authorization.startswith(
        'Bearer ') else x_api_key
    who = api_keys.get(key) if key else None
    if who is None:
      raise HTTPException(401, 'an admin key is required (Authorization: '
                          'Bearer <key>)', headers={'WWW-Authenticate': 'Bearer'})
    if not who.is_admin:
      raise HTTPException(403, 'metrics are for admin keys')
    return Response(metrics.exposition(hot, clock), media_type=CONTENT_TYPE_LATEST,
                    headers={'Cache-Control': 'no-store'})

  @app.get('/', include_in_schema=False)
  def dashboard():
    return FileResponse(os.path.join(_STATIC, 'index.html'),
                        headers={'Cache-Control': 'no-store'})

  app.mount('/static', StaticFiles(directory=_STATIC), name='static')
  return app
