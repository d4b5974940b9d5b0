// samserve's video mode: SAM 2 tracking sessions over /v1/video/... on the page's stage (app.js's
// $, api, maskFromRle, drawMasks, colour, canvasSize, fitImage, setStatus, download). Open a video
// file or the frames of one (images, in name order); click objects on any frame (left: positive,
// right: negative; "new object" starts another, each its colour); propagate (a progress bar, a
// cancel button); scrub the frames with their overlays; download the masks as COCO JSON.
"use strict";

const video = {
  sessionId: null,
  name: "",
  numFrames: 0,
  frame: 0,
  objectId: 1,
  objects: [1],
  frameUrls: [], // per frame: an image URL (the frame's file), or null until drawn from the video
  player: null, // the <video> element of a video file
  prompts: {}, // "frame:object" -> [{x, y, label}]
  results: {}, // frame -> the API's VideoFrameResult (the last one for that frame)
  propagating: false,
  done: 0, // frames answered by the running propagation
  controller: null,
};
window.samserve.video = video;

function videoColour(objectId) {
  return colour(Math.max(0, video.objects.indexOf(objectId)));
}

function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function videoEnable() {
  const on = video.sessionId !== null && !video.propagating;
  $("video-propagate").disabled = !on;
  $("video-new-object").disabled = !on;
  $("video-download").disabled = video.sessionId === null || Object.keys(video.results).length === 0;
  $("video-cancel").disabled = !video.propagating;
  $("video-frame").disabled = video.sessionId === null;
}

async function frameImageUrl(i) {
  if (video.frameUrls[i]) return video.frameUrls[i];
  const player = video.player; // a video file: the frame drawn at its time (frames evenly spaced)
  await new Promise((resolve) => {
    player.addEventListener("seeked", resolve, { once: true });
    player.currentTime = ((i + 0.5) * player.duration) / video.numFrames;
  });
  const c = document.createElement("canvas");
  c.width = player.videoWidth;
  c.height = player.videoHeight;
  c.getContext("2d").drawImage(player, 0, 0);
  video.frameUrls[i] = c.toDataURL("image/jpeg", 0.9);
  return video.frameUrls[i];
}

function drawVideoMarks() {
  const ctx = $("marks").getContext("2d");
  ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  const unit = Math.max(2, Math.round(Math.max(...state.size) / 150));
  for (const obj of video.objects) {
    for (const p of video.prompts[`${video.frame}:${obj}`] || []) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, unit * 1.5, 0, 2 * Math.PI);
      ctx.fillStyle = p.label === 1 ? "#16a34a" : "#dc2626";
      ctx.fill();
      ctx.lineWidth = unit / 2;
      ctx.strokeStyle = `rgb(${videoColour(obj).slice(0, 3).join(",")})`;
      ctx.stroke();
    }
  }
}

function drawVideoMasks() {
  const result = video.results[video.frame];
  const objects = result ? result.objects || [] : [];
  drawMasks(
    objects.map((o) => maskFromRle(o.mask.coco_rle)),
    objects.map((o) => videoColour(o.object_id)),
  );
}

async function showFrame(i) {
  video.frame = i;
  $("video-frame").value = String(i);
  $("video-frame-label").textContent = `frame ${i + 1} / ${video.numFrames}`;
  $("image").src = await frameImageUrl(i);
  drawVideoMasks();
  drawVideoMarks();
}

function resetVideo() {
  if (video.player) URL.revokeObjectURL(video.player.src);
  Object.assign(video, {
    sessionId: null,
    numFrames: 0,
    frame: 0,
    objectId: 1,
    objects: [1],
    frameUrls: [],
    player: null,
    prompts: {},
    results: {},
    done: 0,
  });
  showObjects();
}

function showObjects() {
  const select = $("video-object");
  select.replaceChildren();
  for (const obj of video.objects) {
    const o = document.createElement("option");
    o.value = String(obj);
    o.textContent = `object ${obj}`;
    o.selected = obj === video.objectId;
    select.append(o);
  }
}

async function openVideo(files) {
  const list = Array.from(files).sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  if (!list.length) return;
  state.mode = "video";
  state.imageId = null; // the image mode's clicks stop
  resetVideo();
  videoEnable();
  const one = list.length === 1 && list[0].type.startsWith("video/");
  video.name = one ? list[0].name : `${list.length} frames`;
  try {
    setStatus(`${video.name}: decoding and embedding every frame ...`);
    let info;
    if (one) {
      const started = await api("/v1/video/start", {
        json: { model: state.model, mode: "SESSION_MODE_FULL", video: await fileBase64(list[0]) },
        what: "start video",
      });
      info = started.data;
      video.player = document.createElement("video");
      video.player.muted = true;
      video.player.src = URL.createObjectURL(list[0]);
      await new Promise((resolve) => video.player.addEventListener("loadeddata", resolve, { once: true }));
    } else {
      const started = await api("/v1/video/start", {
        json: { model: state.model, mode: "SESSION_MODE_FULL" },
        what: "start video",
      });
      const form = new FormData();
      form.append("request", JSON.stringify({ session_id: started.data.session_id }));
      for (const f of list) form.append("image", f, f.name);
      info = (await api("/v1/video/add_frames", { form, what: `add ${list.length} frames` })).data;
      video.frameUrls = list.map((f) => URL.createObjectURL(f));
    }
    video.sessionId = info.session_id;
    video.numFrames = info.num_frames;
    state.size = [info.video_size.height, info.video_size.width];
    $("frame-nav").hidden = false;
    $("video-frame").max = String(video.numFrames - 1);
    $("stage").classList.remove("empty");
    canvasSize();
    await showFrame(0);
    fitImage();
    videoEnable();
    setStatus(`${video.name}: ${video.numFrames} frames of ${state.size[1]}x${state.size[0]}; click an object`);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function videoClick(x, y, label) {
  const key = `${video.frame}:${video.objectId}`;
  const points = [...(video.prompts[key] || []), { x, y, label }];
  video.prompts[key] = points;
  drawVideoMarks();
  try {
    const { data } = await api("/v1/video/add_prompt", {
      json: {
        session_id: video.sessionId,
        frame_index: video.frame,
        object_id: video.objectId,
        points,
        mask_format: "MASK_FORMAT_COCO_RLE",
      },
      what: `prompt, frame ${video.frame}`,
    });
    video.results[data.frame_index || 0] = data;
    drawVideoMasks();
    videoEnable();
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function propagate() {
  video.propagating = true;
  video.done = 0;
  videoEnable();
  $("video-progress").value = 0;
  const controller = new AbortController();
  video.controller = controller;
  const headers = { "Content-Type": "application/json" };
  const token = localStorage.getItem("samserve-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  const t0 = performance.now();
  state.busy += 1;
  try {
    const body = { session_id: video.sessionId, mask_format: "MASK_FORMAT_COCO_RLE", direction: "DIRECTION_BOTH" };
    const response = await fetch("/v1/video/propagate", {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const e = (await response.json()).error || {};
      throw new Error(`${e.status}: ${e.message}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (!line) continue;
        const data = JSON.parse(line);
        if (data.error) throw new Error(`${data.error.status}: ${data.error.message}`);
        video.results[data.frame_index || 0] = data;
        video.done += 1;
        $("video-progress").value = video.done / (2 * video.numFrames);
        if ((data.frame_index || 0) === video.frame) drawVideoMasks();
      }
    }
    $("video-progress").value = 1;
    logCall(`propagate: ${video.done} frames in ${(performance.now() - t0).toFixed(0)} ms`);
    setStatus(`tracked ${video.done} frames (forward, then backward); scrub them below`);
  } catch (e) {
    setStatus(controller.signal.aborted ? "propagation cancelled" : e.message, !controller.signal.aborted);
  } finally {
    state.busy -= 1;
    video.propagating = false;
    video.controller = null;
    videoEnable();
  }
}

async function cancelPropagation() {
  try {
    await api("/v1/video/cancel", { json: { session_id: video.sessionId }, what: "cancel" });
  } catch (e) {
    setStatus(e.message, true);
  }
  if (video.controller) video.controller.abort();
}

function downloadVideoCoco() {
  // per frame, each object's mask (COCO RLE), object score and box, as the API answered them
  const frames = Object.keys(video.results)
    .map(Number)
    .sort((a, b) => a - b)
    .map((f) => ({
      frame_index: f,
      annotations: (video.results[f].objects || []).map((o) => ({
        object_id: o.object_id,
        segmentation: o.mask.coco_rle,
        object_score: o.object_score || 0,
        bbox: o.box ? [o.box.x0 || 0, o.box.y0 || 0, (o.box.x1 || 0) - (o.box.x0 || 0), (o.box.y1 || 0) - (o.box.y0 || 0)] : [0, 0, 0, 0],
      })),
    }));
  const body = { video: video.name, height: state.size[0], width: state.size[1], frames };
  download("video.masks.json", new Blob([JSON.stringify(body)], { type: "application/json" }));
}

function wireVideo() {
  $("video-file").addEventListener("change", (e) => {
    if (e.target.files.length) openVideo(e.target.files);
  });
  $("video-frame").addEventListener("input", (e) => showFrame(Number(e.target.value)));
  $("video-object").addEventListener("change", (e) => {
    video.objectId = Number(e.target.value);
    drawVideoMarks();
  });
  $("video-new-object").addEventListener("click", () => {
    video.objectId = Math.max(...video.objects) + 1;
    video.objects.push(video.objectId);
    showObjects();
  });
  $("video-propagate").addEventListener("click", propagate);
  $("video-cancel").addEventListener("click", cancelPropagation);
  $("video-download").addEventListener("click", downloadVideoCoco);
  const marks = $("marks");
  marks.addEventListener("mouseup", (e) => {
    if (state.mode !== "video" || video.sessionId === null || video.propagating) return;
    if (e.button !== 0 && e.button !== 2) return;
    const p = imagePoint(e);
    videoClick(p.x, p.y, e.button === 0 ? 1 : 0);
  });
  videoEnable();
}

wireVideo();
