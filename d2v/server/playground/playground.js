// The d2v playground: plain JavaScript, no framework, no build step. Everything it shows comes from the
// server's own API: /models, /classify, /transcribe and /embed (docs/http-api.md).

const $ = (selector) => document.querySelector(selector);

const state = {
  key: null,        // the API key, only in memory; sent as a Bearer header, never in a URL
  models: [],
  model: null,      // the chosen entry of /models
  files: [],        // [{file, url}] for image and audio models
  recorder: null,
};

class ApiError extends Error {
  constructor(route, status, type, message) {
    super(message);
    Object.assign(this, { route, status, type });
  }
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const TIMING_HEADERS = ["x-total-time", "x-decode-time", "x-queue-time", "x-inference-time"];

// One call of the API: the parsed answer, the round trip seen by the browser and the server's timings.
async function api(route, body = null) {
  const headers = new Headers();
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  const started = performance.now();
  let response;
  try {
    response = await fetch(route, body ? { method: "POST", body, headers } : { headers });
  } catch (e) {
    throw new ApiError(route, 0, "network_error", `the server did not answer (${e.message})`);
  }
  const text = await response.text();
  const roundTrip = performance.now() - started;
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON: the message below says so */ }
  if (!response.ok) {
    const error = json && json.error;
    throw new ApiError(route, response.status, error?.type ?? "http_error",
                       error?.message ?? (text.trim().slice(0, 300) || response.statusText));
  }
  const timing = Object.fromEntries(TIMING_HEADERS.map((h) => [h, response.headers.get(h)]));
  return { json, roundTrip, timing, status: response.status };
}

// ---- errors --------------------------------------------------------------------------------------------

function showError(error) {
  const box = element("div", { class: "error", "data-status": error.status ?? "", "data-type": error.type ?? "" });
  if (error.route) box.append(element("span", { class: "route", text: `${error.route}: ` }));
  if (error.status) box.append(element("span", { class: "status", text: `${error.status} ` }));
  if (error.type && error.type !== "client") box.append(element("span", { class: "type", text: `${error.type} ` }));
  box.append(element("span", { class: "message", text: error.message }));
  $("#errors").append(box);
}

const clearErrors = () => $("#errors").replaceChildren();

// ---- the API key -----------------------------------------------------------------------------------------

function askForKey(wrong) {
  $("#key-panel").hidden = false;
  $("#key-hint").textContent = wrong
    ? "The server refused this key. Enter the key the server was started with (--api-key or $D2V_API_KEY)."
    : "This server needs an API key. The page sends it as an Authorization: Bearer header and keeps it only "
      + "while the page is open.";
  $("#api-key").focus();
}

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("#api-key").value.trim() || null;
  loadModels();
});

// ---- models ------------------------------------------------------------------------------------------------

async function loadModels() {
  clearErrors();
  let answer;
  try {
    answer = await api("/models");
  } catch (e) {
    if (e.status === 401) return askForKey(state.key !== null);
    $("#models").replaceChildren(element("p", { class: "hint", text: "No models: the server refused the list." }));
    return showError(e);
  }
  $("#key-panel").hidden = state.key === null;
  if (state.key) $("#key-hint").textContent = "Key accepted.";
  state.models = answer.json.data;
  const list = $("#models");
  list.replaceChildren();
  for (const m of state.models) {
    const card = element("button", { type: "button", class: "model", role: "radio", "aria-checked": "false",
                                     "data-model": m.name },
      element("span", { class: "name", text: m.name }),
      element("span", {}, element("span", { class: `badge ${m.modality}`, text: m.modality }),
              ...m.tasks.map((t) => element("span", { class: "badge", text: t }))),
      element("span", { class: "facts", text: `${m.dimensions} dims, ${m.labels ? m.labels.length + " labels, " : ""}`
                                               + `${m.backend} on ${m.device}` }));
    card.addEventListener("click", () => chooseModel(m.name));
    list.append(card);
  }
  if (!state.models.length) list.append(element("p", { class: "hint", text: "The server has no models loaded." }));
  else chooseModel((state.model && state.models.find((m) => m.name === state.model.name)?.name) || state.models[0].name);
}

const HINTS = {
  image: "PNG, JPEG, WebP or any image Pillow reads.",
  audio: "WAV, FLAC, OGG or MP3; or record from the microphone (sent as a WAV file).",
};

function chooseModel(name) {
  const previous = state.model;
  state.model = state.models.find((m) => m.name === name);
  for (const card of document.querySelectorAll(".model")) {
    card.setAttribute("aria-checked", String(card.dataset.model === name));
  }
  const modality = state.model.modality;
  if (previous && previous.modality !== modality) clearFiles();
  $("#media-inputs").hidden = modality === "text";
  $("#text-inputs").hidden = modality !== "text";
  $("#drop .kind").textContent = modality === "image" ? "images" : "audio files";
  $("#file-picker").accept = `${modality}/*`;
  $("#media-hint").textContent = HINTS[modality] ?? "";
  $("#record").hidden = modality !== "audio" || !navigator.mediaDevices || !window.MediaRecorder;
  $("#results").hidden = true;
  clearErrors();
  updateRun();
}

// ---- inputs --------------------------------------------------------------------------------------------------

function inputs() {
  if (!state.model) return [];
  if (state.model.modality === "text") {
    return $("#texts").value.split("\n").map((t) => t.trim()).filter((t) => t).map((text) => ({ text }));
  }
  return state.files;
}

function updateRun() {
  $("#run").disabled = !state.model || inputs().length === 0;
}

function addFiles(files) {
  for (const file of files) state.files.push({ file, url: URL.createObjectURL(file) });
  renderFiles();
}

function clearFiles() {
  for (const f of state.files) URL.revokeObjectURL(f.url);
  state.files = [];
  renderFiles();
}

// An image's thumbnail, or (in the input list only) an audio file's player.
function preview(item, player = true) {
  if (item.text !== undefined) return null;
  if (state.model.modality === "image" || item.file.type.startsWith("image/")) {
    return element("img", { src: item.url, alt: item.file.name, class: "thumb" });
  }
  return player ? element("audio", { src: item.url, controls: "", preload: "none" }) : null;
}

function renderFiles() {
  const list = $("#input-list");
  list.replaceChildren();
  state.files.forEach((item, i) => {
    const remove = element("button", { type: "button", class: "remove", title: "remove", "aria-label": "remove",
                                       text: "\u00d7" });
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(item.url);
      state.files.splice(i, 1);
      renderFiles();
    });
    list.append(element("li", { "data-index": i }, element("span", { class: "tag", text: `#${i + 1}` }),
                        preview(item), element("span", { text: `${item.file.name} (${size(item.file.size)})` }),
                        remove));
  });
  updateRun();
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

const drop = $("#drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  addFiles(event.dataTransfer.files);
});
$("#file-picker").addEventListener("change", (event) => {
  addFiles(event.target.files);
  event.target.value = "";
});
$("#texts").addEventListener("input", updateRun);
$("#clear").addEventListener("click", () => {
  clearFiles();
  $("#texts").value = "";
  $("#results").hidden = true;
  clearErrors();
  updateRun();
});

// ---- the microphone: MediaRecorder, then the recording decoded and written as a 16-bit WAV file, which the
// server reads whatever the browser recorded in (Chromium records WebM/Opus, which libsndfile does not read).
// decodeAudioData resamples to the context's rate.

$("#record").addEventListener("click", async () => {
  if (state.recorder) return state.recorder.stop();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    return showError({ type: "client", message: `no microphone: ${e.message}` });
  }
  const chunks = [];
  const recorder = new MediaRecorder(stream);
  state.recorder = recorder;
  const button = $("#record");
  const started = performance.now();
  const tick = setInterval(() => {
    button.textContent = `Stop (${((performance.now() - started) / 1000).toFixed(1)} s)`;
  }, 100);
  button.classList.add("recording");
  button.textContent = "Stop";
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", async () => {
    clearInterval(tick);
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    button.classList.remove("recording");
    button.textContent = "Record";
    try {
      const blob = new Blob(chunks, { type: recorder.mimeType });
      const wav = await toWav(blob);
      const n = state.files.filter((f) => f.file.name.startsWith("recording")).length + 1;
      addFiles([new File([wav], `recording-${n}.wav`, { type: "audio/wav" })]);
    } catch (e) {
      showError({ type: "client", message: `the recording could not be read: ${e.message}` });
    }
  });
  recorder.start();
  setTimeout(() => recorder.state === "recording" && recorder.stop(), 30000);
});

// 16 kHz, the rate of the demo audio models (the server resamples any other): a small upload.
const RECORDING_RATE = 16000;

async function toWav(blob) {
  const context = new AudioContext({ sampleRate: RECORDING_RATE });
  try {
    const audio = await context.decodeAudioData(await blob.arrayBuffer());
    const mono = new Float32Array(audio.length);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const channel = audio.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / audio.numberOfChannels;
    }
    return wavBytes(mono, audio.sampleRate);
  } finally {
    context.close();
  }
}

function wavBytes(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 32767, true));
  return view.buffer;
}

// ---- running the model ---------------------------------------------------------------------------------------

function form(items, fields) {
  const body = new FormData();
  body.append("model", state.model.name);
  for (const [name, value] of Object.entries(fields)) body.append(name, value);
  for (const item of items) {
    if (item.text !== undefined) body.append("inputs", item.text);
    else body.append("file", item.file, item.file.name);
  }
  return body;
}

const ROUTES = { classify: ["/classify", { top_k: 5 }], transcribe: ["/transcribe", {}], embed: ["/embed", {}] };

$("#run").addEventListener("click", run);

async function run() {
  const items = inputs().slice();
  if (!state.model || !items.length) return;
  const model = state.model;
  clearErrors();
  for (const id of ["#classify-results", "#transcribe-results", "#embed-results", "#timings"]) $(id).replaceChildren();
  $("#results").hidden = true;
  $("#run").disabled = true;
  $("#status").textContent = "Running...";
  document.body.dataset.state = "running";
  const tasks = model.tasks.filter((t) => t in ROUTES);
  const answers = await Promise.all(tasks.map(async (task) => {
    const [route, fields] = ROUTES[task];
    try {
      return { task, route, ...(await api(route, form(items, fields))) };
    } catch (e) {
      return { task, route, error: e };
    }
  }));
  const shown = new Set();
  for (const answer of answers) {
    if (answer.error) {
      const key = `${answer.error.status} ${answer.error.message}`;
      if (!shown.has(key)) showError(answer.error);
      shown.add(key);
      continue;
    }
    if (answer.task === "classify") showClassification(answer.json, items);
    if (answer.task === "transcribe") showTranscripts(answer.json, items);
    if (answer.task === "embed") showSimilarity(answer.json, items);
  }
  showTimings(answers);
  $("#results").hidden = answers.every((a) => a.error);
  $("#status").textContent = "";
  document.body.dataset.state = "done";
  updateRun();
}

function inputLabel(item, i) {
  const name = item.text !== undefined ? item.text : item.file.name;
  return element("div", { class: "input", title: name }, element("span", { class: "tag", text: `#${i + 1}` }),
                 preview(item, false), element("span", { text: name }));
}

function showClassification(json, items) {
  const cards = element("div", { class: "cards" });
  for (const row of json.data) {
    const card = element("div", { class: "card classification", "data-index": row.index },
                         inputLabel(items[row.index], row.index));
    for (const p of row.predictions) {
      const fill = element("span");
      fill.style.width = `${(p.score * 100).toFixed(1)}%`;
      card.append(element("div", { class: "prediction", "data-label": p.label, "data-score": p.score },
                          element("span", { class: "label", text: p.label, title: p.label }),
                          element("span", { class: "bar" }, fill),
                          element("span", { class: "score", text: `${(p.score * 100).toFixed(1)}%` })));
    }
    cards.append(card);
  }
  $("#classify-results").replaceChildren(element("h3", { text: `Top classes (/classify, ${json.model})` }), cards);
}

function showTranscripts(json, items) {
  const cards = element("div", { class: "cards" });
  for (const row of json.data) {
    cards.append(element("div", { class: "card transcription", "data-index": row.index },
                         inputLabel(items[row.index], row.index),
                         element("div", { class: row.text ? "transcript" : "transcript empty",
                                          text: row.text || "(nothing recognised)" })));
  }
  $("#transcribe-results").replaceChildren(element("h3", { text: `Transcripts (/transcribe, ${json.model})` }), cards);
}

// Cosine similarity of every pair: /embed's vectors are L2-normalized, so it is their dot product.
function similarities(vectors) {
  return vectors.map((a) => vectors.map((b) => a.reduce((sum, x, k) => sum + x * b[k], 0)));
}

function heat(value, low, high) {
  const t = high > low ? Math.min(1, Math.max(0, (value - low) / (high - low))) : 1;
  const mix = (from, to) => Math.round(from + (to - from) * t);
  return [`rgb(${mix(243, 47)}, ${mix(246, 91)}, ${mix(252, 211)})`, t > 0.55 ? "#fff" : "#1d2330"];
}

function showSimilarity(json, items) {
  const vectors = json.data.map((row) => row.embedding);
  const sim = similarities(vectors);
  const n = vectors.length;
  const offDiagonal = sim.flatMap((row, i) => row.filter((_, j) => j !== i));
  const low = offDiagonal.length ? Math.min(...offDiagonal) : 0;
  const high = offDiagonal.length ? Math.max(...offDiagonal) : 1;
  const table = element("table", { class: "similarity" });
  table.append(element("tr", {}, element("th"), ...items.map((item, j) => element("th", {
    text: `#${j + 1}`, title: item.text ?? item.file.name }))));
  sim.forEach((row, i) => {
    const tr = element("tr", {}, element("th", { text: `#${i + 1}`, title: items[i].text ?? items[i].file.name }));
    row.forEach((value, j) => {
      const cell = element("td", { "data-row": i, "data-col": j, "data-sim": value, text: value.toFixed(2),
                                   title: `#${i + 1} vs #${j + 1}: ${value.toFixed(4)}` });
      const [background, color] = i === j ? ["#eef0f4", "#5d6675"] : heat(value, low, high);
      cell.style.background = background;
      cell.style.color = color;
      tr.append(cell);
    });
    table.append(tr);
  });
  const matrix = element("div", {}, table, n > 1
    ? element("div", { class: "scale" }, element("span", { text: low.toFixed(2) }), element("span", { class: "ramp" }),
              element("span", { text: high.toFixed(2) }))
    : element("p", { class: "hint", text: "Give two or more inputs to compare them." }));
  const neighbours = element("ol", { class: "neighbours" });
  if (n > 1) {
    sim.forEach((row, i) => {
      const j = row.map((v, k) => [v, k]).filter(([, k]) => k !== i).sort((a, b) => b[0] - a[0])[0][1];
      neighbours.append(element("li", { "data-index": i, "data-nearest": j },
                                `#${i + 1} is nearest to #${j + 1} (cosine ${row[j].toFixed(3)}): `,
                                element("span", { class: "hint", text: short(items[j]) })));
    });
  }
  const dims = vectors[0] ? vectors[0].length : 0;
  $("#embed-results").replaceChildren(
    element("h3", { text: `Cosine similarity of the embeddings (/embed, ${json.model}, ${dims} dimensions)` }),
    element("div", { class: "embed" }, matrix, n > 1 ? element("div", {}, element("strong", { text: "Nearest neighbours" }),
                                                                  neighbours) : null));
}

function short(item) {
  const name = item.text ?? item.file.name;
  return name.length > 60 ? `${name.slice(0, 57)}...` : name;
}

function showTimings(answers) {
  const ms = (v) => (v === null || v === undefined ? "" : `${Number(v).toFixed(1)} ms`);
  const table = element("table", { class: "timings" }, element("tr", {}, ...["route", "status", "round trip",
    "server total", "decode", "queue", "inference"].map((h) => element("th", { text: h }))));
  for (const a of answers) {
    const t = a.timing || {};
    table.append(element("tr", { "data-route": a.route }, element("td", { text: a.route }),
                         element("td", { text: a.error ? String(a.error.status) : String(a.status) }),
                         element("td", { text: ms(a.roundTrip) }), ...TIMING_HEADERS.map((h) => element("td", {
                           text: ms(t[h]) }))));
  }
  $("#timings").replaceChildren(element("h3", { text: "Latency (the browser's round trip, and the server's "
                                                + "x-*-time headers)" }), table);
}

loadModels();
