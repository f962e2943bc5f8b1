// The demo's timelines: one inline SVG per demo, redrawn every second from
// timeline/ (times in µs on the Redis clock). Text goes in through textContent
// only: labels and ids are data.
"use strict";
(() => {
  const NS = "http://www.w3.org/2000/svg";
  const LABEL = 370; // px of row labels left of the time axis
  const AXIS = 18, ROW = 22, STRIP = 44, RIGHT = 12;
  const charts = JSON.parse(document.getElementById("charts").textContent);
  const csrf = document.cookie.split("; ").find(c => c.startsWith("csrftoken="))?.split("=")[1] || CSRF_TOKEN;

  function svg(name, attrs = {}, text) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function titled(node, text) {
    node.append(svg("title", {}, text));
    return node;
  }
  // A task not admitted yet, by its result's state (STARTED: a worker has it).
  const WAITING = {PENDING: "queued", RECEIVED: "queued", STARTED: "starting", THROTTLED: "throttled, waiting", RETRY: "retry, waiting"};
  function waiting(row, now) {
    if (!row.retry_us) return WAITING[row.state] || `waiting (${row.state})`;
    const left = Math.round((row.retry_us - now) / 1e6);
    return left > 0 ? `throttled, tried again in ${left} s` : "throttled, due now";
  }
  const clock = us => new Date(us / 1000).toLocaleTimeString();

  // How many intervals cover each instant: [[x, count], ...] as steps.
  function steps(intervals) {
    const edges = [];
    for (const [start, end] of intervals) edges.push([start, 1], [end, -1]);
    edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let count = 0;
    return edges.map(([at, delta]) => [at, (count += delta)]);
  }

  function draw(chart, data) {
    const box = document.getElementById(`chart-${chart.slug}`);
    const rows = data.demos[chart.slug] || [];
    const width = Math.max(600, box.clientWidth);
    const now = data.now_us, from = now - data.span_s * 1e6;
    const x0 = LABEL, x1 = width - RIGHT;
    const x = us => x0 + ((Math.min(Math.max(us, from), now) - from) / (now - from)) * (x1 - x0);
    const strips = [
      ...chart.lanes.map(lane => ({
        label: `${lane.name}: starts in any ${lane.per} s`,
        limit: lane.times,
        intervals: rows.filter(r => r.lane === lane.name && r.start_us).map(r => [r.start_us, r.start_us + lane.per * 1e6]),
      })),
      ...(chart.overlap ? [{
        label: "runs at the same time",
        limit: chart.overlap,
        intervals: rows.filter(r => r.start_us).map(r => [r.start_us, r.end_us || now]),
      }] : []),
    ];
    const beatRow = chart.beat ? 1 : 0;
    const bodyRows = Math.max(rows.length, 1);
    const height = AXIS + (bodyRows + beatRow) * ROW + strips.length * STRIP + 4;
    const root = svg("svg", {
      width, height, viewBox: `0 0 ${width} ${height}`, class: "timeline", role: "img",
      "aria-label": `Timeline of the last ${data.span_s} seconds`,
    });

    // Time axis: a line every 10 s, "now" at the right.
    for (let s = 0; s <= data.span_s; s += 10) {
      const gx = x(now - s * 1e6);
      root.append(svg("line", {class: "grid", x1: gx, x2: gx, y1: AXIS - 4, y2: height}));
      root.append(svg("text", {class: "axis", x: gx, y: AXIS - 6, "text-anchor": s ? "middle" : "end"}, s ? `−${s} s` : "now"));
    }

    let y = AXIS;
    if (!rows.length) {
      root.append(svg("text", {class: "empty", x: x0 + 8, y: y + 15}, chart.beat ? "Waiting for beat's first run …" : "Nothing yet: press the button."));
    }
    for (const row of rows) {
      const mid = y + ROW / 2;
      const group = svg("g", {class: `row kind-${row.kind}`, "data-id": row.id});
      const same = row.calls.filter(c => c.note === "same id as before").length;
      const lines = [`task id ${row.id}`, `state: ${row.state || row.kind}`,
        ...row.calls.map(c => `${clock(c.at_us)} call: ${c.note}`)];
      if (row.start_us) lines.push(`${clock(row.start_us)} started`);
      if (row.end_us && row.kind !== "gone") lines.push(`${clock(row.end_us)} ended`);
      titled(group, lines.join("\n"));
      group.append(svg("text", {class: "label", x: 4, y: mid + 4}, row.label));
      group.append(svg("text", {class: "id", x: 112, y: mid + 4}, row.id.slice(0, 8)));
      if (row.calls.length > 1) {
        const note = same ? `${row.calls.length} calls · ${same}× same id as before`
          : `${row.calls.length} calls: ${row.calls.map(c => c.note).join(", ")}`;
        group.append(svg("text", {class: "same-note", x: 180, y: mid + 4}, note));
      }
      // Waiting from the first call until admitted (or replaced); running from admitted.
      const waitEnd = row.start_us || (row.kind === "gone" ? row.end_us : now);
      const wx = x(row.enqueued_us);
      group.append(svg("rect", {
        class: row.kind === "gone" ? "wait gone" : "wait",
        x: wx, y: mid - 5, width: Math.max(2, x(waitEnd) - wx), height: 10,
      }));
      let textX = x(waitEnd);
      if (row.start_us) {
        const sx = x(row.start_us), ex = x(row.end_us || now);
        group.append(svg("rect", {
          class: `run ${row.kind} ${row.state || ""}`.trim(),
          x: sx, y: mid - 7, width: Math.max(3, ex - sx), height: 14,
        }));
        textX = Math.max(ex, sx + 3);
      }
      for (const call of row.calls) {
        const cx = x(call.at_us);
        group.append(svg("line", {class: call.note === "same id as before" ? "call same" : "call", x1: cx, x2: cx, y1: mid - 10, y2: mid + 10}));
      }
      const state = {waiting: waiting(row, now), running: "running", gone: `${row.state}: replaced, never ran`}[row.kind]
        || (row.state === "SUCCESS" ? "" : row.state);
      if (state) {
        const right = textX + 6 + 7 * state.length < x1;
        group.append(svg("text", {class: "state", x: right ? textX + 6 : wx - 6, y: mid + 4, "text-anchor": right ? "start" : "end"}, state));
      }
      root.append(group);
      y += ROW;
    }
    if (!rows.length) y += ROW;

    if (chart.beat) {
      const mid = y + ROW / 2;
      const group = svg("g", {class: "beat-row"});
      group.append(svg("text", {class: "label", x: 4, y: mid + 4}, "beat sends"));
      group.append(svg("text", {class: "id", x: 112, y: mid + 4}, "▲ sent   × skipped: still running"));
      for (const occurrence of data.beat.occurrences) {
        if (occurrence.at_us < from) continue;
        const ox = x(occurrence.at_us);
        const mark = occurrence.outcome === "sent"
          ? svg("path", {class: "sent", d: `M${ox - 5},${mid + 6} L${ox + 5},${mid + 6} L${ox},${mid - 5} Z`})
          : svg("text", {class: "skipped", x: ox, y: mid + 5, "text-anchor": "middle"}, "×");
        group.append(titled(mark, `${clock(occurrence.at_us)} ${occurrence.outcome}${occurrence.holder ? ` (held by ${occurrence.holder})` : ""}`));
      }
      root.append(group);
      y += ROW;
    }

    // Count strips: starts per sliding window, or runs at once, against the limit.
    for (const strip of strips) {
      const top = y + 6, bottom = y + STRIP - 4, scale = (bottom - top) / (strip.limit + 1);
      const cy = count => bottom - count * scale;
      const group = svg("g", {class: "strip"});
      let peak = 0, d = `M${x0},${bottom}`, last = 0;
      for (const [at, count] of steps(strip.intervals)) {
        const sx = x(at);
        d += ` L${sx},${cy(last)} L${sx},${cy(count)}`;
        last = count;
        if (at >= from && at <= now) peak = Math.max(peak, count);
      }
      d += ` L${x1},${cy(last)} L${x1},${bottom} Z`;
      group.append(svg("path", {class: "count", d}));
      const ly = cy(strip.limit);
      group.append(svg("line", {class: "limit", x1: x0, x2: x1, y1: ly, y2: ly}));
      group.append(svg("text", {class: "label", x: 4, y: top + 12}, strip.label));
      group.append(svg("text", {class: "limit-text", x: 4, y: top + 27}, `limit ${strip.limit} · highest ${peak}`));
      root.append(group);
      y += STRIP;
    }
    box.replaceChildren(root);
  }

  function drawBeat(beat) {
    const target = document.getElementById("beat-leader");
    if (!target) return;
    const leader = beat.leader;
    target.textContent = leader
      ? `${leader.host}, pid ${leader.pid}, lease ${leader.lease_left.toFixed(1)} s left (leading since ${new Date(leader.since).toLocaleTimeString()})`
      : "none: no beat holds the lease";
  }

  const error = document.getElementById("error");
  async function refresh() {
    let data;
    try {
      const response = await fetch("timeline/", {headers: {Accept: "application/json"}});
      data = await response.json();
      if (!response.ok) throw new Error(data.error || response.statusText);
    } catch (exc) {
      error.textContent = `The timeline could not be read: ${exc.message}`;
      return;
    }
    error.textContent = "";
    for (const chart of charts) draw(chart, data);
    drawBeat(data.beat);
  }

  for (const chart of charts) {
    const button = document.querySelector(`button[data-demo="${chart.slug}"]`);
    if (!button) continue;
    button.addEventListener("click", async () => {
      const answers = [];
      for (let n = 0; n < chart.repeat; n++) {
        let response;
        try {
          response = await fetch(chart.url, {method: "POST", headers: {"X-CSRFToken": csrf}});
        } catch (exc) {  // no answer at all: say so on its line rather than stop
          answers.push(`no answer: ${exc.message}`);
          error.textContent = `${chart.slug}: the request failed: ${exc.message}`;
          continue;
        }
        const body = await response.json().catch(() => ({}));
        answers.push(`${response.status} ${body.status || body.error || ""}${body.task_id ? ` ${body.task_id}` : ""}`);
        if (response.status >= 500) error.textContent = body.error || response.statusText;
      }
      const out = document.getElementById(`responses-${chart.slug}`);
      if (out) out.textContent = answers.join("\n");
    });
  }
  // One read at a time: on a busy machine a read slower than the period would
  // otherwise pile up and take every connection the browser allows the host,
  // leaving the buttons' requests waiting behind them.
  async function poll() {
    await refresh();
    setTimeout(poll, 1000);
  }
  poll();
})();
