// One unit's arithmetic, with the real numbers of /api/unit. Every number shown carries
// data-key, its place in that answer (e.g. "channels.0.window.2.3"), so a test can check
// the page against the API.
import { el, figure, line, matrix, num, numEl } from "./dom.js";

// A number that follows + or − in a formula: a negative one in parentheses.
function term(v, key) {
  if (v >= 0) return numEl(v, key);
  const span = el("span");
  span.append("(", numEl(v, key), ")");
  return span;
}

// (rows, cols) of a map of a layer of this shape: (C, H, W) -> H, W; (C, L) -> 1, L.
export function mapSize(shape) {
  if (!shape || shape.length < 2) return [1, 1];
  return shape.length === 3 ? [shape[1], shape[2]] : [1, shape[1]];
}

function where(d) {
  const p = d.position;
  if (d.kind === "softmax" && d.classes) return `class ${d.classes[p[0]]}`;
  if (p.length === 3) return `channel ${p[0]}, y ${p[1]}, x ${p[2]}`;
  if (p.length === 2) return `channel ${p[0]}, x ${p[1]}`;
  return `unit ${p[0]}`;
}

export function renderUnit(root, d, ctx) {
  stopSliding(root);
  root.replaceChildren();
  root.dataset.layer = d.layer;
  root.dataset.position = d.position.join(",");
  root.dataset.rule = d.rule;
  const title = d.layer === ctx.model.softmax_layer ? "softmax" : `${d.layer} (${d.kind})`;
  const head = el("h3", "unit-title");
  head.append(`${title}, ${where(d)} = `, numEl(d.value, "value", "num value"));
  root.append(head, line("hint", `It reads ${d.input_layer}. Hover a number for all its digits.`));
  const figs = el("div", "figs");
  figs.appendChild(inputFigure(d, ctx));
  if (d.map) {
    const [rows, cols] = mapSize(ctx.shapes[d.layer]);
    const f = figure(d.map, rows, cols, `${d.layer} channel ${d.position[0]}`);
    const y = d.position.length === 3 ? d.position[1] : 0, x = d.position[d.position.length - 1];
    f.outline(y, x, y, x, "outline here");
    figs.appendChild(f);
  }
  root.appendChild(figs);
  (RULES[d.rule] || valueOnly)(root, d, ctx);
  if (d.next) {
    root.appendChild(line("next", `Then ${d.next.layer} (${d.next.kind}) makes it `, numEl(d.next.value, "next.value"), "."));
  }
}

function inputFigure(d, ctx) {
  const [rows, cols] = mapSize(ctx.model.input_shape);
  const rf = d.receptive_field;
  const caption = rf
    ? `receptive field: rows ${rf.top}–${rf.bottom}, columns ${rf.left}–${rf.right} of the input`
    : "it reads only padding";
  const f = figure(d.input_image, rows, cols, caption);
  if (rf) f.outline(rf.top, rf.left, rf.bottom, rf.right);
  return f;
}

function windowFigure(d, ctx, channel, width = 72) {
  const src = d.previous_maps && d.previous_maps[String(channel)];
  if (!src) return null;
  const [rows, cols] = mapSize(ctx.shapes[d.input_layer]);
  const w = d.window;
  const f = figure(src, rows, cols, `${d.input_layer} ch ${channel}`, width);
  f.outline(w.top, w.left, w.top + w.dilation[0] * (w.size[0] - 1), w.left + w.dilation[1] * (w.size[1] - 1));
  return f;
}

function conv(root, d, ctx) {
  const w = d.window;
  const total = d.input_channels[1] - d.input_channels[0];
  const group = d.groups > 1 ? `, its group's channels ${d.input_channels[0]}–${d.input_channels[1] - 1}` : "";
  root.appendChild(line("", `The kernel lies on ${d.input_layer} at row ${w.top}, column ${w.left}` +
    ` (stride ${w.stride.join("×")}, padding ${w.padding.join("×")}, dilation ${w.dilation.join("×")}${group}).` +
    " Each channel: window × kernel, summed = its partial sum. Grey cells are padding (zeros)."));
  if (d.channels.length < total) {
    root.appendChild(line("hint", `The ${d.channels.length} channels with the largest partial sums of ${total} are shown.`));
  }
  const list = el("div", "channels scroll");
  d.channels.forEach((ch, i) => {
    const row = el("div", "channel-row");
    const f = windowFigure(d, ctx, ch.channel);
    if (f) row.appendChild(f);
    row.append(
      matrix(ch.window, `channels.${i}.window`, (r, q) => (d.inside[r][q] ? "" : "pad")),
      el("span", "op", "×"),
      matrix(ch.kernel, `channels.${i}.kernel`),
      el("span", "op", "→"),
      numEl(ch.partial, `channels.${i}.partial`, "num partial"),
    );
    list.appendChild(row);
  });
  root.appendChild(list);
  if (total > d.channels.length) {
    const all = el("p", "partials");
    all.append(`All ${total} partial sums: `);
    d.partials.slice(0, 256).forEach((p, i) => { all.append(numEl(p, `partials.${i}`), i + 1 < total ? ", " : ""); });
    root.appendChild(all);
  }
  root.appendChild(line("sum", `Sum of the ${total} partial sums + bias `, term(d.bias, "bias"),
    d.has_bias ? "" : " (none)", " = pre-activation ", numEl(d.pre_activation, "pre_activation"),
    "; the model computes ", numEl(d.value, "value"), "."));
  root.appendChild(slider(d, ctx));
}

function pool(root, d, ctx) {
  const row = el("div", "channel-row scroll");
  const f = d.inner ? null : windowFigure(d, ctx, d.channel);
  if (f) row.appendChild(f);
  if (d.values) {
    const hit = (r, q) => (!d.inside[r][q] ? "pad" : d.argmax && d.argmax[0] === r && d.argmax[1] === q ? "hit" : "");
    row.appendChild(matrix(d.values, "values", hit));
    if (d.probabilities) row.append(el("span", "op", "p:"), matrix(d.probabilities, "probabilities"));
  }
  root.appendChild(row);
  const w = d.window;
  root.appendChild(line("", `Window of ${w.size.join("×")} on channel ${d.channel} of ${d.inner || d.input_layer}` +
    ` at row ${w.top}, column ${w.left}${w.stride ? ` (stride ${w.stride.join("×")}, padding ${w.padding.join("×")})` : ""}.`));
  const rules = {
    max: () => line("sum", `max of the ${d.count} values inside the input = `, numEl(d.result, "result")),
    mean: () => line("sum", "sum ", numEl(d.sum, "sum"), ` / ${d.count} values inside the input (padding not counted) = `, numEl(d.result, "result")),
    sum: () => line("sum", "sum of the window (padding counts as 0) = ", numEl(d.result, "result")),
    stochastic: () => line("sum", "at test time Σ pᵢaᵢ with aᵢ = max(xᵢ, 0), pᵢ = aᵢ / Σa, Σa = ",
      numEl(d.sum, "sum"), ": ", numEl(d.result, "result")),
  };
  root.appendChild(rules[d.mode]());
}

const ACTIVATIONS = {
  relu: (d) => ["max(0, ", numEl(d.input, "input"), ") = ", numEl(d.value, "value")],
  leaky_relu: (d) => ["x if x > 0, else ", numEl(d.slope, "slope"), " × x; x = ", numEl(d.input, "input"), " → ", numEl(d.value, "value")],
  softplus: (d) => ["ln(1 + e^(βx)) / β with β = ", numEl(d.beta, "beta"), ", x = ", numEl(d.input, "input"), " → ", numEl(d.value, "value"),
    d.beta * d.input > d.threshold ? ` (βx is over ${num(d.threshold)}: x itself)` : ""],
  tanh: (d) => ["tanh(", numEl(d.input, "input"), ") = ", numEl(d.value, "value")],
  sigmoid: (d) => ["1 / (1 + e^(−", term(d.input, "input"), ")) = ", numEl(d.value, "value")],
  identity: (d) => ["dropout at test time passes its input on: ", numEl(d.input, "input"), " → ", numEl(d.value, "value")],
};

function activation(root, d) {
  root.appendChild(line("sum", ...ACTIVATIONS[d.rule](d)));
}

function batchnorm(root, d) {
  root.appendChild(line("", `γ × (x − μ) / √(σ² + ε) + β, with channel ${d.channel}'s running mean μ and variance σ² from training:`));
  root.appendChild(line("sum", numEl(d.gamma, "gamma"), " × (", numEl(d.input, "input"), " − ", term(d.mean, "mean"), ") / √(",
    numEl(d.var, "var"), " + ", numEl(d.eps, "eps"), ") + ", term(d.beta, "beta"), " = ", numEl(d.value, "value")));
}

function lrn(root, d) {
  const squares = el("span");
  d.neighbours.forEach((v, i) => squares.append(numEl(v, `neighbours.${i}`), i + 1 < d.neighbours.length ? ", " : ""));
  root.appendChild(line("", `x / (k + α/n × Σ a²)^β over channels ${d.channels[0]}–${d.channels[1] - 1}: a = `, squares));
  root.appendChild(line("sum", numEl(d.input, "input"), " / (", numEl(d.k, "k"), " + ", numEl(d.alpha, "alpha"), ` / ${d.size} × Σ a²)^`,
    numEl(d.beta, "beta"), " = ", numEl(d.value, "value")));
}

function channelPool(root, d) {
  const values = el("span");
  d.values.forEach((v, i) => values.append(numEl(v, `values.${i}`), i + 1 < d.values.length ? ", " : ""));
  root.appendChild(line("sum", `max over channels ${d.channels[0]}–${d.channels[1] - 1} of `, values, " = ", numEl(d.result, "result")));
}

function flatten(root, d) {
  root.appendChild(line("sum", `unit ${d.position[0]} is ${d.input_layer}[${d.source.join(", ")}] = `, numEl(d.input, "input")));
}

function dense(root, d) {
  const table = el("table", "contrib");
  const head = el("tr");
  for (const h of ["input", "activation", "weight", "product"]) head.appendChild(el("th", "", h));
  table.appendChild(head);
  d.top.forEach((t, i) => {
    const tr = el("tr");
    tr.appendChild(el("td", "", `${d.input_layer}[${t.position.join(", ")}]`));
    for (const k of ["activation", "weight", "product"]) { const td = el("td"); td.appendChild(numEl(t[k], `top.${i}.${k}`)); tr.appendChild(td); }
    table.appendChild(tr);
  });
  const extra = (text, v, key) => {
    const tr = el("tr", "extra");
    tr.append(el("td", "", text), el("td"), el("td"));
    const td = el("td"); td.appendChild(numEl(v, key)); tr.appendChild(td);
    table.appendChild(tr);
  };
  extra(`${d.others.count} other inputs`, d.others.sum, "others.sum");
  extra(d.has_bias ? "bias" : "bias (none)", d.bias, "bias");
  extra("total", d.total, "total");
  root.appendChild(line("", `The ${d.top.length} largest contributions (activation × weight) of ${d.top.length + d.others.count} inputs:`));
  const box = el("div", "scroll");
  box.appendChild(table);
  root.appendChild(box);
}

function softmax(root, d) {
  const names = d.classes || d.logits.map((_, i) => `channel ${i}`);
  const table = el("table", "contrib");
  const head = el("tr");
  for (const h of [d.classes ? "class" : "channel", "logit z", "e^(z − max z)", "probability"]) head.appendChild(el("th", "", h));
  table.appendChild(head);
  const order = d.logits.map((_, i) => i);
  const shown = order.length <= 20 ? order : [...order].sort((a, b) => d.logits[b] - d.logits[a]).slice(0, 20);
  if (!shown.includes(d.chosen)) shown.push(d.chosen);
  for (const i of shown) {
    const tr = el("tr", i === d.chosen ? "chosen" : "");
    tr.appendChild(el("td", "label", names[i]));
    for (const k of ["logits", "exps", "probabilities"]) { const td = el("td"); td.appendChild(numEl(d[k][i], `${k}.${i}`)); tr.appendChild(td); }
    table.appendChild(tr);
  }
  const box = el("div", "scroll");
  box.appendChild(table);
  root.appendChild(box);
  root.appendChild(line("sum", "max z = ", numEl(d.shift, "shift"), "; Σ e^(z − max z) = ", numEl(d.sum, "sum"),
    `; ${d.rule === "log_softmax" ? "ln " : ""}p = e / Σ = `, numEl(d.result, "result")));
}

function residual(root, d) {
  root.appendChild(line("sum", "relu(body ", numEl(d.body, "body"), " + shortcut ", term(d.shortcut, "shortcut"), ") = relu(",
    numEl(d.sum, "sum"), ") = ", numEl(d.value, "value")));
  root.appendChild(line("hint", "Open “inside” under the block in the network view for its layers."));
}

function concat(root, d) {
  root.appendChild(line("sum", `Channel ${d.position[0]} is channel ${d.branch_channel} of branch ${d.branch + 1}` +
    ` (the branches give ${d.branches.join(" + ")} channels): `, numEl(d.value, "value")));
}

function denseBlock(root, d) {
  const s = d.source;
  const text = s.from === "input"
    ? `Channel ${d.position[0]} is the block's input channel ${s.channel}, passed on unchanged: `
    : `Channel ${d.position[0]} is new: channel ${s.channel} made by the block's ${s.from}: `;
  root.appendChild(line("sum", text, numEl(d.value, "value")));
}

function valueOnly(root, d) {
  root.appendChild(line("sum", "value ", numEl(d.value, "value")));
}

const RULES = {
  conv, pool, batchnorm, lrn, dense, softmax, log_softmax: softmax, residual, concat,
  channel_pool: channelPool, flatten, dense_block: denseBlock,
  relu: activation, leaky_relu: activation, softplus: activation, tanh: activation,
  sigmoid: activation, identity: activation,
};

// The kernel sliding over one input channel (the first shown), and the output map filling in.
function slider(d, ctx) {
  const box = el("div", "slider");
  const first = d.channels[0];
  const prevSrc = first && d.previous_maps[String(first.channel)];
  if (!prevSrc || !d.map) return box;
  const [inRows, inCols] = mapSize(ctx.shapes[d.input_layer]);
  const [outRows, outCols] = mapSize(ctx.shapes[d.layer]);
  const w = d.window;
  const scaleIn = Math.max(1, Math.floor(160 / Math.max(inRows, inCols)));
  const scaleOut = Math.max(1, Math.floor(160 / Math.max(outRows, outCols)));
  const left = el("canvas"), right = el("canvas");
  left.width = inCols * scaleIn; left.height = Math.max(inRows * scaleIn, 8);
  right.width = outCols * scaleOut; right.height = Math.max(outRows * scaleOut, 8);
  left.setAttribute("aria-label", `${d.input_layer} channel ${first.channel} with the kernel's window`);
  right.setAttribute("aria-label", `${d.layer} channel ${d.position[0]} filling in`);
  const button = el("button", "", "Slide the kernel");
  button.type = "button";
  box.append(line("hint", `The kernel over ${d.input_layer} channel ${first.channel}, one output at a time:`), left, right, button);
  const prevImg = new Image(), outImg = new Image();
  prevImg.src = prevSrc; outImg.src = d.map;
  const here = [d.position.length === 3 ? d.position[1] : 0, d.position[d.position.length - 1]];
  const span = [w.dilation[0] * (w.size[0] - 1) + 1, w.dilation[1] * (w.size[1] - 1) + 1];
  const top0 = w.top - here[0] * w.stride[0], left0 = w.left - here[1] * w.stride[1];
  const draw = (oy, ox, filled) => {
    const a = left.getContext("2d"), b = right.getContext("2d");
    a.imageSmoothingEnabled = b.imageSmoothingEnabled = false;
    a.clearRect(0, 0, left.width, left.height);
    a.drawImage(prevImg, 0, 0, left.width, left.height);
    a.strokeStyle = "#e5484d"; a.lineWidth = 2;
    a.strokeRect((left0 + ox * w.stride[1]) * scaleIn, (top0 + oy * w.stride[0]) * scaleIn, span[1] * scaleIn, span[0] * scaleIn);
    b.fillStyle = "#eef0f4"; b.fillRect(0, 0, right.width, right.height);
    const rowsDone = Math.floor(filled / outCols), rest = filled % outCols;
    const sx = outImg.width / outCols, sy = outImg.height / outRows;
    if (rowsDone) b.drawImage(outImg, 0, 0, outImg.width, rowsDone * sy, 0, 0, right.width, rowsDone * scaleOut);
    if (rest) b.drawImage(outImg, 0, rowsDone * sy, rest * sx, sy, 0, rowsDone * scaleOut, rest * scaleOut, scaleOut);
    b.strokeStyle = "#e5484d"; b.lineWidth = 2;
    b.strokeRect(ox * scaleOut, oy * scaleOut, scaleOut, scaleOut);
  };
  const still = () => draw(here[0], here[1], outRows * outCols);
  let ready = 0;
  prevImg.onload = outImg.onload = () => { if (++ready === 2) still(); };
  const total = outRows * outCols, perTick = Math.max(1, Math.ceil(total / 150));
  button.addEventListener("click", () => {
    if (box.timer) { stopSliding(box.parentElement); still(); return; }
    let k = 0;
    button.textContent = "Stop";
    box.timer = setInterval(() => {
      k = Math.min(total, k + perTick);
      draw(Math.floor((k - 1) / outCols), (k - 1) % outCols, k);
      if (k >= total) { stopSliding(box.parentElement); still(); }
    }, 40);
  });
  box.stop = () => { clearInterval(box.timer); box.timer = null; button.textContent = "Slide the kernel"; };
  return box;
}

function stopSliding(root) {
  if (!root) return;
  for (const s of root.querySelectorAll(".slider")) if (s.stop) s.stop();
}
