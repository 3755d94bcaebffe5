// The Ferry dashboard: plain JavaScript over the dashboard API, charts by uPlot. Every call
// carries the token in the Authorization header, the event feed included (it is read with
// fetch, because EventSource cannot send headers), so the token never sits in a URL.
// Each panel makes one request; the event feed keeps the stations' numbers live.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "ferry.dashboard.token";
const COLOURS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#475569"];
const state = {
  token: localStorage.getItem(TOKEN_KEY),
  feed: null,
  stations: [],
  metric: null,
  compared: null, // device ids; null until the user picks, then all stations are compared
  range: 86400,
  period: "7d",
  plots: new Map(), // element id -> uPlot
  skew: 0, // the cloud's clock minus the browser's, in ms
  me: null, // GET /v1/me: the token's name, role, stores and the routes it may call
};

// Whether this token may call `route` ("GET /v1/loyalty"): the page shows only what it may.
function may(route) {
  return Boolean(state.me && state.me.routes.includes(route));
}

// The panels, and the route each one reads.
const PANELS = [
  ["#stations-panel", "GET /v1/stations"],
  ["#compare-panel", "GET /v1/compare"],
  ["#fleet-panel", "GET /v1/devices"],
  ["#loyalty-panel", "GET /v1/loyalty"],
  ["#traffic-panel", "GET /v1/traffic"],
  ["#rollouts-panel", "GET /v1/rollouts"],
];

class Unauthorized extends Error {}

async function api(path, method, payload) {
  const init = { method: method || "GET", headers: { Authorization: `Bearer ${state.token}` } };
  if (payload !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    askToken("That token was refused.");
    throw new Unauthorized(path);
  }
  const body = response.status === 204 ? {} : await response.json();
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

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "data") Object.assign(node.dataset, v);
    else if (k === "class") node.className = v;
    else node[k] = v;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function quiet(text) {
  return el("p", { class: "quiet", textContent: text });
}

// The cloud's clock: ages are measured from it, so a phone whose clock is off still says
// the truth.
function setCloudNow(iso) {
  if (iso) state.skew = Date.parse(iso) - Date.now();
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() + state.skew - Date.parse(iso)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function number(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits ?? 1 });
}

function percent(share) {
  return `${Math.round(share * 100)} %`;
}

function panelError(container, e) {
  if (e instanceof Unauthorized) throw e;
  container.replaceChildren(quiet(e.message));
}

// ---- stations ----

const STATE_WORDS = { online: "online", stale: "no readings", offline: "offline", never_seen: "never seen" };

async function loadStations() {
  const tiles = $("#tiles");
  let body;
  try {
    body = await api("/v1/stations");
  } catch (e) {
    return panelError(tiles, e);
  }
  setCloudNow(body.now);
  state.stations = body.stations;
  renderTiles();
  renderPicks(body.metrics);
}

function renderTiles() {
  const tiles = $("#tiles");
  if (!state.stations.length) {
    tiles.replaceChildren(quiet("no station has sent readings yet"));
    return;
  }
  tiles.replaceChildren(...state.stations.map(tile));
}

function tile(s) {
  const [first, ...rest] = s.latest;
  const alarm = s.alarms.length
    ? el("p", {
      class: "alarm",
      textContent: s.alarms.map((a) => a.rule).join(", "),
      title: s.alarms.map((a) => `${a.rule}: ${a.condition}, since ${a.raised_at}`).join("\n"),
    })
    : null;
  const node = el(
    "article",
    { class: "tile", data: { device: s.device, state: s.state, alarms: String(s.alarms.length) } },
    el("header", {},
      el("h3", { textContent: s.device }),
      el("span", { class: "badge", data: { state: s.state }, textContent: STATE_WORDS[s.state] || s.state })),
    first ? reading(first, "primary") : null,
    spark(s.spark),
    el("div", { class: "secondary" }, ...rest.map((l) => reading(l, "minor"))),
    alarm,
    el("p", { class: "quiet small seen", data: { at: s.reading_at || "" }, textContent: `reading ${ago(s.reading_at)}` }),
  );
  return node;
}

function reading(l, kind) {
  return el("p", { class: `reading ${kind}`, data: { metric: l.metric }, title: l.ts },
    el("span", { class: "label", textContent: l.label }),
    el("span", { class: "value", textContent: number(l.value) }),
    el("span", { class: "unit", textContent: l.unit || "" }));
}

// A sparkline of the last hour, drawn as SVG: no chart for a thumbnail.
function spark(s) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 24");
  svg.setAttribute("preserveAspectRatio", "none");
  const series = s.series || {};
  const ys = series.avg || series.value || [];
  const xs = series.t || [];
  svg.dataset.points = String(ys.length);
  if (ys.length < 2) return svg;
  const [x0, x1] = [xs[0], xs[xs.length - 1]];
  const lo = Math.min(...ys);
  const hi = Math.max(...ys);
  const points = ys.map((y, i) => {
    const x = ((xs[i] - x0) / Math.max(1, x1 - x0)) * 100;
    const v = hi === lo ? 12 : 22 - ((y - lo) / (hi - lo)) * 20;
    return `${x.toFixed(1)},${v.toFixed(1)}`;
  });
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  return svg;
}

// A new value of a station joins its tile at once.
function liveReading(r) {
  const node = document.querySelector(
    `.tile[data-device="${CSS.escape(r.device)}"] .reading[data-metric="${CSS.escape(r.metric)}"] .value`);
  if (node) node.textContent = number(r.value);
  const seen = document.querySelector(`.tile[data-device="${CSS.escape(r.device)}"] .seen`);
  if (seen) {
    seen.dataset.at = r.ts;
    seen.textContent = `reading ${ago(r.ts)}`;
  }
}

// ---- comparing stations ----

function renderPicks(metrics) {
  const pick = $("#metric-pick");
  const names = metrics.map((m) => m.metric);
  pick.replaceChildren(...metrics.map((m) => new Option(`${m.label}${m.unit ? ` (${m.unit})` : ""}`, m.metric)));
  if (!names.includes(state.metric)) state.metric = names[0] || null;
  if (state.metric) pick.value = state.metric;
  const devices = state.stations.map((s) => s.device);
  const chosen = state.compared || devices;
  $("#device-picks").replaceChildren(...devices.map((d, i) => {
    const box = el("input", { type: "checkbox", value: d, checked: chosen.includes(d) });
    box.addEventListener("change", () => {
      state.compared = [...document.querySelectorAll("#device-picks input:checked")].map((b) => b.value);
      loadCompare().catch(() => {});
    });
    return el("label", { class: "pick", style: `--c:${COLOURS[i % COLOURS.length]}` }, box, d);
  }));
}

async function loadCompare() {
  const chart = $("#compare");
  const devices = (state.compared || state.stations.map((s) => s.device)).slice(0, 8);
  if (!state.metric || !devices.length) {
    dropPlot("compare");
    chart.replaceChildren(quiet("pick a metric and at least one station"));
    chart.dataset.points = "0";
    chart.dataset.devices = "";
    return;
  }
  const to = Date.now() + state.skew;
  const q = new URLSearchParams({
    metric: state.metric,
    devices: devices.join(","),
    from: String(Math.round(to - state.range * 1000)),
    to: String(Math.round(to)),
  });
  let body;
  try {
    body = await api(`/v1/compare?${q}`);
  } catch (e) {
    return panelError(chart, e);
  }
  const all = state.stations.map((s) => s.device);
  const data = [body.t.map((t) => t / 1000)];
  const series = [{}];
  const bands = [];
  for (const d of body.devices) {
    const colour = COLOURS[all.indexOf(d.device) % COLOURS.length] || COLOURS[0];
    const at = data.length;
    data.push(d.max || [], d.min || [], d.avg || []);
    series.push(
      { label: `${d.device} max`, stroke: "transparent", width: 0, points: { show: false } },
      { label: `${d.device} min`, stroke: "transparent", width: 0, points: { show: false } },
      { label: d.device, stroke: colour, width: 2, value: (u, v) => number(v) },
    );
    bands.push({ series: [at, at + 1], fill: `${colour}22` });
  }
  const unit = body.unit ? ` ${body.unit}` : "";
  drawPlot("compare", chart, {
    height: 280,
    series,
    bands,
    scales: { x: { time: true } },
    axes: [{}, { values: (u, ticks) => ticks.map((v) => `${number(v)}${unit}`), size: 70 }],
    legend: { live: false },
  }, data);
  chart.dataset.points = String(body.t.length);
  chart.dataset.devices = body.devices.map((d) => d.device).join(",");
  chart.dataset.metric = body.metric;
  $("#compare-note").textContent =
    `${body.label}${unit}: average per ${body.step_s / 60} min, the band from minimum to maximum`;
}

function drawPlot(id, container, options, data) {
  dropPlot(id);
  container.replaceChildren();
  const width = Math.max(280, container.clientWidth || 600);
  state.plots.set(id, new uPlot({ width, ...options }, data, container));
}

function dropPlot(id) {
  const plot = state.plots.get(id);
  if (plot) plot.destroy();
  state.plots.delete(id);
}

// ---- loyalty ----

async function loadLoyalty() {
  const table = $("#store-compare tbody");
  const charts = $("#store-charts");
  let body;
  try {
    body = await api(`/v1/loyalty?period=${state.period}`);
  } catch (e) {
    table.replaceChildren();
    return panelError(charts, e);
  }
  const row = (name, t, store) => {
    const tr = el("tr", store ? { data: { store } } : { class: "total", data: { store: "" } });
    const cells = [
      ["transactions", t.transactions], ["stamps_issued", t.stamps_issued],
      ["points_issued", t.points_issued], ["rewards_redeemed", t.rewards_redeemed],
      ["active_cards", t.active_cards],
    ];
    tr.append(el("th", { textContent: name }));
    for (const [key, v] of cells) tr.append(el("td", { class: "num", data: { total: key }, textContent: number(v, 0) }));
    tr.append(el("td", { class: "num", data: { total: "returning_share" }, textContent: percent(t.returning_share) }));
    tr.append(el("td", {
      class: `num${t.overdrafts_flagged ? " flag" : ""}`,
      data: { total: "overdrafts_flagged" },
      textContent: number(t.overdrafts_flagged, 0),
    }));
    return tr;
  };
  table.replaceChildren(
    row(state.me && state.me.role === "store" ? "Your stores" : "All stores", body.totals, null),
    ...body.stores.map((s) => row(s.store, s.totals, s.store)),
  );
  for (const id of [...state.plots.keys()].filter((k) => k.startsWith("store:"))) dropPlot(id);
  if (!body.stores.length) {
    charts.replaceChildren(quiet("no loyalty transactions in this period"));
    return;
  }
  charts.replaceChildren();
  const xs = body.days.map((d) => Date.parse(`${d}T12:00:00Z`) / 1000);
  for (const s of body.stores) {
    const box = el("div", { class: "store-chart", data: { store: s.store } });
    const card = el("article", { class: "store" },
      el("h3", { textContent: s.store }),
      el("p", { class: "quiet small", textContent:
        `${number(s.totals.transactions, 0)} sales, ${number(s.totals.active_cards, 0)} cards, ` +
        `${percent(s.totals.returning_share)} returning` +
        (s.totals.overdrafts_flagged ? `, ${s.totals.overdrafts_flagged} overdrafts flagged` : "") }),
      box);
    charts.append(card);
    const data = [xs,
      s.days.map((d) => d.stamps_issued),
      s.days.map((d) => d.rewards_redeemed),
      s.days.map((d) => d.points_issued)];
    const bars = uPlot.paths.bars({ size: [0.5, 40] });
    drawPlot(`store:${s.store}`, box, {
      height: 180,
      series: [{},
        { label: "stamps", stroke: COLOURS[0], fill: `${COLOURS[0]}55`, paths: bars, points: { show: false } },
        { label: "rewards", stroke: COLOURS[1], width: 2, points: { show: true, size: 6 } },
        { label: "points", stroke: COLOURS[2], width: 2, scale: "pts", points: { show: true, size: 5 } }],
      scales: { x: { time: true }, pts: { auto: true } },
      axes: [{ space: 60 }, { size: 40 }, { scale: "pts", side: 1, grid: { show: false }, size: 45 }],
      legend: { live: false },
    }, data);
  }
}

// ---- sales by hour ----

async function loadTraffic() {
  const maps = $("#heatmaps");
  let body;
  try {
    body = await api(`/v1/traffic?period=${state.period}`);
  } catch (e) {
    return panelError(maps, e);
  }
  const hours = (list) => list.map((b) => `${String(b.hour).padStart(2, "0")}:00 (${b.transactions})`).join(", ");
  $("#busiest").textContent = body.busiest.length
    ? `Busiest hours: ${hours(body.busiest)}`
    : "no sales in this period";
  maps.replaceChildren(...body.stores.map((s) => heatmap(s, body.days)));
}

function heatmap(store, days) {
  const grid = days.map(() => new Array(24).fill(0));
  for (const [day, hour, n] of store.cells) grid[day][hour] = n;
  const top = Math.max(1, ...store.cells.map((c) => c[2]));
  const table = el("table", { class: "heatmap", data: { store: store.store } });
  const head = el("tr", {}, el("th", {}));
  for (let h = 0; h < 24; h++) head.append(el("th", { textContent: h % 6 === 0 ? String(h) : "" }));
  table.append(el("thead", {}, head));
  const rows = el("tbody");
  days.forEach((day, i) => {
    const tr = el("tr", {}, el("th", { textContent: day.slice(5) }));
    for (let h = 0; h < 24; h++) {
      const n = grid[i][h];
      tr.append(el("td", {
        data: { count: String(n) },
        title: `${day} ${String(h).padStart(2, "0")}:00, ${n} sales`,
        style: n ? `background: rgba(37, 99, 235, ${(0.15 + 0.85 * (n / top)).toFixed(2)})` : "",
      }));
    }
    rows.append(tr);
  });
  table.append(rows);
  return el("figure", {}, table, el("figcaption", { textContent:
    `${store.store}: ${number(store.total, 0)} sales; busiest ${store.busiest.map((b) => `${String(b.hour).padStart(2, "0")}:00`).join(", ") || "–"}` }));
}

// ---- fleet ----

// Higher is worse: offline, then alarms, then a backlog, then transactions held.
function trouble(d) {
  let score = 0;
  if (d.state !== "online") score += 8;
  if (d.active_alarms) score += 4;
  if ((d.backlog || {}).pending > 0) score += 2;
  if (d.held_transactions) score += 1;
  return score;
}

async function loadFleet() {
  const list = $("#fleet");
  let body;
  try {
    body = await api("/v1/devices");
  } catch (e) {
    return panelError(list, e);
  }
  setCloudNow(body.now);
  // Remote configuration: what each device was asked to run against what it says it runs.
  const configs = new Map();
  if (may("GET /v1/configs")) {
    try {
      for (const c of await api("/v1/configs")) configs.set(c.device, c);
    } catch (e) {
      // The list still shows without the drift column.
    }
  }
  const devices = body.devices
    .map((d) => ({ ...d, config: configs.get(d.device), trouble: trouble(d) }))
    .sort((a, b) => b.trouble - a.trouble
      || ((b.backlog || {}).oldest_pending_age_s || 0) - ((a.backlog || {}).oldest_pending_age_s || 0)
      || a.device.localeCompare(b.device));
  if (!devices.length) {
    list.replaceChildren(el("li", { class: "quiet", textContent: "no devices yet" }));
    return;
  }
  list.replaceChildren(...devices.map((d) => {
    const backlog = d.backlog || {};
    const notes = [];
    if (backlog.pending) {
      const age = backlog.oldest_pending_age_s ? `, oldest ${Math.round(backlog.oldest_pending_age_s)} s` : "";
      // The backlog is what the device's last status said, which may be older than
      // its last message.
      notes.push(`${number(backlog.pending, 0)} waiting${age} (status ${ago(d.status_at)})`);
    }
    if (d.active_alarms) notes.push(`${d.active_alarms} alarm${d.active_alarms > 1 ? "s" : ""}`);
    if (d.held_transactions) notes.push(`${d.held_transactions} held (not registered)`);
    const drift = configDrift(d.config);
    if (drift) notes.push(drift);
    const reg = d.registration;
    const role = reg ? (reg.retired_at ? "retired" : reg.store || reg.kind) : "unregistered";
    const actions = el("span", { class: "actions" }, ...registryActions(d.device, reg));
    return el("li", { data: { device: d.device, state: d.state, trouble: String(d.trouble) } },
      el("span", { class: "badge", data: { state: d.state }, textContent: STATE_WORDS[d.state] || d.state }),
      el("strong", { textContent: d.device }),
      el("span", { class: "quiet small", textContent: `${role} · ${d.agent_version ? `v${d.agent_version}` : "version unknown"}` }),
      el("span", { class: notes.length ? "notes" : "quiet small", textContent: notes.join(" · ") || "nothing waiting" }),
      el("span", { class: "quiet small seen", data: { at: d.last_seen || "" }, title: d.last_seen || "", textContent: `seen ${ago(d.last_seen)}` }),
      actions);
  }));
}

// A device running other than its desired configuration, in words; "" when in step.
function configDrift(c) {
  if (!c || !c.desired || c.in_sync) return "";
  const reported = c.reported || {};
  if (reported.version === c.desired.version && reported.error) {
    return `config v${c.desired.version} refused: ${reported.error}`;
  }
  const running = reported.version ? `v${reported.version}` : "none answered";
  return `config v${c.desired.version} pending (${running})`;
}

// ---- updates ----

async function loadRollouts() {
  const list = $("#rollouts");
  let rollouts;
  try {
    rollouts = await api("/v1/rollouts");
  } catch (e) {
    return panelError(list, e);
  }
  if (!rollouts.length) {
    list.replaceChildren(el("li", { class: "quiet", textContent: "no rollouts yet" }));
    return;
  }
  list.replaceChildren(...rollouts.slice(0, 10).map((r) => {
    const counts = Object.entries(r.counts).map(([status, n]) => `${n} ${status.toLowerCase().replace("_", " ")}`);
    const failed = r.jobs.filter((j) => j.status === "FAILED")
      .map((j) => `${j.device}: ${(j.report || {}).reason || "failed"}`);
    return el("li", { data: { rollout: String(r.id) } },
      el("strong", { textContent: `#${r.id} → v${r.version}` }),
      el("span", { class: "quiet small", textContent: `${counts.join(" · ")} · by ${r.created_by} ${ago(r.created_at)}` }),
      el("span", { class: failed.length ? "notes" : "quiet small", textContent: failed.join(" · ") || "no failures" }));
  }));
}

// Registering and retiring devices, for the tokens that may (admin, operator).
function registryActions(device, reg) {
  if (!may("PUT /v1/devices/{id}")) return [];
  const path = `/v1/devices/${encodeURIComponent(device)}`;
  const act = (label, action, run) => {
    const button = el("button", { type: "button", textContent: label, data: { action } });
    button.addEventListener("click", () => run().then(loadFleet).catch((e) => {
      if (!(e instanceof Unauthorized)) alert(e.message);
    }));
    return button;
  };
  if (reg && !reg.retired_at) {
    return [act("Retire", "retire", async () => {
      if (confirm(`Retire ${device}? Its transactions are refused from now on.`)) await api(path, "DELETE");
    })];
  }
  return [
    act("Station", "register-station", () => api(path, "PUT", { kind: "station" })),
    act("Till…", "register-till", async () => {
      const store = prompt(`The store ${device} sells for:`);
      if (store) await api(path, "PUT", { kind: "till", store });
    }),
  ];
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
  if (name === "reading") liveReading(payload);
  else if (name === "device" || name === "alarm") later("status", () => Promise.all([loadStations(), loadFleet()]));
  else if (name === "resync") refresh().catch(() => {});
}

// Runs `job` once for a burst of calls with the same key.
const pending = new Map();
function later(key, job) {
  if (pending.has(key)) return;
  pending.set(key, setTimeout(() => {
    pending.delete(key);
    job().catch(() => {});
  }, 500));
}

// ---- wiring ----

async function refresh() {
  const loads = [];
  if (may("GET /v1/stations")) {
    await loadStations();
    loads.push(loadCompare());
  }
  if (may("GET /v1/loyalty")) loads.push(loadLoyalty(), loadTraffic());
  if (may("GET /v1/devices")) loads.push(loadFleet());
  if (may("GET /v1/rollouts")) loads.push(loadRollouts());
  await Promise.all(loads);
}

// Who the token is decides what the page shows.
async function loadMe() {
  state.me = await api("/v1/me");
  for (const [panel, route] of PANELS) $(panel).hidden = !may(route);
  const stores = state.me.stores.length ? `: ${state.me.stores.join(", ")}` : "";
  $("#who").textContent = `${state.me.name} (${state.me.role}${stores})`;
  document.body.dataset.role = state.me.role;
}

async function start() {
  $("#login").close();
  try {
    await loadMe();
    await refresh();
  } catch (e) {
    if (e instanceof Unauthorized) return;
    throw e;
  }
  if (may("GET /v1/events")) streamEvents();
  else $("#feed").hidden = true;
}

function choose(selector, button) {
  document.querySelectorAll(selector).forEach((b) => b.classList.toggle("on", b === button));
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
$("#metric-pick").addEventListener("change", (e) => {
  state.metric = e.target.value;
  loadCompare().catch(() => {});
});
for (const button of document.querySelectorAll("[data-range]")) {
  button.addEventListener("click", () => {
    choose("[data-range]", button);
    state.range = Number(button.dataset.range);
    loadCompare().catch(() => {});
  });
}
for (const button of document.querySelectorAll("[data-period]")) {
  button.addEventListener("click", () => {
    choose("[data-period]", button);
    state.period = button.dataset.period;
    Promise.all([loadLoyalty(), loadTraffic()]).catch(() => {});
  });
}
let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => {
    for (const plot of state.plots.values()) {
      plot.setSize({ width: Math.max(280, plot.root.parentNode.clientWidth), height: plot.height });
    }
  }, 200);
});

const signedIn = () => state.token && !$("#login").open;
// Ages move on without events.
setInterval(() => {
  if (!signedIn()) return;
  for (const node of document.querySelectorAll(".seen[data-at]")) {
    const word = node.closest(".tile") ? "reading" : "seen";
    node.textContent = `${word} ${ago(node.dataset.at)}`;
  }
}, 5000);
const every = (ms, route, job) => setInterval(() => {
  if (signedIn() && may(route)) job().catch(() => {});
}, ms);
every(10000, "GET /v1/devices", loadFleet);
every(15000, "GET /v1/rollouts", loadRollouts);
every(60000, "GET /v1/stations", () => Promise.all([loadStations(), loadCompare()]));
every(30000, "GET /v1/loyalty", () => Promise.all([loadLoyalty(), loadTraffic()]));

// ---- signing in through the provider (authorization code with PKCE) ----

const SSO_KEY = "ferry.dashboard.sso";

function randomText(bytes) {
  const raw = crypto.getRandomValues(new Uint8Array(bytes));
  return btoa(String.fromCharCode(...raw)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function offerSignIn() {
  let body;
  try {
    body = await (await fetch("/v1/auth")).json();
  } catch (e) {
    return;
  }
  if (!body.oidc) return;
  $("#sso").hidden = false;
  $("#sso-go").onclick = async () => {
    const verifier = randomText(48);
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    const challenge = btoa(String.fromCharCode(...new Uint8Array(digest)))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    const nonce = randomText(16);
    sessionStorage.setItem(SSO_KEY, JSON.stringify({ verifier, nonce }));
    const q = new URLSearchParams({
      response_type: "code",
      client_id: body.oidc.client_id,
      redirect_uri: `${location.origin}/`,
      scope: body.oidc.scope,
      code_challenge: challenge,
      code_challenge_method: "S256",
      state: nonce,
    });
    location.assign(`${body.oidc.authorization_endpoint}?${q}`);
  };
}

// Back from the provider with a code: trade it (through this server) for the user's token.
async function finishSignIn() {
  const q = new URLSearchParams(location.search);
  if (!q.has("code") && !q.has("error")) return false;
  history.replaceState(null, "", "/");
  const saved = JSON.parse(sessionStorage.getItem(SSO_KEY) || "null");
  sessionStorage.removeItem(SSO_KEY);
  if (q.has("error") || !saved || q.get("state") !== saved.nonce) {
    askToken(`Signing in did not work: ${q.get("error_description") || q.get("error") || "the answer was not for this page"}.`);
    return true;
  }
  const response = await fetch("/v1/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: q.get("code"), code_verifier: saved.verifier, redirect_uri: `${location.origin}/` }),
  });
  const body = await response.json();
  if (!response.ok) {
    askToken(`Signing in did not work: ${body.error ? body.error.message : response.statusText}.`);
    return true;
  }
  state.token = body.id_token;
  localStorage.setItem(TOKEN_KEY, state.token);
  start();
  return true;
}

offerSignIn();
finishSignIn().then((handled) => {
  if (handled) return;
  if (state.token) start();
  else askToken("");
});
