// samserve's click-to-segment page: plain JavaScript over the HTTP/JSON API (/v1/...), no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const MASK_RGBA = [30, 144, 255, 150];
const DRAG_PX = 5; // a press that moves less than this (on screen) is a click, more draws a box

// The page's state; window.samserve lets a test (or a curious user) read what was asked and shown.
const state = {
  file: null, // the image's File, sent again for "segment everything"
  imageId: null,
  size: null, // [height, width] of the original image
  model: "", // the model's name ("" = the server's default)
  modelId: "",
  points: [], // {x, y, label} in pixels of the original image
  box: null, // [x0, y0, x1, y1]
  result: null, // the last Segment's results[0]
  masks: [], // Uint8Array per mask, row-major, 1 = inside
  selected: 0,
  records: null, // the last GenerateMasks' records
  amgRequest: null, // the fields sent with the image for "segment everything"
  lastRequest: null, // the last JSON request sent
  busy: 0,
  mode: "image", // "video" while video.js's session is shown (then clicks go there)
  seq: 0, // numbers the image, segment and everything calls: an answer to a superseded one is dropped
};
window.samserve = state;

class ApiError extends Error {
  constructor(status, message, code) {
    super(`${status}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

function logCall(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("log").prepend(li);
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, { json = null, form = null, method = "POST", what = path } = {}) {
  const headers = {};
  const token = localStorage.getItem("samserve-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  let body = null;
  if (json !== null) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
    state.lastRequest = json;
  } else if (form !== null) {
    body = form;
  }
  const t0 = performance.now();
  state.busy += 1;
  document.body.classList.add("busy");
  try {
    const response = await fetch(path, { method, headers, body });
    const ms = performance.now() - t0;
    let data;
    try {
      data = await response.json();
    } catch {
      data = { error: { status: `HTTP ${response.status}`, message: response.statusText } };
    }
    if (!response.ok) {
      const e = data.error || {};
      logCall(`${what}: ${e.status} after ${ms.toFixed(0)} ms`);
      if (response.status === 401) $("token-box").hidden = false;
      throw new ApiError(e.status || `HTTP ${response.status}`, e.message || "", response.status);
    }
    return { data, ms };
  } finally {
    state.busy -= 1;
    if (state.busy === 0) document.body.classList.remove("busy");
  }
}

// pycocotools' compressed RLE string -> run lengths (rleFrString), then the column-major runs -> a
// row-major 0/1 mask. Arithmetic, not 32-bit shifts, so any run length of an image decodes.
function cocoCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x -= 2 ** (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function maskFromRle(rle) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? cocoCounts(rle.counts) : rle.counts;
  const mask = new Uint8Array(h * w);
  let index = 0;
  counts.forEach((run, i) => {
    if (i % 2 === 1) {
      for (let k = index; k < index + run; k++) {
        const x = Math.floor(k / h);
        mask[(k - x * h) * w + x] = 1;
      }
    }
    index += run;
  });
  return mask;
}

function fitImage() {
  // small images are shown larger (up to 2x), large ones fit the window; the canvases follow
  const [h, w] = state.size;
  const room = $("stage").parentElement.clientWidth - 32;
  const scale = Math.min(room / w, (window.innerHeight * 0.72) / h, Math.max(1, Math.min(2, 640 / w)));
  $("image").style.width = `${Math.max(1, Math.round(w * scale))}px`;
}

function canvasSize() {
  const [h, w] = state.size;
  for (const id of ["mask", "marks"]) {
    $(id).width = w;
    $(id).height = h;
  }
}

function drawMasks(masks, colours) {
  const [h, w] = state.size;
  const ctx = $("mask").getContext("2d");
  const image = ctx.createImageData(w, h);
  masks.forEach((mask, m) => {
    const rgba = colours[m];
    for (let i = 0; i < mask.length; i++) {
      if (mask[i]) image.data.set(rgba, i * 4);
    }
  });
  ctx.putImageData(image, 0, 0);
}

function drawMarks(dragBox = null) {
  const ctx = $("marks").getContext("2d");
  ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  const unit = Math.max(2, Math.round(Math.max(...state.size) / 150));
  ctx.lineWidth = unit / 2;
  for (const box of [state.box, dragBox]) {
    if (!box) continue;
    ctx.strokeStyle = "#ffd400";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
  for (const p of state.points) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, unit * 1.5, 0, 2 * Math.PI);
    ctx.fillStyle = p.label === 1 ? "#16a34a" : "#dc2626";
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

function showChoices() {
  const box = $("choices");
  box.replaceChildren();
  if (!state.result) return;
  state.result.iou_predictions.forEach((score, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = `mask ${i + 1} (${score.toFixed(3)})`;
    b.dataset.index = String(i);
    b.classList.toggle("selected", i === state.selected);
    b.addEventListener("click", () => {
      state.selected = i;
      showChoices();
      drawMasks([state.masks[i]], [MASK_RGBA]);
    });
    box.append(b);
  });
}

function enable() {
  const image = state.imageId !== null;
  $("everything").disabled = !image;
  $("clear").disabled = !image;
  const any = state.masks.length > 0 || (state.records && state.records.length > 0);
  $("download-png").disabled = state.masks.length === 0;
  $("download-polygons").disabled = !any;
  $("download-coco").disabled = !any;
}

function clearPrompts() {
  state.points = [];
  state.box = null;
  state.result = null;
  state.masks = [];
  state.records = null;
  if (state.size) {
    drawMasks([], []);
    drawMarks();
  }
  showChoices();
  enable();
}

async function embed() {
  const form = new FormData();
  form.append("image", state.file);
  form.append("request", JSON.stringify({ model: state.model }));
  const { data, ms } = await api("/v1/embed", { form, what: "embed" });
  state.imageId = data.image_id;
  state.modelId = data.model_id;
  $("model-id").textContent = data.model_id;
  logCall(`embed: ${ms.toFixed(0)} ms (${data.cached ? "cached" : "encoder ran"}), model ${data.model_id}`);
  return data;
}

async function openImage(file) {
  const seq = ++state.seq;
  state.mode = "image";
  $("frame-nav").hidden = true;
  state.file = file;
  state.imageId = null; // no clicks, no "segment everything" until the new image is embedded
  enable();
  const img = $("image");
  img.src = URL.createObjectURL(file);
  try {
    await img.decode();
  } catch {
    setStatus(`${file.name}: the browser cannot show this image; it is still sent to the server`, true);
  }
  setStatus(`embedding ${file.name} ...`);
  try {
    const data = await embed();
    if (seq !== state.seq) return; // another image was opened meanwhile
    state.size = [data.original_size.height, data.original_size.width];
    $("stage").classList.remove("empty");
    fitImage();
    canvasSize();
    clearPrompts();
    setStatus(`${file.name}: ${state.size[1]}x${state.size[0]}; click on it`);
  } catch (e) {
    setStatus(e.message, true);
  }
}

// A call naming the image by its image_id; when the embedding has expired (or Redis was
// restarted) the image is embedded again, once, and the call repeated.
async function byImageId(path, request, what) {
  try {
    return await api(path, { json: request(), what });
  } catch (e) {
    if (e.status !== "NOT_FOUND" || !e.message.includes("image_id")) throw e;
    await embed();
    return await api(path, { json: request(), what });
  }
}

async function segment() {
  if (state.points.length === 0 && state.box === null) {
    clearPrompts();
    return;
  }
  const prompt = { points: state.points.map((p) => ({ x: p.x, y: p.y, label: p.label })) };
  if (state.box) prompt.box = { x0: state.box[0], y0: state.box[1], x1: state.box[2], y1: state.box[3] };
  const request = () => ({
    image_id: state.imageId,
    prompts: [prompt],
    multimask_output: true,
    mask_format: "MASK_FORMAT_COCO_RLE",
    model: state.model,
  });
  const seq = ++state.seq;
  try {
    const answer = await byImageId("/v1/segment", request, "segment");
    if (seq !== state.seq) return; // a newer click (or image) superseded this one
    const { data, ms } = answer;
    state.records = null;
    state.result = data.results[0];
    state.masks = state.result.masks.map((m) => maskFromRle(m.coco_rle));
    const scores = state.result.iou_predictions;
    state.selected = scores.indexOf(Math.max(...scores));
    drawMasks([state.masks[state.selected]], [MASK_RGBA]);
    showChoices();
    logCall(`segment: ${ms.toFixed(0)} ms, ${state.points.length} points${state.box ? " + box" : ""}`);
    setStatus(`best mask ${state.selected + 1} of ${scores.length}, predicted IoU ${scores[state.selected].toFixed(3)}`);
  } catch (e) {
    setStatus(e.message, true);
  }
  enable();
}

function colour(i) {
  // golden-angle hues: neighbours in the list get far-apart colours
  const hue = (i * 137.508) % 360;
  const c = document.createElement("canvas").getContext("2d");
  c.fillStyle = `hsl(${hue}, 85%, 55%)`;
  c.fillRect(0, 0, 1, 1);
  const [r, g, b] = c.getImageData(0, 0, 1, 1).data;
  return [r, g, b, 170];
}

async function everything() {
  clearPrompts();
  // by image_id: the cached embedding is used and the image is not uploaded again
  state.amgRequest = {
    model: state.model,
    output_format: "MASK_FORMAT_COCO_RLE",
    options: { points_per_side: Number($("grid").value) },
  };
  const request = () => ({ ...state.amgRequest, image_id: state.imageId });
  setStatus("segmenting everything ...");
  try {
    const seq = ++state.seq;
    const { data, ms } = await byImageId("/v1/generate_masks", request, "segment everything");
    if (seq !== state.seq) return; // superseded by a click or another image
    // the largest first, so small masks stay visible on top (as the reference's show_anns)
    const records = [...data.masks].sort((a, b) => b.area - a.area);
    state.records = records;
    drawMasks(
      records.map((r) => maskFromRle(r.segmentation.coco_rle)),
      records.map((_, i) => colour(i)),
    );
    logCall(`segment everything: ${ms.toFixed(0)} ms, ${records.length} masks`);
    setStatus(`${records.length} masks`);
  } catch (e) {
    setStatus(e.message, true);
  }
  enable();
}

function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function downloadPng() {
  const [h, w] = state.size;
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const ctx = c.getContext("2d");
  const image = ctx.createImageData(w, h);
  const mask = state.masks[state.selected];
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i] ? 255 : 0;
    image.data[i * 4] = v;
    image.data[i * 4 + 1] = v;
    image.data[i * 4 + 2] = v;
    image.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  c.toBlob((blob) => download("mask.png", blob), "image/png");
}

function bboxArea(mask) {
  const [h, w] = state.size;
  let x0 = w;
  let y0 = h;
  let x1 = -1;
  let y1 = -1;
  let area = 0;
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    const y = Math.floor(i / w);
    const x = i - y * w;
    area += 1;
    x0 = Math.min(x0, x);
    y0 = Math.min(y0, y);
    x1 = Math.max(x1, x);
    y1 = Math.max(y1, y);
  }
  return area ? { bbox: [x0, y0, x1 - x0, y1 - y0], area } : { bbox: [0, 0, 0, 0], area: 0 };
}

function downloadCoco() {
  const [h, w] = state.size;
  const annotations = [];
  if (state.records) {
    state.records.forEach((r, i) => {
      annotations.push({
        id: i + 1,
        image_id: 1,
        category_id: 1,
        segmentation: r.segmentation.coco_rle,
        area: r.area,
        bbox: r.bbox,
        iscrowd: 0,
        score: r.predicted_iou,
        stability_score: r.stability_score,
      });
    });
  } else {
    const i = state.selected;
    annotations.push({
      id: 1,
      image_id: 1,
      category_id: 1,
      segmentation: state.result.masks[i].coco_rle,
      ...bboxArea(state.masks[i]),
      iscrowd: 0,
      score: state.result.iou_predictions[i],
    });
  }
  const coco = {
    info: { description: `samserve ${state.modelId}` },
    images: [{ id: 1, width: w, height: h, file_name: state.file.name }],
    categories: [{ id: 1, name: "object" }],
    annotations,
  };
  download("masks.coco.json", new Blob([JSON.stringify(coco)], { type: "application/json" }));
}

async function downloadPolygons() {
  // asked of the server again in MASK_FORMAT_POLYGONS (OpenCV's contours, holes apart)
  try {
    let polygons;
    if (state.records) {
      const request = () => ({ ...state.amgRequest, output_format: "MASK_FORMAT_POLYGONS", image_id: state.imageId });
      const { data } = await byImageId("/v1/generate_masks", request, "polygons of everything");
      polygons = data.masks.map((r) => ({ bbox: r.bbox, area: r.area, polygons: r.segmentation.polygons }));
    } else {
      const request = { ...state.lastRequest, mask_format: "MASK_FORMAT_POLYGONS" };
      const { data } = await api("/v1/segment", { json: request, what: "polygons" });
      polygons = [{ polygons: data.results[0].masks[state.selected].polygons }];
    }
    const body = { image: state.file.name, size: state.size, masks: polygons };
    download("masks.polygons.json", new Blob([JSON.stringify(body)], { type: "application/json" }));
  } catch (e) {
    setStatus(e.message, true);
  }
}

function imagePoint(e) {
  const c = $("marks");
  const r = c.getBoundingClientRect();
  return {
    x: ((e.clientX - r.left) * c.width) / r.width,
    y: ((e.clientY - r.top) * c.height) / r.height,
    sx: e.clientX,
    sy: e.clientY,
  };
}

function wireMouse() {
  const c = $("marks");
  let press = null;
  c.addEventListener("contextmenu", (e) => e.preventDefault());
  c.addEventListener("mousedown", (e) => {
    if (state.imageId === null) return;
    press = { ...imagePoint(e), button: e.button };
  });
  c.addEventListener("mousemove", (e) => {
    if (!press || press.button !== 0) return;
    const p = imagePoint(e);
    if (Math.hypot(p.sx - press.sx, p.sy - press.sy) >= DRAG_PX) {
      drawMarks([Math.min(press.x, p.x), Math.min(press.y, p.y), Math.max(press.x, p.x), Math.max(press.y, p.y)]);
    }
  });
  window.addEventListener("mouseup", (e) => {
    if (!press) return;
    const start = press;
    press = null;
    const p = imagePoint(e);
    const [h, w] = state.size;
    const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
    if (start.button === 0 && Math.hypot(p.sx - start.sx, p.sy - start.sy) >= DRAG_PX) {
      const [x0, x1] = [clamp(Math.min(start.x, p.x), w), clamp(Math.max(start.x, p.x), w)];
      const [y0, y1] = [clamp(Math.min(start.y, p.y), h), clamp(Math.max(start.y, p.y), h)];
      state.box = [x0, y0, x1, y1];
    } else if (start.button === 0 || start.button === 2) {
      state.points.push({ x: start.x, y: start.y, label: start.button === 0 ? 1 : 0 });
    } else {
      return;
    }
    drawMarks();
    segment();
  });
}

function wireFiles() {
  const stage = $("stage");
  $("file").addEventListener("change", (e) => {
    if (e.target.files.length) openImage(e.target.files[0]);
  });
  for (const name of ["dragenter", "dragover"]) {
    stage.addEventListener(name, (e) => {
      e.preventDefault();
      stage.classList.add("drop");
    });
  }
  stage.addEventListener("dragleave", () => stage.classList.remove("drop"));
  stage.addEventListener("drop", (e) => {
    e.preventDefault();
    stage.classList.remove("drop");
    if (e.dataTransfer.files.length) openImage(e.dataTransfer.files[0]);
  });
}

async function loadModels() {
  try {
    const { data } = await api("/v1/models", { method: "GET", what: "models" });
    const select = $("model");
    select.replaceChildren();
    for (const m of data.models) {
      const o = document.createElement("option");
      o.value = m.name;
      o.textContent = `${m.name} (${m.family} ${m.model_type}, ${m.input_size.width}px)`;
      o.selected = m.is_default;
      select.append(o);
    }
    state.model = data.default_model;
  } catch (e) {
    setStatus(`models: ${e.message}`, true);
  }
}

function main() {
  wireMouse();
  wireFiles();
  $("clear").addEventListener("click", clearPrompts);
  $("everything").addEventListener("click", everything);
  $("download-png").addEventListener("click", downloadPng);
  $("download-coco").addEventListener("click", downloadCoco);
  $("download-polygons").addEventListener("click", downloadPolygons);
  $("model").addEventListener("change", async (e) => {
    state.model = e.target.value;
    if (state.file) await openImage(state.file);
  });
  $("token-save").addEventListener("click", () => {
    localStorage.setItem("samserve-token", $("token").value);
    $("token-box").hidden = true;
    loadModels();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") clearPrompts();
  });
  loadModels();
}

main();
