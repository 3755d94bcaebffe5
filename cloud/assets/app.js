// The Ferry dashboard: plain JavaScript over the dashboard API, charts by uPlot. Every call
// carries the token in the Authorization header, the event feed included (it is read with
// fetch, because EventSource cannot send headers), so the token never sits in a URL.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "ferry.dashboard.token";
const state = {
  token: localStorage.getItem(TOKEN_KEY),
  devices: new Map(),
  device: null,
  metric: null,
  range: 3600,
  plot: null,
  data: null,
  kind: null,
  alarms: new Map(),
  feed: null,
  autoPicked: false,
};

class Unauthorized extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  if (response.status === 401) {
    askToken("That token was refused.");
    throw new Unauthorized(path);
  }
  const body = await response.json();
  if (!response.ok) {
    const error = new Error(body.error ? body.error.message : response.statusText);
    error.code = body.error && body.error.code;
    throw error;
  }
  return body;
}

function askToken(message) {
  if (state.feed) state.feed.abort();
  $("#login-error").textContent = message || "";
  const dialog = $("#login");
  if (!dialog.open) dialog.showModal();
  $("#token").focus();
}

function text(value) {
  return value === null || value === undefined ? "–" : String(value);
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function cell(row, value, cls) {
  const td = row.insertCell();
  td.textContent = value;
  if (cls) td.className = cls;
  return td;
}

// ---- devices ----

async function loadDevices() {
  const body = await api("/v1/devices");
  state.devices = new Map(body.devices.map((d) => [d.device, d]));
  renderDevices();
  const pick = $("#device-pick");
  const names = [...state.devices.keys()];
  pick.replaceChildren(...names.map((n) => new Option(n, n)));
  if (!state.device || !state.devices.has(state.device)) {
    state.device = names[0] || null;
    state.autoPicked = true;
  }
  if (state.device) pick.value = state.device;
}

function renderDevices() {
  const body = $("#devices tbody");
  body.replaceChildren();
  for (const d of [...state.devices.values()].sort((a, b) => a.device.localeCompare(b.device))) {
    const row = body.insertRow();
    row.dataset.device = d.device;
    row.dataset.state = d.state;
    if (d.device === state.device) row.classList.add("picked");
    cell(row, d.device);
    cell(row, d.state, "state").dataset.state = d.state;
    cell(row, ago(d.last_seen)).title = d.last_seen || "";
    const backlog = d.backlog || {};
    cell(row, text(backlog.pending), "num");
    const age = backlog.oldest_pending_age_s;
    cell(row, age ? `${age.toFixed(0)} s` : "–", "num");
    cell(row, text(d.agent_version));
    // A till's store, or what else the registry says; transactions held for want of it.
    const reg = d.registration;
    cell(row, reg ? (reg.retired_at ? "retired" : reg.store || reg.kind) : "unregistered");
    cell(row, text(d.held_transactions), "num");
    row.addEventListener("click", () => pickDevice(d.device));
  }
}

async function pickDevice(device) {
  state.device = device;
  state.autoPicked = false;
  $("#device-pick").value = device;
  renderDevices();
  await loadMetrics();
}

// ---- chart ----

async function loadMetrics() {
  const pick = $("#metric-pick");
  if (!state.device) {
    pick.replaceChildren();
    return;
  }
  let body = await api(`/v1/devices/${encodeURIComponent(state.device)}`);
  // A device picked for the user that has no readings (a till) gives way to one that has.
  if (state.autoPicked && !body.latest.length) {
    for (const other of state.devices.keys()) {
      const candidate = await api(`/v1/devices/${encodeURIComponent(other)}`);
      if (candidate.latest.length) {
        body = candidate;
        state.device = other;
        $("#device-pick").value = other;
        renderDevices();
        break;
      }
    }
  }
  state.autoPicked = false;
  const metrics = body.latest.map((l) => l.metric);
  pick.replaceChildren(...metrics.map((m) => new Option(m, m)));
  if (!metrics.includes(state.metric)) state.metric = metrics[0] || null;
  if (state.metric) pick.value = state.metric;
  await loadChart();
}

async function loadChart() {
  const chart = $("#chart");
  if (!state.device || !state.metric) {
    chart.replaceChildren();
    chart.dataset.points = "0";
    $("#chart-note").textContent = "no readings";
    return;
  }
  const to = Date.now();
  const from = to - state.range * 1000;
  const q = new URLSearchParams({ metric: state.metric, from: String(from), to: String(to) });
  const body = await api(`/v1/devices/${encodeURIComponent(state.device)}/readings?${q}`);
  const secs = body.t.map((t) => t / 1000);
  state.kind = body.kind;
  if (body.kind === "raw") {
    state.data = [secs, body.value];
  } else {
    state.data = [secs, body.avg, body.min, body.max];
  }
  $("#chart-note").textContent = body.kind === "raw"
    ? "raw readings"
    : `avg, min and max per ${body.step_s / 60} min`;
  drawChart();
}

function drawChart() {
  const chart = $("#chart");
  const series = [{}];
  if (state.kind === "raw") {
    series.push({ label: state.metric, stroke: "#2563eb", width: 1.5 });
  } else {
    series.push({ label: "avg", stroke: "#2563eb", width: 1.5 });
    series.push({ label: "min", stroke: "#94a3b8", width: 1 });
    series.push({ label: "max", stroke: "#f97316", width: 1 });
  }
  if (state.plot) state.plot.destroy();
  const width = Math.max(320, chart.clientWidth || 800);
  state.plot = new uPlot(
    { width, height: 300, series, scales: { x: { time: true } }, legend: { live: false } },
    state.data,
    chart,
  );
  chart.dataset.points = String(state.data[0].length);
  chart.dataset.device = state.device;
  chart.dataset.metric = state.metric;
}

// A new latest value of the series on show joins the chart; points older than the range
// leave it.
function livePoint(reading) {
  if (!state.plot || reading.device !== state.device || reading.metric !== state.metric) return;
  const t = reading.t / 1000;
  const xs = state.data[0];
  if (xs.length && t <= xs[xs.length - 1]) return;
  for (let i = 1; i < state.data.length; i++) state.data[i].push(reading.value);
  xs.push(t);
  const oldest = Date.now() / 1000 - state.range;
  while (xs.length && xs[0] < oldest) state.data.forEach((col) => col.shift());
  state.plot.setData(state.data);
  $("#chart").dataset.points = String(xs.length);
}

// ---- alarms ----

async function loadAlarms() {
  const body = await api("/v1/alarms");
  state.alarms = new Map(body.active.map((a) => [a.id, a]));
  renderAlarms();
}

function renderAlarms() {
  const list = $("#alarms");
  list.replaceChildren();
  if (!state.alarms.size) {
    const li = document.createElement("li");
    li.className = "quiet";
    li.textContent = "none";
    list.append(li);
  }
  for (const a of state.alarms.values()) {
    const li = document.createElement("li");
    li.dataset.rule = a.rule;
    li.dataset.device = a.device;
    li.textContent = `${a.device}: ${a.rule} (${a.condition}), ${a.raised_value} at ${a.raised_at}`;
    list.append(li);
  }
}

function liveAlarm(alarm) {
  if (alarm.cleared_at) state.alarms.delete(alarm.id);
  else state.alarms.set(alarm.id, alarm);
  renderAlarms();
}

// ---- loyalty ----

async function loadLoyalty() {
  const panel = $("#loyalty");
  let stores;
  try {
    stores = (await api("/v1/stores")).stores;
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    panel.replaceChildren(Object.assign(document.createElement("p"),
      { className: "quiet", textContent: e.message }));
    return;
  }
  const from = new Date(Date.now() - 6 * 86400000).toISOString().slice(0, 10);
  const tables = [];
  for (const store of stores) {
    const body = await api(`/v1/stores/${encodeURIComponent(store)}/loyalty?from=${from}`);
    const table = document.createElement("table");
    table.dataset.store = store;
    table.createCaption().textContent = store;
    const head = table.createTHead().insertRow();
    for (const h of ["Day", "Stamps", "Points", "Rewards", "Overdrafts"]) {
      head.append(Object.assign(document.createElement("th"), { textContent: h }));
    }
    const rows = table.createTBody();
    for (const d of body.days.slice().reverse()) {
      const row = rows.insertRow();
      cell(row, d.day);
      cell(row, d.stamps_issued, "num");
      cell(row, d.points_issued, "num");
      cell(row, d.rewards_redeemed, "num");
      cell(row, d.overdrafts_flagged, "num");
    }
    tables.push(table);
  }
  if (!tables.length) {
    tables.push(Object.assign(document.createElement("p"),
      { className: "quiet", textContent: "no transactions yet" }));
  }
  panel.replaceChildren(...tables);
}

// ---- the event feed ----

function showFeed(live) {
  const feed = $("#feed");
  feed.dataset.state = live ? "live" : "off";
  feed.textContent = live ? "live" : "reconnecting";
}

async function streamEvents() {
  if (state.feed) state.feed.abort();
  const control = new AbortController();
  state.feed = control;
  while (!control.signal.aborted) {
    try {
      const response = await fetch("/v1/events", {
        headers: { Authorization: `Bearer ${state.token}` },
        signal: control.signal,
      });
      if (response.status === 401) {
        askToken("That token was refused.");
        return;
      }
      showFeed(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          handleEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) {
      if (control.signal.aborted) return;
    }
    showFeed(false);
    await new Promise((r) => setTimeout(r, 2000));
    if (!control.signal.aborted) refresh().catch(() => {});
  }
}

function handleEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (name === "reading") {
    const device = state.devices.get(payload.device);
    if (device && (!device.last_seen || device.last_seen < payload.ts)) device.last_seen = payload.ts;
    livePoint(payload);
  } else if (name === "device") {
    const known = state.devices.has(payload.device);
    state.devices.set(payload.device, payload);
    if (known) renderDevices();
    else loadDevices().catch(() => {});
  } else if (name === "alarm") liveAlarm(payload);
  else if (name === "resync") refresh().catch(() => {});
}

// ---- wiring ----

async function refresh() {
  await loadDevices();
  await Promise.all([loadMetrics(), loadAlarms(), loadLoyalty()]);
}

async function start() {
  $("#login").close();
  try {
    await refresh();
  } catch (e) {
    if (e instanceof Unauthorized) return;
    throw e;
  }
  streamEvents();
}

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  localStorage.setItem(TOKEN_KEY, state.token);
  start();
});
$("#forget").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  state.token = null;
  askToken("");
});
$("#device-pick").addEventListener("change", (e) => pickDevice(e.target.value));
$("#metric-pick").addEventListener("change", (e) => {
  state.metric = e.target.value;
  loadChart();
});
for (const button of document.querySelectorAll("[data-range]")) {
  button.addEventListener("click", () => {
    document.querySelectorAll("[data-range]").forEach((b) => b.classList.remove("on"));
    button.classList.add("on");
    state.range = Number(button.dataset.range);
    loadChart();
  });
}
window.addEventListener("resize", () => {
  if (state.plot) state.plot.setSize({ width: $("#chart").clientWidth, height: 300 });
});
// Ages in the device list move on without events; last-seen times of devices without
// readings (tills) and quiet stores come with a reload.
setInterval(() => {
  if (state.token && !$("#login").open) renderDevices();
}, 5000);
setInterval(() => {
  if (state.token && !$("#login").open) loadDevices().catch(() => {});
}, 15000);
setInterval(() => {
  if (state.token && !$("#login").open) loadLoyalty().catch(() => {});
}, 30000);

if (state.token) start();
else askToken("");
