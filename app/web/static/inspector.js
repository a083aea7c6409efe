/* The CrypticsLab inspector (agents/inspector.py, docs/operations.md#the-inspector).
 *
 * One page for every path: the script reads the path it was loaded at, asks the worker for
 * the same URL as JSON (Accept: application/json) once a second, and draws it. Nothing is
 * fetched from anywhere but the worker; the charts are plotly.js from the project's plotly
 * package (/static/plotly.min.js).
 *
 * Numbers: prices and sizes come from the JSON views already rounded to the instrument's steps;
 * the page writes every number with at most 15 significant digits (no float noise such as
 * 0.17200000000000001), and where it knows the instrument's steps (the quoting state) with the
 * step's decimals.
 */
"use strict";
(() => {
  const REFRESH_MS = 1000;
  const SLOW_EVERY = 5;            // the heavier listings (latency of every stage) every 5 refreshes
  const HISTORY_POINTS = 3600;     // PnL and position points kept while the page is open (an hour)
  const SERIES_ROWS = 30;          // windows of a series listed under its chart (the chart has them all)

  // -- DOM ----------------------------------------------------------------------------------

  function node(kid) {
    return kid instanceof Node ? kid : document.createTextNode(String(kid));
  }

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid !== null && kid !== undefined && kid !== false) el.append(node(kid));
    }
    return el;
  }

  function fill(el, ...kids) {
    el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false).map(node));
  }

  const enc = encodeURIComponent;

  // -- numbers ------------------------------------------------------------------------------

  /** Decimals of a step as JavaScript writes it: 0.001 → 3, 0.5 → 1, 1 → 0, 1e-7 → 7. */
  function stepDecimals(step) {
    if (typeof step !== "number" || !(step > 0)) return null;
    const m = String(step).match(/^\d+(?:\.(\d+))?(?:e-(\d+))?$/);
    if (!m) return null;
    return (m[1] ? m[1].length : 0) + (m[2] ? parseInt(m[2], 10) : 0);
  }

  /** A number without float noise, written the shortest way: at most 12 significant digits
   *  and 6 decimals from 1 up, 8 significant digits below 1. Sums of sizes such as
   *  3.1999999999999793 read 3.2, 0.17200000000000001 reads 0.172; a price or size on its grid
   *  reads as the view gives it. */
  function fmt(x) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    if (!Number.isFinite(x) || Number.isInteger(x)) return String(x);
    const magnitude = Math.abs(x);
    if (magnitude >= 1) {
      const digits = Math.floor(Math.log10(magnitude)) + 1;
      return String(parseFloat(x.toFixed(Math.max(0, Math.min(6, 12 - digits)))));
    }
    return String(parseFloat(x.toPrecision(8)));
  }

  function fixed(x, decimals) {
    if (typeof x !== "number" || !Number.isFinite(x)) return fmt(x);
    const text = x.toFixed(Math.max(0, Math.min(20, decimals)));
    return /^-0(\.0*)?$/.test(text) ? text.slice(1) : text;  // no "-0.0000"
  }

  /** A number on an instrument's grid: the step's decimals (plus ``extra`` for marks and mids). */
  function onStep(x, step, extra = 0) {
    const d = stepDecimals(step);
    return d === null ? fmt(x) : fixed(x, d + extra);
  }

  const money = (x) => fixed(x, 4);   // quote currency (USD): PnL, fees
  const bps = (x) => fixed(x, 2);
  function micros(x) {
    if (typeof x !== "number" || !Number.isFinite(x)) return fmt(x);
    return x >= 10000 ? `${(x / 1000).toFixed(2)} ms` : `${x.toFixed(x >= 100 ? 0 : 1)} µs`;
  }

  function num(x, text, field, signed = false) {
    let cls = "num";
    const shown = text === undefined ? fmt(x) : text;
    const value = parseFloat(shown);  // the sign of what is shown: -0.00001 written 0.0000 is no loss
    if (signed && Number.isFinite(value)) cls += value > 0 ? " pos" : value < 0 ? " negative" : "";
    return h("span", {class: cls, "data-field": field}, shown);
  }

  /** "2026-01-02T03:04:05.000+00:00" → "2026-01-02 03:04:05.000" (UTC): the form plotly reads. */
  function plotTime(iso) {
    return String(iso).replace("T", " ").replace(/(Z|[+-]00:?00)$/, "");
  }

  function clockTime(iso) {
    const m = String(iso).match(/T(\d\d:\d\d:\d\d(?:\.\d+)?)/);
    return m ? m[1] : String(iso);
  }

  function shortUrl(url) {
    return String(url || "–").replace(/^https?:\/\//, "");
  }

  // -- values as trees ----------------------------------------------------------------------

  const opened = new Set();  // <details> the reader opened, by path: kept open across refreshes

  function details(path, label, body) {
    const d = h("details", {"data-path": path}, h("summary", null, label), body);
    if (opened.has(path)) d.open = true;
    d.addEventListener("toggle", () => (d.open ? opened.add(path) : opened.delete(path)));
    return d;
  }

  const isScalar = (v) => v === null || typeof v !== "object";

  function scalar(v, field) {
    if (v === null || v === undefined) return h("span", {class: "null", "data-field": field}, "null");
    if (typeof v === "number") {
      // Unix seconds (mark_time, open_time, …): to the microsecond, the time in a tooltip.
      if (/(_time|timestamp|times)(\[\d+\])?$/.test(field || "") && v > 1e9 && v < 1e11) {
        const el = num(v, String(parseFloat(v.toFixed(6))), field);
        el.title = new Date(v * 1000).toISOString();
        return el;
      }
      return num(v, undefined, field);
    }
    if (typeof v === "boolean") return h("span", {class: "bool", "data-field": field}, String(v));
    return h("span", {class: "str", "data-field": field}, String(v));
  }

  function scalarList(v, path) {
    return ["[", v.map((x, i) => [i ? ", " : "", scalar(x, `${path}[${i}]`)]), "]"];
  }

  /** Any JSON value, nested tables for objects; long lists and ``offsets`` folded. */
  function tree(v, path = "") {
    if (isScalar(v)) return scalar(v, path);
    if (Array.isArray(v)) {
      if (!v.length) return h("span", {class: "null"}, "[]");
      if (v.every(isScalar)) {
        return v.length <= 8 ? h("span", null, scalarList(v, path))
          : details(path, `[${v.length} numbers]`, h("div", null, scalarList(v, path)));
      }
      const body = h("table", {class: "kv"}, v.map((x, i) =>
        h("tr", null, h("th", null, String(i)), h("td", null, tree(x, `${path}[${i}]`)))));
      return v.length <= 3 ? body : details(path, `[${v.length} items]`, body);
    }
    const keys = Object.keys(v);
    if (!keys.length) return h("span", {class: "null"}, "{}");
    return h("table", {class: "kv"}, keys.map((k) => {
      const p = path ? `${path}.${k}` : k;
      const child = v[k];
      const cell = k === "offsets" && !isScalar(child)
        ? details(p, `${Object.keys(child).length} offsets`, tree(child, p)) : tree(child, p);
      return h("tr", null, h("th", null, k), h("td", null, cell));
    }));
  }

  /** A value on one line (a listing's cell): scalar fields inline, the rest folded. */
  function inline(v, path) {
    if (isScalar(v)) return scalar(v, path);
    if (Array.isArray(v)) return tree(v, path);
    return h("div", {class: "inline-kv"}, Object.keys(v).map((k) => {
      const child = v[k];
      const p = `${path}.${k}`;
      let cell;
      if (isScalar(child)) cell = scalar(child, k);
      else if (k === "offsets") return null;
      else if (Array.isArray(child) && child.length <= 4 && child.every(isScalar)) cell = h("span", null, scalarList(child, k));
      else if (!Array.isArray(child) && !Object.keys(child).length) cell = h("span", {class: "null"}, "{}");
      else if (!Array.isArray(child) && Object.keys(child).length <= 8 && Object.values(child).every(isScalar)) {
        cell = h("span", {class: "inline-kv nested"}, Object.entries(child).map(([ck, cv]) =>
          h("span", {class: "f"}, h("span", {class: "name"}, ck), scalar(cv, `${k}.${ck}`))));
      } else {
        const n = Array.isArray(child) ? `${child.length} items` : `${Object.keys(child).length} keys`;
        cell = details(p, Array.isArray(child) ? `[${n}]` : `{${n}}`, tree(child, k));
      }
      return h("span", {class: "f"}, h("span", {class: "name"}, k), cell);
    }));
  }

  // -- the worker's JSON --------------------------------------------------------------------

  async function getJson(url) {
    const response = await fetch(url, {headers: {Accept: "application/json"}, cache: "no-store"});
    let body;
    try {
      body = await response.json();
    } catch (e) {
      throw new Error(`${url}: HTTP ${response.status} without JSON`);
    }
    return {status: response.status, body};
  }

  async function okJson(url) {
    const {status, body} = await getJson(url);
    if (status !== 200) {
      const error = new Error(body && body.error ? `${body.error} (HTTP ${status})` : `${url}: HTTP ${status}`);
      error.status = status;
      error.body = body;
      throw error;
    }
    return body;
  }

  function partialNotice(body) {
    if (!body || !body.partial) return null;
    const parts = (body.unreachable || []).map((u) => `${shortUrl(u.worker)} (${u.error})`);
    const unassigned = (body.unassigned_partitions || []).length
      ? ` Partitions without a worker yet: ${body.unassigned_partitions.join(", ")}.` : "";
    return h("div", {class: "notice"}, "Partial answer. ",
      parts.length ? `Did not answer: ${parts.join("; ")}.` : "", unassigned);
  }

  // -- charts -------------------------------------------------------------------------------

  const PLOT_CONFIG = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"]};

  function plot(div, traces, layout) {
    if (!window.Plotly) {
      fill(div, h("p", {class: "muted"}, "Charts are off: the worker has no plotly package (pip install -e .)."));
      return;
    }
    const base = {
      margin: {l: 64, r: 24, t: 34, b: 44}, uirevision: "keep", showlegend: true,
      legend: {orientation: "h", y: -0.18}, font: {family: "system-ui, sans-serif", size: 12},
      paper_bgcolor: "#ffffff", plot_bgcolor: "#ffffff",
    };
    window.Plotly.react(div, traces, Object.assign(base, layout), PLOT_CONFIG);
  }

  /** A time axis; with a single point, a window either side of it (plotly would zoom to a µs). */
  function dateAxis(x, seconds) {
    if (x.length !== 1) return {type: "date"};
    const t = Date.parse(`${x[0].replace(" ", "T")}Z`);
    const at = (ms) => new Date(ms).toISOString().replace("T", " ").replace("Z", "");
    return {type: "date", range: [at(t - seconds * 1000), at(t + seconds * 1000)]};
  }

  function chartDiv(id, small) {
    return h("div", {class: small ? "chart small" : "chart", id});
  }

  // -- pages --------------------------------------------------------------------------------

  const main = document.getElementById("page");
  const statusEl = document.getElementById("status");

  function heading(title, sub) {
    return h("h1", null, title, sub ? h("span", {class: "sub"}, sub) : null);
  }

  /** The other workers of the group, where the analytics may run when this worker's are off
   *  (under `cryptics up` they have a worker of their own): the one /tables/ names as the ``via``
   *  of the analytics tables, else every other member. Links only: the page asks them nothing. */
  let elsewhere = {at: -Infinity, urls: []};
  async function analyticsWorkers() {
    if (performance.now() - elsewhere.at > 10000) {
      const t = await okJson("/tables/");
      const table = (t.tables || []).find((x) => x.name === "position_pnl");
      const others = (t.workers || []).filter((url) => url !== t.worker);
      elsewhere = {at: performance.now(), urls: table && table.via ? [table.via] : others};
    }
    return elsewhere.urls;
  }

  function analyticsOff(urls) {
    return h("div", {class: "notice", id: "analytics-off"}, "The analytics are off on this worker (CRYPTICS_ANALYTICS_ENABLED=false)",
      urls.length ? ["; open the analytics of ", urls.map((url, i) =>
        [i ? ", " : "", h("a", {href: `${url}/analytics/`}, shortUrl(url))]), " (another worker of the group)."] : ".");
  }

  function badge(text, cls) {
    return h("span", {class: `badge ${cls || ""}`, "data-field": "badge"}, text);
  }

  // Home ---------------------------------------------------------------------------------------

  function homePage() {
    const worker = h("span", {class: "sub", id: "worker"});
    const quotingCard = h("div", {class: "panel", id: "home-quoting"});
    const accountCard = h("div", {class: "panel", id: "home-account"});
    const tablesCard = h("div", {class: "panel", id: "home-tables"});
    const pages = h("div", {class: "panel", id: "home-pages"},
      h("h2", null, "Pages"),
      h("table", null, [
        ["/tables/", "Tables", "every Faust table of the app: kind, help, keys, which worker holds which partition"],
        ["/analytics/", "Analytics", "positions and PnL over time, markout curves, stage latency percentiles"],
        ["/quoting/", "Quoting", "trading state, kill switch, per instrument inputs, position, ladder and open orders"],
        ["/market-data/", "Market data", "the venue session, the quoting lease, notifications, local books"],
        ["/sink/", "Sink", "the persistence consumer: rows written, batches, retries, dead letters"],
        ["/heartbeat/", "Heartbeat", "heartbeats per worker and the round trip through the broker"],
      ].map(([href, name, what]) => h("tr", null, h("td", null, h("a", {href}, name)), h("td", {class: "muted"}, what)))),
      h("p", {class: "muted"}, "Every page is the worker's JSON view at the same address, drawn; ",
        h("code", null, "curl"), " (or ", h("code", null, "?format=json"), ") gets the JSON. ",
        h("a", {href: "/metrics"}, "/metrics"), " is the Prometheus text."));
    fill(main, h("h1", null, "Worker ", worker), h("div", {class: "cards"}, quotingCard, accountCard, tablesCard, pages));

    return {
      async refresh() {
        const [quoting, analytics, tables] = await Promise.allSettled(
          [okJson("/quoting/"), okJson("/analytics/"), okJson("/tables/")]);
        if (quoting.status === "fulfilled") {
          const q = quoting.value;
          fill(quotingCard, h("h2", null, h("a", {href: "/quoting/"}, "Quoting")),
            h("p", null, badge(q.state, q.state), " ", q.quoting ? "quoting" : "not quoting (no venue session or lease)",
              q.kill_switch ? [" · ", badge(`kill switch: ${q.kill_switch}`, "bad")] : " · kill switch off"),
            h("table", null, h("tr", null, h("th", null, "instrument"), h("th", {class: "n"}, "position"),
              h("th", {class: "n"}, "PnL"), h("th", {class: "n"}, "mark"), h("th", {class: "n"}, "orders")),
            Object.entries(q.instruments || {}).map(([name, s]) => h("tr", {"data-key": name},
              h("td", {class: "key"}, name),
              h("td", {class: "n"}, num(s.position, onStep(s.position, s.size_step), "position")),
              h("td", {class: "n"}, num(s.pnl, money(s.pnl), "pnl", true)),
              h("td", {class: "n"}, num(s.mark, onStep(s.mark, s.tick_size, 2), "mark")),
              h("td", {class: "n"}, num((s.open_orders || []).length, undefined, "open_orders"))))));
        } else {
          fill(quotingCard, h("h2", null, "Quoting"), h("div", {class: "error-box"}, quoting.reason.message));
        }
        if (analytics.status === "fulfilled" && !analytics.value.enabled) {
          fill(accountCard, h("h2", null, "Account (analytics)"), analyticsOff(await analyticsWorkers()));
        } else if (analytics.status === "fulfilled") {
          const a = analytics.value.account || {};
          fill(accountCard, h("h2", null, h("a", {href: "/analytics/"}, "Account (analytics)")),
            h("table", {class: "kv"}, [
              ["net PnL", a.net_pnl, money, true], ["realized PnL", a.realized_pnl, money, true],
              ["unrealized PnL", a.unrealized_pnl, money, true], ["fees", a.fees, money],
              ["funding", a.funding_pnl, money, true], ["volume", a.volume, fmt], ["trades", a.trades, fmt],
            ].map(([label, x, f, signed]) => h("tr", null, h("th", null, label),
              h("td", {class: "n"}, num(x, f(x), label.replace(/ /g, "_"), signed))))),
            h("p", {class: "muted"}, "This worker's instruments."));
        } else {
          fill(accountCard, h("h2", null, "Account"), h("div", {class: "error-box"}, analytics.reason.message));
        }
        if (tables.status === "fulfilled") {
          const t = tables.value;
          worker.textContent = `${shortUrl(t.worker)} · group: ${(t.workers || []).map(shortUrl).join(", ")}`;
          fill(tablesCard, h("h2", null, h("a", {href: "/tables/"}, `Tables (${t.tables.length})`)), partialNotice(t),
            h("table", null, h("tr", null, h("th", null, "table"), h("th", null, "kind"), h("th", {class: "n"}, "keys")),
              t.tables.map((x) => h("tr", {"data-table": x.name},
                h("td", null, h("a", {href: `/tables/${enc(x.name)}/`}, x.name)), h("td", null, x.kind),
                h("td", {class: "n"}, num(x.keys, undefined, "keys"))))));
        } else {
          fill(tablesCard, h("h2", null, "Tables"), h("div", {class: "error-box"}, tables.reason.message));
        }
        const failed = [quoting, analytics, tables].find((r) => r.status === "rejected");
        if (failed) throw failed.reason;
      },
    };
  }

  // Tables -------------------------------------------------------------------------------------

  function partitionText(partitions) {
    const byWorker = new Map();
    for (const p of partitions || []) {
      const w = p.worker ? shortUrl(p.worker) : "no worker yet";
      if (!byWorker.has(w)) byWorker.set(w, []);
      byWorker.get(w).push(p.partition);
    }
    return [...byWorker.entries()].map(([w, ps]) => h("div", {class: "time"}, `${w}: ${ps.join(", ")}`));
  }

  function tablesPage() {
    const sub = h("span", {class: "sub"});
    const notice = h("div");
    const body = h("div", {class: "panel"});
    fill(main, h("h1", null, "Tables", sub), notice, body);
    return {
      async refresh() {
        const t = await okJson("/tables/");
        sub.textContent = `asked ${shortUrl(t.worker)}; group: ${(t.workers || []).map(shortUrl).join(", ")}`;
        fill(notice, partialNotice(t));
        fill(body, h("table", {id: "tables"},
          h("tr", null, ["table", "kind", "window", "keys", "entries", "partitions by worker", "help"].map((c) =>
            h("th", {class: c === "keys" || c === "entries" ? "n" : null}, c))),
          t.tables.map((x) => h("tr", {"data-table": x.name},
            h("td", {class: "key"}, h("a", {href: `/tables/${enc(x.name)}/`}, x.name)),
            h("td", null, badge(x.kind)),
            h("td", {class: "time"}, x.window ? `${fmt(x.window.size_seconds)} s, kept ${fmt(x.window.expires_seconds)} s` : "–"),
            h("td", {class: "n"}, num(x.keys, undefined, "keys")),
            h("td", {class: "n"}, num(x.entries, undefined, "entries")),
            h("td", null, partitionText(x.partitions)),
            h("td", {class: "muted"}, x.help)))));
      },
    };
  }

  // One table's keys ---------------------------------------------------------------------------

  function tablePage(name) {
    const params = new URLSearchParams(location.search);
    const state = {prefix: params.get("prefix") || "", limit: params.get("limit") || "100",
                   cursor: params.get("cursor") || "", window: params.get("window") || "", back: []};
    const sub = h("span", {class: "sub"});
    const notice = h("div");
    const list = h("div", {class: "panel"});
    const prefix = h("input", {type: "search", placeholder: "key prefix", value: state.prefix, id: "prefix"});
    const limit = h("select", {id: "limit"}, ["20", "100", "500", "1000"].map((n) =>
      h("option", {value: n, selected: n === state.limit}, `${n} a page`)));
    const windowChoice = h("select", {id: "window", hidden: true}, [
      ["", "every live window"], ["now", "window now"], ["current", "current window"], ["delta:60s", "a minute ago"],
    ].map(([v, label]) => h("option", {value: v, selected: v === state.window}, label)));
    const first = h("button", {type: "button", id: "first"}, "« first");
    const prev = h("button", {type: "button", id: "prev"}, "‹ previous");
    const next = h("button", {type: "button", id: "next"}, "next ›");
    const pageInfo = h("span", {class: "muted"});
    let lastBody = null;
    let view = null;

    function query() {
      const q = new URLSearchParams();
      if (state.prefix) q.set("prefix", state.prefix);
      if (state.limit !== "100") q.set("limit", state.limit);
      if (state.cursor) q.set("cursor", state.cursor);
      if (state.window) q.set("window", state.window);
      const text = q.toString();
      return text ? `?${text}` : "";
    }
    function moved() {
      history.replaceState(null, "", location.pathname + query());
      jsonLink();
      view.refresh().catch(() => {});
    }
    prefix.addEventListener("change", () => { state.prefix = prefix.value; state.cursor = ""; state.back = []; moved(); });
    limit.addEventListener("change", () => { state.limit = limit.value; state.cursor = ""; state.back = []; moved(); });
    windowChoice.addEventListener("change", () => { state.window = windowChoice.value; state.cursor = ""; state.back = []; moved(); });
    first.addEventListener("click", () => { state.cursor = ""; state.back = []; moved(); });
    prev.addEventListener("click", () => { state.cursor = state.back.pop() || ""; moved(); });
    next.addEventListener("click", () => {
      if (lastBody && lastBody.next_cursor) { state.back.push(state.cursor); state.cursor = lastBody.next_cursor; moved(); }
    });

    fill(main, h("h1", null, h("a", {href: "/tables/"}, "Tables"), " / ", name, sub),
      h("div", {class: "bar"}, prefix, limit, windowChoice, first, prev, next, pageInfo), notice, list);

    view = {
      async refresh() {
        const b = await okJson(`/tables/${enc(name)}/${query()}`);
        lastBody = b;
        const windowed = b.kind === "windowed";
        windowChoice.hidden = !windowed;
        sub.textContent = `${b.kind} · ${b.items.length} entries on this page · from ${(b.workers || []).map(shortUrl).join(", ")}`;
        first.disabled = prev.disabled = !state.cursor;
        next.disabled = !b.next_cursor;
        pageInfo.textContent = state.back.length || state.cursor ? `page ${state.back.length + 2}` : "page 1";
        fill(notice, partialNotice(b));
        if (!b.items.length) {
          fill(list, h("p", {class: "muted"}, state.prefix ? `No key starts with “${state.prefix}”.` : "No entries (yet)."));
          return;
        }
        fill(list, h("table", {id: "entries"},
          h("tr", null, h("th", null, "key"), windowed ? h("th", null, "window (UTC)") : null,
            h("th", null, "value"), h("th", null, "worker")),
          b.items.map((item) => h("tr", {"data-key": item.key, "data-window": item.window ? item.window.start : null},
            h("td", {class: "key"}, h("a", {href: `/tables/${enc(name)}/${enc(item.key)}/${windowed ? "?window=series" : ""}`}, item.key)),
            windowed ? h("td", {class: "time"}, `${clockTime(item.window.start)} – ${clockTime(item.window.end)}`) : null,
            h("td", {class: "value"}, inline(item.value, item.key)),
            h("td", {class: "time"}, shortUrl(item.worker))))));
      },
    };
    return view;
  }

  // One key --------------------------------------------------------------------------------

  /** The chart of a windowed key's series: candles, latency percentiles, or any numeric field. */
  function seriesChart(name, windows, div, fieldSelect) {
    const x = windows.map((w) => plotTime(w.window.start));
    const values = windows.map((w) => w.value || {});
    if (/candles/.test(name)) {
      const traces = [{
        type: "candlestick", name: name.startsWith("mark") ? "mark price" : "trade price", x,
        open: values.map((v) => v.open), high: values.map((v) => v.high),
        low: values.map((v) => v.low), close: values.map((v) => v.close),
      }];
      if (name.startsWith("trade")) {
        traces.push({type: "bar", name: "volume", x, y: values.map((v) => v.volume), yaxis: "y2",
                     marker: {color: "rgba(31,111,235,0.25)"}});
      }
      plot(div, traces, {title: {text: `${name}: OHLC per window (UTC)`},
        xaxis: {rangeslider: {visible: false}, ...dateAxis(x, name.endsWith("_1s") ? 1 : 60)}, yaxis: {title: {text: "price"}},
        yaxis2: {overlaying: "y", side: "right", showgrid: false, title: {text: "volume"}}});
      return;
    }
    if (name === "stage_latency_1m") {
      const traces = ["p50", "p90", "p99"].map((q) => ({
        type: "scatter", mode: "lines+markers", name: q, x,
        y: values.map((v) => (v.summary ? v.summary[q] : null)),
      }));
      plot(div, traces, {title: {text: "latency percentiles per minute (µs, UTC)"},
        xaxis: dateAxis(x, 60), yaxis: {title: {text: "µs"}, rangemode: "tozero"}});
      return;
    }
    const fields = [...new Set(values.flatMap((v) => Object.keys(v).filter((k) => typeof v[k] === "number")))];
    const chosen = fields.includes(fieldSelect.value) ? fieldSelect.value : fields[0];
    if (fieldSelect.options.length !== fields.length) {
      fill(fieldSelect, fields.map((f) => h("option", {value: f, selected: f === chosen}, f)));
    }
    fieldSelect.hidden = false;
    if (!chosen) return;
    plot(div, [{type: "scatter", mode: "lines+markers", name: chosen, x, y: values.map((v) => v[chosen])}],
      {title: {text: `${name}: ${chosen} per window (UTC)`}, xaxis: dateAxis(x, 60)});
  }

  function keyPage(name, key) {
    const params = new URLSearchParams(location.search);
    let choice = params.get("window") || "";
    const sub = h("span", {class: "sub"});
    const notice = h("div");
    const choices = h("div", {class: "bar", hidden: true});
    const fieldSelect = h("select", {id: "field", hidden: true});
    const chartPanel = h("div", {class: "panel", hidden: true}, h("div", {class: "bar"}, fieldSelect), chartDiv("chart"));
    const valuePanel = h("div", {class: "panel", id: "value"});
    const chart = chartPanel.querySelector("#chart");
    let view = null;
    fieldSelect.addEventListener("change", () => view.refresh().catch(() => {}));

    function choose(value) {
      choice = value;
      const q = choice ? `?window=${enc(choice)}` : "";
      history.replaceState(null, "", location.pathname + q);
      jsonLink();
      view.refresh().catch(() => {});
    }
    fill(choices, h("span", {class: "muted"}, "window:"),
      [["series", "every live window"], ["now", "now"], ["current", "current"], ["delta:60s", "a minute ago"]].map(([v, label]) =>
        h("button", {type: "button", "data-window": v, onclick: () => choose(v)}, label)));
    fill(main, h("h1", null, h("a", {href: "/tables/"}, "Tables"), " / ",
      h("a", {href: `/tables/${enc(name)}/`}, name), " / ", h("span", {class: "key"}, key), sub),
      notice, choices, chartPanel, valuePanel);

    view = {
      async refresh() {
        const base = `/tables/${enc(name)}/${enc(key)}/`;
        const b = await okJson(base + (choice ? `?window=${enc(choice)}` : ""));
        const windowed = b.kind === "windowed";
        sub.textContent = `${b.kind} · held by ${shortUrl(b.worker)}${b.partition === null || b.partition === undefined ? "" : `, partition ${b.partition}`}`;
        fill(notice, partialNotice(b));
        choices.hidden = !windowed;
        chartPanel.hidden = !windowed;
        if (!windowed) {
          fill(valuePanel, h("div", {"data-key": key}, tree(b.value)));
          return;
        }
        const shown = b.window_choice || "now";
        for (const button of choices.querySelectorAll("button")) button.classList.toggle("on", button.dataset.window === shown);
        const series = shown === "series" ? b : await okJson(`${base}?window=series`);
        seriesChart(name, series.windows || [], chart, fieldSelect);
        if (shown === "series") {
          const all = b.windows || [];
          const newest = all.slice(-SERIES_ROWS).reverse();
          const older = all.length - newest.length;
          fill(valuePanel, h("h2", null, `${all.length} live windows${older ? `, the newest ${newest.length}` : ""}, newest first`),
            older ? h("p", {class: "muted"}, `The chart draws all ${all.length}; the JSON link has every value.`) : null,
            h("table", {id: "windows"}, h("tr", null, h("th", null, "window (UTC)"), h("th", null, "value")),
              newest.map((w) => h("tr", {"data-key": key, "data-window": w.window.start},
                h("td", {class: "time"}, `${plotTime(w.window.start)} – ${clockTime(w.window.end)}`),
                h("td", null, inline(w.value, w.window.start))))));
        } else {
          fill(valuePanel, h("h2", null, `window ${shown}: ${plotTime(b.window.start)} – ${clockTime(b.window.end)} UTC`),
            b.value === null ? h("p", {class: "muted"}, "Nothing in this window.") : h("div", {"data-key": key}, tree(b.value)));
        }
      },
    };
    return view;
  }

  // Analytics ----------------------------------------------------------------------------------

  function analyticsPage() {
    const positions = h("div", {class: "panel", id: "positions"});
    const pnlChart = chartDiv("pnl-chart", true);
    const positionChart = chartDiv("position-chart", true);
    const markoutChart = chartDiv("markout-chart");
    const markoutTable = h("div", {id: "markouts"});
    const latencyChart = chartDiv("latency-chart");
    const latencyTable = h("div", {id: "latency"});
    const counters = h("div", {class: "panel", id: "counters"});
    const off = h("div");
    fill(main, heading("Analytics", "this worker's analytics tables (GET /analytics/)"), off,
      h("h2", null, "Positions and PnL"), positions,
      h("div", {class: "grid2"}, h("div", {class: "panel"}, pnlChart), h("div", {class: "panel"}, positionChart)),
      h("p", {class: "muted"}, "PnL and position are sampled once a second while this page is open."),
      h("h2", null, "Markout curves"),
      h("div", {class: "panel"}, markoutChart, markoutTable),
      h("h2", null, "Stage latency, current minute"),
      h("div", {class: "panel"}, latencyChart, latencyTable),
      h("h2", null, "Counters"), counters);

    const history = {t: [], net: {}, position: {}, account: []};
    let refreshes = 0;

    function record(a) {
      history.t.push(new Date().toISOString().replace("T", " ").replace("Z", ""));
      history.account.push((a.account || {}).net_pnl);
      for (const [name, p] of Object.entries(a.positions || {})) {
        if (!history.net[name]) {
          history.net[name] = new Array(history.t.length - 1).fill(null);
          history.position[name] = new Array(history.t.length - 1).fill(null);
        }
      }
      for (const name of Object.keys(history.net)) {
        const p = (a.positions || {})[name];
        history.net[name].push(p ? p.net_pnl : null);
        history.position[name].push(p ? p.position : null);
      }
      if (history.t.length > HISTORY_POINTS) {
        history.t.shift();
        history.account.shift();
        for (const name of Object.keys(history.net)) { history.net[name].shift(); history.position[name].shift(); }
      }
    }

    let steps = {};  // instrument → {tick_size, volume_tick_size}, as the table views know them

    function drawPositions(a) {
      const rows = Object.entries(a.positions || {}).sort();
      const size = (name) => (x) => onStep(x, (steps[name] || {}).volume_tick_size);
      const price = (name) => (x) => onStep(x, (steps[name] || {}).tick_size, 2);  // marks, entries: off the grid
      const cols = [["position", size], ["average_price", price], ["mark_price", price], ["realized_pnl", () => money, true],
        ["unrealized_pnl", () => money, true], ["fees", () => money], ["funding_pnl", () => money, true],
        ["net_pnl", () => money, true], ["volume", size], ["trades", () => fmt]];
      const t = a.account || {};
      fill(positions, h("table", {id: "positions-table"},
        h("tr", null, h("th", null, "instrument"), cols.map(([c]) => h("th", {class: "n"}, c.replace(/_/g, " ")))),
        rows.map(([name, p]) => h("tr", {"data-key": name}, h("td", {class: "key"}, name),
          cols.map(([c, f, signed]) => h("td", {class: "n"}, num(p[c], f(name)(p[c]), c, signed))))),
        h("tr", {"data-key": "account"}, h("td", null, h("b", null, "account")),
          cols.map(([c, f, signed]) => h("td", {class: "n"},
            c in t && c !== "volume" ? num(t[c], f(null)(t[c]), c, signed) : "")))),
      h("p", {class: "muted"}, "Positions and sizes on the instrument's volume step, prices to a hundredth of its tick; ",
        "PnL and fees in quote currency."));
    }

    function drawHistory() {
      plot(pnlChart, [
        // New arrays each time: Plotly.react redraws what changed by reference.
        ...Object.keys(history.net).map((name) => ({type: "scatter", mode: "lines", name, x: [...history.t], y: [...history.net[name]]})),
        {type: "scatter", mode: "lines", name: "account", x: [...history.t], y: [...history.account], line: {dash: "dot", color: "#444"}},
      ], {title: {text: "net PnL (quote currency)"}, xaxis: {type: "date"}});
      plot(positionChart, Object.keys(history.position).map((name) => ({
        type: "scatter", mode: "lines", line: {shape: "hv"}, name, x: [...history.t], y: [...history.position[name]],
      })), {title: {text: "position"}, xaxis: {type: "date"}});
    }

    function drawMarkouts(a) {
      const traces = [];
      const rows = [];
      for (const [name, m] of Object.entries(a.markouts || {}).sort()) {
        const agg = m.aggregates || {};
        for (const side of ["buy", "sell"]) {
          const bySide = agg[side] || {};
          const horizons = Object.keys(bySide).map(Number).sort((x, y) => x - y);
          traces.push({type: "scatter", mode: "lines+markers", name: `${name} ${side}`,
            line: {dash: side === "sell" ? "dash" : "solid"},
            x: horizons, y: horizons.map((hz) => bySide[String(hz)].markout_bps)});
          rows.push(h("tr", {"data-key": `${name}|${side}`}, h("td", {class: "key"}, name), h("td", {class: `side-${side}`}, side),
            horizons.map((hz) => {
              const s = bySide[String(hz)];
              return h("td", {class: "n"}, num(s.markout_bps, s.markout_bps === null ? "–" : bps(s.markout_bps), `${hz}s`, true),
                h("span", {class: "muted"}, ` (${s.count})`));
            })));
        }
        rows.push(h("tr", null, h("td", null, ""), h("td", {class: "muted", colspan: 5},
          `pending fills: ${m.pending}, late horizons: ${agg.late === undefined ? "–" : agg.late}`)));
      }
      plot(markoutChart, traces, {title: {text: "mean markout by horizon (bps of the mid; positive is good for us)"},
        xaxis: {type: "log", tickvals: [1, 5, 30, 60], ticktext: ["1 s", "5 s", "30 s", "60 s"], title: {text: "horizon"}},
        yaxis: {title: {text: "bps"}, zeroline: true}});
      fill(markoutTable, rows.length ? h("table", {id: "markout-table"},
        h("tr", null, h("th", null, "instrument"), h("th", null, "side"),
          ["1 s", "5 s", "30 s", "60 s"].map((c) => h("th", {class: "n"}, `${c} bps (count)`))), rows)
        : h("p", {class: "muted"}, "No fills yet."));
    }

    async function drawLatency() {
      const b = await okJson("/tables/stage_latency_1m/?window=now&limit=1000");
      const items = b.items.filter((i) => i.value && i.value.summary);
      const keys = items.map((i) => i.key);
      latencyChart.style.height = `${Math.max(300, 90 + keys.length * 34)}px`;
      plot(latencyChart, ["p50", "p90", "p99"].map((q) => ({
        type: "bar", orientation: "h", name: q, y: keys, x: items.map((i) => i.value.summary[q]),
      })), {title: {text: "stage latency percentiles (µs), this minute"}, barmode: "group",
        xaxis: {type: "log", title: {text: "µs"}, dtick: 1, tickformat: "~s"}, yaxis: {autorange: "reversed", automargin: true},
        margin: {l: 24, r: 24, t: 34, b: 44}});
      fill(latencyTable, h("table", {id: "latency-table"},
        h("tr", null, ["instrument | stage", "count", "mean", "p50", "p90", "p99", "max"].map((c, i) => h("th", {class: i ? "n" : null}, c))),
        items.map((i) => h("tr", {"data-key": i.key},
          h("td", {class: "key"}, h("a", {href: `/tables/stage_latency_1m/${enc(i.key)}/?window=series`}, i.key)),
          h("td", {class: "n"}, num(i.value.summary.count, undefined, "count")),
          ["mean", "p50", "p90", "p99", "max"].map((q) => h("td", {class: "n"}, num(i.value.summary[q], micros(i.value.summary[q]), q)))))),
      partialNotice(b));
    }

    return {
      async refresh() {
        const slow = refreshes++ % SLOW_EVERY === 0;
        if (slow) steps = (await okJson("/tables/?local=1")).steps || {};  // the steps this worker knows (its own or a peer's)
        const a = await okJson("/analytics/");
        fill(off, a.enabled ? null : analyticsOff(await analyticsWorkers()));
        record(a);
        drawPositions(a);
        drawHistory();
        drawMarkouts(a);
        fill(counters, h("h2", null, "keys per table"), inline(a.tables || {}, "tables"),
          h("h2", null, "events"), inline(a.counters || {}, "counters"));
        if (slow) await drawLatency();
      },
    };
  }

  // Quoting ------------------------------------------------------------------------------------

  function quotingPage() {
    const head = h("div", {class: "panel", id: "quoting-state"});
    const instruments = h("div", {id: "instruments"});
    const gateway = h("div", {class: "panel", id: "gateway"});
    fill(main, heading("Quoting", "GET /quoting/"), head, instruments, h("h2", null, "Gateway"), gateway);

    function ladder(s) {
      const bids = s.bids || [];
      const asks = s.asks || [];
      const depth = Math.max(bids.length, asks.length);
      const rows = [];
      for (let i = 0; i < depth; i++) {
        const b = bids[i] || [];
        const a = asks[i] || [];
        rows.push(h("tr", {"data-level": i},
          h("td", {class: "n"}, b.length ? num(b[1], onStep(b[1], s.size_step), "bid_size") : ""),
          h("td", {class: "n side-buy"}, b.length ? num(b[0], onStep(b[0], s.tick_size), "bid_price") : ""),
          h("td", {class: "n side-sell"}, a.length ? num(a[0], onStep(a[0], s.tick_size), "ask_price") : ""),
          h("td", {class: "n"}, a.length ? num(a[1], onStep(a[1], s.size_step), "ask_size") : "")));
      }
      return h("table", {class: "ladder"}, h("tr", null, ["bid size", "bid", "ask", "ask size"].map((c) => h("th", {class: "n"}, c))),
        rows.length ? rows : h("tr", null, h("td", {colspan: 4, class: "muted"}, "no quotes")));
    }

    function orders(s) {
      const list = s.open_orders || [];
      if (!list.length) return h("p", {class: "muted"}, "No open orders.");
      return h("table", {class: "orders"},
        h("tr", null, ["order", "side", "level", "price", "amount", "status"].map((c, i) => h("th", {class: i > 1 && i < 5 ? "n" : null}, c))),
        list.map((o) => h("tr", {"data-order": o.client_order_id},
          h("td", {class: "key"}, fmt(o.client_order_id)), h("td", {class: `side-${o.direction}`}, o.direction),
          h("td", {class: "n"}, num(o.level)), h("td", {class: "n"}, num(o.price, onStep(o.price, s.tick_size), "price")),
          h("td", {class: "n"}, num(o.amount, onStep(o.amount, s.size_step), "amount")), h("td", null, o.status))));
    }

    return {
      async refresh() {
        const q = await okJson("/quoting/");
        const denials = Object.entries(q.denials || {});
        fill(head, h("table", {class: "kv"},
          h("tr", null, h("th", null, "state"), h("td", null, badge(q.state, q.state), " ", q.state_reason ? h("span", {class: "muted"}, q.state_reason) : "")),
          h("tr", null, h("th", null, "kill switch"), h("td", {"data-field": "kill_switch"}, q.kill_switch ? badge(`tripped: ${q.kill_switch}`, "bad") : badge("off", "ok"))),
          h("tr", null, h("th", null, "quoting"), h("td", {"data-field": "quoting"}, q.quoting ? "yes: this worker holds the venue session" : "no (no venue session, or another worker holds the lease)")),
          h("tr", null, h("th", null, "quote core"), h("td", null, q.core)),
          h("tr", null, h("th", null, "errors"), h("td", null, num(q.errors))),
          h("tr", null, h("th", null, "denials"), h("td", null, denials.length ? denials.map(([k, v]) => `${k}: ${v}`).join(", ") : "none"))),
          h("p", {class: "muted"}, "Switching the state takes the web token: POST /quoting/state/ (docs/operations.md)."));
        fill(instruments, Object.entries(q.instruments || {}).map(([name, s]) => h("div", {class: "panel", "data-key": name},
          h("h2", null, name),
          h("div", {class: "grid2"},
            h("div", null,
              h("table", {class: "kv"}, [
                ["index", s.index, onStep(s.index, s.tick_size, 2)], ["mark", s.mark, onStep(s.mark, s.tick_size, 2)],
                ["best bid", s.best_bid, onStep(s.best_bid, s.tick_size)], ["best ask", s.best_ask, onStep(s.best_ask, s.tick_size)],
                ["sigma", s.sigma, typeof s.sigma === "number" ? s.sigma.toPrecision(4) : fmt(s.sigma)],
                ["position", s.position, onStep(s.position, s.size_step)], ["PnL", s.pnl, money(s.pnl), true],
                ["decisions", s.decisions, fmt(s.decisions)], ["tick / size step", null, `${fmt(s.tick_size)} / ${fmt(s.size_step)}`],
              ].map(([label, x, text, signed]) => h("tr", null, h("th", null, label),
                h("td", {class: "n"}, num(x, text, label.replace(/ /g, "_"), signed)))))),
            h("div", null, h("b", null, "ladder"), ladder(s))),
          h("h2", null, `open orders (${(s.open_orders || []).length})`), orders(s))));
        if (!Object.keys(q.instruments || {}).length) fill(instruments, h("div", {class: "panel muted"}, "No instruments quoted on this worker."));
        fill(gateway, inline(q.gateway || {}, "gateway"));
      },
    };
  }

  // Any other view -----------------------------------------------------------------------------

  function genericPage(path) {
    const body = h("div", {class: "panel", id: "value"});
    fill(main, heading(path, "as the JSON view gives it"), body);
    return {
      async refresh() {
        fill(body, tree(await okJson(path + location.search)));
      },
    };
  }

  // -- the loop -----------------------------------------------------------------------------

  function route(path) {
    let m;
    if (path === "/") return ["home", homePage()];
    if (path === "/tables/") return ["tables", tablesPage()];
    if ((m = path.match(/^\/tables\/([^/]+)\/$/))) return ["tables", tablePage(decodeURIComponent(m[1]))];
    if ((m = path.match(/^\/tables\/([^/]+)\/([^/]+)\/$/))) {
      return ["tables", keyPage(decodeURIComponent(m[1]), decodeURIComponent(m[2]))];
    }
    if (path === "/analytics/") return ["analytics", analyticsPage()];
    if (path === "/quoting/") return ["quoting", quotingPage()];
    return [path.replace(/\//g, ""), genericPage(path)];
  }

  function jsonLink() {
    const q = new URLSearchParams(location.search);
    q.set("format", "json");
    document.getElementById("json-link").setAttribute("href", `${location.pathname}?${q}`);
  }

  const [nav, page] = route(location.pathname);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.nav === nav);
  document.title = `${decodeURIComponent(location.pathname)} · CrypticsLab inspector`;
  jsonLink();

  let refreshes = 0;
  let running = false;
  async function tick() {
    if (!document.hidden && !running) {
      running = true;
      const started = performance.now();
      try {
        await page.refresh();
        refreshes += 1;
        document.body.dataset.refreshes = String(refreshes);
        statusEl.textContent = `updated ${new Date().toLocaleTimeString()} · ${Math.round(performance.now() - started)} ms`;
        statusEl.classList.remove("error");
      } catch (e) {
        statusEl.textContent = `error: ${e.message}`;
        statusEl.classList.add("error");
        document.body.dataset.error = e.message;
      } finally {
        running = false;
      }
    }
    setTimeout(tick, REFRESH_MS);
  }
  tick();
})();
