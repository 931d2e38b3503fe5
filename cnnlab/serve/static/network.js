// The network view: every layer in order as a column of units, coloured by activation.
// A layer with maps shows one picture per channel (a unit is a pixel of it); a layer without
// maps shows its strongest units as a column; the last column is the softmax over classes.
// Keyboard: one Tab stop per layer; arrow keys move the unit (past a map's edge to the next
// map or layer), Enter or Space explains it. A click explains the unit under the pointer.
import { api, el, num } from "./dom.js";

export function renderNetwork(root, acts, model) {
  const maps2d = new Map(acts.layers.map((l) => [l.name, l.maps]));
  root.replaceChildren();
  for (const entry of acts.network) {
    root.appendChild(layerColumn(entry, maps2d.get(entry.name) || entry.maps || null));
  }
  root.appendChild(softmaxColumn(acts.output, model));
  for (const col of root.querySelectorAll(".layer")) {
    const first = col.querySelector(".map, .unit");
    if (first) first.tabIndex = 0;
  }
}

export function sparsityLine(acts) {
  return acts.network.map((l) => `${l.name} ${Math.round(100 * l.sparsity)}%`).join(" → ");
}

function layerColumn(entry, maps) {
  const col = el("div", "layer" + (entry.block ? " block" : ""));
  col.dataset.layer = entry.name;
  col.append(el("h3", "", entry.name), el("p", "meta", `${entry.kind} · ${entry.shape.join("×")}`));
  col.appendChild(zeros(entry.sparsity));
  if (maps) {
    const grid = el("div", "maps");
    const [rows, cols] = entry.shape.length === 3 ? entry.shape.slice(1) : [1, entry.shape[1]];
    maps.forEach((src, channel) => grid.appendChild(mapCell(entry.name, channel, src, rows, cols)));
    col.appendChild(grid);
    if (entry.shape[0] > maps.length) col.appendChild(el("p", "hint", `first ${maps.length} of ${entry.shape[0]} maps`));
  } else {
    const list = el("div", "units");
    const peak = Math.max(1e-12, ...entry.units.map((u) => Math.abs(u.value)));
    for (const u of entry.units) list.appendChild(unitCell(entry.name, u.index, String(u.index), u.value, u.value / peak));
    col.appendChild(list);
    if (entry.shape[0] > entry.units.length) {
      col.appendChild(el("p", "hint", `the ${entry.units.length} strongest of ${entry.shape[0]}`));
    }
  }
  if (entry.block) {
    const toggle = el("button", "inside-toggle", "inside ▸");
    toggle.type = "button";
    toggle.setAttribute("aria-expanded", "false");
    col.appendChild(toggle);
  }
  return col;
}

function softmaxColumn(output, model) {
  const col = el("div", "layer softmax");
  col.dataset.layer = model.softmax_layer;
  col.append(el("h3", "", "softmax"), el("p", "meta", `probabilities · ${output.probabilities.length}`));
  const list = el("div", "units");
  output.probabilities.forEach((p, k) => list.appendChild(unitCell(model.softmax_layer, k, model.classes[k], p, p)));
  col.appendChild(list);
  return col;
}

function zeros(fraction) {
  const box = el("div", "zeros");
  box.dataset.sparsity = String(fraction);
  const track = el("span", "track");
  const fill = el("span", "fill");
  fill.style.width = `${(100 * fraction).toFixed(1)}%`;
  track.appendChild(fill);
  box.append(el("span", "", `zeros ${(100 * fraction).toFixed(0)}%`), track);
  box.title = "fraction of exactly-zero activations for this input";
  return box;
}

function mapCell(layer, channel, src, rows, cols) {
  const cell = el("div", "map");
  cell.tabIndex = -1;
  cell.setAttribute("role", "button");
  Object.assign(cell.dataset, { layer, channel, rows, cols, y: 0, x: 0, dims: rows === 1 && cols > 1 ? 1 : 2 });
  const img = el("img");
  img.src = src;
  img.alt = `${layer} channel ${channel}`;
  cell.title = `${layer} channel ${channel}`;
  cell.append(img, el("span", "cursor"));
  label(cell);
  return cell;
}

function unitCell(layer, index, text, value, strength) {
  const cell = el("div", "unit" + (Math.abs(strength) > 0.55 ? " strong" : ""));
  cell.tabIndex = -1;
  cell.setAttribute("role", "button");
  cell.dataset.layer = layer;
  cell.dataset.index = index;
  cell.append(el("span", "idx", text), el("span", "val", num(value)));
  const alpha = (Math.min(1, Math.abs(strength)) * 0.85).toFixed(3);
  cell.style.background = strength >= 0 ? `rgba(47, 111, 222, ${alpha})` : `rgba(214, 69, 65, ${alpha})`;
  cell.setAttribute("aria-label", `${layer} unit ${text}: ${num(value)}`);
  return cell;
}

function label(cell) {
  const { layer, channel, y, x, dims } = cell.dataset;
  const where = dims === "1" ? `x ${x}` : `y ${y}, x ${x}`;
  cell.setAttribute("aria-label", `${layer} channel ${channel}, unit at ${where}`);
}

function setCursor(cell, y, x) {
  cell.dataset.y = y;
  cell.dataset.x = x;
  const cursor = cell.querySelector(".cursor");
  const rows = +cell.dataset.rows, cols = +cell.dataset.cols;
  cursor.style.top = `${(100 * y) / rows}%`;
  cursor.style.left = `${(100 * x) / cols}%`;
  cursor.style.height = `${100 / rows}%`;
  cursor.style.width = `${100 / cols}%`;
  label(cell);
}

// The unit a cell stands for, as /api/unit's fields.
export function unitOf(cell) {
  const layer = cell.dataset.layer;
  if (cell.classList.contains("unit")) return { layer, index: +cell.dataset.index };
  const unit = { layer, channel: +cell.dataset.channel, x: +cell.dataset.x };
  if (cell.dataset.dims !== "1") unit.y = +cell.dataset.y;
  return unit;
}

// Mark the cell as the selected unit and its column's Tab stop.
function activate(root, cell, focus) {
  const col = cell.closest(".layer");
  for (const other of col.querySelectorAll(".map, .unit")) other.tabIndex = -1;
  cell.tabIndex = 0;
  for (const other of root.querySelectorAll(".selected")) other.classList.remove("selected");
  cell.classList.add("selected");
  if (focus) cell.focus();
}

// After a new input, show the same unit selected again (without taking the focus).
export function markSelected(root, sel) {
  if (!sel) return null;
  const col = [...root.querySelectorAll(".layer")].find((c) => c.dataset.layer === sel.layer);
  if (!col) return null;
  let cell;
  if (sel.index !== undefined) {
    cell = [...col.querySelectorAll(".unit")].find((c) => +c.dataset.index === sel.index);
  } else {
    cell = [...col.querySelectorAll(".map")].find((c) => +c.dataset.channel === sel.channel);
    if (cell) setCursor(cell, sel.y || 0, sel.x);
  }
  if (cell) activate(root, cell, false);
  return cell || null;
}

function neighbourLayer(cell, step) {
  const cols = [...cell.closest("#network").querySelectorAll(".layer")];
  const next = cols[cols.indexOf(cell.closest(".layer")) + step];
  return next ? next.querySelector('[tabindex="0"]') || next.querySelector(".map, .unit") : null;
}

export function wireNetwork(root, choose, openInside) {
  const pick = (cell, delay) => { activate(root, cell, true); choose(unitOf(cell), delay); };
  root.addEventListener("click", (e) => {
    const toggle = e.target.closest(".inside-toggle");
    if (toggle) { openInside(toggle.closest(".layer"), toggle); return; }
    const cell = e.target.closest(".layer .map, .layer .unit");
    if (!cell || cell.closest(".inside")) return;
    if (cell.classList.contains("map")) {
      const r = cell.querySelector("img").getBoundingClientRect();
      const rows = +cell.dataset.rows, cols = +cell.dataset.cols;
      const y = Math.min(rows - 1, Math.max(0, Math.floor(((e.clientY - r.top) / r.height) * rows)));
      const x = Math.min(cols - 1, Math.max(0, Math.floor(((e.clientX - r.left) / r.width) * cols)));
      setCursor(cell, y, x);
    }
    pick(cell, 0);
  });
  root.addEventListener("keydown", (e) => {
    const cell = e.target.closest(".map, .unit");
    if (!cell || cell.closest(".inside")) return;
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(cell, 0); return; }
    if (!e.key.startsWith("Arrow")) return;
    e.preventDefault();
    const target = move(cell, e.key);
    if (target) pick(target, 150);
  });
}

// Where an arrow key goes from a cell: within a map, to the next map at its edge, to the
// next layer at the side.
function move(cell, key) {
  if (cell.classList.contains("unit")) {
    if (key === "ArrowUp") return cell.previousElementSibling;
    if (key === "ArrowDown") return cell.nextElementSibling;
    return neighbourLayer(cell, key === "ArrowLeft" ? -1 : 1);
  }
  let y = +cell.dataset.y, x = +cell.dataset.x;
  const rows = +cell.dataset.rows, cols = +cell.dataset.cols;
  if (key === "ArrowLeft" && x === 0) return neighbourLayer(cell, -1);
  if (key === "ArrowRight" && x === cols - 1) return neighbourLayer(cell, 1);
  if ((key === "ArrowUp" && y === 0) || (key === "ArrowDown" && y === rows - 1)) {
    const next = key === "ArrowUp" ? cell.previousElementSibling : cell.nextElementSibling;
    if (next) setCursor(next, key === "ArrowUp" ? rows - 1 : 0, x);
    return next;
  }
  if (key === "ArrowLeft") x -= 1;
  if (key === "ArrowRight") x += 1;
  if (key === "ArrowUp") y -= 1;
  if (key === "ArrowDown") y += 1;
  setCursor(cell, y, x);
  return cell;
}

// A block's inside: the output of each module in it, fetched when asked for.
export async function toggleInside(col, toggle, image) {
  const open = col.nextElementSibling && col.nextElementSibling.classList.contains("inside") ? col.nextElementSibling : null;
  if (open) {
    open.remove();
    toggle.setAttribute("aria-expanded", "false");
    toggle.textContent = "inside ▸";
    return;
  }
  const d = await api("/api/inside", { image, layer: col.dataset.layer });
  const box = el("div", "inside");
  box.dataset.layer = d.layer;
  box.appendChild(el("p", "hint", `inside ${d.layer}: ${d.count} modules${d.count > d.modules.length ? `, first ${d.modules.length} shown` : ""}`));
  const row = el("div", "inside-row");
  for (const m of d.modules) {
    const sub = el("div", "sub");
    sub.append(el("h4", "", m.name), el("p", "meta", `${m.type} · ${m.shape.join("×")}`), zeros(m.sparsity));
    if (m.maps) {
      const grid = el("div", "maps");
      m.maps.forEach((src, c) => { const img = el("img"); img.src = src; img.alt = `${m.name} channel ${c}`; grid.appendChild(img); });
      sub.appendChild(grid);
    } else {
      sub.appendChild(el("p", "meta", m.units.map((u) => `${u.index}: ${num(u.value)}`).join(", ")));
    }
    row.appendChild(sub);
  }
  box.appendChild(row);
  col.after(box);
  toggle.setAttribute("aria-expanded", "true");
  toggle.textContent = "inside ▾";
}
