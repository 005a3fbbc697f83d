// Lantern explorer: forms from the OpenAPI document's examples, the job list with live status
// (long polling: GET /v1/jobs/{id}?wait=S), cancel, and one view per result kind (views.js).
"use strict";

const KEY_STORE = "lantern.apiKey";
const WAIT_S = 25;            // long-poll hold asked per request (the server caps it with max_wait_s)
const COMPARE = ["saliency", "input_x_gradient", "integrated_gradients", "occlusion"];
const $ = (sel) => document.querySelector(sel);
const state = { examples: {}, models: [], jobs: new Map(), watching: new Set(), shown: null, groups: [] };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// -- the API ------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(problem, status) {
    super(`${problem.status || status} ${problem.title || ""}${problem.detail ? ": " + problem.detail : ""}`);
    this.problem = problem; this.status = problem.status || status;
  }
}

async function api(method, path, body) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers["Authorization"] = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { title: text }; }
  if (!r.ok) throw new ApiError(data || {}, r.status);
  return { data, retryAfter: Number(r.headers.get("Retry-After")) || null };
}

function banner(msg) {
  const b = $("#banner");
  b.hidden = !msg; b.textContent = msg || "";
}

// -- the form -----------------------------------------------------------------------------------
async function loadSpec() {
  const { data } = await api("GET", "/openapi.json");
  const content = data.paths["/v1/jobs"].post.requestBody.content["application/json"];
  for (const [kind, ex] of Object.entries(content.examples || {})) state.examples[kind] = ex.value;
  const select = $("#form-kind");
  select.replaceChildren(...Object.keys(state.examples).map((k) => el("option", { value: k, text: k })));
  try { state.models = (await api("GET", "/v1/models")).data.models; } catch (e) { state.models = []; }
  showForm(select.value);
}

function showForm(kind) {
  const ex = state.examples[kind];
  const models = state.models.filter((m) => !m.kinds.length || m.kinds.includes(kind)).map((m) => m.id);
  if (!models.includes(ex.model)) models.unshift(ex.model);
  $("#form-model").replaceChildren(...models.map((id) => el("option", { value: id, text: id })));
  $("#form-model").value = ex.model;
  const fields = $("#form-fields");
  fields.replaceChildren();
  for (const [name, value] of Object.entries(ex.input)) {
    const id = "form-input-" + name;
    const input = typeof value === "string"
      ? el("input", { type: "text", id, "data-field": name, "data-type": "string" })
      : el("textarea", { id, rows: Math.min(8, JSON.stringify(value, null, 1).split("\n").length), "data-field": name,
                         "data-type": "json", spellcheck: "false" });
    input.value = typeof value === "string" ? value : JSON.stringify(value, null, 1);
    fields.append(el("label", {}, `input.${name}${typeof value === "string" ? "" : " (JSON)"} `, input));
  }
  $("#form-params").value = JSON.stringify(ex.params || {}, null, 1);
  $("#compare-box").hidden = kind !== "attribution";
  if (kind === "attribution") {
    $("#compare-methods").replaceChildren(...COMPARE.map((m) =>
      el("label", { class: "inline" }, el("input", { type: "checkbox", value: m, checked: "" }), " " + m)));
  }
  $("#form-error").hidden = true;
}

function formBody() {
  const input = {};
  for (const f of document.querySelectorAll("#form-fields [data-field]")) {
    if (f.dataset.type === "string") { if (f.value !== "") input[f.dataset.field] = f.value; }
    else input[f.dataset.field] = JSON.parse(f.value);
  }
  const params = $("#form-params").value.trim() ? JSON.parse($("#form-params").value) : {};
  return { kind: $("#form-kind").value, model: $("#form-model").value, input, params };
}

function formError(e) {
  const box = $("#form-error");
  box.hidden = false;
  if (e instanceof ApiError && e.problem.errors) {
    box.textContent = e.message + "\n" + e.problem.errors.map((x) => `${x.loc.join(".")}: ${x.msg}`).join("\n");
  } else box.textContent = String(e.message || e);
}

async function submit(body) {
  const { data } = await api("POST", "/v1/jobs", body);
  upsertJob(data);
  watch(data.id);
  return data;
}

// -- jobs: list, live status by long polling, cancel ----------------------------------------------
function upsertJob(view) {
  state.jobs.set(view.id, { ...(state.jobs.get(view.id) || {}), ...view });
  renderJobs();
}

function renderJobs() {
  const rows = [...state.jobs.values()].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  $("#jobs tbody").replaceChildren(...rows.map((j) => {
    const active = j.status === "queued" || j.status === "started";
    const pct = Math.round((j.progress || 0) * 100);
    return el("tr", { "data-job": j.id, "data-status": j.status, class: state.shown === j.id ? "active" : "" },
      el("td", {}, el("a", { href: "#" + j.id, onclick: () => { if (location.hash === "#" + j.id) openJob(j.id); } },
        el("code", { text: j.id.slice(0, 10) }))),
      el("td", { text: j.kind }), el("td", { text: j.model }),
      el("td", { class: "st-" + j.status, text: j.status + (j.cancel_requested && active ? " (cancel asked)" : "") }),
      el("td", {}, el("span", { class: "bar", title: pct + "%" }, el("span", { style: `width:${pct}%` })), ` ${pct}%`),
      el("td", { text: j.status === "queued" && j.queue_position != null ? String(j.queue_position) : "" }),
      el("td", {}, active ? el("button", { type: "button", class: "cancel", onclick: () => cancel(j.id), text: "cancel" }) : ""));
  }));
}

async function refreshJobs() {
  try {
    const { data } = await api("GET", "/v1/jobs?limit=30");
    for (const v of data.jobs) {
      upsertJob(v);
      if (v.status === "queued" || v.status === "started") watch(v.id);
    }
    banner(null);
  } catch (e) { banner(e instanceof ApiError && e.status === 401 ? "This API needs a key: type it above." : String(e.message)); }
}

async function watch(id) {
  if (state.watching.has(id)) return;
  state.watching.add(id);
  try {
    for (;;) {
      let res;
      try { res = await api("GET", `/v1/jobs/${id}?wait=${WAIT_S}`); }
      catch (e) {
        if (e.status === 429 || e.status === 503) { await sleep(5000); continue; }
        throw e;
      }
      const v = res.data;
      upsertJob({ ...v, result: undefined });
      if (state.shown === id) showJob(v);
      if (!["queued", "started"].includes(v.status)) { if (state.shown === id || pendingCompare(id)) showCurrent(); break; }
    }
  } catch (e) { banner(String(e.message)); }
  finally { state.watching.delete(id); }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function cancel(id) {
  try { upsertJob((await api("DELETE", `/v1/jobs/${id}`)).data); } catch (e) { banner(String(e.message)); }
}

// -- the result pane ------------------------------------------------------------------------------
function pendingCompare(id) { return state.groups.some((g) => g.includes(id)); }

async function openJob(id) {
  state.shown = id; state.compare = null;
  renderJobs();
  try {
    const { data } = await api("GET", `/v1/jobs/${id}`);
    upsertJob({ ...data, result: undefined });
    showJob(data);
    if (data.status === "queued" || data.status === "started") watch(id);
  } catch (e) { $("#result").replaceChildren(el("div", { class: "error", text: e.message })); }
}

async function showCurrent() {
  if (state.compare) return showCompare(state.compare);
  if (state.shown) return openJob(state.shown);
}

function showJob(view) {
  $("#result-title").textContent = `Result: ${view.kind} on ${view.model} (${view.id})`;
  const box = $("#result");
  box.dataset.job = view.id; box.dataset.kind = view.kind; box.dataset.status = view.status;
  if (view.status === "finished") {
    box.replaceChildren();
    for (const w of (view.result.warnings || [])) box.append(el("div", { class: "error", text: `warning ${w.type}: ${w.detail}` }));
    const target = el("div", { class: "view" });
    box.append(target);
    (window.LanternViews[view.kind] || window.LanternViews.json)(target, view.result, view);
  } else if (view.error) {
    box.replaceChildren(el("div", { class: "error", text: `${view.status}: ${view.error.title}${view.error.detail ? " — " + view.error.detail : ""}` }));
  } else {
    const pct = Math.round((view.progress || 0) * 100);
    box.replaceChildren(el("p", { text: `${view.status}${view.queue_position != null && view.status === "queued" ? `, queue position ${view.queue_position}` : ""}, ${pct}% …` }));
  }
}

async function showCompare(ids) {
  state.compare = ids; state.shown = null;
  const views = [];
  for (const id of ids) views.push((await api("GET", `/v1/jobs/${id}`)).data);
  $("#result-title").textContent = "Attribution methods side by side";
  const box = $("#result");
  box.dataset.kind = "attribution-compare";
  box.replaceChildren();
  window.LanternViews.compare(box, views);
}

// -- wiring ---------------------------------------------------------------------------------------
function init() {
  const keyInput = $("#api-key");
  keyInput.value = sessionStorage.getItem(KEY_STORE) || "";
  keyInput.addEventListener("change", () => {
    if (keyInput.value) sessionStorage.setItem(KEY_STORE, keyInput.value); else sessionStorage.removeItem(KEY_STORE);
    start();
  });
  $("#form-kind").addEventListener("change", (e) => showForm(e.target.value));
  $("#job-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#form-error").hidden = true;
    try { const v = await submit(formBody()); openJob(v.id); } catch (e) { formError(e); }
  });
  $("#compare").addEventListener("click", async () => {
    $("#form-error").hidden = true;
    try {
      const base = formBody();
      const methods = [...document.querySelectorAll("#compare-methods input:checked")].map((c) => c.value);
      const ids = [];
      for (const m of methods) ids.push((await submit({ ...base, params: { ...base.params, method: m, faithfulness: true } })).id);
      state.groups.push(ids);
      showCompare(ids);
    } catch (e) { formError(e); }
  });
  $("#refresh-jobs").addEventListener("click", refreshJobs);
  window.addEventListener("hashchange", () => { if (location.hash.length > 1) openJob(location.hash.slice(1)); });
  $("#open-form").addEventListener("submit", (ev) => { ev.preventDefault(); if ($("#open-id").value) openJob($("#open-id").value.trim()); });
  start();
}

async function start() {
  try { await loadSpec(); banner(null); }
  catch (e) {
    banner(e instanceof ApiError && e.status === 401 ? "This API needs a key: type it above." : `Cannot load the API description: ${e.message}`);
    return;
  }
  await refreshJobs();
  if (location.hash.length > 1) openJob(location.hash.slice(1));
}

document.addEventListener("DOMContentLoaded", init);
window.LanternApp = { api, submit, openJob, state };
