// The chart page: a series' candles and volume from GET /api/candles, kept current by the
// WebSocket /api/live, and the pipeline's health from GET /api/health. Missing windows are drawn
// as gaps (lightweight-charts' whitespace points), not closed up.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token"); // needed when the API is served beyond loopback
const LIMIT = 1000;
const HEALTH_EVERY_MS = 10000;
const UNIT_MS = { s: 1000, m: 60000, h: 3600000, d: 86400000 };

const page = document.body.dataset; // what the browser test reads: candles drawn, updates
const $ = (id) => document.getElementById(id);
let series = {}; // "source|exchange:SYMBOL" -> {exchange, symbol, windows}
let live = null;
let shown = null; // {times: Set of drawn window starts, last, sizeMs}
let generation = 0; // of show(): an older call still awaiting its page gives way

const chart = LightweightCharts.createChart($("chart"), {
  layout: { background: { color: "#111418" }, textColor: "#d1d4dc" },
  grid: { vertLines: { color: "#1e222d" }, horzLines: { color: "#1e222d" } },
  timeScale: { timeVisible: true, secondsVisible: true },
  autoSize: true,
});
const candleSeries = chart.addSeries(LightweightCharts.CandlestickSeries, {
  upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
  wickUpColor: "#26a69a", wickDownColor: "#ef5350",
});
const volumeSeries = chart.addSeries(LightweightCharts.HistogramSeries, {
  priceFormat: { type: "volume" }, priceScaleId: "",
});
volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

function api(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  return fetch(path, { headers }).then(async (response) => {
    const body = await response.json();
    if (!response.ok) throw new Error(`${path}: ${response.status} ${body.detail}`);
    return body;
  });
}

function windowMs(label) {
  return parseInt(label, 10) * UNIT_MS[label.slice(-1)];
}

function bar(candle) {
  const time = candle.start_ms / 1000;
  const up = candle.close >= candle.open;
  return [
    { time, open: candle.open, high: candle.high, low: candle.low, close: candle.close },
    { time, value: candle.volume, color: up ? "#26a69a80" : "#ef535080" },
  ];
}

// A whitespace point (a gap) for every window missing between `fromMs` and `toMs`.
function gapsBetween(fromMs, toMs, sizeMs) {
  const gaps = [];
  for (let t = fromMs + sizeMs; t < toMs; t += sizeMs) gaps.push({ time: t / 1000 });
  return gaps;
}

// The candles with a whitespace point for every missing window between two of them.
function withGaps(candles, sizeMs) {
  const prices = [], volumes = [];
  let previous = null;
  for (const candle of candles) {
    if (previous !== null) {
      const gaps = gapsBetween(previous, candle.start_ms, sizeMs);
      prices.push(...gaps);
      volumes.push(...gaps);
    }
    const [price, volume] = bar(candle);
    prices.push(price);
    volumes.push(volume);
    previous = candle.start_ms;
  }
  return [prices, volumes];
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = kind;
}

async function loadSymbols() {
  const listed = await api("/api/symbols");
  series = {};
  for (const [source, entries] of Object.entries(listed)) {
    for (const entry of entries) series[`${source}|${entry.exchange}:${entry.symbol}`] = entry;
  }
  fillSeries();
}

function fillSeries() {
  const source = $("source").value;
  const chosen = params.get("series");
  const names = Object.keys(series).filter((key) => key.startsWith(`${source}|`));
  $("series").replaceChildren(...names.map((key) => new Option(key.split("|")[1], key)));
  if (chosen && names.includes(`${source}|${chosen}`)) $("series").value = `${source}|${chosen}`;
  fillWindows();
}

function fillWindows() {
  const entry = series[$("series").value];
  const labels = entry ? Object.keys(entry.windows).sort((a, b) => windowMs(a) - windowMs(b)) : [];
  $("window").replaceChildren(...labels.map((label) => new Option(label, label)));
  const chosen = params.get("window");
  if (chosen && labels.includes(chosen)) $("window").value = chosen;
  show();
}

async function show() {
  const mine = ++generation;
  if (live) live.close();
  live = null;
  const entry = series[$("series").value];
  const window = $("window").value;
  candleSeries.setData([]);
  volumeSeries.setData([]);
  page.candles = "0";
  page.gaps = "0";
  page.updates = "0";
  if (!entry || !window) {
    setStatus("no candles yet: replay a file or start a feed", "idle");
    page.ready = "true";
    return;
  }
  const source = $("source").value;
  const query = new URLSearchParams({
    exchange: entry.exchange, symbol: entry.symbol, window, source, limit: String(LIMIT),
  });
  try {
    const body = await api(`/api/candles?${query}`);
    if (mine !== generation) return; // another series or window was chosen meanwhile
    const [prices, volumes] = withGaps(body.candles, windowMs(window));
    candleSeries.setData(prices);
    volumeSeries.setData(volumes);
    chart.timeScale().fitContent();
    shown = {
      times: new Set(body.candles.map((c) => c.start_ms)),
      last: prices.at(-1)?.time,
      sizeMs: windowMs(window),
    };
    page.candles = String(shown.times.size);
    page.gaps = String(prices.length - shown.times.size);
    const closed = body.candles.filter((c) => c.closed).length;
    setStatus(`${shown.times.size} candles (${closed} closed)`, "ok");
    $("message").textContent = "";
    follow(entry, window, source);
  } catch (error) {
    if (mine !== generation) return;
    $("message").textContent = String(error.message || error);
    setStatus("error", "bad");
  }
  page.ready = "true";
}

function follow(entry, window, source) {
  const query = new URLSearchParams({ exchange: entry.exchange, symbol: entry.symbol, window, source });
  if (token) query.set("token", token);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/live?${query}`);
  live = socket;
  socket.onopen = () => { page.live = "open"; };
  socket.onmessage = (message) => {
    const candle = JSON.parse(message.data);
    const [price, volume] = bar(candle);
    if (shown.last !== undefined && price.time < shown.last) {
      show(); // a late update of an older window: draw the page again
      return;
    }
    if (shown.last !== undefined) {
      for (const gap of gapsBetween(shown.last * 1000, candle.start_ms, shown.sizeMs)) {
        candleSeries.update(gap);
        volumeSeries.update(gap);
        page.gaps = String(Number(page.gaps) + 1);
      }
    }
    candleSeries.update(price);
    volumeSeries.update(volume);
    shown.last = price.time;
    shown.times.add(candle.start_ms);
    page.candles = String(shown.times.size);
    page.updates = String(Number(page.updates) + 1);
    setStatus(`${shown.times.size} candles, live`, "ok");
  };
  socket.onclose = (event) => {
    if (live !== socket) return;
    page.live = "closed";
    $("message").textContent = `live updates stopped (${event.code} ${event.reason}); reload to resume`;
  };
}

function describe(name, value, good) {
  const item = document.createElement("span");
  item.textContent = `${name}: ${value}`;
  item.className = good ? "ok" : "bad";
  return item;
}

async function refreshHealth() {
  try {
    const health = await api("/api/health");
    const items = [];
    for (const [source, stream] of Object.entries(health.streams)) {
      const text = stream.state === "running"
        ? `running, lag ${stream.kafka_lag_messages}, ${stream.seconds_since_progress} s since progress`
        : stream.state;
      const item = describe(`stream (${source})`, text, stream.state === "running");
      if (stream.state === "never started") item.className = "idle";
      items.push(item);
    }
    for (const feed of health.feeds) {
      const text = `${feed.state}, ${feed.connected ? "connected" : "disconnected"}`;
      items.push(describe(`feed ${feed.exchange}`, text, feed.state === "running" && feed.connected));
    }
    for (const [name, server] of Object.entries(health.servers)) {
      items.push(describe(name, server.up ? "up" : server.error, server.up));
    }
    $("health").replaceChildren(...items);
  } catch (error) {
    $("health").replaceChildren(describe("health", String(error.message || error), false));
  }
}

$("source").onchange = fillSeries;
$("series").onchange = fillWindows;
$("window").onchange = show;
const chosenSource = params.get("source");
if (chosenSource) $("source").value = chosenSource;
loadSymbols().catch((error) => {
  $("message").textContent = String(error.message || error);
  page.ready = "true";
});
refreshHealth();
setInterval(refreshHealth, HEALTH_EVERY_MS);
