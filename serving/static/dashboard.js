// The dashboard: three SVG charts for the caller's tenant, drawn from the API.
// No library and no CDN: bars are <rect class="bar"> elements carrying their
// values as data attributes, which the Chromium test reads back.
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

// bars: [{label, segments: [{name, value}]}] stacked, one <rect> per segment.
function drawBars(svg, bars, names) {
  svg.textContent = '';
  const width = 800, height = 240, bottom = 20;
  const max = Math.max(1, ...bars.map(b => b.segments.reduce((s, x) => s + x.value, 0)));
  const step = width / Math.max(bars.length, 1);
  bars.forEach((bar, i) => {
    let y = height - bottom;
    for (const segment of bar.segments) {
      const h = (height - bottom - 10) * segment.value / max;
      y -= h;
      el('rect', {class: 'bar', x: (i * step + 1).toFixed(1), y: y.toFixed(1),
                  width: Math.max(step - 2, 1).toFixed(1), height: h.toFixed(1),
                  fill: COLORS[names.indexOf(segment.name) % COLORS.length],
                  'data-label': bar.label, 'data-series': segment.name,
                  'data-value': segment.value}, svg);
    }
  });
  el('text', {class: 'axis', x: 2, y: height - 5}, svg).textContent =
      bars.length ? bars[0].label : 'no data';
  el('text', {class: 'axis', x: width - 2, y: height - 5, 'text-anchor': 'end'},
     svg).textContent = bars.length ? bars[bars.length - 1].label : '';
  el('text', {class: 'axis', x: 2, y: 10}, svg).textContent = 'max ' + max;
  svg.dataset.bars = String(bars.length);
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
  const types = [...new Set(answer.rows.map(r => r.event_type))].sort();
  const byMinute = new Map();
  for (const row of answer.rows) {
    if (!byMinute.has(row.window_start)) byMinute.set(row.window_start, []);
    byMinute.get(row.window_start).push({name: row.event_type, value: row.event_count});
  }
  const bars = [...byMinute.entries()].sort().map(([label, segments]) => ({label, segments}));
  drawBars(document.getElementById('chart-events'), bars, types);
  document.getElementById('chart-events').dataset.rows = String(answer.rows.length);
  const legend = document.getElementById('legend-events');
  legend.textContent = '';
  types.forEach((t, i) => {
    const item = document.createElement('li');
    item.innerHTML = `<span style="background:${COLORS[i % COLORS.length]}"></span>`;
    item.appendChild(document.createTextNode(t));
    legend.appendChild(item);
  });
  meta('meta-events', answer);
}

async function usersChart(key, view) {
  const [start, end] = range(view.newest_complete_window, 6);
  const answer = await api(`/v1/views/active_users_15m?start=${iso(start)}&end=${iso(end)}&limit=10000`, key);
  const byWindow = new Map();
  for (const row of answer.rows) {
    byWindow.set(row.window_start, (byWindow.get(row.window_start) || 0) + row.active_users);
  }
  const bars = [...byWindow.entries()].sort().map(
      ([label, value]) => ({label, segments: [{name: 'active users', value}]}));
  drawBars(document.getElementById('chart-users'), bars, ['active users']);
  document.getElementById('chart-users').dataset.rows = String(answer.rows.length);
  meta('meta-users', answer);
}

async function lettersChart(key, view) {
  const [start, end] = range(view.newest_complete_window, 24 * 7);
  const answer = await api(`/v1/views/dead_letter_counts?start=${iso(start)}&end=${iso(end)}&limit=10000`, key);
  const byKind = new Map();
  for (const row of answer.rows) {
    byKind.set(row.error_kind, (byKind.get(row.error_kind) || 0) + row.dead_letters);
  }
  const kinds = [...byKind.keys()].sort();
  const bars = kinds.map(kind => ({label: kind, segments: [{name: kind, value: byKind.get(kind)}]}));
  drawBars(document.getElementById('chart-letters'), bars, kinds);
  document.getElementById('chart-letters').dataset.rows = String(answer.rows.length);
  meta('meta-letters', answer);
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
