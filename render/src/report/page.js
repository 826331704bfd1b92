// kotel report page: reads the JSON block and draws the summary table, the selected series'
// heatmap and the off-CPU flame graph with DOM APIs only (names are data, never markup).
// The reader's sort, filter, selection, search and zoom live in the URL's fragment (and, for
// a reload that was already under way when they changed, in sessionStorage), so a live page
// that reloads itself keeps them.
'use strict';
(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  const PAGE = 500; // table rows drawn at a time
  const PALETTE = ['#ffffcc', '#ffeda0', '#fed976', '#feb24c', '#fd8d3c', '#fc4e2a', '#e31a1c', '#bd0026', '#800026'];
  const COLUMNS = [
    ['pid', 'PID', true], ['name', 'Process', false], ['probe', 'Probe', false], ['state', 'State', false],
    ['count', 'Count', true], ['p50_ns', 'p50', true], ['p99_ns', 'p99', true], ['max_ns', 'Max', true],
    ['bytes', 'Bytes', true],
  ];
  const data = JSON.parse(document.getElementById('kotel-data').textContent);
  const rows = data.rows || [];
  const heatmaps = new Map((data.heatmaps || []).map((h) => [h.pid + ':' + h.probe, h]));
  const state = readState();
  let shown = PAGE;

  // ---- small helpers -------------------------------------------------------------------
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'text') e.textContent = v;
      else if (k === 'on') for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
      else if (k === 'class') e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of kids) if (c != null) e.append(c);
    return e;
  }
  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of kids) if (c != null) e.append(c);
    return e;
  }
  function svgText(x, y, text, attrs) {
    const t = svg('text', Object.assign({ x: x, y: y }, attrs || {}));
    t.textContent = text;
    return t;
  }
  function titled(node, text) {
    const t = svg('title');
    t.textContent = text;
    node.prepend(t);
    return node;
  }
  // x.toFixed(f) as Rust's {:.f} prints num/den: both print the double's exact value, but on
  // an exact tie Rust rounds to even and JavaScript up.
  function fixed(num, den, f) {
    const scale = 10 ** f;
    const s = (num / den).toFixed(f);
    const g = gcd(num, den);
    const d = den / g;
    if ((d & (d - 1)) !== 0 || (num * scale) % den * 2 !== den) return s;
    const q = Math.floor((num * scale) / den);
    const n = q % 2 === 0 ? q : q + 1;
    return (n / scale).toFixed(f);
  }
  function gcd(a, b) { while (b) [a, b] = [b, a % b]; return a; }
  function humanNs(ns) {
    if (ns < 1e3) return ns + 'ns';
    if (ns < 1e6) return fixed(ns, 1e3, 1) + 'µs';
    if (ns < 1e9) return fixed(ns, 1e6, 2) + 'ms';
    return fixed(ns, 1e9, 2) + 's';
  }
  function humanBytes(n) {
    if (n < 1024) return n + 'B';
    if (n < 1048576) return fixed(n, 1024, 1) + 'KiB';
    return fixed(n, 1048576, 1) + 'MiB';
  }
  // An axis tick (1, 2 or 5 × 10^k ns) without decimals: 1µs, 20ms, 5s.
  function tickLabel(ns) {
    for (const [u, d] of [['s', 1e9], ['ms', 1e6], ['µs', 1e3]]) if (ns >= d) return Math.round(ns / d) + u;
    return ns + 'ns';
  }
  function pad(n, w) { return String(n).padStart(w || 2, '0'); }
  function clock(ns, withDate) {
    const d = new Date(ns / 1e6);
    const t = pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds());
    return withDate ? d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' + t : t;
  }
  function seconds(s) { return humanNs(Math.round(s * 1e9)); }

  // ---- state in the fragment ------------------------------------------------------------
  function readState() {
    let saved = location.hash.slice(1);
    try {
      const nav = performance.getEntriesByType('navigation')[0];
      if (nav && nav.type === 'reload') saved = sessionStorage.getItem('kotel-report-state') || saved;
    } catch (e) { /* storage unavailable: the fragment alone */ }
    const p = new URLSearchParams(saved);
    return {
      sort: COLUMNS.some((c) => c[0] === p.get('sort')) ? p.get('sort') : 'p99_ns',
      asc: p.get('asc') === '1',
      probe: p.get('probe') || '',
      name: p.get('name') || '',
      kthreads: p.get('kthreads') === '1',
      sel: p.get('sel') || '',
      q: p.get('q') || '',
      zoom: p.get('zoom') || '',
    };
  }
  function saveState() {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(state)) {
      if (v === true) p.set(k, '1');
      else if (v && v !== false) p.set(k, v);
    }
    history.replaceState(null, '', '#' + p.toString());
    try { sessionStorage.setItem('kotel-report-state', p.toString()); } catch (e) { /* fragment only */ }
  }

  // ---- layout ----------------------------------------------------------------------------
  const main = el('main');
  document.body.append(main);
  const heading = el('header', {},
    el('h1', { text: data.title || 'kotel report' }),
    el('p', { class: 'status', text: statusLine() }));
  main.append(heading);
  for (const n of data.notes || []) main.append(el('p', { class: 'note', text: n }));

  // kotel's probes always (a filter set before a probe had rows survives a reload), and any other.
  const probes = [...new Set(['offcpu', 'runqueue', 'tcp_send', 'writev', ...rows.map((r) => r.probe)])].sort();
  const probeSel = el('select', { id: 'probe', on: { change: () => { state.probe = probeSel.value; update(); } } },
    el('option', { value: '', text: 'all probes' }), ...probes.map((p) => el('option', { value: p, text: p })));
  probeSel.value = state.probe;
  const nameIn = el('input', { id: 'name', type: 'search', placeholder: 'process name or pid', on: { input: () => { state.name = nameIn.value; update(); } } });
  nameIn.value = state.name;
  const kthreadBox = el('input', { id: 'kthreads', type: 'checkbox', on: { change: () => { state.kthreads = kthreadBox.checked; update(); } } });
  kthreadBox.checked = state.kthreads;
  const kthreadLabel = el('label', { for: 'kthreads' });
  const counter = el('p', { id: 'shown', class: 'status', 'aria-live': 'polite' });
  const thead = el('thead');
  const tbody = el('tbody');
  const more = el('button', { id: 'more', type: 'button', on: { click: () => { shown += PAGE; drawRows(); } } });
  const tableSection = el('section', { 'aria-labelledby': 'summary-h' },
    el('h2', { id: 'summary-h', text: 'What was slow, per process and probe' }),
    el('div', { class: 'controls' },
      el('label', { for: 'probe', text: 'Probe ' }), probeSel,
      el('label', { for: 'name', text: 'Process ' }), nameIn,
      kthreadBox, kthreadLabel),
    counter,
    el('div', { class: 'scroll' }, el('table', { id: 'summary' }, el('caption', { text: 'Latency per process and probe; select a row for its heatmap.' }), thead, tbody)),
    more);
  main.append(tableSection);
  const heatSection = el('section', { id: 'heatmap', 'aria-labelledby': 'heat-h' });
  main.append(heatSection);
  const flameSection = el('section', { id: 'flame', 'aria-labelledby': 'flame-h' });
  main.append(flameSection);
  const tip = el('div', { id: 'tip', role: 'tooltip', hidden: '' });
  document.body.append(tip);

  function statusLine() {
    const when = data.generated_unix_nano ? clock(data.generated_unix_nano, true) + ' UTC' : '';
    return data.live
      ? 'Live: data as of ' + when + ', refreshed every ' + data.refresh_seconds + ' s.'
      : 'Final: data as of ' + when + '.';
  }

  // ---- the table ---------------------------------------------------------------------------
  function visibleRows() {
    const q = state.name.trim().toLowerCase();
    const out = rows.filter((r) => (state.kthreads || !r.kernel_thread)
      && (!state.probe || r.probe === state.probe)
      && (!q || r.name.toLowerCase().includes(q) || r.exe.toLowerCase().includes(q) || String(r.pid) === q));
    const k = state.sort;
    const dir = state.asc ? 1 : -1;
    out.sort((a, b) => {
      const x = a[k] == null ? -1 : a[k];
      const y = b[k] == null ? -1 : b[k];
      if (x < y) return -dir;
      if (x > y) return dir;
      return a.pid - b.pid || (a.probe < b.probe ? -1 : a.probe > b.probe ? 1 : 0) || (a.state < b.state ? -1 : 1);
    });
    return out;
  }
  function drawHead() {
    const tr = el('tr');
    for (const [key, label, numeric] of COLUMNS) {
      const sorted = state.sort === key;
      const th = el('th', { scope: 'col', class: numeric ? 'num' : '' },
        el('button', {
          type: 'button', 'data-key': key, text: label + (sorted ? (state.asc ? ' ▲' : ' ▼') : ''),
          on: { click: () => { state.asc = sorted ? !state.asc : !numeric; state.sort = key; update(); } },
        }));
      th.setAttribute('aria-sort', sorted ? (state.asc ? 'ascending' : 'descending') : 'none');
      tr.append(th);
    }
    thead.replaceChildren(tr);
  }
  let current = [];
  function drawRows() {
    const frag = document.createDocumentFragment();
    for (const r of current.slice(0, shown)) {
      const key = r.pid + ':' + r.probe;
      const tr = el('tr', {
        tabindex: '0', 'data-key': key, class: key === state.sel ? 'selected' : '',
        on: {
          click: () => select(key),
          keydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(key); } },
        },
      });
      const name = el('td', { class: 'name', text: r.name });
      if (r.exe) name.append(el('span', { class: 'exe', text: ' ' + r.exe }));
      if (r.kernel_thread) name.append(el('span', { class: 'tag', text: ' kernel thread' }));
      tr.append(el('td', { class: 'num', text: String(r.pid) }), name, el('td', { text: r.probe }),
        el('td', { text: r.state || '-' }), el('td', { class: 'num', text: String(r.count) }),
        el('td', { class: 'num', text: humanNs(r.p50_ns) }), el('td', { class: 'num', text: humanNs(r.p99_ns) }),
        el('td', { class: 'num', text: humanNs(r.max_ns) }),
        el('td', { class: 'num', text: r.bytes == null ? '-' : humanBytes(r.bytes) }));
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
    const hidden = rows.filter((r) => r.kernel_thread).length;
    kthreadLabel.textContent = ' Show kernel threads (' + hidden + ')';
    counter.textContent = 'Showing ' + Math.min(shown, current.length) + ' of ' + current.length
      + ' rows (' + rows.length + ' in all).';
    more.hidden = current.length <= shown;
    more.textContent = 'Show ' + Math.min(PAGE, current.length - shown) + ' more rows';
  }
  function update() {
    saveState();
    current = visibleRows();
    drawHead();
    drawRows();
    if (!state.sel || !current.some((r) => r.pid + ':' + r.probe === state.sel)) {
      const first = current.find((r) => heatmaps.has(r.pid + ':' + r.probe)) || current[0];
      if (first && first.pid + ':' + first.probe !== state.sel) { select(first.pid + ':' + first.probe); return; }
    }
    drawHeatmap();
  }
  function select(key) {
    state.sel = key;
    saveState();
    for (const tr of tbody.children) tr.classList.toggle('selected', tr.dataset.key === key);
    drawHeatmap();
  }

  // ---- the heatmap -------------------------------------------------------------------------
  function drawHeatmap() {
    tip.hidden = true;
    const h = heatmaps.get(state.sel);
    const [pid, probe] = state.sel.split(':');
    const row = rows.find((r) => String(r.pid) === pid && r.probe === probe);
    const who = row ? row.name + ' (pid ' + pid + ')' : 'pid ' + pid;
    heatSection.replaceChildren(el('h2', { id: 'heat-h', text: 'Heatmap: ' + who + ', ' + (probe || '') + ' latency' }));
    if (!state.sel) { heatSection.append(el('p', { text: 'No series to show.' })); return; }
    if (!h || !h.columns.length) {
      heatSection.append(el('p', { text: 'No heatmap kept for this series: only series with events in the last minute are kept, the slowest first.' }));
      return;
    }
    const grid = heatGrid(h);
    const W = 960, H = 360, L = 70, R = 20, T = 10, B = 40;
    const pw = W - L - R, ph = H - T - B;
    const cw = pw / grid.cols, rh = ph / grid.rows.length;
    const bins = colourBins(grid.max);
    const end = h.start_unix_nano + h.column_width_nanos * grid.cols;
    const span = clock(h.start_unix_nano, true) + ' – ' + clock(end) + ' UTC';
    const caption = who + ', ' + probe + ' latency, ' + span + ' (' + grid.cols + ' columns of ' + seconds(h.column_width_nanos / 1e9) + ')';
    const pic = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'group', 'aria-label': 'Heatmap: ' + caption, class: 'heat' });
    const cells = svg('g', { 'shape-rendering': 'crispEdges' });
    grid.cells.forEach((count, k) => {
      if (!count) return;
      const i = Math.floor(k / grid.rows.length), j = k % grid.rows.length;
      const t0 = h.start_unix_nano + i * h.column_width_nanos;
      const r = grid.rows[j];
      const text = clock(t0) + '–' + clock(t0 + h.column_width_nanos) + ' UTC · ' + r.label + ' · ' + count + (count === 1 ? ' event' : ' events');
      const rect = svg('rect', {
        x: (L + i * cw).toFixed(1), y: (T + ph - (j + 1) * rh).toFixed(1), width: cw.toFixed(1), height: rh.toFixed(1),
        fill: PALETTE[bins.level(count)], tabindex: '0', class: 'cell', 'aria-label': text,
        'data-col': i, 'data-lo': r.lo, 'data-hi': r.hi, 'data-count': count,
      });
      const show = () => showTip(rect, text);
      rect.addEventListener('mouseenter', show);
      rect.addEventListener('focus', show);
      rect.addEventListener('mouseleave', () => { tip.hidden = true; });
      rect.addEventListener('blur', () => { tip.hidden = true; });
      cells.append(rect);
    });
    pic.append(cells, svg('rect', { x: L, y: T, width: pw, height: ph, fill: 'none', stroke: '#767676', class: 'plot-frame' }));
    for (const t of grid.ticks) {
      const y = grid.yOf(t, T, ph);
      pic.append(svg('path', { d: 'M' + (L - 4) + ' ' + y.toFixed(1) + 'H' + (L + pw), class: 'grid' }));
      pic.append(svgText(L - 6, y + 4, tickLabel(t), { 'text-anchor': 'end', class: 'axis' }));
    }
    const xEvery = Math.max(1, Math.ceil(grid.cols / 6));
    for (let i = 0; i <= grid.cols; i += xEvery) {
      const anchor = i === 0 ? 'start' : i + xEvery > grid.cols ? 'end' : 'middle';
      pic.append(svgText(L + i * cw, H - B + 16, clock(h.start_unix_nano + i * h.column_width_nanos), { 'text-anchor': anchor, class: 'axis' }));
    }
    pic.append(svgText(L + pw / 2, H - 6, 'time (UTC)', { 'text-anchor': 'middle', class: 'axis' }));
    const ex = h.exemplar;
    let exemplarLine = null;
    if (ex) {
      const x = L + pw * Math.min(1, Math.max(0, (ex.time_unix_nano - h.start_unix_nano) / (end - h.start_unix_nano)));
      const y = grid.yOf(ex.value_ns, T, ph);
      const label = 'slowest event ' + humanNs(ex.value_ns) + ' at ' + clock(ex.time_unix_nano) + ' UTC, trace ' + ex.trace_id;
      const mark = titled(svg('path', { d: 'M' + x.toFixed(1) + ' ' + (y - 6).toFixed(1) + 'l6 6l-6 6l-6 -6z', class: 'marker' }), label);
      const url = traceUrl(ex);
      const a = url ? svg('a', { href: url, target: '_blank', rel: 'noopener', 'aria-label': label }, mark) : svg('g', { tabindex: '0', 'aria-label': label }, mark);
      a.setAttribute('class', 'exemplar');
      a.addEventListener('mouseenter', () => showTip(a, label));
      a.addEventListener('focus', () => showTip(a, label));
      a.addEventListener('mouseleave', () => { tip.hidden = true; });
      a.addEventListener('blur', () => { tip.hidden = true; });
      pic.append(a);
      const idText = el('code', { id: 'trace-id', text: ex.trace_id });
      exemplarLine = el('p', { class: 'exemplar-line' },
        'Slowest event with a span: ' + humanNs(ex.value_ns) + ' at ' + clock(ex.time_unix_nano, true) + ' UTC, trace ',
        url ? el('a', { href: url, target: '_blank', rel: 'noopener' }, idText) : idText,
        ' span ' + ex.span_id + (url ? '' : ' (no trace_url_template set: copy the id into your tracing UI)') + '.');
    }
    const legend = el('div', { class: 'legend', role: 'img', 'aria-label': 'colour: events per cell' },
      el('span', { text: 'events per cell (' + seconds(h.column_width_nanos / 1e9) + ' × latency bucket):' }));
    bins.ranges.forEach((rg, k) => {
      if (!rg) return;
      const sw = el('span', { class: 'swatch swatch-' + k });
      legend.append(el('span', { class: 'key' }, sw, rg));
    });
    const links = el('p', { class: 'files' });
    for (const f of h.pictures || []) links.append(el('a', { href: f, text: f.split('/').pop() }), ' ');
    if (links.childNodes.length) heatSection.append(links);
    heatSection.append(el('figure', {}, pic, el('figcaption', { text: caption })), legend);
    if (exemplarLine) heatSection.append(exemplarLine);
  }
  function traceUrl(ex) {
    const t = data.trace_url_template || '';
    if (!t || !ex.trace_id || !/^(https?:\/\/|\/)/i.test(t.trim())) return '';
    return t.split('{trace_id}').join(encodeURIComponent(ex.trace_id)).split('{span_id}').join(encodeURIComponent(ex.span_id));
  }
  function showTip(node, text) {
    tip.textContent = text;
    tip.hidden = false;
    const b = node.getBoundingClientRect();
    tip.style.left = Math.round(window.scrollX + b.right + 8) + 'px';
    tip.style.top = Math.round(window.scrollY + b.top - 4) + 'px';
  }
  // The columns on display rows: whole buckets merged (the OTLP downscale, index >> k) until
  // at most 48 rows span the data, so every cell holds a whole number of events.
  function heatGrid(h) {
    let lo = Infinity, hi = -Infinity, zeros = 0;
    for (const c of h.columns) {
      zeros += c.zero_count;
      c.counts.forEach((n, j) => { if (n) { lo = Math.min(lo, c.offset + j); hi = Math.max(hi, c.offset + j); } });
    }
    let shift = 0;
    if (lo === Infinity) { lo = 0; hi = 0; }
    while ((hi >> shift) - (lo >> shift) + 1 > 48 && shift < 30) shift++;
    const scale = h.scale - shift;
    let lo2 = lo >> shift, hi2 = hi >> shift;
    // At least 8 rows, so one busy bucket does not fill the whole height.
    const pad = 8 - (hi2 - lo2 + 1);
    if (pad > 0) { lo2 -= Math.floor(pad / 2); hi2 += Math.ceil(pad / 2); }
    const rows = [];
    const bound = (i) => Math.round(Math.pow(2, i / Math.pow(2, scale)) * 1e9);
    if (zeros) rows.push({ lo: 0, hi: 0, label: 'latency 0' });
    for (let i = lo2; i <= hi2; i++) {
      const a = bound(i), b = bound(i + 1);
      rows.push({ lo: a, hi: b, index: i, label: 'latency ' + humanNs(a) + ' – ' + humanNs(b) });
    }
    const base = zeros ? 1 : 0;
    const n = rows.length;
    const cells = new Array(h.columns.length * n).fill(0);
    let max = 0;
    h.columns.forEach((c, i) => {
      if (zeros) cells[i * n] += c.zero_count;
      c.counts.forEach((cnt, j) => {
        if (!cnt) return;
        const k = i * n + base + (((c.offset + j) >> shift) - lo2);
        cells[k] += cnt;
      });
    });
    for (const v of cells) max = Math.max(max, v);
    const yOf = (ns, T, ph) => {
      if (ns <= 0) return T + ph - 0.5 * ph / n;
      const idx = Math.log2(ns / 1e9) * Math.pow(2, scale);
      const frac = (idx - lo2) / (hi2 - lo2 + 1);
      return T + ph - ph * (base + Math.max(0, Math.min(1, frac)) * (n - base)) / n;
    };
    // Ticks at whole decades (1µs, 10µs, …) inside the rows' range; 2× and 5× too when
    // fewer than two decades fall inside.
    const first = rows[base] ? rows[base].lo : 0, last = rows[n - 1].hi;
    const within = (ms) => {
      const out = [];
      for (let t = 1; t <= last && t < 1e13; t *= 10) for (const m of ms) if (t * m >= first && t * m <= last) out.push(t * m);
      return out;
    };
    let ticks = within([1]);
    if (ticks.length < 2) ticks = within([1, 2, 5]);
    return { cells: cells, rows: rows, cols: h.columns.length, max: max, yOf: yOf, ticks: ticks };
  }
  // Colour bins over whole counts: one count per colour when few, else log-spaced ranges.
  function colourBins(max) {
    const uppers = [];
    if (max <= PALETTE.length) for (let c = 1; c <= max; c++) uppers.push(c);
    else for (let k = 1; k <= PALETTE.length; k++) {
      const u = Math.max(1, Math.round(Math.pow(max, k / PALETTE.length)));
      if (!uppers.length || u > uppers[uppers.length - 1]) uppers.push(u);
    }
    uppers[uppers.length - 1] = Math.max(max, 1);
    const offset = PALETTE.length - uppers.length;
    const ranges = new Array(PALETTE.length).fill(null);
    uppers.forEach((u, k) => {
      const from = k ? uppers[k - 1] + 1 : 1;
      ranges[offset + k] = from === u ? String(u) : from + '–' + u;
    });
    return {
      ranges: ranges,
      level: (c) => offset + uppers.findIndex((u) => c <= u),
    };
  }

  // ---- the flame graph -----------------------------------------------------------------------
  const flame = data.flame && data.flame.stacks && data.flame.stacks.length ? buildTree(data.flame.stacks) : null;
  function buildTree(stacks) {
    const root = { name: 'all', value: 0, kids: new Map(), path: '' };
    for (const [stack, w] of stacks) {
      root.value += w;
      let node = root;
      for (const f of stack.split(';')) {
        let k = node.kids.get(f);
        if (!k) { k = { name: f, value: 0, kids: new Map(), parent: node, path: node.path + ';' + f }; node.kids.set(f, k); }
        k.value += w;
        node = k;
      }
    }
    return root;
  }
  function drawFlame() {
    flameSection.replaceChildren(el('h2', { id: 'flame-h', text: 'Off-CPU time by stack' }));
    if (!flame) { flameSection.append(el('p', { text: 'No off-CPU stacks were captured.' })); return; }
    let focus = flame;
    if (state.zoom) {
      for (const f of state.zoom.split(';').slice(1)) { const k = focus.kids.get(f); if (!k) break; focus = k; }
    }
    const search = el('input', { id: 'flame-search', type: 'search', placeholder: 'search frames', value: state.q });
    const matched = el('span', { id: 'flame-matched', 'aria-live': 'polite' });
    const reset = el('button', { type: 'button', id: 'flame-reset', text: 'Reset zoom', on: { click: () => { state.zoom = ''; saveState(); drawFlame(); } } });
    reset.disabled = focus === flame;
    search.addEventListener('input', () => { state.q = search.value; saveState(); highlight(); });
    flameSection.append(el('div', { class: 'controls' }, el('label', { for: 'flame-search', text: 'Search ' }), search, reset, matched));
    const W = 1200, RH = 17;
    let depth = 0;
    (function d(n, k) { depth = Math.max(depth, k); for (const c of n.kids.values()) d(c, k + 1); })(focus, 0);
    const chain = [];
    for (let n = focus; n; n = n.parent) chain.unshift(n);
    const H = (depth + chain.length) * RH + 4;
    const pic = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'flame', role: 'group', 'aria-label': 'Flame graph of off-CPU time; select a frame to zoom' });
    const frames = [];
    const frame = (n, x, w, level, dim) => {
      const y = H - (level + 1) * RH;
      const pct = (100 * n.value / flame.value).toFixed(2);
      const label = n.name + ' — ' + humanNs(n.value) + ' (' + pct + '% of all off-CPU time)';
      const g = svg('g', { class: 'frame' + (dim ? ' dim' : ''), tabindex: '0', 'aria-label': label });
      const r = svg('rect', { x: x.toFixed(2), y: y, width: Math.max(0, w - 1).toFixed(2), height: RH - 1, rx: 2 });
      g.append(r);
      const chars = Math.floor((w - 6) / 7);
      if (chars >= 3) g.append(svgText((x + 3).toFixed(2), y + RH - 5, n.name.length > chars ? n.name.slice(0, chars - 1) + '…' : n.name));
      titled(g, label);
      const zoom = () => { state.zoom = n.path; saveState(); drawFlame(); };
      g.addEventListener('click', zoom);
      g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); zoom(); } });
      frames.push([g, n]);
      pic.append(g);
    };
    chain.forEach((n, level) => frame(n, 0, W, level, n !== focus));
    (function kids(n, x, level, scale) {
      for (const c of [...n.kids.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const w = c.value * scale;
        if (w >= 1) { frame(c, x, w, level, false); kids(c, x, level + 1, scale); }
        x += w;
      }
    })(focus, 0, chain.length, W / focus.value);
    flameSection.append(pic);
    for (const f of data.flame.pictures || []) flameSection.append(el('a', { href: f, text: f.split('/').pop() }), ' ');
    // Matches are counted over the whole tree under the focus (frames too narrow to draw
    // included), each subtree once; the drawn frames that match are highlighted.
    function highlight() {
      const q = state.q.trim().toLowerCase();
      const hit = (n) => q !== '' && n.name.toLowerCase().includes(q);
      for (const [g, n] of frames) g.classList.toggle('match', hit(n));
      let total = 0;
      (function walk(n) {
        if (hit(n)) { total += n.value; return; }
        for (const c of n.kids.values()) walk(c);
      })(focus);
      matched.textContent = q ? ' matched ' + humanNs(total) + ' (' + (100 * total / flame.value).toFixed(1) + '% of all off-CPU time)' : '';
    }
    highlight();
  }

  update();
  drawFlame();
  if (data.live && data.refresh_seconds > 0) {
    setTimeout(() => location.reload(), data.refresh_seconds * 1000);
  }
})();
