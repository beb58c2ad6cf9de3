// The page's only script: choose an image, send taps, draw the answer and its figures.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  session: null, width: 0, height: 0, limits: null, busy: false, prepared: null, trace: null, maskImage: null,
};
// One hue per family of stages, lighter for coarser strides (like the paper's Figure 2 layers).
const HUES = { backbone: 210, fpn: 130, heads: 30, mask_branch: 290 };

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: described by the status below
  }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `the server answered ${response.status} ${response.statusText}`);
  }
  return body;
}

function say(text, kind = "info") {
  $("message").textContent = text;
  $("message").dataset.kind = kind;
}

function setBusy(busy) {
  state.busy = busy;
  document.body.dataset.busy = String(busy);
}

const gmac = (macs) => (macs >= 1e9 ? `${(macs / 1e9).toFixed(2)} GMAC` : `${(macs / 1e6).toFixed(1)} MMAC`);
const ms = (seconds) => `${Math.round(seconds * 1000)} ms`;
const mib = (bytes) => (bytes / 2 ** 20).toFixed(1);

async function init() {
  $("viewer").addEventListener("click", onTap);
  $("upload").addEventListener("change", onUpload);
  $("show-regions").addEventListener("change", () => {
    $("stages").hidden = !$("show-regions").checked || !state.trace;
    redraw();
  });
  $("stage-list").addEventListener("change", redraw);
  try {
    const info = await api("/api/info");
    state.limits = info.limits;
    const m = info.model;
    const size = m.min_size === m.max_size
      ? `${m.max_size} px on the long side`
      : `${m.min_size} px on the short side, at most ${m.max_size} px on the long side`;
    $("model").textContent = `Model: ${m.backbone} (${m.source}); it sees photos resized to ${size}.`;
    if (info.warning) {
      $("warning").textContent = info.warning;
      $("warning").hidden = false;
    }
    for (const example of info.examples) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = example.title;
      button.dataset.example = example.name;
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () =>
        openSession(`/api/sessions?example=${encodeURIComponent(example.name)}`, { method: "POST" },
          `Photo: ${example.title}, ${example.credit}.`, button));
      $("examples").append(button);
    }
    say("Pick an example or upload a photo, then tap an object.");
  } catch (err) {
    say(`The server is not answering: ${err.message}`, "error");
  }
}

function onUpload(event) {
  const file = event.target.files[0];
  event.target.value = ""; // choosing the same file again still triggers a change
  if (!file) return;
  if (file.size > state.limits.max_bytes) {
    say(`${file.name} is ${mib(file.size)} MiB, over the ${mib(state.limits.max_bytes)} MiB limit; choose a smaller photo.`, "error");
    return;
  }
  openSession("/api/sessions", { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } },
    `Your photo: ${file.name}.`, null);
}

async function openSession(url, options, credit, button) {
  if (state.busy) return;
  setBusy(true);
  say("Loading the image…");
  try {
    const opened = await api(url, options);
    await showPhoto(`/api/sessions/${opened.session}/image`);
    Object.assign(state, {
      session: opened.session, width: opened.width, height: opened.height, prepared: opened.prepared,
    });
    const overlay = $("overlay");
    overlay.width = opened.width;
    overlay.height = opened.height;
    resetFigures();
    $("prepared").hidden = !opened.prepared;
    if (opened.prepared) {
      $("prepared").textContent = `Prepared when the image was opened: ${gmac(opened.prepared.macs)} in ` +
        `${ms(opened.prepared.seconds)} (the backbone every tap needs whole), so taps only compute their own windows.`;
    }
    for (const b of $("examples").children) b.setAttribute("aria-pressed", String(b === button));
    $("credit").textContent = credit;
    say(`${opened.width}×${opened.height} image ready: tap an object.`);
  } catch (err) {
    say(err.message, "error");
  } finally {
    setBusy(false);
  }
}

function showPhoto(src) {
  return new Promise((resolve, reject) => {
    const photo = $("photo");
    photo.onload = () => resolve();
    photo.onerror = () => reject(new Error("the image could not be shown; pick it again"));
    photo.src = src;
  });
}

function resetFigures() {
  for (const mode of ["trace", "full"]) {
    for (const key of ["score", "level", "macs", "seconds", "roundtrip"]) $(`${mode}-${key}`).textContent = "–";
  }
  $("ratio").textContent = "";
  $("session-note").textContent = "";
  delete $("session-note").dataset.cheaper;
  delete $("figures").dataset.tap;
  delete $("figures").dataset.fullTap;
  delete $("figures").dataset.maskPixels;
  state.trace = state.maskImage = null;
  $("stage-list").replaceChildren();
  $("stages").hidden = true;
  redraw();
}

async function onTap(event) {
  if (!state.session) {
    say("Pick an example or upload a photo first.", "error");
    return;
  }
  if (state.busy) {
    say("Still working on the previous tap…");
    return;
  }
  const rect = $("photo").getBoundingClientRect();
  const x = ((event.clientX - rect.left) * state.width) / rect.width;
  const y = ((event.clientY - rect.top) * state.height) / rect.height;
  setBusy(true);
  say("Segmenting…");
  try {
    const trace = await timed(() => api(`/api/sessions/${state.session}/taps`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ x, y }),
    }));
    state.maskImage = await loadImage(trace.mask);
    state.trace = trace;
    listStages(trace.regions);
    redraw();
    showFigures("trace", trace);
    showSession(trace);
    $("figures").dataset.maskPixels = String(trace.mask_pixels);
    $("figures").dataset.tap = String(trace.tap);
    if ($("compare").checked) {
      say("Mask shown; now running the full forward for comparison…");
      const full = await timed(() => api(`/api/sessions/${state.session}/full`, { method: "POST" }));
      showFigures("full", full);
      $("ratio").textContent = `trace / full MACs: ${(trace.macs / full.macs).toFixed(3)}; ` +
        `mask IoU trace vs full: ${full.iou_with_trace.toFixed(4)}`;
      $("figures").dataset.fullTap = String(full.tap);
    }
    say(`Tap ${trace.tap} at (${trace.click[0]}, ${trace.click[1]}): ${trace.mask_pixels.toLocaleString()} mask pixels.`);
  } catch (err) {
    say(err.message, "error");
  } finally {
    setBusy(false);
  }
}

async function timed(request) {
  const start = performance.now();
  const body = await request();
  body.roundtrip = (performance.now() - start) / 1000;
  return body;
}

function showFigures(mode, r) {
  $(`${mode}-score`).textContent = r.score.toFixed(3);
  $(`${mode}-level`).textContent = `P${r.level}`;  // data-value keeps the number
  $(`${mode}-macs`).textContent = gmac(r.macs);
  $(`${mode}-seconds`).textContent = ms(r.seconds);
  $(`${mode}-roundtrip`).textContent = ms(r.roundtrip);
  for (const key of ["score", "level", "macs", "seconds", "roundtrip"]) {
    $(`${mode}-${key}`).dataset.value = r[key];
    if (mode === "trace") $(`full-${key}`).textContent = $("compare").checked ? "…" : "–";
  }
}

function showSession(r) {
  const note = $("session-note");
  if (r.tap === 1) {
    note.textContent = state.prepared
      ? "First tap: the backbone came from the preparation on load; later taps also reuse this tap's crops."
      : "First tap on this image: later taps reuse the regions it computed.";
    return;
  }
  const share = r.macs / r.first_macs;
  note.textContent = `Tap ${r.tap} on this image: ${gmac(r.macs)}, ${(100 * share).toFixed(1)}% of the first tap's ` +
    `${gmac(r.first_macs)}, because the session's region cache already holds what earlier taps computed.`;
  note.dataset.cheaper = String(share < 1);
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the mask could not be drawn"));
    image.src = src;
  });
}

function stageColor(region) {
  const light = 35 + 6 * Math.log2(region.stride);
  return `hsl(${HUES[region.family]}, 90%, ${light}%)`;
}

function listStages(regions) {
  const shown = new Set([...$("stage-list").querySelectorAll("input:checked")].map((i) => i.dataset.stage));
  const fresh = shown.size === 0;
  const rows = regions.map((region) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.dataset.stage = region.stage;
    box.checked = fresh ? region.family !== "backbone" : shown.has(region.stage);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.borderColor = stageColor(region);
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = `${(100 * region.share).toFixed(1)}%`;
    label.append(box, swatch, region.stage, share);
    return label;
  });
  $("stage-list").replaceChildren(...rows);
  $("stages").hidden = !$("show-regions").checked;
}

function redraw() {
  const ctx = $("overlay").getContext("2d");
  ctx.clearRect(0, 0, state.width, state.height);
  const r = state.trace;
  if (!r) return;
  const line = Math.max(2, Math.round(Math.max(state.width, state.height) / 300));
  ctx.drawImage(state.maskImage, 0, 0);
  if ($("show-regions").checked) {
    const checked = new Set([...$("stage-list").querySelectorAll("input:checked")].map((i) => i.dataset.stage));
    ctx.lineWidth = line;
    for (const region of r.regions.filter((g) => checked.has(g.stage))) {
      const [x0, y0, x1, y1] = region.box;
      ctx.setLineDash(region.family === "heads" ? [] : [3 * line, 2 * line]);
      ctx.strokeStyle = stageColor(region);
      ctx.strokeRect(x0 + line / 2, y0 + line / 2, x1 - x0 - line, y1 - y0 - line);
    }
    ctx.setLineDash([]);
  }
  const [x0, y0, x1, y1] = r.box;
  ctx.lineWidth = line;
  ctx.strokeStyle = "#ffd400";
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.beginPath();
  ctx.arc(r.click[0] + 0.5, r.click[1] + 0.5, 3 * line, 0, 2 * Math.PI);
  ctx.fillStyle = "#ff2d55";
  ctx.fill();
  ctx.strokeStyle = "#ffffff";
  ctx.stroke();
}

init();
