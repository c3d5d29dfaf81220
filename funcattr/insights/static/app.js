// funcattr insights: the page. Plain JS, no build step, nothing fetched but this server's API.
// The whole view (method, arguments, filters, page position, clicked classes, display, the
// method comparison) lives in the URL's #fragment: a reload or a shared link shows the same view.
"use strict";
(() => {
  const $ = (s, root = document) => root.querySelector(s);
  const $$ = (s, root = document) => Array.from(root.querySelectorAll(s));
  const SIGNS = ["all", "positive", "negative", "absolute_value"];
  const VIEWS = { original_image: "original", heat_map: "heat map", blended_heat_map: "blended", masked_image: "masked" };

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat(Infinity)) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  }
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const pct = (v) => (100 * v).toFixed(Math.abs(v) < 0.1 ? 1 : 0) + "%";

  // ------------------------------------------------------------------ state <-> URL
  const state = {
    method: null, args: {}, offset: 0, count: 4, classes: [], prediction: "all", target: "predicted",
    targets: {}, sign: "absolute_value", views: Object.keys(VIEWS), scores: true, compare: null,
  };
  let config = null, page = null, luts = {};

  function writeURL() {
    const p = new URLSearchParams();
    p.set("m", state.method);
    for (const [k, v] of Object.entries(state.args)) p.set("a." + k, String(v));
    if (page) p.set("o", String(state.offset));
    p.set("n", String(state.count));
    if (state.classes.length) p.set("c", state.classes.join(","));
    if (state.prediction !== "all") p.set("p", state.prediction);
    if (state.target !== config.target) p.set("t", state.target);
    const tg = Object.entries(state.targets).map(([k, c]) => `${k}:${c}`);
    if (tg.length) p.set("tg", tg.join(","));
    p.set("s", state.sign);
    p.set("v", state.views.join(","));
    if (!state.scores) p.set("sc", "0");
    if (state.compare) p.set("cmp", `${state.compare.index}:${state.compare.model}:${state.compare.target}:${state.compare.methods.join(",")}`);
    history.replaceState(null, "", "#" + p.toString());
  }

  function readURL() {
    const p = new URLSearchParams(location.hash.slice(1));
    const method = config.methods.find((m) => m.id === p.get("m"));
    if (method) state.method = method.id;
    state.args = {};
    const spec = methodSpec();
    for (const a of spec.args) {
      const raw = p.get("a." + a.name);
      if (raw === null) continue;
      state.args[a.name] = a.kind === "bool" ? raw === "true" : a.kind === "choice" ? raw : Number(raw);
    }
    if (p.has("n")) state.count = Math.max(1, Math.min(config.limits.count, parseInt(p.get("n"), 10) || 4));
    if (p.has("c")) state.classes = p.get("c").split(",").map(Number).filter((c) => Number.isInteger(c) && c >= 0 && c < config.classes.length);
    if (["all", "correct", "incorrect"].includes(p.get("p"))) state.prediction = p.get("p");
    if (["predicted", "label"].includes(p.get("t"))) state.target = p.get("t");
    state.targets = {};
    for (const item of (p.get("tg") || "").split(",").filter(Boolean)) {
      const [i, m, c] = item.split(":").map(Number);
      if ([i, m, c].every(Number.isInteger)) state.targets[`${i}:${m}`] = c;
    }
    if (SIGNS.includes(p.get("s"))) state.sign = p.get("s");
    if (p.has("v")) state.views = p.get("v").split(",").filter((v) => v in VIEWS);
    state.scores = p.get("sc") !== "0";
    state.compare = null;
    const cmp = p.get("cmp");
    if (cmp) {
      const [i, m, t, ids] = cmp.split(":");
      const methods = (ids || "").split(",").filter((id) => config.methods.some((x) => x.id === id));
      if (methods.length) state.compare = { index: Number(i), model: Number(m), target: Number(t), methods };
    }
    return p.has("o") ? Math.max(0, parseInt(p.get("o"), 10) || 0) : null;
  }

  // ------------------------------------------------------------------ requests and progress
  let busy = 0, started = 0, ticker = null, label = "";

  function begin(what) {
    if (busy++ === 0) {
      started = performance.now();
      document.body.dataset.state = "loading";
      $("#progress").hidden = false;
      $$("button").forEach((b) => { if (b.id !== "error-close" && b.id !== "compare-close") b.disabled = true; });
      ticker = setInterval(() => { $("#status").textContent = `${label} ${((performance.now() - started) / 1000).toFixed(1)} s`; }, 100);
    }
    label = what;
    $("#status").textContent = what;
  }

  function end(ok, message) {
    if (--busy > 0) return;
    clearInterval(ticker);
    $("#progress").hidden = true;
    $$("button").forEach((b) => { b.disabled = false; });
    document.body.dataset.state = ok ? "ready" : "error";
    $("#status").textContent = message || "";
  }

  function showError(message) {
    $("#error-text").textContent = message;
    $("#error").hidden = false;
  }
  function clearError() { $("#error").hidden = true; $("#error-text").textContent = ""; }

  async function api(path, body) {
    const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    let res;
    try {
      res = await fetch(path, opts);
    } catch (err) {
      throw new Error(`the explorer's server is not reachable (${err.message})`);
    }
    let data = null;
    try { data = await res.json(); } catch (err) { data = null; }
    if (!res.ok) {
      const msg = data && data.error ? data.error : `${res.status} ${res.statusText}`;
      throw new Error(res.status >= 500 ? `Error: ${msg}` : msg);
    }
    return data;
  }

  // ------------------------------------------------------------------ controls
  const methodSpec = (id = state.method) => config.methods.find((m) => m.id === id);
  const argValues = (spec = methodSpec(), given = state.args) => Object.fromEntries(spec.args.map((a) => [a.name, a.name in given ? given[a.name] : a.default]));

  function buildControls() {
    $("#title").textContent = config.title;
    $("#subtitle").textContent = `${config.models.join(" · ")} — ${config.classes.length} classes — funcattr ${config.version}`;
    document.title = config.title;
    const groups = {};
    for (const m of config.methods) (groups[m.group] = groups[m.group] || []).push(m);
    const sel = $("#method");
    sel.replaceChildren(...Object.entries(groups).map(([g, ms]) =>
      el("optgroup", { label: g }, ms.map((m) => el("option", { value: m.id, text: m.label + (m.captum && m.captum !== m.label.replace(/ /g, "") ? `  (${m.captum})` : "") })))));
    $("#class-list").replaceChildren(...config.classes.map((c) => el("option", { value: c })));
    if (!config.has_labels) {
      $$("#prediction input").forEach((i) => { if (i.value !== "all") i.disabled = true; });
      $("#target").disabled = true;
    }
  }

  function renderArgs() {
    const spec = methodSpec();
    const values = argValues(spec);
    const box = $("#args");
    box.replaceChildren(...spec.args.map((a) => {
      let input;
      if (a.kind === "choice") {
        input = el("select", { name: a.name }, a.choices.map((c) => el("option", { value: c, text: c, selected: c === values[a.name] })));
      } else if (a.kind === "bool") {
        input = el("input", { type: "checkbox", name: a.name, checked: values[a.name] });
      } else {
        input = el("input", { type: "number", name: a.name, value: values[a.name], min: a.min, max: a.max, step: a.kind === "int" ? 1 : "any" });
      }
      input.addEventListener("change", () => {
        const v = a.kind === "bool" ? input.checked : a.kind === "choice" ? input.value : input.value === "" ? NaN : Number(input.value);
        state.args[a.name] = v;
        writeURL();
      });
      return el("div", { class: "arg" }, el("label", {}, el("span", { text: a.name }), input), a.help ? el("small", { text: a.help }) : null);
    }));
  }

  function syncControls() {
    $("#method").value = state.method;
    renderArgs();
    $("#count").value = state.count;
    $$("#prediction input").forEach((i) => { i.checked = i.value === state.prediction; });
    $("#target").value = state.target;
    $("#sign").value = state.sign;
    $("#scores").checked = state.scores;
    $$("#views input").forEach((i) => { i.checked = state.views.includes(i.value); });
    renderChips();
  }

  function renderChips() {
    $("#class-chips").replaceChildren(...state.classes.map((c) => el("span", { class: "chip", dataset: { class: c } }, config.classes[c],
      el("button", { type: "button", "aria-label": `remove ${config.classes[c]}`, text: "×", onclick: () => { state.classes = state.classes.filter((x) => x !== c); renderChips(); writeURL(); } }))));
  }

  function addClass(name) {
    const c = config.classes.indexOf(name.trim());
    if (c < 0) { showError(`unknown class "${name}"`); return; }
    if (!state.classes.includes(c)) state.classes.push(c);
    $("#class-input").value = "";
    renderChips();
    writeURL();
  }

  function wire() {
    $("#method").addEventListener("change", (e) => { state.method = e.target.value; state.args = {}; renderArgs(); writeURL(); });
    $("#count").addEventListener("change", (e) => { state.count = Math.max(1, Math.min(config.limits.count, parseInt(e.target.value, 10) || 1)); e.target.value = state.count; writeURL(); });
    $$("#prediction input").forEach((i) => i.addEventListener("change", () => { state.prediction = i.value; writeURL(); }));
    $("#target").addEventListener("change", (e) => { state.target = e.target.value; state.targets = {}; writeURL(); });
    $("#scores").addEventListener("change", (e) => { state.scores = e.target.checked; writeURL(); });
    $("#sign").addEventListener("change", (e) => { state.sign = e.target.value; writeURL(); redraw(); });
    $$("#views input").forEach((i) => i.addEventListener("change", () => {
      state.views = $$("#views input").filter((x) => x.checked).map((x) => x.value); writeURL(); redraw();
    }));
    $("#class-input").addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target.value.trim()) addClass(e.target.value); });
    $("#class-input").addEventListener("change", (e) => { if (config.classes.includes(e.target.value.trim())) addClass(e.target.value); });
    $("#fetch").addEventListener("click", () => { const o = page ? page.next_offset : state.offset; state.targets = {}; load(o); });
    $("#refresh").addEventListener("click", () => load(state.offset));
    $("#error-close").addEventListener("click", clearError);
    $("#compare-close").addEventListener("click", closeCompare);
    $("#compare-run").addEventListener("click", runCompare);
    $("#compare").addEventListener("click", (e) => { if (e.target.id === "compare") closeCompare(); });
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("#compare").hidden) closeCompare(); });
  }

  // ------------------------------------------------------------------ fetching
  async function load(offset) {
    clearError();
    const spec = methodSpec();
    const body = {
      offset, count: state.count, classes: state.classes, prediction: state.prediction, method: state.method,
      args: state.args, target: state.target, targets: state.targets, scores: state.scores,
    };
    begin(`${spec.label}: attributing ${state.count} example${state.count > 1 ? "s" : ""} × ${config.models.length} model${config.models.length > 1 ? "s" : ""}…`);
    const t0 = performance.now();
    try {
      const res = await api("api/fetch", body);
      page = res;
      state.offset = res.offset;
      state.args = res.args;
      renderArgs();
      renderCards();
      writeURL();
      const secs = ((performance.now() - t0) / 1000).toFixed(2);
      end(true, `${res.examples.length} example${res.examples.length === 1 ? "" : "s"} · ${spec.label} · ${secs} s (attribution ${res.seconds.toFixed(2)} s, ${res.calls} batched call${res.calls === 1 ? "" : "s"}, ${res.evaluations.toLocaleString()} model evaluations)`);
      requestAnimationFrame(() => { // for benchmarks/insights.py: click to drawn, in the page's own clock
        window.__insightsDrawn = { ms: performance.now() - t0, examples: res.examples.length, server: res.seconds };
      });
    } catch (err) {
      showError(err.message);
      end(false, "failed");
    }
  }

  async function reattribute(index, model, target) {
    clearError();
    const spec = methodSpec();
    begin(`${spec.label}: example ${index} → ${config.classes[target]}…`);
    try {
      const res = await api("api/attribute", { index, model, target, method: state.method, args: state.args, scores: state.scores });
      const ex = page.examples.find((e) => e.index === index);
      ex.models[model] = res.model;
      state.targets[`${index}:${model}`] = target;
      writeURL();
      renderCard(ex, $(`.card[data-index="${index}"]`));
      end(true, `example ${index} attributed to ${config.classes[target]} in ${res.seconds.toFixed(2)} s`);
    } catch (err) {
      showError(err.message);
      end(false, "failed");
    }
  }

  // ------------------------------------------------------------------ drawing
  function rgbaOf(input) {
    // the input image as RGBA bytes plus its grey version (fa.viz: mean of RGB, min-max scaled)
    const px = bytes(input.data), n = input.w * input.h, c = input.c;
    const rgba = new Uint8ClampedArray(4 * n), grey = new Float32Array(n);
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const r = px[i * c], g = c >= 3 ? px[i * c + 1] : r, b = c >= 3 ? px[i * c + 2] : r;
      rgba[4 * i] = r; rgba[4 * i + 1] = g; rgba[4 * i + 2] = b; rgba[4 * i + 3] = c === 4 ? px[i * c + 3] : 255;
      const v = (r + g + b) / 3;
      grey[i] = v; if (v < lo) lo = v; if (v > hi) hi = v;
    }
    for (let i = 0; i < n; i++) grey[i] = hi > lo ? (grey[i] - lo) / (hi - lo) : 0;
    return { rgba, grey, w: input.w, h: input.h };
  }

  function canvasFor(w, h, rgba, view, feature) {
    const cv = el("canvas", { width: w, height: h, dataset: { view, feature } });
    cv.getContext("2d").putImageData(new ImageData(rgba, w, h), 0, 0);
    return cv;
  }

  function imageViews(img, att, fi) {
    const n = img.w * img.h, lut = luts[state.sign], m = bytes(att.maps[state.sign]);
    const out = [];
    for (const view of state.views) {
      const rgba = new Uint8ClampedArray(4 * n);
      let caption = VIEWS[view];
      if (view === "original_image") rgba.set(img.rgba);
      else if (view === "heat_map" || view === "blended_heat_map") {
        const blend = view === "blended_heat_map";
        for (let i = 0; i < n; i++) {
          const k = 3 * m[i], g = 255 * img.grey[i];
          rgba[4 * i] = blend ? 0.5 * lut[k] + 0.5 * g : lut[k];
          rgba[4 * i + 1] = blend ? 0.5 * lut[k + 1] + 0.5 * g : lut[k + 1];
          rgba[4 * i + 2] = blend ? 0.5 * lut[k + 2] + 0.5 * g : lut[k + 2];
          rgba[4 * i + 3] = 255;
        }
      } else { // masked: the image times the one-signed map (|attr| when the sign is "all")
        const mm = state.sign === "all" ? bytes(att.maps.absolute_value) : m;
        if (state.sign === "all") caption += " (|attr|)";
        for (let i = 0; i < n; i++) {
          const s = mm[i] / 255;
          rgba[4 * i] = img.rgba[4 * i] * s; rgba[4 * i + 1] = img.rgba[4 * i + 1] * s; rgba[4 * i + 2] = img.rgba[4 * i + 2] * s; rgba[4 * i + 3] = 255;
        }
      }
      out.push(el("figure", {}, canvasFor(img.w, img.h, rgba, view, fi), el("figcaption", { text: caption })));
    }
    return el("div", { class: "views" }, out);
  }

  function tokenColor(v) { // fa.viz.text: green > 0, red <= 0, lighter near 0
    v = Math.max(-1, Math.min(1, v));
    return v > 0 ? `hsl(120, 75%, ${100 - Math.trunc(50 * v)}%)` : `hsl(0, 75%, ${100 - Math.trunc(-40 * v)}%)`;
  }

  function textView(input, att) {
    const peak = Math.max(0, ...att.values.map(Math.abs));
    return el("div", { class: "tokens" }, input.tokens.map((t, i) => {
      const v = att.values[i] || 0, span = el("span", { class: "token", title: v.toPrecision(4), dataset: { value: v }, text: t });
      span.style.backgroundColor = tokenColor(peak > 0 ? v / peak : v);
      return [span, " "];
    }));
  }

  function bar(v, cls) {
    const fill = el("div", { class: `fill ${v >= 0 ? "pos" : "neg"}` });
    fill.style.width = `${Math.min(50, 50 * Math.abs(v))}%`;
    return el("div", { class: `track ${cls || ""}` }, fill);
  }

  function tabularView(input, att) {
    const peak = Math.max(0, ...att.values.map(Math.abs));
    return el("div", { class: "tab" }, input.columns.map((c, i) => [
      el("span", { text: c }), el("span", { class: "num", text: Number(input.values[i]).toPrecision(3) }),
      bar(peak > 0 ? att.values[i] / peak : 0), el("span", { class: "num", dataset: { value: att.values[i] }, text: att.values[i].toPrecision(3) }),
    ]));
  }

  function modelBlock(ex, mv, imgs) {
    const active = mv.target;
    const label = ex.label;
    const shown = mv.predictions.map((p) => p.index);
    const preds = mv.predictions.map((p) => el("button", {
      type: "button", class: `pred${p.index === active ? " active" : ""}${label && p.index === label.index ? " true" : ""}`,
      dataset: { class: p.index }, title: `attribute to ${p.name}`, onclick: () => reattribute(ex.index, mv.model, p.index),
    }, p.name, el("span", { class: "p", text: pct(p.score) })));
    if (label && !shown.includes(label.index)) {
      preds.push(el("button", { type: "button", class: `pred true${label.index === active ? " active" : ""}`, dataset: { class: label.index },
        title: `attribute to the true label ${label.name}`, onclick: () => reattribute(ex.index, mv.model, label.index) },
      label.name, el("span", { class: "p", text: mv.label_score === null ? "label" : pct(mv.label_score) })));
    }
    if (!shown.includes(active) && !(label && label.index === active)) {
      preds.push(el("button", { type: "button", class: "pred active", dataset: { class: active }, text: config.classes[active] }));
    }
    const contribs = el("div", { class: "contribs" }, mv.contributions.map((v, fi) => el("div", { class: "contrib", dataset: { feature: fi, value: v } },
      el("span", { text: config.features[fi].name }), bar(v), el("span", { class: "v", text: pct(v) }))));
    const feats = mv.features.map((att, fi) => {
      const input = ex.inputs[fi];
      let body;
      if (att.kind === "image") body = imageViews(imgs[fi], att, fi);
      else if (att.kind === "text") body = textView(input, att);
      else body = tabularView(input, att);
      return el("div", { class: "feature", dataset: { feature: fi, kind: att.kind } }, el("div", { class: "fname", text: input.name }), body);
    });
    const sc = [];
    if (mv.faithfulness) {
      sc.push(el("span", { title: "area under the score as the most important features are removed first: lower is more faithful" }, "deletion AUC ", el("b", { text: mv.faithfulness.deletion.toFixed(3) }), " ↓"));
      sc.push("  ·  ");
      sc.push(el("span", { title: "area under the score as the most important features are inserted first: higher is more faithful" }, "insertion AUC ", el("b", { text: mv.faithfulness.insertion.toFixed(3) }), " ↑"));
    }
    if (mv.localization) {
      const hit = mv.localization.pointing_game;
      sc.push("  ·  ", el("span", { title: "is the map's maximum on the object?" }, "pointing game ", el("b", { class: hit ? "hit" : "miss", text: hit ? "hit" : "miss" })));
      sc.push("  ·  ", el("span", { title: "share of the positive attribution inside the object's mask" }, "mass inside ", el("b", { text: pct(mv.localization.mass_inside) })));
    }
    return el("div", { class: "model", dataset: { model: mv.model, target: active } },
      config.models.length > 1 ? el("h4", { text: mv.name }) : null,
      el("div", { class: "preds" }, preds), contribs, feats, sc.length ? el("div", { class: "scores" }, sc) : null);
  }

  function renderCard(ex, card) {
    const imgs = ex.inputs.map((inp) => (inp.kind === "image" ? rgbaOf(inp) : null));
    const fresh = card || el("article", { class: "card", dataset: { index: ex.index } });
    fresh.classList.toggle("multi", ex.models.length > 1);
    fresh.replaceChildren(
      el("div", { class: "card-head" },
        el("h3", { text: `Example ${ex.index}` }),
        el("span", { class: "label", text: ex.label ? `true label: ${ex.label.name}` : "no label" }),
        el("div", { class: "tools" },
          el("button", { type: "button", class: "compare", onclick: () => openCompare(ex.index, 0) }, "Compare methods"),
          el("button", { type: "button", class: "download", onclick: () => download(ex.index) }, "Download PNG"))),
      el("div", { class: "models" }, ex.models.map((mv) => modelBlock(ex, mv, imgs))));
    return fresh;
  }

  function renderCards() {
    $("#hint").hidden = true;
    $("#note").hidden = !page.note;
    $("#note").textContent = page.note || "";
    $("#cards").replaceChildren(...page.examples.map((ex) => renderCard(ex)));
  }

  function redraw() {
    if (page) renderCards();
    if (!$("#compare").hidden && compareResult) renderCompare(compareResult);
  }

  // ------------------------------------------------------------------ downloading a figure
  function download(index) {
    const card = $(`.card[data-index="${index}"]`);
    const canvases = $$("canvas", card);
    if (!canvases.length) { showError("this example has no image to download"); return; }
    const cell = 200, pad = 10, head = 28, cols = Math.min(canvases.length, 4), rows = Math.ceil(canvases.length / cols);
    const out = el("canvas", { width: pad + cols * (cell + pad), height: head + rows * (cell + 24) + pad });
    const g = out.getContext("2d");
    g.fillStyle = "#fff"; g.fillRect(0, 0, out.width, out.height);
    g.fillStyle = "#1d2330"; g.font = "bold 14px sans-serif";
    g.fillText(`Example ${index} · ${methodSpec().label}`, pad, 19);
    g.imageSmoothingEnabled = false;
    g.font = "12px sans-serif";
    canvases.forEach((cv, k) => {
      const x = pad + (k % cols) * (cell + pad), y = head + Math.floor(k / cols) * (cell + 24);
      const s = Math.min(cell / cv.width, cell / cv.height);
      g.drawImage(cv, x, y, cv.width * s, cv.height * s);
      g.fillText(cv.parentElement.querySelector("figcaption").textContent, x, y + cv.height * s + 14);
    });
    const name = `example-${index}-${state.method}.png`;
    out.toBlob((blob) => {
      const a = el("a", { href: URL.createObjectURL(blob), download: name });
      document.body.append(a); a.click(); a.remove();
      document.body.dataset.download = name;
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }, "image/png");
  }

  // ------------------------------------------------------------------ several methods side by side
  let compareResult = null;
  const COMPARE_DEFAULT = ["saliency", "integrated_gradients", "deeplift", "gradcam", "occlusion", "noise_tunnel"];

  function openCompare(index, model, methods) {
    const ex = page.examples.find((e) => e.index === index);
    const target = ex ? ex.models[model].target : state.compare.target;
    const chosen = methods || (state.compare && state.compare.index === index ? state.compare.methods
      : [...new Set([state.method, ...COMPARE_DEFAULT])].filter((id) => methodSpec(id)).slice(0, 4));
    state.compare = { index, model, target, methods: chosen };
    $("#compare-title").textContent = `Compare methods on example ${index} (${config.models[model]}, class ${config.classes[target]})`;
    $("#compare-methods").replaceChildren(...config.methods.map((m) => el("label", {},
      el("input", { type: "checkbox", value: m.id, checked: chosen.includes(m.id) }), m.label)));
    $("#compare-results").replaceChildren();
    $("#compare").hidden = false;
    writeURL();
  }

  function closeCompare() { $("#compare").hidden = true; state.compare = null; compareResult = null; writeURL(); }

  async function runCompare() {
    const ids = $$("#compare-methods input").filter((i) => i.checked).map((i) => i.value);
    if (!ids.length || ids.length > config.limits.compare) { showError(`choose 1 to ${config.limits.compare} methods`); return; }
    state.compare.methods = ids;
    writeURL();
    clearError();
    const { index, model, target } = state.compare;
    begin(`comparing ${ids.length} methods on example ${index}…`);
    try {
      const methods = ids.map((id) => ({ method: id, args: id === state.method ? state.args : {} }));
      const res = await api("api/compare", { index, model, target, methods, scores: state.scores });
      compareResult = res;
      renderCompare(res);
      end(true, `${ids.length} methods compared in ${res.results.reduce((s, r) => s + r.seconds, 0).toFixed(2)} s`);
    } catch (err) {
      showError(err.message);
      end(false, "failed");
    }
  }

  function renderCompare(res) {
    const ex = page && page.examples.find((e) => e.index === res.index);
    const tiles = res.results.map((r) => {
      const mv = { ...r.view, name: config.models[res.model], predictions: ex ? ex.models[res.model].predictions : [] };
      const imgs = ex ? ex.inputs.map((inp) => (inp.kind === "image" ? rgbaOf(inp) : null)) : [];
      const feats = ex ? mv.features.map((att, fi) => att.kind === "image"
        ? imageViews(imgs[fi], att, fi) : att.kind === "text" ? textView(ex.inputs[fi], att) : tabularView(ex.inputs[fi], att)) : [];
      const f = mv.faithfulness;
      return el("div", { class: "tile", dataset: { method: r.method } }, el("h5", { text: r.label }), feats,
        f ? el("div", { class: "scores" }, `deletion ${f.deletion.toFixed(3)} ↓ · insertion ${f.insertion.toFixed(3)} ↑`) : null);
    });
    $("#compare-results").replaceChildren(...tiles);
  }

  // ------------------------------------------------------------------ start
  async function start() {
    try {
      config = await api("api/init");
    } catch (err) {
      showError(err.message);
      document.body.dataset.state = "error";
      $("#status").textContent = "";
      return;
    }
    for (const s of SIGNS) luts[s] = bytes(config.colormaps[s]);
    state.method = config.default_method;
    state.target = config.target;
    buildControls();
    const offset = readURL();
    syncControls();
    wire();
    document.body.dataset.state = "ready";
    $("#status").textContent = "";
    if (offset !== null) {
      await load(offset);
      if (state.compare && page) { openCompare(state.compare.index, state.compare.model, state.compare.methods); await runCompare(); }
    } else {
      writeURL();
    }
  }
  start();
})();
