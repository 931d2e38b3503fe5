// The cnnlab page: draw or drop an image, see the prediction, every layer of the network,
// and the arithmetic of any unit with the model's own numbers.
import { $, api, el } from "./dom.js";
import { markSelected, renderNetwork, sparsityLine, toggleInside, wireNetwork } from "./network.js";
import { renderUnit } from "./unit.js";

const pad = $("pad");
const ctx = pad.getContext("2d");
// What the page shows now; window.cnnlab lets the page's tests read it.
const state = { model: null, image: null, acts: null, selected: null, shapes: {}, unitAsked: 0, inspected: null };
window.cnnlab = state;
let drawing = false;
let last = null;
let pending = null;
let unitTimer = null;

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function showError(message) { $("error").textContent = message || ""; }

function strokeWidth() {
  // about 2.5 input pixels wide, as MNIST's pen strokes are on a 28x28 grid
  const side = state.model ? state.model.input_shape[1] : 28;
  return Math.max(4, Math.round((pad.width / side) * 2.5));
}

function point(event) {
  const r = pad.getBoundingClientRect();
  return { x: (event.clientX - r.left) * (pad.width / r.width), y: (event.clientY - r.top) * (pad.height / r.height) };
}

pad.addEventListener("pointerdown", (e) => {
  drawing = true; last = point(e); pad.setPointerCapture(e.pointerId);
  ctx.beginPath(); ctx.arc(last.x, last.y, strokeWidth() / 2, 0, 2 * Math.PI); ctx.fillStyle = "#000"; ctx.fill();
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const p = point(e);
  ctx.strokeStyle = "#000"; ctx.lineWidth = strokeWidth(); ctx.lineCap = "round"; ctx.lineJoin = "round";
  ctx.beginPath(); ctx.moveTo(last.x, last.y); ctx.lineTo(p.x, p.y); ctx.stroke();
  last = p;
  schedule(250);
});
const stop = () => { if (drawing) { drawing = false; schedule(0); } };
pad.addEventListener("pointerup", stop);
pad.addEventListener("pointercancel", stop);

const UNIT_HINT = "Click any unit in the network (or Tab to a layer, move with the arrow keys, press Enter) to see how its value is computed.";

$("clear").addEventListener("click", () => {
  clearPad(); $("bars").replaceChildren(); $("network").replaceChildren(); $("seen").removeAttribute("src");
  $("sparsity").textContent = "";
  $("detail").replaceChildren(el("p", "hint", "Click a feature map to see its kernel and the saliency of the input."));
  $("unit").replaceChildren(el("p", "hint", UNIT_HINT));
  state.image = null; state.selected = null; state.inspected = null;
});

function loadFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    const img = new Image();
    img.onload = () => {
      clearPad();
      const s = Math.min(pad.width / img.width, pad.height / img.height);
      ctx.drawImage(img, (pad.width - img.width * s) / 2, (pad.height - img.height * s) / 2, img.width * s, img.height * s);
      send(reader.result);
    };
    img.src = reader.result;
  };
  reader.readAsDataURL(file);
}
$("file").addEventListener("change", (e) => loadFile(e.target.files[0]));
pad.addEventListener("dragover", (e) => e.preventDefault());
pad.addEventListener("drop", (e) => { e.preventDefault(); loadFile(e.dataTransfer.files[0]); });

function schedule(delay) {
  clearTimeout(pending);
  pending = setTimeout(() => send(pad.toDataURL("image/png")), delay);
}

async function send(dataUrl) {
  state.image = dataUrl;
  try {
    const [pred, acts] = await Promise.all([
      api("/api/predict", { image: dataUrl, top_k: state.model ? state.model.classes.length : 10 }),
      api("/api/activations", { image: dataUrl }),
    ]);
    if (dataUrl !== state.image) return;  // a newer stroke is on its way
    showError("");
    state.acts = acts;
    for (const l of acts.network) state.shapes[l.name] = l.shape;
    renderBars(pred.top);
    $("seen").src = pred.input;
    renderNetwork($("network"), acts, state.model);
    state.shown = dataUrl;  // the image the network view shows
    $("sparsity").textContent = `Zeros (exactly 0) by layer: ${sparsityLine(acts)}`;
    if (markSelected($("network"), state.selected)) explain(state.selected, 0, false);
    refreshAttribution();
  } catch (err) { showError(err.message); }
}

function renderBars(top) {
  const bars = $("bars");
  bars.replaceChildren();
  top.forEach((t, i) => {
    const row = el("div", "bar" + (i === 0 ? " top" : ""));
    row.setAttribute("role", "listitem");
    row.dataset.cls = t.class;
    const fill = el("div", "fill");
    fill.style.width = `${(100 * t.probability).toFixed(1)}%`;
    const track = el("span", "track");
    track.appendChild(fill);
    row.append(el("span", "label", t.class), track, el("span", "pct", `${(100 * t.probability).toFixed(1)}%`));
    bars.appendChild(row);
  });
}

// Ask for a unit's arithmetic; the last one asked is the one shown.
// `reveal`: scroll to the answer if it is out of sight (a click or Enter, not a new stroke).
function explain(unit, delay, reveal = delay === 0) {
  state.selected = unit;
  clearTimeout(unitTimer);
  unitTimer = setTimeout(async () => {
    const asked = ++state.unitAsked;
    try {
      const d = await api("/api/unit", { image: state.image, ...unit });
      if (asked !== state.unitAsked) return;
      showError("");
      state.unit = d;
      renderUnit($("unit"), d, state);
      const panel = $("unit-panel");
      if (reveal && panel.getBoundingClientRect().top > window.innerHeight - 60) panel.scrollIntoView();
      if (unit.channel !== undefined) inspect(unit.layer, unit.channel);
      refreshAttribution();
    } catch (err) { showError(err.message); }
  }, delay);
}

// The kernel of a map's channel and the saliency of the input (once per layer and channel).
async function inspect(layer, channel) {
  const key = `${state.image}|${layer}|${channel}`;
  if (state.inspected === key) return;
  state.inspected = key;
  try {
    const d = await api("/api/inspect", { image: state.image, layer, channel });
    const box = $("detail");
    box.replaceChildren();
    box.appendChild(el("p", "", d.kernel_layer
      ? `${layer} channel ${channel} comes from kernel ${channel} of ${d.kernel_layer}:`
      : `${layer} channel ${channel} is not the output of one kernel.`));
    for (const src of d.kernel || []) {
      const k = el("img", "kernel"); k.src = src; k.alt = "kernel"; box.appendChild(k);
    }
    box.appendChild(el("p", "", `Saliency of class ${d.class} (SmoothGrad) over the input:`));
    box.appendChild(overlay(d.input, d.saliency, "saliency"));
  } catch (err) { showError(err.message); }
}

function overlay(input, heatSrc, alt) {
  const span = el("span", "overlay");
  const base = el("img"); base.src = input; base.alt = "input";
  const heat = el("img", "heat"); heat.src = heatSrc; heat.alt = alt;
  span.append(base, heat);
  return span;
}

// ---- Attribution methods (POST /api/attribute). The picker appears when /api/model lists
// "attribution_methods"; the class is the selected softmax unit's (else the prediction's),
// and Grad-CAM's layer the selected unit's layer when it has maps.
function setupAttribution() {
  const methods = state.model.attribution_methods;
  if (!Array.isArray(methods) || !methods.length) return;
  const select = $("attr-method");
  for (const m of methods) { const o = el("option", "", m); o.value = m; select.appendChild(o); }
  select.addEventListener("change", refreshAttribution);
  $("attribution").hidden = false;
}

async function refreshAttribution() {
  if ($("attribution").hidden || !state.image) return;
  const body = { image: state.image, method: $("attr-method").value };
  const sel = state.selected;
  if (sel && sel.layer === state.model.softmax_layer) body.class = sel.index;
  if (body.method === "gradcam" && sel && sel.channel !== undefined) body.layer = sel.layer;
  const asked = (state.attributionAsked = (state.attributionAsked || 0) + 1);
  try {
    const d = await api("/api/attribute", body);
    if (asked !== state.attributionAsked) return;
    const box = $("attr-result");
    box.replaceChildren(el("p", "", `${d.method} for class ${d.class}:`), overlay(state.acts ? state.acts.input : $("seen").src, d.map, d.method));
  } catch (err) { showError(err.message); }
}

async function init() {
  clearPad();
  try {
    state.model = await api("/api/model");
  } catch (err) { showError(err.message); return; }
  const model = state.model;
  state.shapes.input = model.input_shape;
  $("model-name").textContent = model.name;
  $("model-line").textContent =
    `input ${model.input_shape.join("x")}, ${model.classes.length} classes, ` +
    `${model.summary.totals.params.toLocaleString()} parameters`;
  const kernels = $("first-kernels");
  if (model.first_layer) {
    kernels.appendChild(el("h3", "", `first-layer kernels (${model.first_layer})`));
    for (const src of model.kernels) { const k = el("img"); k.src = src; k.alt = "kernel"; kernels.appendChild(k); }
  }
  const table = $("summary");
  const row = (cell, values) => {
    const tr = el("tr");
    tr.append(...values.map((v) => el(cell, "", v)));
    table.appendChild(tr);
  };
  row("th", ["layer", "output", "params"]);
  for (const l of model.summary.layers) row("td", [l.layer, l.output.join("x"), l.params.toLocaleString()]);
  $("unit").replaceChildren(el("p", "hint", UNIT_HINT));
  wireNetwork($("network"), explain, (col, toggle) => toggleInside(col, toggle, state.image).catch((err) => showError(err.message)));
  setupAttribution();
}
init();
