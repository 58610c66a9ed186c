// The dashboard: three SVG charts for the caller's tenant (events per minute
// by type, active users, the dead-letter trend by kind) and each view's
// freshness, drawn from the API. No library and no CDN: bars are
// <rect class="bar"> elements carrying their values as data attributes, which
// the Chromium test reads back; each bar's values show on hover (its <title>).
'use strict';

const COLORS = ['#3366cc', '#dc3912', '#ff9900', '#109618', '#990099', '#0099c6',
                '#dd4477', '#66aa00'];
const SVG = 'http://www.w3.org/2000/svg';

function apiKey() {
  const match = location.hash.match(/key=([^&]+)/);
  if (match) {
    sessionStorage.setItem('analytics-key', decodeURIComponent(match[1]));
    history.replaceState(null, '', location.pathname);  // keep it out of history
  }
  return sessionStorage.getItem('analytics-key');
}

async function api(path, key) {
  const response = await fetch(path, {headers: {'X-API-Key': key}});
  if (!response.ok) {
    throw new Error(path.split('?')[0] + ': ' + response.status);
  }
  return response.json();
}

function el(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  parent.appendChild(node);
  return node;
}

function iso(date) { return date.toISOString(); }

// The x label of a bar: its window's start, as HH:MM (UTC) when it is a time.
function short(label) {
  const t = Date.parse(label);
  return Number.isNaN(t) ? label : new Date(t).toISOString().slice(11, 16);
}

// Round steps (1, 2 or 5 times a power of 10) from 0 to at least max, about
// `count` of them.
function yTicks(max, count) {
  const raw = max / count;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * power).find(s => s >= raw) || raw;
  const ticks = [0];
  while (ticks[ticks.length - 1] < max) {  // the last tick at or above max
    ticks.push(Math.round((ticks[ticks.length - 1] + step) * 100) / 100);
  }
  return ticks;
}

// bars: [{label, segments: [{name, value}]}] stacked, one <rect> per segment,
// with axes (ticks on both) and each bar's values on hover (an SVG <title>,
// which the browser shows as a tooltip).
function drawBars(svg, bars, names) {
  svg.textContent = '';
  const width = 800, height = 240, left = 44, bottom = 22, top = 8;
  const plot = height - bottom - top;
  const totals = bars.map(b => b.segments.reduce((s, x) => s + x.value, 0));
  const ticks = yTicks(Math.max(1, ...totals), 4);
  const max = ticks[ticks.length - 1];
  const step = (width - left) / Math.max(bars.length, 1);
  for (const value of ticks) {
    const y = height - bottom - plot * value / max;
    el('line', {class: 'grid', x1: left, x2: width, y1: y.toFixed(1),
                y2: y.toFixed(1)}, svg);
    el('text', {class: 'axis tick y', x: left - 4, y: (y + 3).toFixed(1),
                'text-anchor': 'end'}, svg).textContent = String(value);
  }
  el('line', {class: 'axis-line', x1: left, x2: width, y1: height - bottom,
              y2: height - bottom}, svg);
  bars.forEach((bar, i) => {
    let y = height - bottom;
    const group = el('g', {class: 'bar-group', 'data-label': bar.label}, svg);
    el('title', {}, group).textContent = short(bar.label) + '\n' +
        bar.segments.map(s => `${s.name}: ${s.value}`).join('\n') +
        (bar.segments.length > 1 ? `\ntotal: ${totals[i]}` : '');
    for (const segment of bar.segments) {
      const h = plot * segment.value / max;
      y -= h;
      el('rect', {class: 'bar', x: (left + i * step + 1).toFixed(1), y: y.toFixed(1),
                  width: Math.max(step - 2, 1).toFixed(1), height: h.toFixed(1),
                  fill: COLORS[names.indexOf(segment.name) % COLORS.length],
                  'data-label': bar.label, 'data-series': segment.name,
                  'data-value': segment.value}, group);
    }
  });
  // x ticks: at most 8 labels, evenly spread over the bars.
  const every = Math.max(1, Math.ceil(bars.length / 8));
  bars.forEach((bar, i) => {
    if (i % every) return;
    const x = left + i * step + step / 2;
    el('line', {class: 'axis-line', x1: x.toFixed(1), x2: x.toFixed(1),
                y1: height - bottom, y2: height - bottom + 4}, svg);
    el('text', {class: 'axis tick x', x: x.toFixed(1), y: height - 6,
                'text-anchor': 'middle'}, svg).textContent = short(bar.label);
  });
  if (!bars.length) {
    el('text', {class: 'axis', x: width / 2, y: height / 2,
                'text-anchor': 'middle'}, svg).textContent = 'no data';
  }
  svg.dataset.bars = String(bars.length);
}

function legend(id, names) {
  const list = document.getElementById(id);
  list.textContent = '';
  names.forEach((name, i) => {
    const item = document.createElement('li');
    item.innerHTML = `<span style="background:${COLORS[i % COLORS.length]}"></span>`;
    item.appendChild(document.createTextNode(name));
    list.appendChild(item);
  });
}

// Stacked bars per window from rows: one bar per window_start, a segment per
// value of `series` (the row's column), `value` the row's count column.
function stacked(rows, series, value) {
  const names = [...new Set(rows.map(r => r[series]))].sort();
  const byWindow = new Map();
  for (const row of rows) {
    if (!byWindow.has(row.window_start)) byWindow.set(row.window_start, new Map());
    const segments = byWindow.get(row.window_start);
    segments.set(row[series], (segments.get(row[series]) || 0) + row[value]);
  }
  const bars = [...byWindow.entries()].sort().map(([label, segments]) => ({
    label, segments: names.filter(n => segments.has(n)).map(
        name => ({name, value: segments.get(name)}))}));
  return [bars, names];
}

const freshness = new Map();

// Freshness per view: how old the newest row the caller can see is.
function noteFreshness(view, answer) {
  freshness.set(view, answer);
  const body = document.getElementById('freshness-rows');
  body.textContent = '';
  for (const [name, a] of [...freshness.entries()].sort()) {
    const row = document.createElement('tr');
    row.dataset.view = name;
    const stale = a.staleness_seconds === null ? 'n/a' :
        Math.round(a.staleness_seconds) + ' s';
    for (const text of [name, stale, a.newest_complete_window || 'none yet']) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.appendChild(cell);
    }
    body.appendChild(row);
  }
}

function meta(id, answer) {
  const stale = answer.staleness_seconds === null ? 'n/a' :
      Math.round(answer.staleness_seconds) + ' s';
  document.getElementById(id).textContent =
      `${answer.rows.length} rows · tiers ${answer.tiers.join(', ')} · ` +
      `staleness ${stale} · ${answer.consistency}` +
      (answer.newest_complete_window ?
          ` · newest complete window ${answer.newest_complete_window}` : '');
}

function range(newest, hours) {
  const end = new Date(Date.parse(newest) + 60 * 1000);
  return [new Date(end.getTime() - hours * 3600 * 1000), end];
}

async function eventsChart(key, view) {
  const [start, end] = range(view.newest_complete_window, 2);
  const answer = await api(`/v1/views/event_counts_1m?start=${iso(start)}&end=${iso(end)}&limit=10000`, key);
  const [bars, types] = stacked(answer.rows, 'event_type', 'event_count');
  drawBars(document.getElementById('chart-events'), bars, types);
  document.getElementById('chart-events').dataset.rows = String(answer.rows.length);
  legend('legend-events', types);
  meta('meta-events', answer);
  noteFreshness('event_counts_1m', answer);
}

async function usersChart(key, view) {
  const [start, end] = range(view.newest_complete_window, 6);
  const answer = await api(`/v1/views/active_users_15m?start=${iso(start)}&end=${iso(end)}&limit=10000`, key);
  const rows = answer.rows.map(r => Object.assign({series: 'active users'}, r));
  const [bars] = stacked(rows, 'series', 'active_users');
  drawBars(document.getElementById('chart-users'), bars, ['active users']);
  document.getElementById('chart-users').dataset.rows = String(answer.rows.length);
  meta('meta-users', answer);
  noteFreshness('active_users_15m', answer);
}

// The dead-letter trend: letters per minute, stacked by kind, over the last
// day of letters.
async function lettersChart(key, view) {
  const [start, end] = range(view.newest_complete_window, 24);
  const answer = await api(`/v1/views/dead_letter_counts?start=${iso(start)}&end=${iso(end)}&limit=10000`, key);
  const [bars, kinds] = stacked(answer.rows, 'error_kind', 'dead_letters');
  drawBars(document.getElementById('chart-letters'), bars, kinds);
  document.getElementById('chart-letters').dataset.rows = String(answer.rows.length);
  legend('legend-letters', kinds);
  meta('meta-letters', answer);
  noteFreshness('dead_letter_counts', answer);
}

async function main() {
  const key = apiKey();
  const form = document.getElementById('key-form');
  if (!key) {
    form.hidden = false;
    document.getElementById('who').textContent = 'Enter an API key.';
    document.body.dataset.state = 'needs-key';
    form.addEventListener('submit', e => {
      e.preventDefault();
      sessionStorage.setItem('analytics-key', document.getElementById('key-input').value);
      location.reload();
    });
    return;
  }
  try {
    const catalog = await api('/v1/catalog', key);
    document.getElementById('who').textContent =
        `tenant ${catalog.tenant_id} · role ${catalog.role}`;
    const views = Object.fromEntries(catalog.views.map(v => [v.name, v]));
    const charts = [['event_counts_1m', eventsChart], ['active_users_15m', usersChart],
                    ['dead_letter_counts', lettersChart]];
    for (const [name, draw] of charts) {
      if (views[name] && views[name].newest_complete_window) await draw(key, views[name]);
    }
    document.body.dataset.state = 'rendered';
  } catch (error) {
    document.getElementById('error').textContent = String(error);
    document.body.dataset.state = 'error';
  }
}

main();
