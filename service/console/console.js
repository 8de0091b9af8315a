// The nextbest console: fetches everything from the API with the key typed into the page.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "nextbest-api-key";
let slots = {};

function headers(json) {
  const h = json ? { "content-type": "application/json" } : {};
  const key = $("api-key").value.trim();
  if (key) h["x-api-key"] = key;
  return h;
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.body !== undefined) });
  const text = await response.text();
  let body;
  try { body = JSON.parse(text); } catch (e) { body = { message: text }; }
  if (!response.ok) throw new Error(`${response.status}: ${body.message || text}`);
  return body;
}

function cell(row, value, numeric) {
  const td = row.insertCell();
  if (value instanceof Node) td.appendChild(value);
  else td.textContent = value === null || value === undefined ? "" : String(value);
  if (numeric) td.className = "num";
  return td;
}

function fill(tableId, items, columns) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const item of items) {
    const row = body.insertRow();
    for (const [get, numeric] of columns) cell(row, get(item), numeric);
  }
}

const num = (x, digits = 3) => (x === null || x === undefined ? "" : Number(x).toFixed(digits));
const pct = (x) => (x === null || x === undefined ? "" : (100 * x).toFixed(1) + "%");
const span = (i, f = pct) => (i && i.low !== null && i.low !== undefined ? `${f(i.low)} – ${f(i.high)}` : "");
function json(value) {
  if (!value) return "";
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(value, null, 1);
  return pre;
}

// --- catalog ---------------------------------------------------------------------------
async function loadCatalog() {
  $("catalog-error").textContent = "";
  try {
    const c = await call("/v1/console/catalog");
    $("catalog-version").textContent = `version ${c.version}${c.budgets_unavailable ? " (budgets unavailable)" : ""}`;
    fill("catalog-table", c.actions, [
      [(a) => `${a.action_id}${a.name ? " — " + a.name : ""}`], [(a) => a.kind], [(a) => a.category],
      [(a) => num(a.value, 2), true], [(a) => num(a.lever, 2), true],
      [(a) => `${a.channels.join(", ") || "any channel"} / ${a.placements.join(", ") || "any placement"}` +
              (a.exclusion_group ? ` (group ${a.exclusion_group})` : "")],
      [(a) => json(a.rules)], [(a) => json(a.contact)], [(a) => json(a.budget)],
      [(a) => (a.budget_left === null ? "" : a.budget_left), true],
    ]);
    slots = c.slots;
    const channel = document.querySelector("#decision-form [name=channel]");
    if (!channel.options.length) {
      for (const name of Object.keys(slots)) channel.add(new Option(name, name));
      fillPlacements();
    }
  } catch (e) {
    $("catalog-error").textContent = `catalog: ${e.message}`;
  }
}

function fillPlacements() {
  const form = $("decision-form");
  const placement = form.elements.placement;
  placement.replaceChildren();
  for (const name of slots[form.elements.channel.value] || []) placement.add(new Option(name, name));
}

// --- try a decision ----------------------------------------------------------------------
async function decide(event) {
  event.preventDefault();
  const form = $("decision-form");
  $("decision-error").textContent = "";
  let context;
  try { context = JSON.parse(form.elements.context.value || "{}"); } catch (e) {
    $("decision-error").textContent = `context is not JSON: ${e.message}`;
    return;
  }
  const body = {
    channel: form.elements.channel.value, placement: form.elements.placement.value,
    limit: Number(form.elements.limit.value || 3), context, explain: true,
  };
  if (form.elements.customer_id.value.trim()) body.customer_id = form.elements.customer_id.value.trim();
  try {
    const d = await call("/v1/decisions", { method: "POST", body: JSON.stringify(body) });
    $("decision-id").textContent = d.decision_id;
    $("decision-group").textContent = d.group;
    $("decision-models").textContent = Object.entries(d.model_versions).map(([k, v]) => `${k}=${v}`).join(" ");
    $("decision-degraded").textContent = d.degraded.join(", ") || "no";
    fill("ranked-table", d.actions, [
      [(a) => a.rank, true], [(a) => a.action_id], [(a) => num(a.score, 4), true],
      [(a) => num(a.propensity, 4), true], [(a) => num(a.probability, 4), true],
      [(a) => num(a.value, 2), true], [(a) => (a.explored ? "yes" : "")],
      [(a) => num(a.explanation && a.explanation.offline_propensity, 4), true],
      [(a) => num(a.explanation && a.explanation.online_correction, 4), true],
      [(a) => a.explanation && a.explanation.exposures, true],
    ]);
    fill("removed-table", d.removed || [], [[(r) => r.action_id], [(r) => r.rule]]);
    $("decision-result").hidden = false;
  } catch (e) {
    $("decision-error").textContent = `decision: ${e.message}`;
  }
}

// --- charts ------------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Horizontal bars with optional interval whiskers: items of {label, value, low, high, color}.
function bars(items, format) {
  const width = 640, label = 200, row = 18;
  const max = Math.max(1e-9, ...items.map((i) => Math.max(i.high ?? i.value ?? 0, i.value ?? 0)));
  const scale = (x) => label + ((width - label - 60) * (x || 0)) / max;
  const chart = svg("svg", { width, height: row * items.length + 6, role: "img" });
  items.forEach((item, n) => {
    const y = n * row + 3;
    chart.appendChild(svg("text", { x: label - 6, y: y + 12, "text-anchor": "end" }, item.label));
    chart.appendChild(svg("rect", { x: label, y, width: Math.max(0, scale(item.value) - label), height: row - 5,
                                    fill: item.color || "#4a7ebb" }));
    if (item.low !== null && item.low !== undefined) {
      chart.appendChild(svg("line", { x1: scale(item.low), x2: scale(item.high), y1: y + 6, y2: y + 6,
                                      stroke: "#222", "stroke-width": 1.5 }));
    }
    chart.appendChild(svg("text", { x: scale(Math.max(item.value || 0, item.high || 0)) + 4, y: y + 12 },
                          format(item.value)));
  });
  return chart;
}

// --- touchpoints and uplift --------------------------------------------------------------
async function loadTouchpoints() {
  $("touchpoints-error").textContent = "";
  try {
    const t = await call("/v1/insights/touchpoints");
    const columns = [
      [(p) => p.channel], [(p) => p.journey_stage], [(p) => p.impressions, true], [(p) => p.accepts, true],
      [(p) => pct(p.acceptance_rate.value), true], [(p) => span(p.acceptance_rate)], [(p) => num(p.lift, 2), true],
      [(p) => p.dismissals, true], [(p) => pct(p.dismissal_rate), true], [(p) => num(p.value_per_impression, 2), true],
    ];
    fill("touchpoints-table", t.touchpoints, columns);
    fill("pleasure-table", t.pleasure_points, [[(p) => p.channel], [(p) => p.journey_stage],
      [(p) => pct(p.acceptance_rate.value), true], [(p) => num(p.lift, 2), true], [(p) => p.impressions, true]]);
    fill("pain-table", t.pain_points, [[(p) => p.channel], [(p) => p.journey_stage],
      [(p) => pct(p.dismissal_rate), true], [(p) => pct(p.acceptance_rate.value), true], [(p) => p.impressions, true]]);
    const shown = t.touchpoints.filter((p) => p.acceptance_rate.value !== null);
    $("touchpoints-chart").replaceChildren(bars(shown.map((p) => ({
      label: `${p.channel} · ${p.journey_stage}`, value: p.acceptance_rate.value,
      low: p.acceptance_rate.low, high: p.acceptance_rate.high,
    })), pct));
  } catch (e) {
    $("touchpoints-error").textContent = `touchpoints: ${e.message}`;
  }
}

async function loadUplift() {
  $("uplift-error").textContent = "";
  try {
    const u = await call("/v1/reports/uplift");
    $("uplift-setup").textContent = u.control_share > 0
      ? `control group: ${pct(u.control_share)} of customers, baseline policy "${u.control_policy}"; ${pct(u.level)} intervals`
      : "no control group configured (NEXTBEST_CONTROL_SHARE is 0)";
    fill("uplift-groups", u.groups, [
      [(g) => g.channel], [(g) => g.group], [(g) => g.decisions, true], [(g) => g.accepts, true],
      [(g) => pct(g.acceptance_rate.value), true], [(g) => span(g.acceptance_rate)],
      [(g) => num(g.value_per_decision.value, 2), true], [(g) => span(g.value_per_decision, (x) => num(x, 2))],
    ]);
    fill("uplift-table", u.uplift, [
      [(r) => r.channel], [(r) => r.metric],
      [(r) => (r.metric === "acceptance_rate" ? pct(r.difference.value) : num(r.difference.value, 2)), true],
      [(r) => span(r.difference, r.metric === "acceptance_rate" ? pct : (x) => num(x, 2))],
      [(r) => num(r.ratio.value, 2), true], [(r) => span(r.ratio, (x) => num(x, 2))],
    ]);
    const all = u.groups.filter((g) => g.channel === "all" && g.acceptance_rate.value !== null);
    $("uplift-chart").replaceChildren(bars(all.map((g) => ({
      label: `${g.group} acceptance`, value: g.acceptance_rate.value, low: g.acceptance_rate.low,
      high: g.acceptance_rate.high, color: g.group === "control" ? "#bbb" : "#4a7ebb",
    })), pct));
  } catch (e) {
    $("uplift-error").textContent = `uplift: ${e.message}`;
  }
}

function reload() {
  sessionStorage.setItem(KEY, $("api-key").value);
  loadCatalog();
  loadTouchpoints();
  loadUplift();
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem(KEY) || "";
  $("reload").addEventListener("click", reload);
  $("decision-form").addEventListener("submit", decide);
  $("decision-form").elements.channel.addEventListener("change", fillPlacements);
  reload();
});
