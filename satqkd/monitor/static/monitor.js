// satqkd pass monitor: renders the snapshots pushed by /api/stream (Server-Sent Events).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const INTENSITY_TITLES = { signal: "signal", decoy: "decoy", vacuum: "vacuum" };

function $(id) { return document.getElementById(id); }

function text(id, value) {
  const element = $(id);
  if (element.textContent !== value) element.textContent = value;
}

// a figure, or "-" where it is unknown (never 0 in its place)
function fmt(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  return Number(value).toFixed(digits);
}

function count(value) {
  if (value === null || value === undefined) return "-";
  return Number(value).toLocaleString("en-US");
}

function rate(value) {
  if (value === null || value === undefined) return "-";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: 1 });
}

function percent(value) {
  return value === null || value === undefined ? "-" : (100 * value).toFixed(2) + " %";
}

function svgNode(tag, attributes, parent) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (parent) parent.appendChild(node);
  return node;
}

// sky: zenith at the centre, horizon on the circle of radius 100, north up, east right
function skyPoint(azDeg, elDeg) {
  const r = (90 - Math.max(elDeg, -5)) / 90 * 100;
  const az = azDeg * Math.PI / 180;
  return [r * Math.sin(az), -r * Math.cos(az)];
}

function drawSky(state) {
  const sky = $("sky");
  sky.replaceChildren();
  const mask = state.station.min_elevation_deg;
  if (mask !== null && mask !== undefined) {
    const inner = (90 - mask) / 90 * 100;
    svgNode("path", {
      class: "sky-mask",
      "fill-rule": "evenodd",
      d: `M -100 0 A 100 100 0 1 0 100 0 A 100 100 0 1 0 -100 0 Z ` +
         `M ${-inner} 0 A ${inner} ${inner} 0 1 0 ${inner} 0 A ${inner} ${inner} 0 1 0 ${-inner} 0 Z`,
    }, sky).appendChild(document.createElementNS(SVG, "title")).textContent =
      `station mask: below ${mask} deg`;
  }
  for (const el of [0, 30, 60]) {
    svgNode("circle", { class: "sky-grid", cx: 0, cy: 0, r: (90 - el) / 90 * 100 }, sky);
  }
  svgNode("line", { class: "sky-grid", x1: -100, y1: 0, x2: 100, y2: 0 }, sky);
  svgNode("line", { class: "sky-grid", x1: 0, y1: -100, x2: 0, y2: 100 }, sky);
  for (const [label, x, y] of [["N", -3, -102], ["E", 102, 3], ["S", -3, 108], ["W", -109, 3]]) {
    svgNode("text", { class: "sky-label", x, y }, sky).textContent = label;
  }
  if (state.track.length > 1) {
    const points = state.track.map(([az, el]) => skyPoint(az, el).map(v => v.toFixed(2)).join(","));
    svgNode("polyline", { id: "sky-track", class: "sky-track", points: points.join(" ") }, sky);
  }
  const mount = state.mount;
  if (mount && mount.az_deg !== null && mount.el_deg !== null) {
    const [x, y] = skyPoint(mount.az_deg, mount.el_deg);
    svgNode("circle", { id: "sky-mount", class: "sky-mount", cx: x, cy: y, r: 5 }, sky);
  }
  const sat = state.satellite;
  if (sat) {
    const [x, y] = skyPoint(sat.az_deg, sat.el_deg);
    svgNode("circle", { id: "sky-sat", class: "sky-sat", cx: x, cy: y, r: 3.5 }, sky);
  }
  text("sat-az", sat ? fmt(sat.az_deg) : "-");
  text("sat-el", sat ? fmt(sat.el_deg) : "-");
  text("mount-az", mount ? fmt(mount.az_deg) : "-");
  text("mount-el", mount ? fmt(mount.el_deg) : "-");
  text("mask", mask === null || mask === undefined ? "unknown (give --station)" :
    `below ${fmt(mask)}\u00b0 (${state.station.name})`);
}

function drawSpot(state) {
  const spot = $("spot");
  spot.replaceChildren();
  const atp = state.atp;
  const scale = 50 / Math.max(10, ...state.spots.map(([x, y]) => Math.max(Math.abs(x), Math.abs(y))));
  svgNode("circle", { class: "sky-grid", cx: 0, cy: 0, r: 50 }, spot);
  svgNode("line", { class: "sky-grid", x1: -50, y1: 0, x2: 50, y2: 0 }, spot);
  svgNode("line", { class: "sky-grid", x1: 0, y1: -50, x2: 0, y2: 50 }, spot);
  svgNode("text", { class: "spot-label", x: 30, y: -48 }, spot).textContent =
    `${fmt(50 / scale, 0)} \u00b5rad`;
  for (const [x, y] of state.spots) {
    svgNode("circle", { class: "sky-track", cx: x * scale, cy: -y * scale, r: 0.8 }, spot);
  }
  if (atp && atp.spot_valid && atp.spot_x_urad !== null) {
    svgNode("circle", {
      id: "spot-now", class: "sky-sat", cx: atp.spot_x_urad * scale, cy: -atp.spot_y_urad * scale, r: 2.5,
    }, spot);
  }
  text("atp-mode", atp ? String(atp.mode) : "-");
  text("spot-valid", atp ? (atp.spot_valid ? "on the sensor" : "not seen") : "-");
  text("spot-x", atp ? fmt(atp.spot_x_urad, 2) : "-");
  text("spot-y", atp ? fmt(atp.spot_y_urad, 2) : "-");
  text("beacon-power", atp ? fmt(atp.power_nw, 2) : "-");
  text("atp-faults", atp ? Object.entries(atp.faults).map(([k, v]) => `${k} ${v}`).join(", ") : "-");
}

// a line over the frames; `label` formats the value at the top (and the bottom, when a value is
// negative: the axis then spans the values' range)
function drawSeries(id, values, label = count) {
  const plot = $(id);
  plot.replaceChildren();
  const known = values.filter(v => v !== null && v !== undefined);
  if (known.length === 0) return;
  const top = Math.max(...known) || 1;
  const bottom = Math.min(0, ...known);
  const height = top - bottom || 1;
  const step = 300 / Math.max(values.length - 1, 1);
  // a gap (unknown value) breaks the line: nothing is drawn where there is no data
  let run = [];
  const flush = () => {
    if (run.length > 0) svgNode("polyline", { class: "plot-line", points: run.join(" ") }, plot);
    run = [];
  };
  values.forEach((v, i) => {
    if (v === null || v === undefined) { flush(); return; }
    run.push(`${(i * step).toFixed(2)},${(78 - 74 * (v - bottom) / height).toFixed(2)}`);
  });
  flush();
  svgNode("text", { class: "sky-label", x: 2, y: 9 }, plot).textContent = label(top);
  if (bottom < 0) svgNode("text", { class: "sky-label", x: 2, y: 78 }, plot).textContent = label(bottom);
}

function drawQkd(state) {
  const p = state.progress;
  text("chunk", p ? String(p.chunk) : "-");
  text("elevation", p ? fmt(p.elevation_deg) : "-");
  text("detections", p ? count(p.detections) : "-");
  text("sifted", p ? count(p.sifted_bits) : "-");
  text("qber-z", percent(state.qber.z));
  text("qber-x", percent(state.qber.x));
  drawSeries("frames-plot", state.frames.map(f => f.detections));
  drawSeries("qber-plot", state.frames.map(f => f.qber_z), percent);
}

function drawRates(state) {
  const body = $("rates-body");
  if (state.by_intensity.length === 0) return;
  text("rates-note", state.by_intensity_final
    ? "pulses sent and sifted detections (both bases) over the QKD window"
    : "sifted detections (both bases) so far, rate over the frames sifted; pulses sent and " +
      "errors after the station's pass summary");
  body.replaceChildren();
  for (const row of state.by_intensity) {
    const tr = document.createElement("tr");
    tr.dataset.intensity = row.label;
    for (const cell of [INTENSITY_TITLES[row.label] || row.label, fmt(row.mu, 2), count(row.sent),
                        count(row.detections), rate(row.rate_hz), count(row.errors)]) {
      tr.appendChild(document.createElement("td")).textContent = cell;
    }
    body.appendChild(tr);
  }
}

function drawClockAndKey(state) {
  text("clock-at", state.clock.at ? `at ${state.clock.at}` : "-");
  text("clock-offset", fmt(state.clock.offset_ps, 1));
  drawSeries("clock-plot", state.frames.map(f => f.clock_offset_ps), v => `${fmt(v, 1)} ps`);
  drawSeries("residual-plot", state.frames.map(f => f.timing_residual_rms_ps), v => `${fmt(v, 1)} ps`);
  text("clock-drift", fmt(state.clock.drift_ppb, 3));
  text("clock-residual", fmt(state.clock.residual_rms_ps, 1));
  text("clock-assigned", percent(state.clock.assigned_fraction));
  const key = state.key;
  if (!key) { text("key-result", "pass not summarised yet"); return; }
  text("key-result", key.secret_key_bits > 0
    ? `${count(key.secret_key_bits)} secret key bits` +
      (key.payload_confirmed ? ", confirmed by the payload" : "")
    : `no key: ${key.abort_reason || "unknown reason"}`);
}

function drawNodes(state) {
  const body = $("nodes-body");
  body.replaceChildren();
  for (const [node, hk] of Object.entries(state.nodes)) {
    const tr = document.createElement("tr");
    tr.dataset.node = node;
    for (const cell of [node, hk.mode, count(hk.key_bits_stored), count(hk.auth_words_remaining),
                        `${hk.tc_accepted}/${hk.tc_rejected}/${hk.tc_auth_failures}`]) {
      tr.appendChild(document.createElement("td")).textContent = cell;
    }
    body.appendChild(tr);
  }
}

function drawEvents(state) {
  const list = $("events");
  list.replaceChildren();
  for (const e of state.events) {
    const li = document.createElement("li");
    li.className = `sev-${e.severity}`;
    const when = e.received_unix_s ? new Date(e.received_unix_s * 1000).toISOString().slice(11, 19) + " " : "";
    li.textContent = `${when}${e.node} ${e.severity} ${e.event}: ${e.text}`;
    list.appendChild(li);
  }
}

function render(state) {
  text("source", state.source + (state.replay_finished ? " (replay finished)" : ""));
  text("plan-id", state.plan_id === null ? "-" : String(state.plan_id));
  text("messages", String(state.messages));
  drawSky(state);
  drawSpot(state);
  drawQkd(state);
  drawRates(state);
  drawClockAndKey(state);
  drawNodes(state);
  drawEvents(state);
}

function connect() {
  const badge = $("connection");
  const stream = new EventSource("/api/stream");
  stream.onopen = () => { badge.textContent = "live"; badge.className = "badge live"; };
  stream.onerror = () => { badge.textContent = "reconnecting"; badge.className = "badge lost"; };
  stream.onmessage = (message) => render(JSON.parse(message.data));
}

connect();
