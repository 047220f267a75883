// chordflow dashboard: plain JS, no build step, nothing fetched but this server's own JSON.
// Routes (location.hash): #/ runs, #/run/<id>, #/heatmap/<pipeline>, #/workers.
"use strict";

const view = document.getElementById("view");
const tokenInput = document.getElementById("token");
const STATES = ["pending", "queued", "running", "retrying", "succeeded", "cached", "failed", "upstream_failed", "cancelled"];
let cleanup = null; // closes the live stream / timers of the page shown

tokenInput.value = sessionStorage.getItem("chordflow-token") || "";
tokenInput.addEventListener("input", () => sessionStorage.setItem("chordflow-token", tokenInput.value.trim()));

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function badge(state) { return `<span class="badge ${esc(state)} s-${esc(state)}">${esc(state)}</span>`; }
function fmtTime(epoch) { return epoch ? new Date(epoch * 1000).toLocaleString() : "–"; }
function fmtDur(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 120) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}
function bar(done, total, cls = "") {
  const pct = total ? Math.min(100, (100 * done) / total) : 0;
  return `<span class="bar ${cls}" title="${done}/${total}"><span style="width:${pct.toFixed(1)}%"></span></span> ${done}/${total}`;
}
function flash(text, isError = false) {
  const el = document.getElementById("flash");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = !text;
}
async function getJSON(path) {
  const headers = { Accept: "application/json" };
  const token = tokenInput.value.trim();
  if (token) headers.Authorization = `Bearer ${token}`; // reads need it when the server closes them
  const resp = await fetch(path, { headers });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.detail || `${resp.status} ${resp.statusText}`);
  return body;
}
async function post(path) {
  const token = tokenInput.value.trim();
  if (!token) {
    tokenInput.focus();
    throw new Error("enter the API token (top right) to cancel or retry");
  }
  const resp = await fetch(path, { method: "POST", headers: { Authorization: `Bearer ${token}`, Accept: "application/json" } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.detail || `${resp.status} ${resp.statusText}`);
  return body;
}
function query(hash) {
  const i = hash.indexOf("?");
  return new URLSearchParams(i >= 0 ? hash.slice(i + 1) : "");
}

// -- router --------------------------------------------------------------------------------------

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  flash("");
  const hash = location.hash.replace(/^#/, "") || "/";
  const path = hash.split("?")[0];
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active",
    a.dataset.nav === (parts[0] === "run" || !parts[0] ? "runs" : parts[0])));
  try {
    if (parts[0] === "run" && parts[1]) await runPage(parts[1], query(hash).get("task"));
    else if (parts[0] === "heatmap") await heatmapPage(parts[1] || "", query(hash));
    else if (parts[0] === "workers") await workersPage();
    else await runsPage(query(hash));
  } catch (err) {
    view.innerHTML = `<p class="muted">${esc(err.message)}</p>`;
  }
}
window.addEventListener("hashchange", route);

// -- runs list -----------------------------------------------------------------------------------

async function runsPage(q) {
  const limit = 25;
  const offset = Number(q.get("offset") || 0);
  const pipeline = q.get("pipeline") || "";
  const state = q.get("state") || "";
  const pipes = await getJSON("/pipelines").catch(() => []);
  view.innerHTML = `
    <h1>Recent runs</h1>
    <div class="filters">
      <label>Pipeline <select id="f-pipeline"><option value="">all</option>
        ${pipes.map((p) => `<option ${p.name === pipeline ? "selected" : ""}>${esc(p.name)}</option>`).join("")}
        ${!pipeline || pipes.some((p) => p.name === pipeline) ? "" : `<option selected>${esc(pipeline)}</option>`}</select></label>
      <label>State <select id="f-state"><option value="">all</option>
        ${["pending", "running", "succeeded", "failed", "cancelled"].map((s) => `<option ${s === state ? "selected" : ""}>${s}</option>`).join("")}</select></label>
      <span class="muted" id="runs-count"></span>
    </div>
    <table id="runs"><thead><tr><th>Run</th><th>Pipeline</th><th>State</th><th>Started</th><th>Duration</th>
      <th>Progress</th><th>Failed tasks</th></tr></thead><tbody></tbody></table>
    <div class="filters" style="margin-top:10px"><button id="prev">← Newer</button><button id="next">Older →</button></div>`;
  const go = (o) => {
    const p = new URLSearchParams();
    const pv = document.getElementById("f-pipeline").value, sv = document.getElementById("f-state").value;
    if (pv) p.set("pipeline", pv);
    if (sv) p.set("state", sv);
    if (o) p.set("offset", String(o));
    location.hash = `#/?${p}`;
  };
  document.getElementById("f-pipeline").onchange = () => go(0);
  document.getElementById("f-state").onchange = () => go(0);
  document.getElementById("prev").disabled = offset === 0;
  document.getElementById("prev").onclick = () => go(Math.max(0, offset - limit));

  async function load() {
    const p = new URLSearchParams({ limit: String(limit), offset: String(offset) });
    if (pipeline) p.set("pipeline", pipeline);
    if (state) p.set("state", state);
    const page = await getJSON(`/runs?${p}`);
    const rows = page.runs.map((r) => `
      <tr data-run="${esc(r.run_id)}">
        <td><a href="#/run/${encodeURIComponent(r.run_id)}">${esc(r.run_id)}</a></td>
        <td><a href="#/heatmap/${encodeURIComponent(r.pipeline)}" title="latency heatmap">${esc(r.pipeline)}</a></td>
        <td>${badge(r.state)}</td>
        <td>${fmtTime(r.started_at || r.created_at)}</td>
        <td>${fmtDur(r.duration_s)}</td>
        <td>${bar(r.done, r.total)}</td>
        <td class="wrap">${r.failed_tasks.map((t) => `<a href="#/run/${encodeURIComponent(r.run_id)}?task=${encodeURIComponent(t)}">${esc(t)}</a>`).join(", ")}
          ${(r.counts.failed || 0) > r.failed_tasks.length ? `<span class="muted">+${r.counts.failed - r.failed_tasks.length}</span>` : ""}</td>
      </tr>`).join("");
    document.querySelector("#runs tbody").innerHTML = rows || `<tr><td colspan="7" class="muted">no runs</td></tr>`;
    document.getElementById("runs-count").textContent = `${offset + 1}–${offset + page.runs.length}`;
    const next = document.getElementById("next");
    next.disabled = page.next_offset === null;
    next.onclick = () => go(page.next_offset);
  }
  await load();
  const timer = setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 5000);
  cleanup = () => clearInterval(timer);
}

// -- run page --------------------------------------------------------------------------------------

const BOX_W = 132, BOX_H = 34, GAP_X = 34, GAP_Y = 14, PAD = 12;

async function runPage(runId, selected) {
  const rid = encodeURIComponent(runId);  // a run id from the address bar goes into paths as one segment
  const [graph, status] = await Promise.all([getJSON(`/runs/${rid}/graph`), getJSON(`/runs/${rid}`)]);
  const tasks = status.tasks; // node -> TaskStatus, updated by events
  const maps = status.maps;
  let runState = status.state;
  const boxOf = {};
  graph.boxes.forEach((b) => { (b.members.length ? b.members : [b.id]).forEach((m) => { boxOf[m] = b; }); });

  view.innerHTML = `
    <div class="card run-head">
      <div><div class="muted">run</div><strong id="run-id">${esc(runId)}</strong></div>
      <div><div class="muted">pipeline</div><a href="#/heatmap/${encodeURIComponent(status.pipeline)}">${esc(status.pipeline)}</a></div>
      <div><div class="muted">state</div><span id="run-state">${badge(runState)}</span></div>
      <div><div class="muted">started</div>${fmtTime(status.started_at || status.created_at)}</div>
      <div><div class="muted">duration</div><span id="run-dur"></span></div>
      <div><div class="muted">progress</div><span id="run-progress"></span></div>
      <div class="actions"><button id="retry">Retry failed</button><button id="cancel" class="danger">Cancel</button></div>
    </div>
    <div class="layout">
      <div class="graph" id="graph"></div>
      <div class="side card" id="side"><p class="muted">Click a task for its attempts, error and logs.</p></div>
    </div>`;
  drawGraph(graph);

  function counts() {
    const c = {};
    Object.values(tasks).forEach((t) => { c[t.state] = (c[t.state] || 0) + 1; });
    return c;
  }
  function paintRun() {
    document.getElementById("run-state").innerHTML = badge(runState);
    const c = counts();
    const done = ["succeeded", "cached", "failed", "upstream_failed", "cancelled"].reduce((a, s) => a + (c[s] || 0), 0);
    document.getElementById("run-progress").innerHTML = bar(done, status.total || Object.keys(tasks).length);
    const end = status.finished_at || (runState === "running" || runState === "pending" ? Date.now() / 1000 : null);
    const start = status.started_at;
    document.getElementById("run-dur").textContent = start && end ? fmtDur(end - start) : "–";
    const finished = ["succeeded", "failed", "cancelled"].includes(runState);
    document.getElementById("cancel").disabled = finished;
    document.getElementById("retry").disabled = !finished || runState === "succeeded";
  }
  function paintBox(b) {
    const g = document.querySelector(`g.node[data-box="${CSS.escape(b.id)}"]`);
    if (!g) return;
    const rect = g.querySelector("rect.box");
    const fill = g.querySelector("rect.fill");
    if (b.members.length) { // a group: a stacked bar of its members' states
      const c = {};
      b.members.forEach((m) => { const s = (tasks[m] || {}).state || "pending"; c[s] = (c[s] || 0) + 1; });
      let x = 0;
      const segs = g.querySelector("g.segs");
      segs.innerHTML = STATES.filter((s) => c[s]).map((s) => {
        const w = (BOX_W * c[s]) / b.members.length;
        const seg = `<rect x="${x}" y="${BOX_H - 8}" width="${w}" height="8" class="s-${s}" style="fill:var(--${s})"><title>${s}: ${c[s]}</title></rect>`;
        x += w;
        return seg;
      }).join("");
      const worst = ["failed", "running", "retrying", "queued"].find((s) => c[s]) || (c.pending ? "pending" : "succeeded");
      g.querySelector("text.sub").textContent = STATES.filter((s) => c[s]).map((s) => `${c[s]} ${s.replace("_", " ")}`).join(" · ");
      g.dataset.state = worst;
      rect.style.fill = `var(--${worst})`;
      rect.style.fillOpacity = "0.35";
      return;
    }
    const t = tasks[b.id] || { state: "pending" };
    g.dataset.state = t.state;
    rect.style.fill = `var(--${t.state})`;
    rect.style.fillOpacity = ["pending", "queued"].includes(t.state) ? "0.9" : "0.85";
    let frac = null;
    const m = maps[b.id];
    if (m && m.total) frac = (m.succeeded + m.failed) / m.total;
    else if (t.progress && t.progress.total) frac = t.progress.done / t.progress.total;
    fill.setAttribute("width", frac === null ? 0 : (BOX_W - 8) * Math.min(1, frac));
    const sub = g.querySelector("text.sub");
    sub.textContent = m ? `${m.succeeded + m.failed}/${m.total} chunks${m.failed ? `, ${m.failed} failed` : ""}`
      : t.progress ? `${t.progress.done}/${t.progress.total}` : t.state;
  }
  function paintAll() { graph.boxes.forEach(paintBox); paintRun(); }
  paintAll();

  // live: the run's event stream (snapshot first, then every change); no polling
  const es = new EventSource(`/runs/${rid}/events`);
  const touch = (node) => { const b = boxOf[node]; if (b) paintBox(b); };
  es.addEventListener("snapshot", (e) => {
    const s = JSON.parse(e.data);
    Object.assign(tasks, s.tasks); Object.assign(maps, s.maps);
    runState = s.state; Object.assign(status, { started_at: s.started_at, finished_at: s.finished_at });
    paintAll();
  });
  es.addEventListener("task", (e) => {
    const ev = JSON.parse(e.data);
    const t = tasks[ev.node] || (tasks[ev.node] = { state: "pending" });
    t.state = ev.state;
    touch(ev.node);
    paintRun();
    if (selectedTask === ev.node) showTask(ev.node);
  });
  es.addEventListener("progress", (e) => {
    const ev = JSON.parse(e.data);
    const [done, total] = String(ev.progress || "").split("/").map(Number);
    if (!tasks[ev.node] || !total) return;
    tasks[ev.node].progress = { done, total };
    touch(ev.node);
  });
  es.addEventListener("map", (e) => {
    const ev = JSON.parse(e.data);
    maps[ev.node] = { ...(maps[ev.node] || {}), total: +ev.total, succeeded: +ev.succeeded, failed: +ev.failed,
      running: +ev.running, queued: +ev.queued, items: +ev.items };
    touch(ev.node);
  });
  const finish = async () => {
    es.close();
    try { Object.assign(status, await getJSON(`/runs/${rid}`)); Object.assign(tasks, status.tasks); runState = status.state; } catch (_) { /* keys expired */ }
    paintAll();
  };
  es.addEventListener("run", (e) => {
    const ev = JSON.parse(e.data);
    runState = ev.state;
    paintRun();
    if (["succeeded", "failed", "cancelled"].includes(ev.state)) finish();
  });
  es.addEventListener("end", finish);
  es.addEventListener("error", (e) => { if (e.data) { es.close(); flash(JSON.parse(e.data).detail, true); } });
  const tick = setInterval(paintRun, 1000);
  cleanup = () => { es.close(); clearInterval(tick); };

  document.getElementById("cancel").onclick = async () => {
    try { const r = await post(`/runs/${rid}/cancel`); flash(`cancel requested: run is ${r.state}`); } catch (err) { flash(err.message, true); }
  };
  document.getElementById("retry").onclick = async () => {
    try {
      const r = await post(`/runs/${rid}/retry`);
      flash(`${r.retried} task(s) set to run again`);
      setTimeout(route, 300);
    } catch (err) { flash(err.message, true); }
  };

  let selectedTask = null;
  async function showTask(name) {
    selectedTask = name;
    document.querySelectorAll("g.node.sel").forEach((g) => g.classList.remove("sel"));
    const b = boxOf[name];
    if (b) document.querySelector(`g.node[data-box="${CSS.escape(b.id)}"]`)?.classList.add("sel");
    const side = document.getElementById("side");
    try {
      const [d, logs] = await Promise.all([
        getJSON(`/runs/${rid}/tasks/${encodeURIComponent(name)}/detail`),
        getJSON(`/runs/${rid}/tasks/${encodeURIComponent(name)}/logs?limit=100`),
      ]);
      const s = d.status;
      const err = s.error;
      const m = maps[name];
      side.innerHTML = `
        <h2>${esc(name)} ${badge(s.state)}</h2>
        <dl>
          <dt>task</dt><dd>${esc(d.task_name)}</dd>
          <dt>queue</dt><dd>${esc(d.queue || "–")}</dd>
          <dt>host</dt><dd>${esc(s.host || "–")}</dd>
          <dt>attempts</dt><dd>${s.attempts}</dd>
          <dt>duration</dt><dd>${fmtDur(s.duration_s)}</dd>
          ${s.progress ? `<dt>progress</dt><dd>${bar(s.progress.done, s.progress.total)}</dd>` : ""}
          ${m ? `<dt>chunks</dt><dd>${bar(m.succeeded + m.failed, m.total)} ${m.failed ? `(${m.failed} failed)` : ""}</dd>` : ""}
          <dt>parents</dt><dd>${d.parents.map(esc).join(", ") || "–"}</dd>
          ${d.flower_url ? `<dt>Flower</dt><dd><a href="${esc(d.flower_url)}" target="_blank" rel="noopener">this attempt</a></dd>` : ""}
        </dl>
        ${err ? `<h2>Error</h2><pre>${esc(err.type || "")}: ${esc(err.message || JSON.stringify(err))}\n\n${esc((err.traceback || []).join(""))}</pre>
          ${d.error_report_url ? `<a href="${esc(d.error_report_url)}" target="_blank">error report (JSON)</a>` : ""}` : ""}
        ${d.attempts.length ? `<h2>Attempts</h2><table><tr><th>#</th><th>outcome</th><th>duration</th><th>host</th></tr>
          ${d.attempts.map((a) => `<tr><td>${a.attempt}</td><td>${esc(a.outcome)}</td><td>${fmtDur(a.duration_s)}</td><td>${esc(a.host || "")}</td></tr>`).join("")}</table>` : ""}
        <h2>Logs <span class="muted">(newest first, ${logs.lines.length} of ${logs.kept})</span></h2>
        <div class="logs" id="logs">${logs.lines.map((l) => `<div>${esc(l.timestamp || "")} ${esc(l.level || "")} ${esc(l.event || "")} ${esc(JSON.stringify(Object.fromEntries(Object.entries(l).filter(([k]) => !["timestamp", "level", "event", "run_id", "task"].includes(k)))))}</div>`).join("") || '<span class="muted">no lines</span>'}</div>`;
    } catch (err) {
      side.innerHTML = `<p class="muted">${esc(err.message)}</p>`;
    }
  }
  function showGroup(b) {
    selectedTask = null;
    const side = document.getElementById("side");
    side.innerHTML = `<h2>${esc(b.label)}</h2><p class="muted">A group of same-prefix tasks in one layer; click one.</p>
      <div class="members"><table>${b.members.map((m) => `<tr><td><a href="#" data-task="${esc(m)}">${esc(m)}</a></td>
        <td>${badge((tasks[m] || {}).state || "pending")}</td></tr>`).join("")}</table></div>`;
    side.querySelectorAll("a[data-task]").forEach((a) => { a.onclick = (ev) => { ev.preventDefault(); showTask(a.dataset.task); }; });
  }
  document.getElementById("graph").addEventListener("click", (ev) => {
    const g = ev.target.closest("g.node");
    if (!g) return;
    const b = graph.boxes.find((x) => x.id === g.dataset.box);
    if (b && b.members.length) showGroup(b); else if (b) showTask(b.id);
  });
  if (selected) showTask(selected);
}

function drawGraph(graph) {
  const w = PAD * 2 + graph.layers * (BOX_W + GAP_X) - GAP_X;
  const h = PAD * 2 + graph.rows * (BOX_H + GAP_Y) - GAP_Y;
  const pos = {};
  graph.boxes.forEach((b) => {
    pos[b.id] = { x: PAD + b.layer * (BOX_W + GAP_X), y: PAD + b.row * (BOX_H + GAP_Y), layer: b.layer, row: b.row };
  });
  const edges = graph.edges.map(([a, b]) => {
    const p = pos[a], q = pos[b];
    const x1 = p.x + BOX_W, y1 = p.y + BOX_H / 2, x2 = q.x, y2 = q.y + BOX_H / 2;
    if (q.layer - p.layer <= 1) {
      const mx = (x1 + x2) / 2;
      return `<path class="edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}"/>`;
    }
    // an edge over other columns runs along the free lane between two rows, never through a box
    const lane = PAD + (q.row > p.row || q.row === p.row ? p.row + 1 : p.row) * (BOX_H + GAP_Y) - GAP_Y / 2;
    const g = GAP_X / 2;
    return `<path class="edge" d="M${x1},${y1} C${x1 + g},${y1} ${x1 + g},${lane} ${x1 + GAP_X},${lane}
      L${x2 - GAP_X},${lane} C${x2 - g},${lane} ${x2 - g},${y2} ${x2},${y2}"/>`;
  }).join("");
  const nodes = graph.boxes.map((b) => {
    const p = pos[b.id];
    const label = b.label.length > 19 ? `${b.label.slice(0, 18)}…` : b.label;
    return `<g class="node" data-box="${esc(b.id)}" transform="translate(${p.x},${p.y})">
      <title>${esc(b.members.length ? `${b.label}: ${b.members.length} tasks` : `${b.id} (${b.task})${b.map ? " — map" : ""}`)}</title>
      <rect class="box" width="${BOX_W}" height="${BOX_H}" style="fill:var(--pending)"></rect>
      <rect class="fill" x="4" y="${BOX_H - 6}" height="3" width="0" style="fill:#1d2330;fill-opacity:.55"></rect>
      <g class="segs"></g>
      <text x="7" y="14" font-weight="600">${esc(label)}${b.map ? " ⧉" : ""}</text>
      <text class="sub" x="7" y="26" fill="#1d2330" fill-opacity=".75"></text>
    </g>`;
  }).join("");
  document.getElementById("graph").innerHTML =
    `<svg id="dag" width="${Math.max(w, 200)}" height="${Math.max(h, 60)}" xmlns="http://www.w3.org/2000/svg">${edges}${nodes}</svg>`;
}

// -- latency heatmap -------------------------------------------------------------------------------

function heatColour(ratio) {
  // 1x median: green; 2x and slower: red; faster than the median: paler green
  if (ratio === null || ratio === undefined) return "#e9ecf1";
  const r = Math.max(0, Math.min(1, (ratio - 1) / 1));
  const hue = 140 - 140 * r;
  const light = ratio < 1 ? 62 + 18 * (1 - ratio) : 50;
  return `hsl(${hue.toFixed(0)}, 65%, ${light.toFixed(0)}%)`;
}

async function heatmapPage(pipeline, q) {
  const n = Number(q.get("runs") || 30);
  const pipes = await getJSON("/pipelines").catch(() => []);
  if (!pipeline && pipes.length) pipeline = pipes[0].name;
  view.innerHTML = `
    <h1>Latency heatmap</h1>
    <div class="filters">
      <label>Pipeline <select id="h-pipeline">${pipes.map((p) => `<option ${p.name === pipeline ? "selected" : ""}>${esc(p.name)}</option>`).join("")}
        ${pipes.some((p) => p.name === pipeline) || !pipeline ? "" : `<option selected>${esc(pipeline)}</option>`}</select></label>
      <label>Last <select id="h-runs">${[...new Set([10, 30, 50, 100, n])].sort((a, b) => a - b).map((x) => `<option ${x === n ? "selected" : ""}>${x}</option>`).join("")}</select> runs</label>
      <span class="legend muted">duration vs the task's median:
        <span style="background:${heatColour(0.5)}"></span> 0.5×
        <span style="background:${heatColour(1)}"></span> 1×
        <span style="background:${heatColour(1.5)}"></span> 1.5×
        <span style="background:${heatColour(2)}"></span> ≥2× ; red outline: failed</span>
    </div>
    <div class="card" id="heat"><p class="muted">Loading…</p></div>`;
  const go = () => { location.hash = `#/heatmap/${encodeURIComponent(document.getElementById("h-pipeline").value)}?runs=${document.getElementById("h-runs").value}`; };
  document.getElementById("h-pipeline").onchange = go;
  document.getElementById("h-runs").onchange = go;
  if (!pipeline) { document.getElementById("heat").innerHTML = '<p class="muted">no pipeline published</p>'; return; }
  const hm = await getJSON(`/pipelines/${encodeURIComponent(pipeline)}/heatmap?runs=${n}`);
  const runs = hm.runs.slice().reverse(); // oldest left, newest right
  const idx = runs.map((r) => hm.runs.indexOf(r));
  if (!runs.length) { document.getElementById("heat").innerHTML = '<p class="muted">no runs of this pipeline yet</p>'; return; }
  const head = runs.map((r) => `<th class="run"><a href="#/run/${encodeURIComponent(r.run_id)}" title="${esc(r.state)}">${esc(r.run_id.slice(4, 15))}</a></th>`).join("");
  const body = hm.rows.map((row) => `<tr><th>${esc(row.task)}</th><td class="muted">${fmtDur(row.median_s)}</td>${idx.map((i) => {
    const c = row.cells[i];
    const cls = c.state === null ? "absent" : c.state === "failed" ? "failed" : "";
    const tip = c.state === null ? `${row.task} was not in ${c.run_id}`
      : `${row.task} · ${c.run_id} · ${c.state} · ${fmtDur(c.duration_s)}${c.ratio !== null ? ` (${c.ratio.toFixed(2)}× median ${fmtDur(row.median_s)})` : ""}`;
    return `<td class="heat-cell ${cls}" data-task="${esc(row.task)}" data-run="${esc(c.run_id)}" title="${esc(tip)}"
      style="${cls === "absent" ? "" : `background:${heatColour(c.ratio)}`}"></td>`;
  }).join("")}</tr>`).join("");
  document.getElementById("heat").innerHTML = `<table class="heat"><thead><tr><th>task</th><th>median</th>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

// -- workers ---------------------------------------------------------------------------------------

async function workersPage() {
  view.innerHTML = `<h1>Workers</h1><div id="workers"><p class="muted">Asking the workers…</p></div>`;
  async function load() {
    const w = await getJSON("/workers");
    const rows = w.workers.map((x) => `<tr>
      <td>${w.flower_url ? `<a href="${esc(x.flower_url)}" target="_blank" rel="noopener">${esc(x.name)}</a>` : esc(x.name)}</td>
      <td>${x.alive ? badge("running").replace(">running<", ">alive<") : badge("cancelled").replace(">cancelled<", ">silent<")}</td>
      <td>${esc(x.host)}</td><td>${x.pid || "–"}</td><td>${x.queues.map(esc).join(", ")}</td>
      <td class="wrap">${x.active.map((t) => `${t.run_id ? `<a href="#/run/${encodeURIComponent(t.run_id)}?task=${encodeURIComponent(t.node || "")}">${esc(t.node)}</a> <span class="muted">${esc(t.run_id)}</span>` : esc(t.name)}
        ${t.flower_url ? ` <a href="${esc(t.flower_url)}" target="_blank" rel="noopener">Flower</a>` : ""}`).join("<br>") || '<span class="muted">idle</span>'}</td>
      <td>${x.answered ? "yes" : '<span class="muted">no</span>'}</td></tr>`).join("");
    document.getElementById("workers").innerHTML = `<table><thead><tr><th>Worker</th><th>Status</th><th>Host</th><th>PID</th>
      <th>Queues</th><th>Running</th><th>Answered inspect</th></tr></thead><tbody>${rows || '<tr><td colspan="7" class="muted">no worker registered</td></tr>'}</tbody></table>
      ${w.flower_url ? "" : '<p class="muted">Set CHORDFLOW_FLOWER_URL to link workers and tasks into Flower.</p>'}`;
  }
  await load();
  const timer = setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 5000);
  cleanup = () => clearInterval(timer);
}

route();
