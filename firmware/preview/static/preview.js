// anoncam preview page: draws the counting line over the anonymized live view, lets the
// installer drag its end points and the inside marker (mouse, touch, pen or arrow keys),
// saves through POST /api/counter and refreshes counts and health every 2 s.
// Plain ES2017, no dependencies, no build step; every request goes to this device only.
'use strict';

(function () {
  const REFRESH_MS = 2000;
  const STALE_S = 3;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const img = $('live');
  const svg = $('overlay');
  const view = $('view');
  const handles = { a: $('handle-a'), b: $('handle-b'), inside: $('handle-inside') };

  const model = {
    line: [0, 0.5, 1, 0.5],
    inside: [0.5, 1],
    zones: [],
    saved: null,      // {line, inside} as last saved or loaded
    dirty: false,
    dragging: null,   // 'a' | 'b' | 'inside' while a pointer holds a handle
    writable: true,
    width: 1280,
    height: 720,
    saving: false,
  };

  const clamp = (v) => Math.min(1, Math.max(0, v));
  const round4 = (v) => Math.round(v * 10000) / 10000;
  const fmt = (v) => v.toFixed(3);

  // --- geometry -----------------------------------------------------------------------
  function setSize(w, h) {
    if (!w || !h || (w === model.width && h === model.height)) return;
    model.width = w;
    model.height = h;
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    view.style.aspectRatio = `${w} / ${h}`; // CSSOM, allowed by the page's CSP
    render();
  }

  // SVG units per screen pixel, so handles keep a finger-sized radius at any zoom.
  function unit() {
    const r = svg.getBoundingClientRect();
    return r.width > 0 ? model.width / r.width : 1;
  }

  function point(nx, ny) { return [nx * model.width, ny * model.height]; }

  function insideSide() {
    const [x1, y1, x2, y2] = model.line;
    const [px, py] = model.inside;
    return (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1);
  }

  // --- drawing ------------------------------------------------------------------------
  function setLine(el, a, b, width) {
    el.setAttribute('x1', a[0]); el.setAttribute('y1', a[1]);
    el.setAttribute('x2', b[0]); el.setAttribute('y2', b[1]);
    el.setAttribute('stroke-width', width);
  }

  function placeHandle(el, p, k, dotR) {
    el.setAttribute('transform', `translate(${p[0]} ${p[1]})`);
    el.querySelector('.hit').setAttribute('r', 28 * k);
    const dot = el.querySelector('.dot');
    dot.setAttribute('r', dotR * k);
    dot.setAttribute('stroke-width', 2.5 * k);
    const label = el.querySelector('.label');
    if (label) {
      label.setAttribute('font-size', 13 * k);
      label.setAttribute('stroke-width', 0.8 * k);
    }
  }

  function arrowPath(k) {
    const [x1, y1, x2, y2] = model.line;
    const a = point(x1, y1);
    const b = point(x2, y2);
    const m = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
    let n = [-(b[1] - a[1]), b[0] - a[0]];
    const ins = point(model.inside[0], model.inside[1]);
    if ((ins[0] - a[0]) * n[0] + (ins[1] - a[1]) * n[1] < 0) n = [-n[0], -n[1]];
    const len = Math.hypot(n[0], n[1]) || 1;
    const d = [(n[0] / len) * 42 * k, (n[1] / len) * 42 * k];
    const tip = [m[0] + d[0], m[1] + d[1]];
    const h = 0.4;
    const l = [tip[0] - h * (d[0] - d[1] * 0.8), tip[1] - h * (d[1] + d[0] * 0.8)];
    const r = [tip[0] - h * (d[0] + d[1] * 0.8), tip[1] - h * (d[1] - d[0] * 0.8)];
    return `M${m[0]} ${m[1]}L${tip[0]} ${tip[1]}M${l[0]} ${l[1]}L${tip[0]} ${tip[1]}L${r[0]} ${r[1]}`;
  }

  function renderZones(k) {
    const g = $('zones');
    while (g.firstChild) g.removeChild(g.firstChild);
    for (const zone of model.zones) {
      const pts = zone.polygon.map(([x, y]) => point(x, y));
      const poly = document.createElementNS(SVG_NS, 'polygon');
      poly.setAttribute('class', 'zone');
      poly.setAttribute('points', pts.map((p) => p.join(',')).join(' '));
      poly.setAttribute('stroke-width', 2 * k);
      g.appendChild(poly);
      const label = document.createElementNS(SVG_NS, 'text');
      label.setAttribute('class', 'zone-label');
      label.setAttribute('x', pts[0][0] + 6 * k);
      label.setAttribute('y', pts[0][1] + 16 * k);
      label.setAttribute('font-size', 13 * k);
      label.setAttribute('stroke-width', 3 * k);
      label.textContent = zone.name;
      g.appendChild(label);
    }
  }

  function render() {
    const k = unit();
    const [x1, y1, x2, y2] = model.line;
    const a = point(x1, y1);
    const b = point(x2, y2);
    setLine($('line-shadow'), a, b, 8 * k);
    setLine($('line-main'), a, b, 4 * k);
    const d = arrowPath(k);
    $('arrow-shadow').setAttribute('d', d);
    $('arrow-shadow').setAttribute('stroke-width', 7 * k);
    $('arrow').setAttribute('d', d);
    $('arrow').setAttribute('stroke-width', 3.5 * k);
    placeHandle(handles.a, a, k, 11);
    placeHandle(handles.b, b, k, 11);
    placeHandle(handles.inside, point(model.inside[0], model.inside[1]), k, 15);
    renderZones(k);
    $('coords').textContent =
      `line (${fmt(x1)}, ${fmt(y1)}) → (${fmt(x2)}, ${fmt(y2)})   inside (${fmt(model.inside[0])}, ${fmt(model.inside[1])})`;
    $('save').disabled = !model.dirty || model.saving || !model.writable;
    $('reset').disabled = !model.dirty || model.saving;
  }

  // --- messages -----------------------------------------------------------------------
  function say(text, kind) {
    const el = $('save-msg');
    el.textContent = text;
    el.className = 'save-msg' + (kind ? ' ' + kind : '');
  }

  function showProblems(problems) {
    const ul = $('problems');
    while (ul.firstChild) ul.removeChild(ul.firstChild);
    for (const p of problems || []) {
      const li = document.createElement('li');
      const code = document.createElement('code');
      code.textContent = p.path;
      li.appendChild(code);
      li.appendChild(document.createTextNode(': ' + p.message));
      ul.appendChild(li);
    }
  }

  function markDirty() {
    if (!model.dirty) {
      model.dirty = true;
      showProblems([]);
    }
    if (Math.abs(insideSide()) < 1e-6) {
      say('The IN marker sits on the line: move it to the store side.', 'bad');
    } else if (!model.writable) {
      say('This preview runs without a config file: changes cannot be saved.', 'bad');
    } else {
      say('Unsaved changes: press “Save line” to use them.', 'dirty');
    }
  }

  // --- dragging -----------------------------------------------------------------------
  function normalizedFromEvent(evt) {
    const r = svg.getBoundingClientRect();
    return [clamp((evt.clientX - r.left) / r.width), clamp((evt.clientY - r.top) / r.height)];
  }

  function moveHandle(which, p) {
    const q = [round4(p[0]), round4(p[1])];
    if (which === 'a') model.line = [q[0], q[1], model.line[2], model.line[3]];
    else if (which === 'b') model.line = [model.line[0], model.line[1], q[0], q[1]];
    else model.inside = q;
    markDirty();
    render();
  }

  function handlePosition(which) {
    if (which === 'a') return [model.line[0], model.line[1]];
    if (which === 'b') return [model.line[2], model.line[3]];
    return model.inside.slice();
  }

  for (const [which, el] of Object.entries(handles)) {
    el.addEventListener('pointerdown', (evt) => {
      evt.preventDefault();
      el.setPointerCapture(evt.pointerId);
      model.dragging = which;
      el.classList.add('dragging');
    });
    el.addEventListener('pointermove', (evt) => {
      if (model.dragging !== which) return;
      evt.preventDefault();
      moveHandle(which, normalizedFromEvent(evt));
    });
    const end = (evt) => {
      if (model.dragging !== which) return;
      model.dragging = null;
      el.classList.remove('dragging');
      if (el.hasPointerCapture(evt.pointerId)) el.releasePointerCapture(evt.pointerId);
    };
    el.addEventListener('pointerup', end);
    el.addEventListener('pointercancel', end);
    el.addEventListener('keydown', (evt) => {
      const step = evt.shiftKey ? 0.05 : 0.005;
      const delta = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[evt.key];
      if (!delta) return;
      evt.preventDefault();
      const p = handlePosition(which);
      moveHandle(which, [clamp(p[0] + delta[0]), clamp(p[1] + delta[1])]);
    });
  }

  // --- saving -------------------------------------------------------------------------
  async function save() {
    model.saving = true;
    render();
    say('Saving…', '');
    showProblems([]);
    try {
      const resp = await fetch('/api/counter', {
        method: 'POST',
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ line: model.line, inside: model.inside }),
      });
      let body = {};
      try { body = await resp.json(); } catch (e) { body = { error: `HTTP ${resp.status}` }; }
      if (resp.ok) {
        adoptCounter(body.counter);
        model.dirty = false;
        say(`Saved to ${body.saved_to}; counting with the new line now.`, 'ok');
      } else {
        say(`Not saved: ${body.error || 'HTTP ' + resp.status}${body.hint ? ' — ' + body.hint : ''}`, 'bad');
        showProblems(body.problems);
      }
    } catch (e) {
      say('Not saved: the camera did not answer. Check the connection and try again.', 'bad');
    } finally {
      model.saving = false;
      render();
    }
  }

  function adoptCounter(counter) {
    if (!counter) return;
    model.line = counter.line.slice();
    model.inside = counter.inside.slice();
    model.zones = counter.zones || [];
    model.saved = { line: model.line.slice(), inside: model.inside.slice() };
  }

  $('save').addEventListener('click', save);
  $('reset').addEventListener('click', () => {
    if (model.saved) {
      model.line = model.saved.line.slice();
      model.inside = model.saved.inside.slice();
    }
    model.dirty = false;
    showProblems([]);
    say('', '');
    render();
  });

  window.addEventListener('beforeunload', (evt) => {
    if (model.dirty) evt.preventDefault();
  });

  // --- counts and health ----------------------------------------------------------------
  const LABELS = {
    entries: 'Entries', exits: 'Exits', occupancy: 'Inside now', visitors: 'Visitors',
    dwell_s: 'Dwell (s)', fps: 'Frames / s', detect_ms: 'Detection (ms)',
    detector_latency_ms: 'Detection (ms)', dropped_frames: 'Dropped frames',
    outbox_depth: 'Unsent windows',
    cpu_temp_c: 'CPU °C', throttled: 'Throttled', camera: 'Camera', window_start: 'Window start',
  };

  function label(key) {
    return LABELS[key] || key.replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase());
  }

  function show(value) {
    if (value === null || value === undefined) return '–';
    if (typeof value === 'number') return Number.isInteger(value) ? String(value) : value.toFixed(1);
    if (typeof value === 'boolean') return value ? 'yes' : 'no';
    if (typeof value === 'object') {
      return Object.entries(value).map(([k, v]) => `${k} ${show(v)}`).join(' · ');
    }
    return String(value);
  }

  function fill(dl, data) {
    while (dl.firstChild) dl.removeChild(dl.firstChild);
    const entries = Object.entries(data || {});
    if (!entries.length) entries.push(['waiting', null]);
    for (const [key, value] of entries) {
      const box = document.createElement('div');
      const dt = document.createElement('dt');
      dt.textContent = label(key);
      const dd = document.createElement('dd');
      dd.textContent = show(value);
      if (typeof value === 'object' && value !== null) dd.className = 'small';
      box.appendChild(dt);
      box.appendChild(dd);
      dl.appendChild(box);
    }
  }

  function badge(stream) {
    const el = $('live-badge');
    const age = stream ? stream.last_frame_age_s : null;
    if (age !== null && age !== undefined && age < STALE_S) {
      el.textContent = 'live';
      el.className = 'badge live';
      $('view-msg').hidden = true;
    } else {
      el.textContent = age === null || age === undefined ? 'no frames yet' : `no frame for ${Math.round(age)} s`;
      el.className = 'badge stale';
      $('view-msg').textContent = 'Waiting for the camera…';
      $('view-msg').hidden = false;
    }
  }

  async function refresh() {
    try {
      const resp = await fetch('/api/state', { credentials: 'same-origin', cache: 'no-store' });
      if (resp.status === 401) {
        $('live-badge').textContent = 'token needed';
        $('live-badge').className = 'badge stale';
        say('Access expired: open the page again with ?token=…', 'bad');
        return;
      }
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const state = await resp.json();
      model.writable = state.config_writable !== false;
      if (state.stream && state.stream.width) setSize(state.stream.width, state.stream.height);
      // Never overwrite what the installer is editing with the server's copy.
      if (!model.dirty && !model.dragging && !model.saving) adoptCounter(state.counter);
      fill($('counts'), state.counts);
      fill($('health'), state.health);
      badge(state.stream);
      render();
    } catch (e) {
      $('live-badge').textContent = 'offline';
      $('live-badge').className = 'badge stale';
    }
  }

  // --- live view ----------------------------------------------------------------------
  img.addEventListener('load', () => setSize(img.naturalWidth, img.naturalHeight));
  img.addEventListener('error', () => {
    $('view-msg').textContent = 'Live view interrupted; reconnecting…';
    $('view-msg').hidden = false;
    setTimeout(() => { img.src = '/stream.mjpg?r=' + Date.now(); }, REFRESH_MS);
  });

  window.addEventListener('resize', render);
  render();
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
