// Small helpers shared by the page's modules. Every piece of data (class names, layer names,
// messages, numbers) goes in as text, never as markup.

export const $ = (id) => document.getElementById(id);

export function el(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null) node.textContent = text;
  return node;
}

export async function api(path, body) {
  const res = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

// Four significant digits: enough to follow the arithmetic, short enough to read in a grid.
export function num(v) {
  if (v === null || v === undefined) return "";
  if (!Number.isFinite(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

// A number as shown on the page; data-key names its place in /api/unit's answer, and the
// title holds every digit.
export function numEl(v, key, className = "num") {
  const node = el("span", className, num(v));
  if (key) node.dataset.key = key;
  node.title = String(v);
  return node;
}

// A line of text and numbers: parts are strings or nodes.
export function line(className, ...parts) {
  const node = el("p", className);
  for (const part of parts) node.append(typeof part === "string" ? document.createTextNode(part) : part);
  return node;
}

// A picture (data URL) stretched over a box whose shape follows the map's (rows x cols), and
// outlines drawn over it in the map's own coordinates.
export function figure(src, rows, cols, caption, width = 112) {
  const box = el("figure", "fig");
  const frame = el("span", "frame");
  const height = Math.max(14, Math.min(2 * width, Math.round((width * rows) / cols)));
  frame.style.width = `${width}px`;
  frame.style.height = `${height}px`;
  const img = el("img");
  img.src = src; img.alt = caption;
  frame.appendChild(img);
  box.appendChild(frame);
  if (caption) box.appendChild(el("figcaption", "", caption));
  box.outline = (top, left, bottom, right, className = "outline") => {
    const o = el("span", className);
    const t = Math.max(top, 0), l = Math.max(left, 0);
    const b = Math.min(bottom, rows - 1), r = Math.min(right, cols - 1);
    o.style.top = `${(100 * t) / rows}%`;
    o.style.left = `${(100 * l) / cols}%`;
    o.style.height = `${(100 * (b - t + 1)) / rows}%`;
    o.style.width = `${(100 * (r - l + 1)) / cols}%`;
    frame.appendChild(o);
    return o;
  };
  return box;
}

// A matrix of numbers (rows of values) as a table; `cellClass(i, j)` may mark cells.
export function matrix(values, key, cellClass = () => "") {
  const table = el("table", "mat");
  values.forEach((row, i) => {
    const tr = el("tr");
    row.forEach((v, j) => {
      const td = el("td", cellClass(i, j));
      td.appendChild(numEl(v, key ? `${key}.${i}.${j}` : null, ""));
      tr.appendChild(td);
    });
    table.appendChild(tr);
  });
  return table;
}
