// The control page: sliders from the OSCQuery namespace, kept live by LISTEN; styles; load meters.
// Every change goes to the server as OSC over the WebSocket, the same messages a control app sends.
import { message, parse } from "./osc.js";

const POLL_MS = 500;
const PLOT_POINTS = 60000 / POLL_MS; // one minute
const $ = (id) => document.getElementById(id);
const sliders = new Map(); // "/param/wet" -> {input, output, integer}
const rtfHistory = [];
let socket = null;
let active = "";

function send(address, types, values) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(message(address, types, values));
}

function show(address, value) {
  const slider = sliders.get(address);
  if (!slider) return;
  slider.input.value = value;
  slider.output.textContent = slider.integer ? String(Math.round(value)) : Number(value.toPrecision(4)).toString();
}

function buildParams(nodes) {
  const box = $("params");
  for (const [name, node] of Object.entries(nodes)) {
    const { MIN: min, MAX: max } = node.RANGE[0];
    const integer = node.DESCRIPTION.endsWith("(whole numbers)");
    const row = document.createElement("div");
    row.className = "param";
    row.title = node.DESCRIPTION;
    const label = document.createElement("label");
    label.htmlFor = `param-${name}`;
    label.textContent = node.UNIT ? `${name} (${node.UNIT[0]})` : name;
    const input = document.createElement("input");
    const step = integer ? 1 : 10 ** Math.floor(Math.log10((max - min) / 1000)); // a round step: typed values stay put
    Object.assign(input, { type: "range", id: `param-${name}`, min, max, step });
    const output = document.createElement("output");
    output.id = `value-${name}`;
    input.addEventListener("input", () => {
      send(node.FULL_PATH, "f", [Number(input.value)]);
      show(node.FULL_PATH, Number(input.value));
    });
    row.append(label, input, output);
    box.append(row);
    sliders.set(node.FULL_PATH, { input, output, integer });
    show(node.FULL_PATH, node.VALUE[0]);
  }
}

function renderStyles(names) {
  const body = $("styles").tBodies[0];
  const weights = new Map([...body.rows].map((row) => [row.dataset.name, row.querySelector("input").value]));
  body.replaceChildren(...names.map((name) => {
    const row = document.createElement("tr");
    row.dataset.name = name;
    row.className = name === active ? "active" : "";
    row.insertCell().textContent = name;
    const select = document.createElement("button");
    select.textContent = "select";
    select.addEventListener("click", () => send("/style/select", "s", [name]));
    row.insertCell().append(select);
    const weight = document.createElement("input");
    Object.assign(weight, { type: "number", min: 0, step: 0.1, value: weights.get(name) ?? 0 });
    weight.setAttribute("aria-label", `mix weight of ${name}`);
    row.insertCell().append(weight);
    const remove = document.createElement("button");
    remove.textContent = "delete";
    remove.addEventListener("click", () => send("/style/delete", "s", [name]));
    row.insertCell().append(remove);
    return row;
  }));
}

function mix() {
  const pairs = [...$("styles").tBodies[0].rows]
    .map((row) => [row.dataset.name, Number(row.querySelector("input").value)])
    .filter(([, weight]) => weight > 0);
  if (!pairs.length) { $("error").textContent = "give at least one style a weight above 0"; return; }
  send("/style/mix", "sf".repeat(pairs.length), pairs.flat());
}

function markActive(name) {
  active = name;
  for (const row of $("styles").tBodies[0].rows) row.className = row.dataset.name === name ? "active" : "";
}

function meters([sessions, rtfAvg, rtfPeak, steps, , lateChunks, lostBlocks, , lateBlocks]) {
  const put = (id, text, bad = false) => { $(id).textContent = text; $(id).classList.toggle("bad", bad); };
  put("meter-sessions", String(sessions));
  put("meter-rtf", rtfAvg.toFixed(3), rtfAvg > 1);
  put("meter-rtf-peak", rtfPeak.toFixed(3), rtfPeak > 1);
  put("meter-steps", steps.toFixed(1));
  put("meter-late-chunks", String(lateChunks), lateChunks > 0);
  put("meter-late-blocks", String(lateBlocks ?? 0), lateBlocks > 0);
  put("meter-lost-blocks", String(lostBlocks), lostBlocks > 0);
  $("bar-rtf").style.width = `${Math.min(rtfAvg, 1) * 100}%`;
  rtfHistory.push(rtfAvg);
  if (rtfHistory.length > PLOT_POINTS) rtfHistory.shift();
  plot();
}

function plot() {
  const canvas = $("rtf-plot");
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  const top = Math.max(1.2, ...rtfHistory) * 1.05;
  const y = (v) => height - (v / top) * height;
  g.clearRect(0, 0, width, height);
  g.strokeStyle = "#5c6670";
  g.beginPath(); g.moveTo(0, y(1)); g.lineTo(width, y(1)); g.stroke();
  g.strokeStyle = "#8fd18f";
  g.beginPath();
  rtfHistory.forEach((v, i) => {
    const x = width - (rtfHistory.length - 1 - i) * (width / (PLOT_POINTS - 1));
    if (i === 0) g.moveTo(x, y(v)); else g.lineTo(x, y(v));
  });
  g.stroke();
}

function onOsc({ address, args }) {
  if (sliders.has(address)) show(address, args[0]);
  else if (address === "/status/reply") meters(args);
  else if (address === "/style/list/reply") renderStyles(args);
  else if (address === "/style/select") markActive(args[0]);
  else if (address === "/fail") $("error").textContent = `${args[0]}: ${args[1]}`;
  else if (address === "/done") $("error").textContent = "";
}

function onCommand({ COMMAND: command, DATA: path }) {
  if ((command === "PATH_ADDED" || command === "PATH_REMOVED") && String(path).startsWith("/style/names/")) {
    send("/style/list");
  }
}

function connect() {
  socket = new WebSocket(`ws://${location.host}/`);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => {
    $("connection").textContent = "connected";
    $("connection").className = "on";
    for (const path of [...sliders.keys(), "/style/select"]) socket.send(JSON.stringify({ COMMAND: "LISTEN", DATA: path }));
    for (const path of sliders.keys()) send(path); // the values now, in case they moved while away
    send("/style/list");
    send("/status");
  });
  socket.addEventListener("message", (event) => {
    if (typeof event.data === "string") onCommand(JSON.parse(event.data));
    else onOsc(parse(event.data));
  });
  socket.addEventListener("close", () => {
    $("connection").textContent = "disconnected: retrying";
    $("connection").className = "off";
    setTimeout(connect, 1000);
  });
}

async function start() {
  const [tree, info] = await Promise.all([fetch("/").then((r) => r.json()), fetch("/?HOST_INFO").then((r) => r.json())]);
  $("name").textContent = info.NAME;
  document.title = info.NAME;
  buildParams(tree.CONTENTS.param.CONTENTS);
  markActive(tree.CONTENTS.style.CONTENTS.select.VALUE[0]);
  $("mix").addEventListener("click", mix);
  connect();
  setInterval(() => send("/status"), POLL_MS);
}

start().catch((error) => { $("error").textContent = `cannot read the namespace: ${error}`; });
