// The cnnlab page: draw or drop an image, see the prediction and every layer's feature maps.
"use strict";
const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
let model = null;
let drawing = false;
let last = null;
let pending = null;
let currentImage = null;  // data URL of what was last sent

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function showError(message) { $("error").textContent = message || ""; }

// Every piece of data (class names, layer names, messages) goes in as text, never as markup.
function el(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null) node.textContent = text;
  return node;
}

async function api(path, body) {
  const res = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function strokeWidth() {
  // about 2.5 input pixels wide, as MNIST's pen strokes are on a 28x28 grid
  const side = model ? model.input_shape[1] : 28;
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

$("clear").addEventListener("click", () => {
  clearPad(); $("bars").replaceChildren(); $("layers").replaceChildren(); $("seen").removeAttribute("src");
  $("detail").replaceChildren(el("p", "hint", "Click a feature map to see its kernel and the saliency of the input."));
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
  currentImage = dataUrl;
  try {
    const [pred, acts] = await Promise.all([
      api("/api/predict", { image: dataUrl, top_k: model ? model.classes.length : 10 }),
      api("/api/activations", { image: dataUrl }),
    ]);
    if (dataUrl !== currentImage) return;  // a newer stroke is on its way
    showError("");
    renderBars(pred.top);
    $("seen").src = pred.input;
    renderLayers(acts.layers);
  } catch (err) { showError(err.message); }
}

function renderBars(top) {
  const bars = $("bars");
  bars.replaceChildren();
  top.forEach((t, i) => {
    const row = document.createElement("div");
    row.className = "bar" + (i === 0 ? " top" : "");
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

function renderLayers(layers) {
  const root = $("layers");
  root.replaceChildren();
  for (const layer of layers) {
    const box = document.createElement("div");
    box.className = "layer";
    const title = document.createElement("h3");
    const more = layer.shape[0] > layer.maps.length ? ` (first ${layer.maps.length} shown)` : "";
    title.textContent = `${layer.name} - ${layer.kind} - ${layer.shape.join("x")}${more}`;
    const maps = document.createElement("div");
    maps.className = "maps";
    layer.maps.forEach((src, channel) => {
      const img = document.createElement("img");
      img.src = src; img.alt = `${layer.name} channel ${channel}`; img.title = `${layer.name} channel ${channel}`;
      img.addEventListener("click", () => inspect(layer.name, channel, img));
      maps.appendChild(img);
    });
    box.append(title, maps);
    root.appendChild(box);
  }
}

async function inspect(layer, channel, img) {
  document.querySelectorAll(".maps img.selected").forEach((el) => el.classList.remove("selected"));
  img.classList.add("selected");
  try {
    const d = await api("/api/inspect", { image: currentImage, layer, channel });
    const box = $("detail");
    box.replaceChildren();
    const head = document.createElement("p");
    head.textContent = d.kernel_layer
      ? `${layer} channel ${channel} comes from kernel ${channel} of ${d.kernel_layer}:`
      : `${layer} channel ${channel} is not the output of one kernel.`;
    box.appendChild(head);
    for (const src of d.kernel || []) {
      const k = document.createElement("img"); k.src = src; k.alt = "kernel"; k.className = "kernel"; box.appendChild(k);
    }
    const sal = document.createElement("p");
    sal.textContent = `Saliency of class ${d.class} (SmoothGrad) over the input:`;
    const overlay = el("span", "overlay");
    const input = el("img");
    input.src = d.input; input.alt = "input";
    const heat = el("img", "heat");
    heat.src = d.saliency; heat.alt = "saliency";
    overlay.append(input, heat);
    box.append(sal, overlay);
  } catch (err) { showError(err.message); }
}

async function init() {
  clearPad();
  try {
    model = await api("/api/model");
  } catch (err) { showError(err.message); return; }
  $("model-name").textContent = model.name;
  $("model-line").textContent =
    `input ${model.input_shape.join("x")}, ${model.classes.length} classes, ` +
    `${model.summary.totals.params.toLocaleString()} parameters`;
  const kernels = $("first-kernels");
  if (model.first_layer) {
    const h = document.createElement("h3"); h.textContent = `first-layer kernels (${model.first_layer})`;
    kernels.appendChild(h);
    for (const src of model.kernels) { const k = document.createElement("img"); k.src = src; k.alt = "kernel"; kernels.appendChild(k); }
  }
  const table = $("summary");
  const row = (cell, values) => {
    const tr = el("tr");
    tr.append(...values.map((v) => el(cell, "", v)));
    table.appendChild(tr);
  };
  row("th", ["layer", "output", "params"]);
  for (const l of model.summary.layers) row("td", [l.layer, l.output.join("x"), l.params.toLocaleString()]);
}
init();
