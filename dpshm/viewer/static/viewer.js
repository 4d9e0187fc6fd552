// dpshm view: the page's script. No framework, no build step.
// Status, logs and workers arrive as server-sent events (/api/events); so does the
// trace of the selected stream (/api/trace): every frame_s (0.1 s), the min/max columns
// completed since the last frame (layout: dpshm/viewer/columns.py and trace.py); the display
// scrolls smoothly in between.
"use strict";

const $ = (id) => document.getElementById(id);
const LOG_LINES = 200;

const view = {
  streams: new Map(), // key -> row of the stream table
  key: null, // selected stream
  gain: 1,
  ch0: 0,
  timer: null, // marker list refresh
  trace: null, // EventSource of the trace
  events: null, // EventSource of the status, logs and workers
  token: 0, // bumps on every selection: stale replies are dropped
  t: null, // trace store (see resetStore)
  frames: 0,
  logSeq: 0, // newest log record shown
  viewerStarted: null,
};

// -- helpers -----------------------------------------------------------------------
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function fmt(v, digits) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}
function rate(v) {
  return v ? Number(v).toLocaleString("en-US", { maximumFractionDigits: 1 }) : "irregular";
}

// -- events ------------------------------------------------------------------------
function connect() {
  if (view.events) view.events.close();
  const es = new EventSource("/api/events");
  view.events = es;
  const conn = $("connection");
  es.onopen = () => { conn.textContent = "live"; conn.className = "pill ok"; };
  es.onerror = () => { conn.textContent = "viewer unreachable (retrying)"; conn.className = "pill bad"; };
  es.addEventListener("hello", (e) => {
    const hello = JSON.parse(e.data);
    $("namespace").textContent = "namespace " + hello.namespace;
    if (hello.started !== view.viewerStarted) { // a new viewer process: its records anew
      view.viewerStarted = hello.started;
      view.logSeq = 0;
      $("logs").replaceChildren();
    }
  });
  es.addEventListener("streams", (e) => renderStreams(JSON.parse(e.data)));
  es.addEventListener("logs", (e) => appendLogs(JSON.parse(e.data)));
  es.addEventListener("workers", (e) => renderWorkers(JSON.parse(e.data)));
}

function renderStreams(table) {
  const sup = $("supervisor");
  if (table.supervisor) {
    sup.textContent = "supervisor pid " + table.supervisor.pid;
    sup.className = "pill ok";
  } else {
    sup.textContent = "no supervisor";
    sup.className = "pill bad";
  }
  $("problem").textContent = table.problem || (table.streams.length ? "" :
    "No streams shared yet: start an LSL outlet (e.g. `dpshm mock`).");
  const body = document.querySelector("#streams tbody");
  const rows = [];
  view.streams.clear();
  for (const s of table.streams) {
    view.streams.set(s.key, s);
    const tr = el("tr");
    tr.dataset.key = s.key;
    tr.dataset.name = s.name;
    tr.dataset.stale = s.stale ? "1" : "0";
    if (s.key === view.key) tr.className = "selected";
    const lag = s.lag_s === null ? null : s.lag_s * 1e3;
    const cells = [
      [s.name, "name"], [s.type], [s.hostname], [s.channels, "num"],
      [rate(s.srate), "num"], [fmt(s.measured_rate, 1), "num"], [fmt(lag, 1), "num"],
      [s.lost === null || s.lost === undefined ? "–" : s.lost, s.lost ? "num lost" : "num"],
      [s.head, "num"], [s.stale ? "STALE" : "live", s.stale ? "stale" : "live"],
      [s.writer_pid, "num"],
    ];
    for (const [text, cls] of cells) tr.appendChild(el("td", text, cls));
    tr.addEventListener("click", () => select(s.key));
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  if (view.key && view.streams.has(view.key)) updateTitle();
}

function appendLogs(records) {
  const box = $("logs");
  const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  for (const r of records) {
    if (r.seq <= view.logSeq) continue; // already shown (the event stream reconnected)
    view.logSeq = r.seq;
    const line = el("div", null, "rec " + r.level);
    const when = new Date((r.created || 0) * 1000).toLocaleTimeString("en-GB");
    line.appendChild(el("span", when + " ", "when"));
    line.appendChild(document.createTextNode(`${r.level} ${r.name}: ${r.message}`));
    if (r.exc_text) line.appendChild(el("div", r.exc_text));
    box.appendChild(line);
  }
  while (box.childElementCount > LOG_LINES) box.firstElementChild.remove();
  if (stick) box.scrollTop = box.scrollHeight;
}

function renderWorkers(w) {
  const note = $("workers-note");
  const table = $("workers");
  if (!w.enabled || w.error) {
    note.textContent = w.error || "the supervisor's command server is not enabled";
    table.hidden = true;
    $("declared").textContent = "";
    return;
  }
  const list = w.workers || [];
  note.textContent = list.length ? "" : "no worker running (commands on " + w.server + ")";
  table.hidden = list.length === 0;
  const rows = list.map((x) => {
    const tr = el("tr");
    for (const [t, c] of [[x.id], [x.state, x.state], [(x.streams || []).join(", "), "wrap"],
      [x.restarts, "num"]]) tr.appendChild(el("td", t, c));
    tr.title = `${x.mode} worker, pid ${x.pid}` + (x.error ? ` · ${x.error}` : "");
    return tr;
  });
  document.querySelector("#workers tbody").replaceChildren(...rows);
  const names = Object.keys(w.declared || {});
  $("declared").textContent = names.length ? "declared: " + names.join(", ") : "no workers declared";
}

// -- selection and controls --------------------------------------------------------
function select(key) {
  view.key = key;
  view.ch0 = 0;
  view.token += 1;
  view.t = null;
  for (const tr of document.querySelectorAll("#streams tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.key === key);
  }
  restart();
}

function restart() {
  clearTimeout(view.timer);
  closeTrace();
  view.t = null;
  const s = view.streams.get(view.key);
  if (!s) return;
  const markers = s.format === "string";
  $("markers").hidden = !markers;
  $("trace").hidden = markers;
  updateTitle();
  view.token += 1;
  (markers ? pollMarkers : openTrace)(view.token);
}

function updateTitle() {
  const s = view.streams.get(view.key);
  const title = $("trace-title");
  title.textContent = `${s.name} `;
  title.appendChild(el("span", `${s.type} · ${s.channels} ch · ${rate(s.srate)}${s.srate ? " Hz" : ""}` +
    (s.stale ? " · STALE (outlet gone)" : ""), s.stale ? "hint stale" : "hint"));
}

function perPage() { return Number($("per-page").value); }

function setupControls() {
  $("win").addEventListener("change", restart);
  $("per-page").addEventListener("change", () => { view.ch0 = 0; restart(); });
  $("scale").addEventListener("change", draw);
  $("gain-up").addEventListener("click", () => { view.gain *= 2; $("gain").textContent = "×" + view.gain; draw(); });
  $("gain-down").addEventListener("click", () => { view.gain /= 2; $("gain").textContent = "×" + view.gain; draw(); });
  $("ch-prev").addEventListener("click", () => { view.ch0 = Math.max(0, view.ch0 - perPage()); restart(); });
  $("ch-next").addEventListener("click", () => {
    const s = view.streams.get(view.key);
    if (s && view.ch0 + perPage() < s.channels) { view.ch0 += perPage(); restart(); }
  });
  window.addEventListener("resize", () => { if (view.key) restart(); });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) { // nobody looks: the viewer sends nothing
      closeTrace();
      if (view.events) view.events.close();
      view.events = null;
      $("connection").textContent = "paused (tab hidden)";
      $("connection").className = "pill";
    } else {
      connect(); // the log records kept meanwhile arrive (each shown once)
      if (view.key) restart();
    }
  });
}

// -- traces ------------------------------------------------------------------------
function closeTrace() {
  if (view.trace) view.trace.close();
  view.trace = null;
}

// The trace is pushed by the viewer (/api/trace): each "window" event carries the
// columns completed since the previous one (base64 of the binary window reply).
function openTrace(token) {
  closeTrace();
  if (document.hidden) return; // reopened when the tab shows again
  const canvas = $("trace");
  const width = Math.max(16, Math.min(4096, Math.floor(canvas.clientWidth - MARGIN - 8)));
  const q = new URLSearchParams({ key: view.key, seconds: $("win").value, width: String(width),
    ch0: String(view.ch0), nch: String(perPage()) });
  const es = new EventSource("/api/trace?" + q);
  view.trace = es;
  es.addEventListener("window", (e) => {
    if (token !== view.token) return;
    const bin = atob(e.data);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    merge(bytes.buffer, width);
    scheduleDraw(); // at most one drawing per display frame, however many events came
  });
  es.addEventListener("problem", (e) => {
    $("trace-info").textContent = JSON.parse(e.data).error;
  });
  es.onerror = () => {
    if (token === view.token) $("trace-info").textContent = "trace interrupted (reconnecting)";
  };
}

// A "reset" frame carries the whole window and its shape; the frames after it only the
// columns completed since (first_col..end_col), which go into the ring of columns.
function merge(buf, width) {
  const n = new DataView(buf).getUint32(0, true);
  const h = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  let t = view.t;
  if (!h.reset && !t) return; // a continuation without its start: the next reset repairs it
  if (h.reset) {
    // Frames come every frame_s (a few a second); the display scrolls in between at the
    // stream's rate, `lag` columns behind the newest, so it never waits for the next one.
    const cps = h.srate ? h.srate / h.spc : 0; // columns per second
    const lag = cps && h.frame_s ? Math.ceil(1.5 * h.frame_s * cps) : 0;
    const S = h.window_cols + lag + 1; // columns kept: the window and the lag
    t = view.t = {
      ring: h.ring, W: h.window_cols, S, lag, cps, m: h.n_channels, spc: h.spc, width,
      srate: h.srate, names: h.channel_names || [], ch0: h.first_channel,
      total: h.total_channels, end: h.first_col, seconds: h.seconds, markers: [],
      arrived: performance.now(),
      times: new Float64Array(S).fill(NaN),
      mm: new Float32Array(S * h.n_channels * 2).fill(NaN),
    };
  }
  const k = h.n_cols, m = t.m;
  const times = new Float64Array(buf, 4 + n, k);
  const mm = new Float32Array(buf, 4 + n + 8 * k, k * m * 2);
  for (let i = 0; i < k; i++) {
    const idx = (h.first_col + i) % t.S;
    t.times[idx] = times[i];
    t.mm.set(mm.subarray(i * m * 2, (i + 1) * m * 2), idx * m * 2);
  }
  t.end = h.end_col;
  if (k > 0) t.arrived = performance.now(); // (a frame of markers or STALE only: no jump)
  if (h.markers) t.markers = h.markers; // sent when they change
  t.stale = h.stale;
  $("ch-range").textContent = `${t.ch0 + 1}–${t.ch0 + m} of ${t.total}`;
  const lost = h.head > 0 ? "" : " · no samples yet";
  $("trace-info").textContent = `${t.spc} sample${t.spc > 1 ? "s" : ""}/column · ` +
    `${t.W} columns${t.seconds ? " · " + t.seconds.toFixed(1) + " s" : ""}${lost}` +
    (h.stale ? " · STALE: outlet gone" : "");
}

const MARGIN = 110; // channel-name column (CSS px)

const DRAW_EVERY_MS = 40; // the scrolling display: at most 25 drawings a second

// New data marks the drawing due; a regular stream also scrolls between frames.
function scheduleDraw() {
  view.dirty = true;
  if (!view.raf) view.raf = requestAnimationFrame(tick);
}

function tick(now) {
  view.raf = 0;
  const t = view.t;
  if (!t || $("trace").hidden) return;
  const moving = t.lag > 0 && view.trace !== null && !document.hidden;
  if (moving ? now - (view.lastDraw || 0) >= DRAW_EVERY_MS - 2 : view.dirty) {
    view.dirty = false;
    view.lastDraw = now;
    draw();
  }
  if (moving) view.raf = requestAnimationFrame(tick);
}

// Right edge of the display (fractional column): `lag` columns behind the newest one at
// a frame's arrival, then advancing at the stream's rate until the next frame.
function displayEnd(t) {
  if (!t.lag) return t.end;
  const ahead = Math.min(t.lag, ((performance.now() - t.arrived) * t.cps) / 1000);
  return t.end - t.lag + ahead;
}

function draw() {
  const t = view.t;
  const canvas = $("trace");
  if (!t || canvas.hidden) return;
  const started = performance.now();
  const dpr = window.devicePixelRatio || 1;
  const cw = canvas.clientWidth, ch = canvas.clientHeight;
  if (canvas.width !== Math.round(cw * dpr) || canvas.height !== Math.round(ch * dpr)) {
    canvas.width = Math.round(cw * dpr);
    canvas.height = Math.round(ch * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, cw, ch);
  const axis = 22, plotW = cw - MARGIN - 8, plotH = ch - axis;
  const lane = plotH / t.m;
  const labelEvery = Math.max(1, Math.ceil(12 / lane));
  const endF = displayEnd(t);
  const first = endF - t.W; // left edge (fractional column)
  const c0 = Math.max(Math.ceil(first), t.end - t.S), c1 = Math.min(t.end, Math.ceil(endF));
  const x = (c) => MARGIN + ((c - first + 0.5) / t.W) * plotW;
  // per-channel range over the columns kept
  const lo = new Float32Array(t.m).fill(Infinity), hi = new Float32Array(t.m).fill(-Infinity);
  for (let c = 0; c < t.S; c++) {
    for (let j = 0; j < t.m; j++) {
      const a = t.mm[(c * t.m + j) * 2], b = t.mm[(c * t.m + j) * 2 + 1];
      if (a < lo[j]) lo[j] = a;
      if (b > hi[j]) hi[j] = b;
    }
  }
  let common = 0;
  for (let j = 0; j < t.m; j++) if (hi[j] - lo[j] > common) common = hi[j] - lo[j];
  const perChannel = $("scale").value === "channel";
  // time grid: one line per second (or per 1/10 of the window for short ones)
  const colS = t.srate ? t.spc / t.srate : 0;
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#5d6778";
  g.strokeStyle = "#e3e6eb";
  g.lineWidth = 1;
  if (colS) {
    const span = t.W * colS;
    const step = span > 20 ? 5 : span > 4 ? 1 : span > 1.5 ? 0.5 : 0.1;
    for (let s = 0; s <= span + 1e-9; s += step) {
      const px = MARGIN + plotW - (s / span) * plotW;
      g.beginPath(); g.moveTo(px, 0); g.lineTo(px, plotH); g.stroke();
      g.fillText(s === 0 ? "now" : `−${+s.toFixed(1)} s`, px - 14, ch - 6);
    }
  }
  for (let j = 0; j < t.m; j++) {
    const mid = lane * (j + 0.5);
    const range = (perChannel ? hi[j] - lo[j] : common) || 1;
    const centre = (hi[j] + lo[j]) / 2;
    const scale = (lane * 0.85 * view.gain) / range;
    if (j % labelEvery === 0) { // names would overlap in lanes under 12 px: every k-th
      g.fillStyle = "#1d2330";
      g.fillText(t.names[j] || `ch ${t.ch0 + j + 1}`, 6, mid + 4);
    }
    g.strokeStyle = j % 2 ? "#2356c7" : "#0f7b6c";
    g.beginPath();
    let pen = false;
    for (let c = c0; c < c1; c++) {
      const idx = ((c % t.S) + t.S) % t.S;
      const a = t.mm[(idx * t.m + j) * 2], b = t.mm[(idx * t.m + j) * 2 + 1];
      if (Number.isNaN(a)) { pen = false; continue; }
      const px = x(c);
      const y1 = mid - (b - centre) * scale, y0 = mid - (a - centre) * scale;
      if (pen) g.lineTo(px, y1); else g.moveTo(px, y1);
      g.lineTo(px, y0 + (y0 - y1 < 0.5 ? 0.5 : 0));
      pen = true;
    }
    g.stroke();
  }
  const shown = drawMarkers(g, t, x, plotH, first, endF);
  canvas.dataset.frames = String(++view.frames);
  canvas.dataset.endCol = String(t.end);
  canvas.dataset.displayEnd = endF.toFixed(2);
  canvas.dataset.key = view.key;
  canvas.dataset.markers = String(shown);
  canvas.dataset.drawMs = (performance.now() - started).toFixed(2);
}

function drawMarkers(g, t, x, plotH, first, endF) {
  const newest = t.times[((t.end - 1) % t.S + t.S) % t.S];
  if (!t.srate || Number.isNaN(newest)) return 0;
  const colS = t.spc / t.srate;
  g.save();
  g.setLineDash([4, 3]);
  g.strokeStyle = "#b42318";
  g.font = "bold 11px system-ui, sans-serif";
  let lastLabelX = -1e9, row = 0, shown = 0;
  for (const mk of t.markers) {
    const c = t.end - 1 - (newest - mk.t) / colS;
    if (c < first || c >= endF) continue; // scrolled out (or not yet in): not drawn
    shown += 1;
    const px = x(c);
    g.beginPath(); g.moveTo(px, 0); g.lineTo(px, plotH); g.stroke();
    const label = mk.label;
    const w = g.measureText(label).width + 6;
    row = px - lastLabelX < w ? (row + 1) % 3 : 0; // stagger labels that would overlap
    lastLabelX = px;
    g.fillStyle = "rgba(255,255,255,0.85)";
    g.fillRect(px + 2, 2 + row * 14, w, 13);
    g.fillStyle = "#b42318";
    g.fillText(label, px + 5, 12 + row * 14);
  }
  g.restore();
  return shown;
}

// -- marker streams ----------------------------------------------------------------
async function pollMarkers(token) {
  try {
    const r = await fetch("/api/markers?" + new URLSearchParams({ key: view.key, n: "50" }),
      { cache: "no-store" });
    if (token !== view.token) return;
    const list = await r.json();
    if (!r.ok) { $("trace-info").textContent = list.error; }
    else {
      const rows = list.slice().reverse().map((m) => {
        const tr = el("tr");
        tr.appendChild(el("td", m.t.toFixed(3), "num"));
        tr.appendChild(el("td", m.label));
        return tr;
      });
      document.querySelector("#markers tbody").replaceChildren(...rows);
      $("trace-info").textContent = `${list.length} newest markers, newest first`;
      $("markers").dataset.count = String(list.length);
    }
  } catch (err) {
    $("trace-info").textContent = "viewer unreachable: " + err;
  }
  if (token === view.token) view.timer = setTimeout(() => pollMarkers(token), 500);
}

setupControls();
connect();
