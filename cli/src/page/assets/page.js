// The run page's script: polls the process's /api/… for the curves, plays recorded
// episodes back, pages through the label bank. No framework and nothing fetched from
// elsewhere: the binary serves everything the page needs.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const $ = (id) => document.getElementById(id);

// Fetches JSON from the page's API with the run's token; a refusal is shown, not thrown
// into the console only.
async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (!r.ok) {
    const text = await r.text();
    if (r.status === 401) refused(text);
    throw new Error(path + ": " + r.status + " " + text);
  }
  return r.json();
}

function refused(text) {
  const b = $("refused");
  b.hidden = false;
  b.dataset.error = "401";
  b.textContent = "Refused: " + text;
  $("status").textContent = "refused";
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

const fmt = (x, digits = 3) =>
  x == null || Number.isNaN(x) ? "–" : Math.abs(x) >= 1000 ? Math.round(x).toLocaleString("en") : (+x).toFixed(digits);

// ---- curves ---------------------------------------------------------------------------

const CURVES = [
  ["steps_per_second", "Steps / s", 0],
  ["mean_extrinsic_return", "Return (extrinsic)", 3],
  ["success_rate", "Success rate", 3],
  ["mean_score", "In-game score", 1],
  ["mean_intrinsic_return", "Intrinsic return", 3],
  ["labels", "Labels in the bank", 0],
  ["mean_policy_lag", "Policy lag (versions)", 2],
];
const series = Object.fromEntries(CURVES.map(([k]) => [k, []]));
let metricsFrom = 0;
let rowsSeen = 0;

function buildCharts() {
  const box = $("curves");
  for (const [key, title] of CURVES) {
    box.append(
      el("figure", { class: "chart", id: "chart-" + key, "data-key": key, "data-points": "0" },
        el("figcaption", {}, el("span", {}, title), el("span", { class: "last" }, "no data yet")),
        el("canvas", { width: 600, height: 300 })));
  }
}

function drawChart(key) {
  const fig = $("chart-" + key);
  const pts = series[key];
  fig.dataset.points = String(pts.length);
  const canvas = fig.querySelector("canvas");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 70, B = 34, T = 10, R = 12;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "20px sans-serif";
  if (pts.length === 0) {
    ctx.fillStyle = "#9ca3af";
    ctx.fillText("no data yet", W / 2 - 50, H / 2);
    return;
  }
  fig.querySelector(".last").textContent = fmt(pts[pts.length - 1][1], CURVES.find((c) => c[0] === key)[2]);
  let [x0, x1] = [pts[0][0], pts[pts.length - 1][0]];
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - T);
  ctx.strokeStyle = "#d1d5db";
  ctx.fillStyle = "#4b5563";
  ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  ctx.fillText(fmt(y1, 2), 2, T + 16);
  ctx.fillText(fmt(y0, 2), 2, H - B);
  ctx.fillText(fmt(x0, 0), L, H - 8);
  const right = fmt(x1, 0) + " steps";
  ctx.fillText(right, W - R - ctx.measureText(right).width, H - 8);
  ctx.strokeStyle = "#2563eb";
  ctx.lineWidth = 2.5;
  ctx.beginPath();
  pts.forEach(([x, y], i) => (i ? ctx.lineTo(sx(x), sy(y)) : ctx.moveTo(sx(x), sy(y))));
  ctx.stroke();
  if (pts.length === 1) { ctx.fillStyle = "#2563eb"; ctx.fillRect(sx(x0) - 3, sy(pts[0][1]) - 3, 6, 6); }
}

async function pollMetrics() {
  const got = await api("api/metrics?from=" + metricsFrom);
  metricsFrom = got.next;
  for (const row of got.rows) {
    rowsSeen++;
    for (const [key] of CURVES) {
      const v = row[key];
      if (typeof v === "number" && Number.isFinite(v)) series[key].push([row.env_steps, v]);
    }
  }
  $("curves").dataset.rows = String(rowsSeen);
  if (got.rows.length) CURVES.forEach(([k]) => drawChart(k));
  $("status").textContent = "updated " + new Date().toLocaleTimeString() + " · " + rowsSeen + " progress rows";
}

// ---- episodes -------------------------------------------------------------------------

const player = {
  name: null, steps: [], frames: [], framesTotal: 0, loadingFrom: null,
  at: 0, timer: null, summary: null,
};

function setState(s) {
  $("player").dataset.state = s;
  $("play").textContent = s === "playing" ? "pause" : "play";
}

function renderScreen(frame) {
  const pre = $("screen");
  pre.textContent = "";
  if (!frame) { pre.textContent = player.framesTotal ? "(frame not loaded yet)" : "(this environment draws no screen)"; return; }
  frame.text.forEach((line, r) => {
    const colours = frame.colours[r];
    let start = 0;
    for (let c = 1; c <= line.length; c++) {
      if (c === line.length || colours[c] !== colours[start]) {
        pre.append(el("span", { class: "c" + colours[start] }, line.slice(start, c)));
        start = c;
      }
    }
    pre.append("\n");
  });
}

function labelCell(s) {
  if (s.label) return el("span", { class: s.label }, s.label);
  return s.judged ? "judged" : "";
}

function showStep(k) {
  const n = player.steps.length;
  player.at = Math.max(0, Math.min(k, n));
  const p = $("player");
  p.dataset.step = String(player.at);
  $("position").textContent = "step " + player.at + " of " + n;
  renderScreen(player.frames[player.at]);
  const s = player.at > 0 ? player.steps[player.at - 1] : null;
  const info = $("step-info");
  info.textContent = "";
  const add = (k, v) => info.append(el("dt", {}, k), el("dd", {}, v));
  if (s) {
    add("action", s.action);
    add("reward", fmt(s.reward));
    add("intrinsic", s.intrinsic == null ? "–" : fmt(s.intrinsic));
    add("caption", s.caption || "(no message)");
    add("judge", labelCell(s) || "not judged");
  } else {
    add("", "the episode's start");
  }
  document.querySelectorAll("#steps tr.current").forEach((r) => r.classList.remove("current"));
  const row = document.querySelector('#steps tr[data-step="' + player.at + '"]');
  if (row) {
    row.classList.add("current");
    if (p.dataset.state !== "playing") row.scrollIntoView({ block: "nearest" });
  }
  if (player.framesTotal && player.at + 50 >= player.frames.length && player.frames.length < player.framesTotal) {
    loadFrames(player.frames.length);
  }
}

async function loadFrames(from) {
  if (player.loadingFrom === from) return;
  player.loadingFrom = from;
  const name = player.name;
  const got = await api("api/recordings/" + encodeURIComponent(name) + "?from=" + from + "&count=500");
  if (player.name !== name) return;
  got.frames.forEach((f, i) => (player.frames[from + i] = f));
  player.loadingFrom = null;
  if (!player.frames[player.at] || player.at >= from) renderScreen(player.frames[player.at]);
}

function tick() {
  player.timer = null;
  if ($("player").dataset.state !== "playing") return;
  if (player.at >= player.steps.length) { setState("ended"); return; }
  // wait for frames still loading, rather than showing a blank screen
  if (player.framesTotal && !player.frames[player.at + 1] && player.at + 1 < player.framesTotal) {
    player.timer = setTimeout(tick, 50);
    return;
  }
  showStep(player.at + 1);
  if (player.at >= player.steps.length) { setState("ended"); showStep(player.at); return; }
  player.timer = setTimeout(tick, +$("speed").value);
}

function play() {
  if (!player.name) return;
  if ($("player").dataset.state === "playing") { setState("paused"); return; }
  if (player.at >= player.steps.length) showStep(0);
  setState("playing");
  if (!player.timer) player.timer = setTimeout(tick, +$("speed").value);
}

async function openEpisode(name) {
  clearTimeout(player.timer);
  player.timer = null;
  const got = await api("api/recordings/" + encodeURIComponent(name) + "?from=0&count=500");
  Object.assign(player, { name, steps: got.steps, frames: got.frames, framesTotal: got.frames_total, summary: got.summary, loadingFrom: null });
  const s = got.summary;
  $("episode-summary").textContent =
    s.env + " · " + s.steps + " steps · return " + fmt(s.extrinsic_return) +
    (s.intrinsic_return != null ? " · intrinsic " + fmt(s.intrinsic_return) : "") +
    (s.score != null ? " · score " + s.score : "") + (s.success ? " · success" : "") +
    " · policy v" + s.policy_version;
  const notes = $("episode-notes");
  notes.textContent = "";
  got.notes.forEach((n) => notes.append(el("div", { class: "note" }, n)));
  $("player").dataset.steps = String(got.steps.length);
  const body = document.querySelector("#steps tbody");
  body.textContent = "";
  body.append(el("tr", { "data-step": "0" }, el("td", { class: "num" }, 0), el("td", { colSpan: 5 }, "start")));
  got.steps.forEach((s, i) => {
    const tr = el("tr", { "data-step": String(i + 1) },
      el("td", { class: "num" }, i + 1), el("td", { class: "num" }, s.action),
      el("td", { class: "num" }, fmt(s.reward)), el("td", { class: "num" }, s.intrinsic == null ? "–" : fmt(s.intrinsic)),
      el("td", {}, s.caption), el("td", {}, labelCell(s)));
    if ((s.intrinsic || 0) > 0 || s.reward > 0) tr.classList.add("paid");
    body.append(tr);
  });
  setState("paused");
  showStep(0);
}

let knownRecordings = "";
async function pollRecordings() {
  const got = await api("api/recordings");
  const sel = $("episode-list");
  const names = got.recordings.map((r) => r.name).join(",");
  const notes = (got.skipped || []).map((s) => s.name + ": " + s.note).concat(got.note ? [got.note] : []);
  const box = $("episode-notes");
  box.querySelectorAll(".skipped").forEach((n) => n.remove());
  notes.forEach((n) => box.append(el("div", { class: "note skipped" }, n)));
  if (names === knownRecordings) return;
  knownRecordings = names;
  const chosen = sel.value;
  sel.textContent = "";
  got.recordings.forEach((r) => {
    const when = new Date(r.summary.started * 1000).toLocaleTimeString();
    sel.append(el("option", { value: r.name }, when + " · " + r.summary.steps + " steps · return " + fmt(r.summary.extrinsic_return)));
  });
  if (chosen && got.recordings.some((r) => r.name === chosen)) sel.value = chosen;
  if (!player.name && got.recordings.length) {
    await openEpisode(got.recordings[0].name);
    if (params.get("autoplay") === "1") play();
  }
}

// ---- label bank -----------------------------------------------------------------------

const labelView = { offset: 0, limit: +(params.get("rows") || 50), matched: 0 };

async function loadLabels() {
  const q = encodeURIComponent($("label-search").value);
  const got = await api("api/labels?offset=" + labelView.offset + "&limit=" + labelView.limit + "&order=" + $("label-order").value + "&q=" + q);
  labelView.matched = got.matched;
  const table = $("labels");
  table.dataset.total = String(got.total);
  table.dataset.rows = String(got.rows.length);
  const body = table.querySelector("tbody");
  body.textContent = "";
  for (const r of got.rows) {
    body.append(el("tr", {},
      el("td", {}, r.caption, r.asked_as ? el("div", { class: "muted" }, "as " + r.asked_as) : ""),
      el("td", {}, el("span", { class: r.label }, r.label)),
      el("td", { class: "num" }, r.met == null ? "–" : r.met),
      el("td", { class: "num" }, r.paid == null ? "–" : fmt(r.paid, 1)),
      el("td", { class: "num" }, r.pays_now == null ? "–" : fmt(r.pays_now, 2)),
      el("td", {}, new Date(r.asked_ms).toLocaleString()),
      el("td", { class: "answer" }, r.answer)));
  }
  const end = got.offset + got.rows.length;
  $("label-position").textContent = got.matched
    ? "rows " + (got.offset + 1) + "–" + end + " of " + got.matched + (got.matched !== got.total ? " (" + got.total + " in the bank)" : "") +
      (got.rm_version ? " · reward model v" + got.rm_version : "")
    : got.total + " answers in the bank";
  $("label-note").textContent = got.note || "";
  $("label-prev").disabled = got.offset === 0;
  $("label-next").disabled = end >= got.matched;
}

// ---- wiring ---------------------------------------------------------------------------

function every(ms, f) {
  const run = async () => {
    try { await f(); } catch (e) { console.warn(e); }
    if ($("refused").hidden) setTimeout(run, ms);
  };
  run();
}

async function start() {
  buildCharts();
  $("play").onclick = play;
  $("first").onclick = () => showStep(0);
  $("back").onclick = () => showStep(player.at - 1);
  $("forward").onclick = () => showStep(player.at + 1);
  $("episode-list").onchange = (e) => openEpisode(e.target.value);
  $("steps").onclick = (e) => {
    const tr = e.target.closest("tr[data-step]");
    if (tr) showStep(+tr.dataset.step);
  };
  if (params.get("speed")) $("speed").value = params.get("speed");
  let searchTimer = null;
  $("label-search").oninput = () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { labelView.offset = 0; loadLabels(); }, 250);
  };
  $("label-order").onchange = () => { labelView.offset = 0; loadLabels(); };
  $("label-prev").onclick = () => { labelView.offset = Math.max(0, labelView.offset - labelView.limit); loadLabels(); };
  $("label-next").onclick = () => { labelView.offset += labelView.limit; loadLabels(); };
  try {
    const run = await api("api/run");
    $("title").textContent = run.name + " · " + run.env;
    document.title = "oni · " + run.name;
  } catch (e) {
    console.warn(e);
    return;
  }
  every(2000, pollMetrics);
  every(5000, pollRecordings);
  // the table stays where the user paged it; it refreshes only on the first page
  every(5000, () => (labelView.offset === 0 ? loadLabels() : Promise.resolve()));
}

start();
