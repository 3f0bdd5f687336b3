// zoo serve's page: the table of models at /, a model's card, proof, plots and "try it" at /models/NAME.
// No build step and nothing fetched from elsewhere: this file, style.css and index.html ship in the package.
"use strict";

const main = document.getElementById("main");
window.zooTimings = []; // milliseconds from the end of a stroke (or a file chosen) to its answer drawn

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

const percent = (x) => (x == null ? "" : `${(100 * x).toFixed(2)}%`);
const shape = (s) => s.join("x");

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function accuracy(model) {
  if (model.weights) return [model.weights.accuracy, model.weights.dataset];
  if (model.run) return [model.run.test_accuracy, model.card.dataset];
  return [null, model.card.dataset];
}

async function catalogue() {
  const models = await getJSON("/zoo/models");
  document.title = "zoo serve";
  const rows = models.map((m) => {
    const [acc, data] = accuracy(m);
    return el("tr", {},
      el("td", {}, el("a", { href: `/models/${encodeURIComponent(m.name)}` }, m.name)),
      el("td", {}, m.card.architecture), el("td", {}, data || ""),
      el("td", { class: "num" }, percent(acc)), el("td", {}, shape(m.card.input_shape)),
      el("td", { class: "num" }, m.card.classes.length),
      el("td", {}, m.weights ? "published weights" : m.run ? "run" : "file"));
  });
  main.replaceChildren(
    el("h1", {}, "Models"),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["model", "architecture", "data set", "test accuracy", "input", "classes", "kind"]
        .map((h) => el("th", { scope: "col", class: ["test accuracy", "classes"].includes(h) ? "num" : "" }, h)))),
      el("tbody", {}, ...rows)));
}

function bars(list, result) {
  list.replaceChildren(...result.top.map(([name, p]) =>
    el("li", {}, el("span", { class: "mono" }, name),
      el("span", { class: "bar", style: `width: ${Math.max(1, 100 * p).toFixed(1)}%`, "aria-hidden": "true" }),
      el("span", { class: "num" }, `${(100 * p).toFixed(1)}%`))));
}

async function classify(name, blob, list, note, started) {
  const response = await fetch(`/v2/models/${encodeURIComponent(name)}/classify?top_k=5`, { method: "POST", body: blob });
  const result = await response.json();
  if (!response.ok) {
    note.textContent = result.error;
    note.className = "note error";
    return;
  }
  bars(list, result);
  note.className = "note";
  note.textContent = result.inverted ? "The image was inverted first: its background is the opposite of the training images'." : "";
  window.zooTimings.push(performance.now() - started);
}

function sketchpad(name, list, note) {
  const canvas = el("canvas", { width: 280, height: 280, role: "img", "aria-label": "Drawing area: draw a digit with mouse, pen or finger" });
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height); list.replaceChildren(); note.textContent = ""; };
  clear();
  let drawing = false, timer = null, last = null;
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  const send = () => {
    const started = performance.now();
    canvas.toBlob((blob) => classify(name, blob, list, note, started), "image/png");
  };
  const later = () => { clearTimeout(timer); timer = setTimeout(send, 100); }; // live while drawing, debounced
  canvas.addEventListener("pointerdown", (e) => { drawing = true; last = at(e); canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const point = at(e);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 22; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...point); ctx.stroke();
    last = point;
    later();
  });
  const end = () => { if (drawing) { drawing = false; clearTimeout(timer); send(); } };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  return el("div", { class: "pad" }, canvas, el("button", { type: "button", onclick: clear }, "Clear"));
}

function dropzone(name, list, note) {
  const input = el("input", { type: "file", id: "image", accept: "image/*" });
  const zone = el("div", { class: "drop" }, el("label", { for: "image" }, "Choose an image, or drop one here: "), input);
  const take = (file) => { if (file) classify(name, file, list, note, performance.now()); };
  input.addEventListener("change", () => take(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); take(e.dataTransfer.files[0]); });
  return zone;
}

function facts(model) {
  const c = model.card, [acc, data] = accuracy(model);
  const rows = [
    ["architecture", c.architecture], ["data set", data || "none recorded"], ["test accuracy", percent(acc)],
    ["classes", c.classes.join(", ")], ["input", `${shape(c.input_shape)}, normalised (x - mean) / std`],
    ["mean / std", `${c.mean.join(", ")} / ${c.std.join(", ")}`], ["served from", model.origin],
    ["sha256", model.sha256], ["provider", model.provider || ""], ["runtime", model.runtime || "onnxruntime"],
  ];
  if (model.weights) rows.push(["trained with", model.weights.command], ["recipe", model.weights.recipe]);
  if (c.config && c.config.architecture) rows.push(["settings", Object.entries(c.config).map(([k, v]) => `${k}=${v}`).join(" ")]);
  return el("table", {}, el("tbody", {}, ...rows.filter(([, v]) => v !== "").map(([k, v]) =>
    el("tr", {}, el("th", { scope: "row" }, k), el("td", { class: k === "sha256" || k === "trained with" ? "mono" : "" }, v)))));
}

function proof(model) {
  if (!model.proof || !model.proof.length) return [];
  const head = ["inputs", "batch", "max abs", "ulps", "top-1", "result"];
  return [el("h2", {}, "Proof"), el("p", { class: "note" }, "The ONNX file served, against the PyTorch model, as zoo export proved it:"),
    el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...model.proof.map((p) => el("tr", {}, el("td", {}, p.inputs), el("td", { class: "num" }, p.batch_size),
        el("td", { class: "num" }, p.max_abs.toExponential(2)), el("td", { class: "num" }, p.ulps.toFixed(1)),
        el("td", { class: "num" }, percent(p.top1_agreement)), el("td", {}, p.passed ? "ok" : "FAILED")))))];
}

async function modelPage(name) {
  const model = await getJSON(`/zoo/models/${encodeURIComponent(name)}`);
  document.title = `${model.name} · zoo serve`;
  const list = el("ol", { class: "bars", "aria-label": "Most likely classes" });
  const note = el("p", { class: "note", role: "status" });
  const grey = model.card.input_shape[0] === 1;
  const plots = model.plots.map((p) => el("img", { class: "plot", src: `/zoo/models/${encodeURIComponent(name)}/plots/${p}.png`, alt: `${p} of the run` }));
  main.replaceChildren(
    el("h1", {}, model.name),
    el("h2", {}, "Try it"),
    el("div", { class: "try" }, ...(grey ? [sketchpad(model.name, list, note)] : []), el("div", {}, dropzone(model.name, list, note), note), list),
    el("h2", {}, "Card"), facts(model), ...proof(model),
    ...(plots.length ? [el("h2", {}, "Training"), ...plots] : []));
}

const path = decodeURIComponent(location.pathname);
(path.startsWith("/models/") ? modelPage(path.slice("/models/".length)) : catalogue()).catch((error) => {
  main.replaceChildren(el("p", { class: "error" }, String(error.message || error)));
});
