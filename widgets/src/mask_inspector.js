// MaskInspector view: the T x T attention mask (bit-packed bytes from Python) drawn by
// ImageData on a canvas, segment bands, a position-id strip, the tokens under the
// cursor, mode and diff selectors; a click asks Python why q can or cannot see k.
// Larger masks than the canvas are binned (a pixel shows the share of allowed cells, and
// any differing cell wins). Ctrl (or Cmd) + wheel and the +/- buttons zoom; a plain wheel
// is left to the page, so scrolling the notebook over the mask scrolls the notebook.
// Dragging pans, a double click resets.
import { bytesOf, cssVar, h, watchKernel } from "./_dom.js";

const M = 560; // largest matrix size in CSS pixels; a smaller mask gets a smaller canvas
const BAND = 18; // segment bands above and left of the matrix
const GAP = 8;
const STRIP = 64; // position-id strip under the matrix
const AXIS = 22; // token-index ticks and numbers under the strip
const RIGHT = 48; // position ticks and numbers right of the strip
const FONT = "11px sans-serif"; // canvas labels: no smaller than the notebook's small text
const MIN_VIEW = 8; // zoom stops at 8 x 8 cells

/** A count with thousands separators: 16777216 -> "16,777,216". */
const fmt = (n) => Number(n).toLocaleString("en-US");

/** The matrix size in px for T tokens: whole pixels per cell up to M, M when binned. */
const matrixPx = (T) => (T <= 0 ? 0 : T <= M ? Math.floor(M / T) * T : M);

/** A round tick spacing (1, 2 or 5 x 10^k) giving about `count` ticks over `span`. */
function niceStep(span, count) {
  const raw = Math.max(span / Math.max(count, 1), 1);
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= raw);
}
const STEP_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac"];

/** Bit i of a packed row-major bit array (first element in the high bit). */
const bit = (bits, i) => (bits[i >> 3] >> (7 - (i & 7))) & 1;

/** int32 little-endian bytes -> Int32Array. */
function int32s(value) {
  const b = bytesOf(value);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = new Int32Array(b.byteLength >> 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt32(i * 4, true);
  return out;
}

/** A CSS colour as [r, g, b], resolved by the browser. */
function rgb(color) {
  const c = document.createElement("canvas");
  c.width = c.height = 1;
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#808080";
  ctx.fillStyle = color;
  ctx.fillRect(0, 0, 1, 1);
  const d = ctx.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2]];
}

function render({ model, el }) {
  let view = { r0: 0, c0: 0, n: model.get("T"), T: model.get("T") }; // visible window: rows r0.., cols c0.., n of each
  let hover = null; // {q, k} or {i} on the strip
  let clicked = null;
  let drag = null;
  let shownSegments = "";
  let frame = 0;

  const root = h("div", "mv-widget mv-mask-inspector");
  const controls = h("div", "mv-controls");
  const modeLabel = h("label", "", "Mode ");
  const modeSelect = h("select", "mv-mode", null, { "aria-label": "mode" });
  modeLabel.append(modeSelect);
  const diffLabel = h("label", "", "Diff with ");
  const diffSelect = h("select", "mv-diff", null, { "aria-label": "diff mode" });
  diffLabel.append(diffSelect);
  const zoomOutBtn = h("button", "mv-button mv-zoom-out", "−", { type: "button", title: "Zoom out", "aria-label": "zoom out" });
  const zoomInBtn = h("button", "mv-button mv-zoom-in", "+", { type: "button", title: "Zoom in", "aria-label": "zoom in" });
  const resetBtn = h("button", "mv-button", "Reset zoom", { type: "button", title: "Show the whole mask" });
  const stepsBtn = h("button", "mv-button mv-steps-only", "Steps only", { type: "button",
    title: "Show the rows and columns from the end of the prefix on (the steps and the conclusion): in a real run "
      + "the prompt and plan can fill most of the matrix. The steps still see the prefix; Reset zoom shows it." });
  const zoomHint = h("span", "mv-hint", "Ctrl/⌘ + wheel zooms, drag pans");
  controls.append(modeLabel, diffLabel, zoomOutBtn, zoomInBtn, resetBtn, stepsBtn, zoomHint);
  const caption = h("div", "mv-caption");
  const legend = h("div", "mv-legend");
  const stage = h("div", "mv-stage");
  const base = h("canvas", "mv-matrix");
  const overlay = h("canvas", "mv-overlay");
  const ticks = h("div", "mv-ticks", null, { "aria-hidden": "true" }); // axis numbers, as text
  stage.append(base, overlay, ticks);
  const hoverLine = h("div", "mv-hover", null, { "aria-live": "polite" });
  const explainBox = h("div", "mv-explain", null, { role: "status" });
  const notice = h("div", "mv-notice");
  root.append(controls, caption, legend, stage, hoverLine, explainBox, notice);
  el.append(root);
  const stopWatching = watchKernel(model, root);

  // The canvas fits the mask (no dead band under a small one): sized again when T changes.
  let S = 0; // matrix size in px: the drawn size at every zoom
  let W = 0;
  let H = 0;
  function size() {
    S = matrixPx(T);
    W = BAND + S + RIGHT;
    H = BAND + S + GAP + STRIP + AXIS;
    for (const c of [base, overlay]) {
      if (c.width === W && c.height === H) continue;
      c.width = W;
      c.height = H;
      c.style.width = `${W}px`;
      c.style.height = `${H}px`;
    }
    root.dataset.matrixPx = String(S);
  }
  const ctx = base.getContext("2d");
  const octx = overlay.getContext("2d");

  // ----- data -----------------------------------------------------------------------------
  let T = 0;
  let bits = new Uint8Array(0);
  let diff = new Uint8Array(0);
  let pos = new Int32Array(0);
  let diffPos = new Int32Array(0);
  let branchOf = new Int32Array(0); // segment index of each token
  function load() {
    T = model.get("T");
    bits = bytesOf(model.get("mask"));
    diff = bytesOf(model.get("diff"));
    pos = int32s(model.get("positions"));
    diffPos = int32s(model.get("diff_positions"));
    branchOf = new Int32Array(T);
    model.get("segments").forEach((seg, j) => branchOf.fill(j, seg.start, seg.stop));
    // another matrix (a new run or record, or request's longer layout): show it whole
    const segsKey = JSON.stringify(model.get("segments"));
    if (segsKey !== shownSegments || T !== view.T || view.n > T || view.n === 0 || view.r0 + view.n > T
      || view.c0 + view.n > T) {
      view = { r0: 0, c0: 0, n: T, T };
      clicked = null;
    }
    shownSegments = segsKey;
    size();
  }
  const segOf = (i) => model.get("segments")[branchOf[i]];
  const prefixEnd = () => (model.get("segments").find((sg) => sg.branch === "prefix") || { stop: 0 }).stop;
  function segColor(j, segs) {
    const b = segs[j].branch;
    if (b === "prefix") return cssVar(root, "--jp-layout-color3", "#999");
    if (b === "conclusion") return cssVar(root, "--jp-ui-font-color2", "#555");
    return STEP_COLORS[(j - 1) % STEP_COLORS.length];
  }

  // ----- geometry: the visible window onto the matrix ----------------------------------------
  const cell = () => S / Math.max(view.n, 1); // px per cell (fractional when zoomed or binned)
  const toRow = (py) => view.r0 + Math.min(view.n - 1, Math.floor(py / cell()));
  const toCol = (px) => view.c0 + Math.min(view.n - 1, Math.floor(px / cell()));

  // ----- drawing ----------------------------------------------------------------------------
  let draws = 0;
  function draw() {
    const t0 = performance.now();
    ctx.clearRect(0, 0, W, H);
    if (T === 0) { ticks.replaceChildren(); return; }
    const d = S;
    const colors = {
      allowed: rgb(cssVar(root, "--jp-brand-color1", "#1976d2")),
      blocked: rgb(cssVar(root, "--jp-layout-color2", "#eee")),
      onlyA: rgb(cssVar(root, "--jp-success-color1", "#388e3c")),
      onlyB: rgb(cssVar(root, "--jp-error-color1", "#d32f2f")),
    };
    const img = ctx.createImageData(d, d);
    const px = img.data;
    const n = view.n;
    const hasDiff = diff.length > 0;
    // Each visible cell falls in a bin: itself when the cells are at least a pixel wide
    // (a cell then covers one or more whole pixels), else the pixel it lands in. Count
    // per bin: allowed cells, cells only in the mode, cells only in the diff mode.
    const bins = Math.min(n, d);
    const binOf = new Int32Array(n);
    for (let i = 0; i < n; i++) binOf[i] = Math.min(bins - 1, Math.floor((i * bins) / n));
    const pixBin = new Int32Array(d);
    for (let p = 0; p < d; p++) pixBin[p] = Math.min(bins - 1, Math.floor((p * bins) / d));
    const allowed = new Uint32Array(bins * bins);
    const onlyA = hasDiff ? new Uint32Array(bins * bins) : null;
    const onlyB = hasDiff ? new Uint32Array(bins * bins) : null;
    const span = new Uint32Array(bins);
    for (let i = 0; i < n; i++) span[binOf[i]]++;
    for (let r = 0; r < n; r++) {
      const q = view.r0 + r;
      const rowBase = binOf[r] * bins;
      const start = q * T + view.c0;
      for (let c = 0; c < n; c++) {
        const b = start + c;
        const a = (bits[b >> 3] >> (7 - (b & 7))) & 1;
        const at = rowBase + binOf[c];
        allowed[at] += a;
        if (hasDiff && (diff[b >> 3] >> (7 - (b & 7))) & 1) {
          if (a) onlyA[at]++;
          else onlyB[at]++;
        }
      }
    }
    // one colour per bin (any differing cell wins), then every pixel takes its bin's
    const binRgb = new Uint8ClampedArray(bins * bins * 3);
    for (let by = 0; by < bins; by++) {
      for (let bx = 0; bx < bins; bx++) {
        const at = by * bins + bx;
        let col;
        if (hasDiff && (onlyA[at] || onlyB[at])) col = onlyA[at] >= onlyB[at] ? colors.onlyA : colors.onlyB;
        else {
          const f = allowed[at] / (span[by] * span[bx]);
          col = [0, 1, 2].map((j) => colors.blocked[j] + f * (colors.allowed[j] - colors.blocked[j]));
        }
        binRgb[at * 3] = col[0]; binRgb[at * 3 + 1] = col[1]; binRgb[at * 3 + 2] = col[2];
      }
    }
    for (let y = 0; y < d; y++) {
      const rowBase = pixBin[y] * bins;
      for (let x = 0; x < d; x++) {
        const at = (rowBase + pixBin[x]) * 3;
        const o = (y * d + x) * 4;
        px[o] = binRgb[at]; px[o + 1] = binRgb[at + 1]; px[o + 2] = binRgb[at + 2]; px[o + 3] = 255;
      }
    }
    ctx.putImageData(img, BAND, BAND);
    drawBands(d);
    drawStrip(d);
    // for tests and the curious: how many draws, and how long the last one took
    root.dataset.draws = String(++draws);
    root.dataset.drawMs = (performance.now() - t0).toFixed(1);
    root.dataset.mode = model.get("mode");
  }

  function drawBands(d) {
    const segs = model.get("segments");
    const scale = d / view.n;
    ctx.font = FONT;
    ctx.textBaseline = "middle";
    segs.forEach((seg, j) => {
      const color = segColor(j, segs);
      for (const [axis, off] of [["col", view.c0], ["row", view.r0]]) {
        const a = Math.max(seg.start, off);
        const b = Math.min(seg.stop, off + view.n);
        if (b <= a) continue;
        const p0 = (a - off) * scale;
        const len = (b - a) * scale;
        ctx.fillStyle = color;
        if (axis === "col") ctx.fillRect(BAND + p0, 0, Math.max(len, 1), BAND - 3);
        else ctx.fillRect(0, BAND + p0, BAND - 3, Math.max(len, 1));
        // a request repeats earlier blocks first: lighter, in the repeated step's colour
        for (const rep of seg.repeats || []) {
          const ra = Math.max(rep.start, off);
          const rb = Math.min(rep.stop, off + view.n);
          if (rb <= ra) continue;
          const q0 = (ra - off) * scale;
          const rlen = Math.max((rb - ra) * scale, 1);
          const src = segs.findIndex((sg) => sg.branch === rep.step);
          ctx.fillStyle = cssVar(root, "--jp-layout-color0", "#fff");
          if (axis === "col") ctx.fillRect(BAND + q0, 0, rlen, BAND - 3);
          else ctx.fillRect(0, BAND + q0, BAND - 3, rlen);
          ctx.globalAlpha = 0.45;
          ctx.fillStyle = segColor(src, segs);
          if (axis === "col") ctx.fillRect(BAND + q0, 0, rlen, BAND - 3);
          else ctx.fillRect(0, BAND + q0, BAND - 3, rlen);
          ctx.globalAlpha = 1;
          const mark = `↻${rep.step}`;
          if (axis === "col" && rlen > 8 * mark.length + 4) {
            ctx.fillStyle = cssVar(root, "--jp-ui-font-color1", "#222");
            ctx.fillText(mark, BAND + q0 + 2, (BAND - 3) / 2);
          }
        }
        // the branch's name over its own tokens (after what it repeats)
        const reps = seg.repeats || [];
        const own = Math.max(reps.length ? reps[reps.length - 1].stop : seg.start, off);
        const ownLen = (b - own) * scale;
        const label = seg.branch === "prefix" ? "P" : seg.branch === "conclusion" ? "C" : seg.branch;
        if (ownLen > 8 * label.length + 4) {
          const o0 = (own - off) * scale;
          ctx.fillStyle = "#fff";
          if (axis === "col") ctx.fillText(label, BAND + o0 + 2, (BAND - 3) / 2);
          else ctx.fillText(label.slice(0, 2), 2, BAND + o0 + Math.min(ownLen / 2, 8));
        }
        // faint boundary lines across the matrix
        ctx.fillStyle = cssVar(root, "--jp-border-color1", "#bbb");
        ctx.globalAlpha = 0.5;
        if (seg.start > off && seg.start < off + view.n) {
          if (axis === "col") ctx.fillRect(BAND + p0, BAND, 1, d);
          else ctx.fillRect(BAND, BAND + p0, d, 1);
        }
        ctx.globalAlpha = 1;
      }
    });
  }

  function drawStrip(d) {
    const top = BAND + d + GAP;
    ctx.fillStyle = cssVar(root, "--jp-layout-color2", "#eee");
    ctx.fillRect(BAND, top, d, STRIP);
    ctx.save();
    ctx.translate(BAND - 4, top + STRIP / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillStyle = cssVar(root, "--jp-ui-font-color2", "#666");
    ctx.font = FONT;
    ctx.textAlign = "center";
    ctx.fillText("pos", 0, 0);
    ctx.restore();
    ctx.textAlign = "start";
    const segs = model.get("segments");
    // one scale for both series (medverse-sft positions can go negative: the double shift)
    let minPos = 0;
    let maxPos = 1;
    for (const values of [pos, diffPos]) {
      for (let i = 0; i < values.length; i++) {
        minPos = Math.min(minPos, values[i]);
        maxPos = Math.max(maxPos, values[i]);
      }
    }
    const yOf = (p) => top + STRIP - 2 - ((p - minPos) / (maxPos - minPos || 1)) * (STRIP - 4);
    drawAxes(d, top, minPos, maxPos, yOf);
    const series = [[pos, null]];
    if (diffPos.length) series.push([diffPos, cssVar(root, "--jp-error-color1", "#d32f2f")]);
    const scale = d / view.n;
    for (const [values, fixed] of series) {
      ctx.globalAlpha = fixed ? 0.75 : 1;
      for (let x = 0; x < d; x++) {
        if (fixed && x % 6 >= 3) continue; // the diff mode's series: its own colour, dashed
        const i0 = view.c0 + Math.floor(x / scale);
        const i1 = Math.max(i0 + 1, view.c0 + Math.floor((x + 1) / scale));
        let lo = Infinity;
        let hi = -Infinity;
        for (let i = i0; i < Math.min(i1, T); i++) { lo = Math.min(lo, values[i]); hi = Math.max(hi, values[i]); }
        if (lo === Infinity) continue;
        ctx.fillStyle = fixed || segColor(branchOf[i0], segs);
        ctx.fillRect(BAND + x, yOf(hi) - 1, 1, Math.max(2, yOf(lo) - yOf(hi) + 2));
      }
    }
    ctx.globalAlpha = 1;
  }

  // Axes of the strip: token index under it (the matrix's columns too), position right of
  // it. Tick marks on the canvas; the numbers are text elements, so they read at the
  // notebook's font size in both themes.
  function drawAxes(d, top, minPos, maxPos, yOf) {
    const dim = cssVar(root, "--jp-ui-font-color2", "#666");
    const labels = [];
    const label = (text, x, y, cls) => {
      const t = h("span", `mv-tick ${cls}`, text);
      t.style.left = `${x}px`;
      t.style.top = `${y}px`;
      labels.push(t);
    };
    ctx.fillStyle = dim;
    const scale = d / view.n;
    const last = view.c0 + view.n - 1;
    const xStep = niceStep(view.n, Math.max(2, Math.floor(d / 80)));
    for (let v = Math.ceil(view.c0 / xStep) * xStep; v <= last; v += xStep) {
      const x = BAND + (v - view.c0 + 0.5) * scale;
      ctx.fillRect(Math.round(x), top + STRIP, 1, 4);
      label(fmt(v), x, top + STRIP + 5, "mv-tick-x");
    }
    const yStep = niceStep(maxPos - minPos, 3);
    for (let v = Math.ceil(minPos / yStep) * yStep; v <= maxPos; v += yStep) {
      const y = yOf(v);
      ctx.fillRect(BAND + d, Math.round(y), 4, 1);
      label(fmt(v), BAND + d + 6, y, "mv-tick-y");
    }
    ticks.replaceChildren(...labels);
  }

  function drawOverlay() {
    frame = 0;
    octx.clearRect(0, 0, W, H);
    const d = S;
    const sc = cell();
    const mark = (q, k, color, width) => {
      octx.strokeStyle = color;
      octx.lineWidth = width;
      octx.strokeRect(BAND + (k - view.c0) * sc - 1, BAND + (q - view.r0) * sc - 1, Math.max(sc, 1) + 2,
        Math.max(sc, 1) + 2);
    };
    const fg = cssVar(root, "--jp-ui-font-color0", "#000");
    if (hover && hover.q !== undefined) {
      octx.fillStyle = fg;
      octx.globalAlpha = 0.25;
      octx.fillRect(BAND, BAND + (hover.q - view.r0) * sc, d, Math.max(sc, 1));
      octx.fillRect(BAND + (hover.k - view.c0) * sc, BAND, Math.max(sc, 1), d);
      octx.globalAlpha = 1;
      mark(hover.q, hover.k, fg, 1);
    }
    if (clicked && clicked.q >= view.r0 && clicked.q < view.r0 + view.n && clicked.k >= view.c0
      && clicked.k < view.c0 + view.n) mark(clicked.q, clicked.k, cssVar(root, "--jp-warn-color1", "#f57c00"), 2);
    const selected = model.get("selected");
    const seg = model.get("segments").find((sg) => sg.branch === selected);
    if (seg) { // the selected branch: its band outlined, its rows and columns tinted
      const a = Math.max(seg.start, view.c0) - view.c0;
      const b = Math.min(seg.stop, view.c0 + view.n) - view.c0;
      const ra = Math.max(seg.start, view.r0) - view.r0;
      const rb = Math.min(seg.stop, view.r0 + view.n) - view.r0;
      octx.fillStyle = cssVar(root, "--jp-warn-color1", "#f57c00");
      octx.globalAlpha = 0.18;
      if (b > a) octx.fillRect(BAND + a * sc, BAND, (b - a) * sc, d);
      if (rb > ra) octx.fillRect(BAND, BAND + ra * sc, d, (rb - ra) * sc);
      octx.globalAlpha = 1;
      octx.strokeStyle = octx.fillStyle;
      octx.lineWidth = 2;
      if (b > a) octx.strokeRect(BAND + a * sc, 1, (b - a) * sc, BAND - 4);
      if (rb > ra) octx.strokeRect(1, BAND + ra * sc, BAND - 4, (rb - ra) * sc);
    }
    if (hover && hover.i !== undefined) {
      octx.fillStyle = fg;
      octx.fillRect(BAND + (hover.i - view.c0) * sc, BAND + d + GAP, Math.max(sc, 1), STRIP);
    }
  }
  const scheduleOverlay = () => { if (!frame) frame = requestAnimationFrame(drawOverlay); };

  // ----- text -------------------------------------------------------------------------------
  const tokenText = (i) => {
    const tokens = model.get("tokens");
    return tokens.length ? ` ${JSON.stringify(tokens[i])}` : "";
  };
  const describe = (i) => {
    const seg = segOf(i);
    let where = seg.branch === "prefix" || seg.branch === "conclusion" ? seg.branch : `step ${seg.branch}`;
    const rep = (seg.repeats || []).find((r) => r.start <= i && i < r.stop);
    if (rep) where += `, repeating step ${rep.step}`;
    const mode = model.get("mode");
    const alt = diffPos.length ? ` in ${mode}, ${fmt(diffPos[i])} in ${model.get("diff_mode")}` : "";
    return `${fmt(i)} (${where}, pos ${fmt(pos[i])}${alt})${tokenText(i)}`;
  };
  function showHover() {
    if (!hover) { hoverLine.textContent = ""; return; }
    if (hover.i !== undefined) { hoverLine.textContent = `token ${describe(hover.i)}`; return; }
    const b = hover.q * T + hover.k;
    const verdict = bit(bits, b) ? "can see" : "cannot see";
    const differs = diff.length && bit(diff, b) ? `; ${model.get("diff_mode")} differs` : "";
    hoverLine.textContent = `q ${describe(hover.q)} ${verdict} k ${describe(hover.k)}${differs}`;
  }
  function showExplanation() {
    const e = model.get("explanation");
    explainBox.classList.remove("mv-allowed", "mv-blocked");
    if (!e || e.q === undefined) { explainBox.textContent = "Click a cell: why can (or can't) q see k?"; return; }
    explainBox.classList.add(e.allowed ? "mv-allowed" : "mv-blocked");
    const where = (b) => (b === "prefix" || b === "conclusion" ? b : `step ${b}`);
    const lines = [
      `${e.mode}: q ${fmt(e.q)} (${where(e.q_branch)}, pos ${fmt(e.q_position)}) ${e.allowed ? "CAN" : "CANNOT"} see `
        + `k ${fmt(e.k)} (${where(e.k_branch)}, pos ${fmt(e.k_position)}) [${e.reason}]`,
      e.text,
    ];
    if (e.q_text !== undefined) lines.push(`q = ${JSON.stringify(e.q_text)}, k = ${JSON.stringify(e.k_text)}`);
    if (e.other) {
      lines.push(`${e.other.mode}: ${e.other.allowed ? "CAN" : "CANNOT"} [${e.other.reason}] ${e.other.text}`);
    }
    explainBox.textContent = lines.join("\n");
  }
  function showControls() {
    const modes = model.get("modes");
    const desc = model.get("descriptions");
    if (modeSelect.options.length !== modes.length) {
      modeSelect.replaceChildren(...modes.map((m) => h("option", "", m, { value: m, title: desc[m] || "" })));
      diffSelect.replaceChildren(h("option", "", "(none)", { value: "" }),
        ...modes.map((m) => h("option", "", m, { value: m, title: desc[m] || "" })));
    }
    modeSelect.value = model.get("mode");
    diffSelect.value = model.get("diff_mode");
    const mode = model.get("mode");
    const diffMode = model.get("diff_mode");
    const runMode = model.get("run_mode");
    const segs = model.get("segments");
    let text = `T = ${fmt(T)} tokens (${fmt(T)} × ${fmt(T)} = ${fmt(T * T)} cells), `
      + `${Math.max(segs.length - 2, 0)} steps. ${mode}: ${desc[mode] || ""}.`;
    if (runMode) text += ` The run was decoded in ${runMode}.`;
    if (diffMode) text += ` ${fmt(model.get("diff_count"))} cells differ between ${mode} and ${diffMode}.`;
    if (view.n < T) {
      text += ` Zoom: rows ${fmt(view.r0)}–${fmt(view.r0 + view.n - 1)}, `
        + `columns ${fmt(view.c0)}–${fmt(view.c0 + view.n - 1)}.`;
    }
    caption.textContent = text;
    const sw = (label, color) => {
      const item = h("span", "", null);
      const box = h("span", "mv-swatch");
      box.style.background = color;
      item.append(box, document.createTextNode(label));
      return item;
    };
    const items = [sw("can see", "var(--jp-brand-color1, #1976d2)"), sw("cannot see", "var(--jp-layout-color2, #eee)")];
    if (diffMode) {
      items.push(sw(`only ${mode}`, "var(--jp-success-color1, #388e3c)"),
        sw(`only ${diffMode}`, "var(--jp-error-color1, #d32f2f)"));
    }
    // the bands above and left of the matrix, and the position strip under it
    items.push(sw("prefix band", cssVar(root, "--jp-layout-color3", "#999")),
      sw("step bands (a colour each)", STEP_COLORS[0]), sw("conclusion band", cssVar(root, "--jp-ui-font-color2", "#555")));
    const strip = h("span", "mv-legend-strip",
      `pos strip: each token's position id in ${mode}, coloured by its segment`
      + (diffMode ? `; dashed red: in ${diffMode}` : ""));
    legend.replaceChildren(...items, strip);
    root.dataset.marker = clicked ? `${clicked.q},${clicked.k}` : "";
    const p = prefixEnd();
    stepsBtn.disabled = p <= 0 || T - p < Math.min(MIN_VIEW, T) || (view.r0 === p && view.c0 === p && view.n === T - p);
    resetBtn.disabled = zoomOutBtn.disabled = view.n >= T;
    zoomInBtn.disabled = view.n <= Math.min(MIN_VIEW, T);
    notice.textContent = model.get("notice");
  }

  // ----- events -----------------------------------------------------------------------------
  const inMatrix = (x, y) => x >= BAND && y >= BAND && x < BAND + S && y < BAND + S;
  const inStrip = (x, y) => x >= BAND && x < BAND + S && y >= BAND + S + GAP && y < BAND + S + GAP + STRIP;
  const local = (e) => {
    const r = overlay.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };
  overlay.addEventListener("mousemove", (e) => {
    const [x, y] = local(e);
    if (drag) {
      const sc = cell();
      const dc = Math.round((drag.x - x) / sc);
      const dr = Math.round((drag.y - y) / sc);
      if (dc || dr) {
        view = { T: view.T, n: view.n, c0: clamp(drag.c0 + dc, view.n), r0: clamp(drag.r0 + dr, view.n) };
        drag.moved = true;
        draw();
        showControls();
      }
    }
    if (inMatrix(x, y)) hover = { q: toRow(y - BAND), k: toCol(x - BAND) };
    else if (inStrip(x, y)) hover = { i: toCol(x - BAND) };
    else hover = null;
    showHover();
    scheduleOverlay();
  });
  overlay.addEventListener("mouseleave", () => { hover = null; drag = null; showHover(); scheduleOverlay(); });
  overlay.addEventListener("mousedown", (e) => {
    const [x, y] = local(e);
    if (view.n < T && inMatrix(x, y)) drag = { x, y, r0: view.r0, c0: view.c0, moved: false };
  });
  overlay.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
  overlay.addEventListener("click", (e) => {
    if (drag && drag.moved) return;
    const [x, y] = local(e);
    const d = S;
    if ((y < BAND && x >= BAND && x < BAND + d) || (x < BAND && y >= BAND && y < BAND + d)) {
      const i = y < BAND ? toCol(x - BAND) : toRow(y - BAND); // a band: select its branch
      const branch = segOf(i).branch;
      model.send({ type: "select", branch: branch === model.get("selected") ? "" : branch });
      return;
    }
    if (!inMatrix(x, y)) return;
    clicked = { q: toRow(y - BAND), k: toCol(x - BAND) };
    model.send({ type: "explain", q: clicked.q, k: clicked.k });
    root.dataset.marker = `${clicked.q},${clicked.k}`;
    scheduleOverlay();
  });
  const clamp = (v, n) => Math.max(0, Math.min(T - n, v));
  // Zoom by `factor` (< 1 zooms in) keeping the cell at fractions (fy, fx) of the view in place.
  function zoom(factor, fy = 0.5, fx = 0.5) {
    const q = view.r0 + fy * view.n;
    const k = view.c0 + fx * view.n;
    const n = Math.max(Math.min(MIN_VIEW, T), Math.min(T, Math.round(view.n * factor)));
    if (n === view.n) return;
    view = { T: view.T, n, r0: clamp(Math.round(q - fy * n), n), c0: clamp(Math.round(k - fx * n), n) };
    draw();
    showControls();
    scheduleOverlay();
  }
  overlay.addEventListener("wheel", (e) => {
    // Only Ctrl/Cmd + wheel (a trackpad pinch too) zooms: a plain wheel scrolls the page.
    if (!(e.ctrlKey || e.metaKey)) return;
    const [x, y] = local(e);
    if (!inMatrix(x, y)) return;
    e.preventDefault();
    zoom(e.deltaY > 0 ? 1.25 : 0.8, (y - BAND) / S, (x - BAND) / S);
  }, { passive: false });
  const reset = () => { view = { r0: 0, c0: 0, n: T, T }; draw(); showControls(); scheduleOverlay(); };
  overlay.addEventListener("dblclick", reset);
  stepsBtn.addEventListener("click", () => {
    const p = prefixEnd();
    view = { r0: p, c0: p, n: T - p, T };
    draw();
    showControls();
    scheduleOverlay();
  });
  resetBtn.addEventListener("click", reset);
  zoomInBtn.addEventListener("click", () => zoom(0.5));
  zoomOutBtn.addEventListener("click", () => zoom(2));
  modeSelect.addEventListener("change", () => { model.set("mode", modeSelect.value); model.save_changes(); });
  diffSelect.addEventListener("change", () => { model.set("diff_mode", diffSelect.value); model.save_changes(); });

  // A new source or mode changes several traits at once (one message from Python, one
  // change event each): note what changed and draw it all once, in the next frame.
  let pending = new Set();
  let batch = 0;
  const later = (what) => {
    pending.add(what);
    if (batch) return;
    batch = requestAnimationFrame(() => {
      batch = 0;
      const due = pending;
      pending = new Set();
      if (due.has("data")) { load(); draw(); showHover(); }
      if (due.has("data") || due.has("controls")) showControls();
      if (due.has("explanation")) showExplanation();
      if (due.has("data") || due.has("marker")) scheduleOverlay();
    });
  };
  const onData = () => later("data");
  const onText = () => later("controls");
  const onExplanation = () => later("explanation");
  const dataTraits = ["mask", "diff", "positions", "diff_positions", "segments", "T"];
  const textTraits = ["mode", "diff_mode", "diff_count", "notice", "run_mode", "modes"];
  for (const name of dataTraits) model.on(`change:${name}`, onData);
  for (const name of textTraits) model.on(`change:${name}`, onText);
  const clearMarker = () => { clicked = null; later("controls"); later("marker"); }; // its cell means another thing now
  model.on("change:mode", clearMarker);
  model.on("change:explanation", onExplanation);
  model.on("change:selected", scheduleOverlay);
  // redraw when the JupyterLab theme changes (colours come from --jp-* variables)
  const themeWatch = new MutationObserver(() => { draw(); showControls(); });
  themeWatch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });

  load();
  draw();
  showControls();
  showExplanation();
  return () => {
    stopWatching();
    themeWatch.disconnect();
    for (const name of dataTraits) model.off(`change:${name}`, onData);
    for (const name of textTraits) model.off(`change:${name}`, onText);
    model.off("change:mode", clearMarker);
    model.off("change:explanation", onExplanation);
    model.off("change:selected", scheduleOverlay);
    if (frame) cancelAnimationFrame(frame);
    if (batch) cancelAnimationFrame(batch);
  };
}

export default { render };
