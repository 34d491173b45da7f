// chromaray dashboard: polls the read-only JSON API and renders runs, stages, charts,
// actors and errors. Every database string reaches the DOM through textContent (never
// the HTML parser), so file names and error messages cannot inject markup.
"use strict";

const POLL_MS = 2000;
const COLORS = ["#2a6fdb", "#e67e22", "#1e8e3e", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];
const state = { runs: [], selected: null, busy: false, lastOk: 0, detail: null };

// ---------- small helpers ----------
function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function td(text, cls) { return el("td", text, cls); }

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

function num(x, digits, minDigits) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  return Number(x).toLocaleString(undefined, { maximumFractionDigits: digits === undefined ? 0 : digits,
                                              minimumFractionDigits: minDigits || 0 });
}

// audio seconds -> hours: two decimals, or two significant digits below 0.01 h (short test runs)
function hours(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const h = seconds / 3600;
  if (h > 0 && h < 0.01) return h.toPrecision(2);
  return num(h, 2, 2);
}

// a round step (1, 2 or 5 times a power of ten) close to span / n
function niceStep(span, n) {
  const raw = span / n, p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

function bytes(b) {
  if (!b) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return b.toFixed(i ? 1 : 0) + " " + u[i];
}

function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h) return h + " h " + String(m).padStart(2, "0") + " min";
  if (m) return m + " min " + String(r).padStart(2, "0") + " s";
  return r + " s";
}

function when(t) { return t ? new Date(t * 1000).toLocaleString() : "–"; }

// Only http(s) links are made clickable (a javascript: URL in the database stays text).
function safeHttpUrl(u) {
  if (typeof u !== "string" || !u) return null;
  if (!/^[a-z][a-z0-9+.-]*:/i.test(u)) u = "http://" + u;  // Ray reports "host:8265"
  try {
    const p = new URL(u);
    return p.protocol === "http:" || p.protocol === "https:" ? p.href : null;
  } catch (e) { return null; }
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (r.status === 404) return null;
  const body = await r.json();
  if (!r.ok) throw new Error(body && (body.error || body.detail) || ("HTTP " + r.status));
  return body;
}

function banner(text, bad) {
  const b = $("banner");
  b.hidden = !text;
  b.textContent = text || "";
  b.classList.toggle("bad", !!bad);
}

// a clock-friendly step in seconds (1 s ... 1 day) close to span / n
function niceTimeStep(span, n) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const raw = span / n;
  return steps.find(s => s >= raw) || Math.ceil(raw / 86400) * 86400;
}

// ---------- chart (plain canvas) ----------
// series: [{name, color, points: [[x, y], ...]}]; x is epoch seconds when opts.time.
function drawChart(canvas, series, opts) {
  opts = opts || {};
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(200, canvas.clientWidth), h = Math.max(120, canvas.clientHeight);
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  const pts = [];
  series.forEach(s => s.points.forEach(p => { if (p[1] !== null && isFinite(p[1])) pts.push(p); }));
  canvas.dataset.points = String(pts.length);
  if (!pts.length) {
    ctx.fillStyle = "#6b7585"; ctx.textAlign = "center";
    ctx.fillText("no data yet", w / 2, h / 2);
    canvas.dataset.drawn = "0";
    return;
  }
  let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  let y0 = Math.min(0, ...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  if (opts.yFromData) y0 = Math.min(...pts.map(p => p[1]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y1 = y0 + (Math.abs(y0) || 1); }
  const pad = { l: 52, r: 10, t: 18, b: 24 };
  const X = x => pad.l + (x - x0) / (x1 - x0) * (w - pad.l - pad.r);
  const Y = y => h - pad.b - (y - y0) / (y1 - y0) * (h - pad.t - pad.b);
  // grid and axis labels
  ctx.strokeStyle = "#e3e7ee"; ctx.fillStyle = "#6b7585"; ctx.lineWidth = 1;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  const ys = niceStep(y1 - y0, 4);
  y0 = Math.floor(y0 / ys) * ys; y1 = Math.ceil(y1 / ys) * ys;
  const yDigits = Math.max(0, -Math.floor(Math.log10(ys)));
  for (let v = y0; v <= y1 + ys / 2; v += ys) {
    const yy = Math.round(Y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
    ctx.fillText(num(v, yDigits, yDigits), pad.l - 4, yy);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  const xs = opts.time ? niceTimeStep(x1 - x0, 4) : Math.max(1, niceStep(x1 - x0, 5));
  let prev = null;
  for (let v = Math.ceil(x0 / xs) * xs; v <= x1 + 1e-9; v += xs) {
    const label = opts.time ? new Date(v * 1000).toLocaleTimeString() : num(v);
    if (label !== prev) ctx.fillText(label, X(v), h - pad.b + 4);
    prev = label;
  }
  // lines
  series.forEach((s, k) => {
    const c = s.color || COLORS[k % COLORS.length];
    ctx.strokeStyle = c; ctx.fillStyle = c; ctx.lineWidth = 1.8;
    ctx.beginPath();
    let started = false;
    s.points.forEach(p => {
      if (p[1] === null || !isFinite(p[1])) { started = false; return; }
      if (!started) { ctx.moveTo(X(p[0]), Y(p[1])); started = true; } else ctx.lineTo(X(p[0]), Y(p[1]));
    });
    ctx.stroke();
    if (s.points.length === 1 && s.points[0][1] !== null) {
      ctx.beginPath(); ctx.arc(X(s.points[0][0]), Y(s.points[0][1]), 3, 0, 2 * Math.PI); ctx.fill();
    }
  });
  // legend
  ctx.textAlign = "left"; ctx.textBaseline = "top";
  let lx = pad.l + 4;
  series.forEach((s, k) => {
    const c = s.color || COLORS[k % COLORS.length];
    ctx.fillStyle = c; ctx.fillRect(lx, 3, 10, 10);
    ctx.fillStyle = "#1d2430"; ctx.fillText(s.name, lx + 14, 2);
    lx += 24 + ctx.measureText(s.name).width;
  });
  canvas.dataset.drawn = "1";
}

// ---------- rendering ----------
function renderRunsTable() {
  const body = $("runs").tBodies[0];
  clear(body);
  $("no-runs").hidden = state.runs.length > 0;
  $("runs").hidden = state.runs.length === 0;
  state.runs.forEach(r => {
    const tr = el("tr");
    tr.dataset.runId = r.id;
    if (r.id === state.selected) tr.className = "selected";
    // The run row is updated at the end; progress rows while it runs: show the larger.
    const st = Object.values(r.stages);
    const total = Math.max(r.n_total, ...st.map(s => s.total));
    const done = Math.max(r.n_done, ...st.map(s => s.done));
    const errors = Math.max(r.n_errors, ...st.map(s => s.errors));
    const audio = Math.max(r.audio_seconds || 0, ...st.map(s => s.audio_seconds));
    const status = td(r.status, "status-" + r.status);
    if (r.status === "interrupted") status.title = "process gone; last seen alive " + when(r.last_seen_at);
    tr.append(td(r.kind), td(r.name || r.id.slice(0, 8)), status,
              td(when(r.started_at)), td(total || done ? num(done) + " / " + num(total) : "–", "num"),
              td(num(errors), "num"), td(hours(audio), "num"));
    tr.addEventListener("click", () => { location.hash = "run=" + encodeURIComponent(r.id); });
    body.append(tr);
  });
}

function card(value, key, title) {
  const c = el("div", null, "card");
  c.append(el("div", value, "v"), el("div", key, "k"));
  if (title) c.title = title;
  return c;
}

function mainStage(run) {
  // The stage with the largest total drives the headline numbers.
  let best = null;
  Object.entries(run.stages).forEach(([name, s]) => {
    if (!best || s.latest.total > best[1].latest.total) best = [name, s];
  });
  return best;
}

function renderRun(run) {
  $("run").hidden = false;
  $("run-title").textContent = run.kind + " run " + (run.name ? "“" + run.name + "”" : run.id.slice(0, 12));
  const link = $("ray-link"), href = safeHttpUrl(run.ray_dashboard_url);
  link.hidden = !href;
  if (href) link.href = href; else link.removeAttribute("href");
  const age = run.now && run.last_update ? run.now - run.last_update : null;
  let meta = "id " + run.id + " · status " + run.status + " · started " + when(run.started_at);
  if (run.finished_at) meta += " · finished " + when(run.finished_at);
  else if (run.status === "interrupted") {
    // Its process is gone (killed, crashed, machine restarted): say when it was last alive.
    meta += " · process gone, last seen alive " + when(run.last_seen_at || run.last_update);
  } else if (age !== null) meta += " · last update " + duration(age) + " ago";
  if (run.status === "running" && age !== null && age > 300) meta += " (no update for over 5 min)";
  if (run.host) meta += " · " + run.host + (run.pid ? " pid " + run.pid : "");
  if (run.ray_address) meta += " · Ray " + run.ray_address;
  $("run-meta").textContent = meta;

  const ms = mainStage(run);
  const cards = $("cards");
  clear(cards);
  const stageNames = Object.keys(run.stages);
  const tm = run.train_metrics || {};
  const isTrain = run.kind === "train" || (stageNames.length === 0 && Object.keys(tm).length > 0);
  $("stages-section").hidden = isTrain && stageNames.length === 0;
  if (isTrain) {
    renderTrainCards(run, cards);
  } else {
    renderFileCards(run, ms, cards);
  }

  renderStages(run, stageNames, isTrain);
}

function renderTrainCards(run, cards) {
  const tm = run.train_metrics || {};
  const last = k => (tm[k] && tm[k].length ? tm[k][tm[k].length - 1] : null);
  const t = last("train"), e = last("eval");
  cards.append(card(t ? num(t.step) : "–", "training step"));
  cards.append(card(t ? num(t.loss, 4) : "–", "last train loss"));
  cards.append(card(e ? num(e.loss, 4) + " @ " + num(e.step) : "–", "last eval loss @ step"));
  cards.append(card(t ? num(t.items_per_s, 1) : "–", "items/s (tokens or frames)"));
  cards.append(card(t && t.lr ? t.lr.toExponential(2) : "–", "learning rate"));
  const end = run.finished_at || run.last_update;
  cards.append(card(duration(end && run.started_at ? end - run.started_at : null), "elapsed"));
}

function renderFileCards(run, ms, cards) {
  const total = Math.max(run.n_total, ms ? ms[1].latest.total : 0);
  const done = Math.max(run.n_done, ms ? ms[1].latest.done : 0);
  const audio = Math.max(run.audio_seconds || 0, ms ? ms[1].latest.audio_seconds : 0);
  const end = run.finished_at || run.last_update;
  cards.append(card(num(done) + " / " + num(total), "files done / total", "tracks finished (incl. skipped) of all files found"));
  cards.append(card(num(run.n_skipped), "skipped (already done)", "unchanged files found in the database"));
  cards.append(card(num(Math.max(run.n_errors, ms ? ms[1].latest.errors : 0)), "errors"));
  cards.append(card(hours(audio), "audio hours processed"));
  if (ms) {
    cards.append(card(num(ms[1].files_per_s_recent, 2), "files/s (last 2 min)"));
    cards.append(card(run.status === "running" ? duration(ms[1].eta_s)
                      : (ms[1].latest.handled >= ms[1].latest.total ? "done" : "–"), "ETA"));
  }
  cards.append(card(duration(end && run.started_at ? end - run.started_at : null), "elapsed"));
}

function renderStages(run, stageNames, isTrain) {
  // stages table
  const sb = $("stages").tBodies[0];
  clear(sb);
  $("no-stages").hidden = stageNames.length > 0;
  $("stages").hidden = stageNames.length === 0;
  stageNames.forEach(name => {
    const s = run.stages[name], l = s.latest;
    const tr = el("tr");
    const bar = el("div", null, "bar"), fill = el("div");
    // done + failed files count toward completion
    const handled = l.handled === undefined ? l.done + l.errors : l.handled;
    fill.style.width = (l.total ? Math.min(100, 100 * handled / l.total) : 0).toFixed(1) + "%";
    bar.title = num(handled) + " of " + num(l.total) + " files handled (done or failed)";
    bar.append(fill);
    const barCell = td(null); barCell.append(bar);
    tr.append(td(name), barCell, td(num(l.done) + " / " + num(l.total), "num"), td(num(l.errors), "num"),
              td(hours(l.audio_seconds), "num"), td(num(s.files_per_s_recent, 2), "num"),
              td(run.status === "running" ? duration(s.eta_s) : (handled >= l.total ? "done" : "–"), "num"));
    sb.append(tr);
  });

  // charts
  const done_series = stageNames.map(n => ({ name: n, points: run.stages[n].series.map(p => [p.t, p.done]) }));
  const rate_series = stageNames.map(n => ({ name: n + " files/s", points: run.stages[n].series.map(p => [p.t, p.files_per_s]) }));
  $("fig-done").hidden = $("fig-rate").hidden = stageNames.length === 0 && isTrain;
  if (!$("fig-done").hidden) {
    drawChart($("chart-done"), done_series, { time: true });
    drawChart($("chart-rate"), rate_series, { time: true });
  }
  const splits = Object.keys(run.train_metrics || {});
  $("fig-loss").hidden = splits.length === 0;
  if (splits.length) {
    drawChart($("chart-loss"), splits.map(k => ({ name: k + " loss", points: run.train_metrics[k].map(p => [p.step, p.loss]) })),
              { yFromData: true });
  }

  // actors
  const ab = $("actors").tBodies[0];
  clear(ab);
  $("actors-section").hidden = !run.actors.length;
  run.actors.forEach(a => {
    const tr = el("tr");
    tr.append(td(a.actor), td(a.device), td(num(a.n_batches), "num"), td(num(a.tracks), "num"),
              td(num(a.last_tracks), "num"), td(num(a.mean_tracks, 1), "num"), td(num(a.max_tracks), "num"),
              td(bytes(a.peak_bytes), "num"), td(bytes(a.budget_bytes), "num"), td(num(a.oom_splits), "num"),
              td(num(a.time_chunked), "num"));
    ab.append(tr);
  });

  // latest detail (free-form JSON written by the job)
  const details = stageNames.map(n => [n, run.stages[n].detail]).filter(d => d[1] && Object.keys(d[1]).length);
  $("detail-section").hidden = details.length === 0;
  $("detail").textContent = details.map(d => d[0] + ": " + JSON.stringify(d[1], null, 2)).join("\n");
}

function renderErrors(rows, totalInDb) {
  const body = $("errors").tBodies[0];
  clear(body);
  $("no-errors").hidden = rows.length > 0;
  $("errors").hidden = rows.length === 0;
  $("errors-count").textContent = "(" + rows.length + (totalInDb !== undefined ? " of " + totalInDb + " in the database" : "") + ")";
  rows.forEach(e => {
    const tr = el("tr");
    tr.className = "error-row";
    tr.append(td(e.path), td(e.stage), td(e.reason), td(when(e.last_seen)));
    body.append(tr);
  });
}

// ---------- polling ----------
function chooseRun() {
  const m = /^#run=(.+)$/.exec(location.hash);
  const want = m ? decodeURIComponent(m[1]) : null;
  if (want && state.runs.some(r => r.id === want)) return want;
  if (state.selected && state.runs.some(r => r.id === state.selected)) return state.selected;
  const running = state.runs.find(r => r.status === "running");
  return running ? running.id : (state.runs.length ? state.runs[0].id : null);
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    const st = await getJSON("/api/runs");
    $("db-path").textContent = st.db_path;
    if (!st.exists) {
      banner("The database file " + st.db_path + " does not exist (yet). Waiting for it to appear: start a job with --db pointing at it.", true);
    } else if (st.error) {
      banner(st.error, true);
    } else if (!st.schema) {
      banner("The database is empty: no job has written to it yet. Waiting…", false);
    } else {
      banner(null);
    }
    state.runs = st.runs || [];
    state.selected = chooseRun();
    renderRunsTable();
    if (state.selected) {
      const run = await getJSON("/api/runs/" + encodeURIComponent(state.selected));
      if (run) {
        state.detail = run;
        renderRun(run);
        if ($("errors-all").checked) {
          const all = await getJSON("/api/errors");
          renderErrors(all.errors, all.n_errors_total);
        } else {
          renderErrors(run.errors);
        }
      }
    } else {
      $("run").hidden = true;
    }
    state.lastOk = Date.now();
    $("live").textContent = "updated " + new Date().toLocaleTimeString();
    $("live-dot").className = "dot ok";
    document.body.dataset.refreshed = String((Number(document.body.dataset.refreshed) || 0) + 1);
  } catch (err) {
    $("live").textContent = "cannot reach the dashboard server (" + err.message + "), retrying…";
    $("live-dot").className = "dot bad";
  } finally {
    state.busy = false;
  }
}

window.addEventListener("hashchange", () => { state.selected = null; refresh(); });
window.addEventListener("resize", () => { if (state.detail) renderRun(state.detail); });
document.addEventListener("DOMContentLoaded", () => {
  $("errors-all").addEventListener("change", refresh);
  refresh();
  setInterval(refresh, POLL_MS);
});
