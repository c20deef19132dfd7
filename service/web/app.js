// The gateway's demo page: one image, one task, one model; the answer drawn by the gateway
// (overlay=true) plus its numbers. Plain JavaScript, no external assets; every URL is relative
// to the page, so it works behind a path prefix too.
"use strict";

const $ = (id) => document.getElementById(id);
const TASKS = { segment: "segmentation", landmarks: "landmarks", detect: "detection" };
const state = { file: null, models: [], imageUrl: null };

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body.error) return `${response.status} ${body.error.code}: ${body.error.message}`;
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

async function loadModels() {
  try {
    const r = await fetch("v1/models", { headers: headers() });
    if (!r.ok) { setStatus(`Cannot list models: ${await errorText(r)}`, true); return; }
    state.models = (await r.json()).models;
    fillModels();
    if (!state.models.length) setStatus("The gateway serves no model (see /readyz).", true);
  } catch (e) {
    setStatus(`Cannot reach the gateway: ${e}`, true);
  }
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value);
}

function fillModels() {
  const task = TASKS[$("task").value];
  const select = $("model");
  select.innerHTML = "";
  const models = state.models.filter((m) => m.task === task);
  models.sort((a, b) => (b.default_for_task - a.default_for_task) || a.name.localeCompare(b.name));
  for (const m of models) {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = m.name + (m.random_init ? " (random weights)" : "");
    select.appendChild(o);
  }
  if (!models.length) {
    const o = document.createElement("option");
    o.value = ""; o.textContent = `no ${task} model served`;
    select.appendChild(o);
  }
  for (const fs of document.querySelectorAll("fieldset[data-task]")) {
    fs.hidden = fs.dataset.task !== $("task").value;
  }
  updateBanner();
  updateRun();
}

function updateBanner() {
  const m = currentModel();
  $("random-banner").hidden = !(m && m.random_init);
  $("random-model").textContent = m ? `'${m.name}'` : "";
}

function updateRun() {
  $("run").disabled = !(state.file && currentModel());
}

function useFile(file) {
  if (!file) return;
  state.file = file;
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(file);
  $("preview").src = state.imageUrl;
  $("preview").hidden = false;
  setStatus(`${file.name} (${Math.round(file.size / 1024)} KiB)`);
  updateRun();
}

function options() {
  const task = $("task").value;
  const opts = { model: $("model").value, overlay: true, overlay_format: "jpeg" };
  const extras = {};
  if (task === "segment") {
    const scales = $("seg-scales").value.trim();
    if (scales) opts.scales = scales === "multi" ? "multi" : scales.split(",").map(Number);
    if ($("seg-flip").checked) opts.flip = true;
    opts.overlay_alpha = Number($("seg-alpha").value);
  } else if (task === "landmarks") {
    const faces = $("lm-faces").value.trim();
    if (faces) extras.faces = faces;
    if ($("lm-flip").checked) opts.flip = true;
  } else {
    const thr = $("det-threshold").value, max = $("det-max").value;
    const classes = $("det-classes").value.trim();
    if (thr !== "") opts.score_threshold = Number(thr);
    if (max !== "") opts.max_detections = Number(max);
    if (classes) opts.classes = classes.split(",").map((s) => s.trim()).filter(Boolean);
    if ($("det-flip").checked) opts.flip = true;
  }
  return { opts, extras };
}

async function run() {
  const task = $("task").value;
  const { opts, extras } = options();
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  form.append("options", JSON.stringify(opts));
  for (const [k, v] of Object.entries(extras)) form.append(k, v);
  $("run").disabled = true;
  document.body.dataset.result = "";
  setStatus(`Running ${task} with ${opts.model}...`);
  const t0 = performance.now();
  try {
    const r = await fetch(task, { method: "POST", body: form, headers: headers() });
    if (!r.ok) { setStatus(await errorText(r), true); return; }
    const body = await r.json();
    show(task, body, performance.now() - t0);
    setStatus(`Done in ${Math.round(performance.now() - t0)} ms.`);
  } catch (e) {
    setStatus(`Request failed: ${e}`, true);
  } finally {
    updateRun();
  }
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function table(head, rows) {
  const thead = $("table").tHead, tbody = $("table").tBodies[0];
  thead.innerHTML = ""; tbody.innerHTML = "";
  const hr = thead.insertRow();
  for (const h of head) { const th = document.createElement("th"); th.textContent = h; hr.appendChild(th); }
  for (const r of rows) {
    const tr = tbody.insertRow();
    r.forEach((v, i) => cell(tr, v, i > 0 && typeof v === "number" ? "num" : ""));
  }
}

function swatch(rgb, text) {
  const span = document.createElement("span");
  const box = document.createElement("span");
  box.className = "swatch";
  box.style.background = rgb ? `rgb(${rgb[0]},${rgb[1]},${rgb[2]})` : "transparent";
  span.appendChild(box);
  span.appendChild(document.createTextNode(text));
  return span;
}

function show(task, body, wallMs) {
  $("results").hidden = false;
  $("overlay").src = body.overlay ? `data:image/${body.overlay.format};base64,${body.overlay.data}` : state.imageUrl;
  const [w, h] = body.image_size;
  $("overlay-caption").textContent = `${body.model.name} on ${w}x${h}` +
    (body.random_init ? " — RANDOM WEIGHTS: meaningless results" : "");
  const model = state.models.find((m) => m.name === body.model.name) || {};
  if (task === "segment") {
    $("table-title").textContent = `Classes present (${body.classes.length}) — the legend`;
    table(["class", "id", "label id", "pixels", "share"], body.classes.map((c) => [
      swatch(model.palette ? model.palette[c.id] : null, c.name), c.id,
      c.label_id === null || c.label_id === undefined ? "" : c.label_id, c.pixels,
      `${(100 * c.fraction).toFixed(1)}%`]));
  } else if (task === "landmarks") {
    $("table-title").textContent = `Faces (${body.faces.length}), ${body.labels.length} landmarks each`;
    table(["face", "box sent", "mean peak", "first point"], body.faces.map((f) => [
      `face ${f.index}`, f.box ? f.box.map((v) => Math.round(v)).join(", ") : "whole image",
      f.mean_confidence.toFixed(3),
      `${body.labels[0]} (${f.landmarks[0][0].toFixed(1)}, ${f.landmarks[0][1].toFixed(1)})`]));
  } else {
    $("table-title").textContent = `Detections (${body.detections.length})`;
    table(["label", "score", "x, y, w, h"], body.detections.map((d) => [
      d.label, Number(d.score.toFixed(3)), d.bbox.map((v) => Math.round(v)).join(", ")]));
  }
  const tbody = $("timings").tBodies[0];
  tbody.innerHTML = "";
  const timings = Object.entries(body.timings_ms).concat([["round trip (browser)", wallMs]]);
  for (const [stage, ms] of timings) {
    const tr = tbody.insertRow();
    cell(tr, stage); cell(tr, ms.toFixed(1), "num");
  }
  const shown = JSON.parse(JSON.stringify(body));
  for (const k of ["overlay", "label_map", "confidence", "label_ids"]) {
    if (shown[k] && shown[k].data) shown[k].data = `<${shown[k].data.length} base64 characters>`;
  }
  $("json").textContent = JSON.stringify(shown, null, 2);
  document.body.dataset.result = task;
}

function init() {
  $("file").addEventListener("change", (e) => useFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    useFile(e.dataTransfer.files[0]);
  });
  $("task").addEventListener("change", fillModels);
  $("model").addEventListener("change", () => { updateBanner(); updateRun(); });
  $("api-key").addEventListener("change", loadModels);
  $("run").addEventListener("click", run);
  loadModels();
}

init();
