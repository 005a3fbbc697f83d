// One view per result kind: window.LanternViews[kind](element, result, jobView). Plain DOM + SVG.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const h = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const c of kids) if (c !== null && c !== undefined) e.append(c);
    return e;
  };
  const s = (tag, attrs = {}, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const fmt = (v, d = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const tok = (t) => String(t).replace(/\n/g, "\\n");

  // colours: diverging blue-white-red around 0; sequential white-blue from 0 to max
  function diverging(v, scale) {
    const t = Math.max(-1, Math.min(1, scale > 0 ? v / scale : 0));
    const f = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? `rgb(255,${f},${f})` : `rgb(${f},${f},255)`;
  }
  function sequential(v, max) {
    const t = Math.max(0, Math.min(1, max > 0 ? v / max : 0));
    const f = Math.round(255 * (1 - t));
    return `rgb(${f},${Math.round(255 - 120 * t)},255)`;
  }
  const absMax = (rows) => Math.max(1e-12, ...rows.flat(3).filter((x) => x !== null).map(Math.abs));

  let tip;
  function tooltip(target, text) {
    target.addEventListener("mousemove", (ev) => {
      tip = tip || document.body.appendChild(h("div", { class: "tooltip" }));
      tip.textContent = text; tip.hidden = false;
      tip.style.left = ev.clientX + 12 + "px"; tip.style.top = ev.clientY + 12 + "px";
    });
    target.addEventListener("mouseleave", () => { if (tip) tip.hidden = true; });
  }

  function legend(kind, label, scale) {
    const ramp = kind === "diverging"
      ? "linear-gradient(to right, rgb(0,0,255), #fff, rgb(255,0,0))"
      : "linear-gradient(to right, #fff, rgb(0,135,255))";
    const lo = kind === "diverging" ? fmt(-scale, 3) : "0";
    return h("div", { class: "legend" }, h("span", { text: label + ":" }), h("span", { text: lo }),
      h("span", { class: "ramp", style: `background:${ramp}` }), h("span", { text: fmt(scale, 3) }));
  }

  // A matrix as SVG cells with row/column labels and axis titles; hover shows the value.
  function grid(matrix, o) {
    const rows = matrix.length, cols = rows ? matrix[0].length : 0;
    const cell = o.cell || Math.max(8, Math.min(28, Math.floor(640 / Math.max(cols, 1))));
    const left = o.left || 70, top = o.top || 70;
    const svg = s("svg", { width: left + cols * cell + 20, height: top + rows * cell + 30, class: o.cls || "grid" });
    const scale = o.scale || absMax(matrix);
    svg.append(s("text", { x: left + (cols * cell) / 2, y: 12, "text-anchor": "middle", "font-size": 12 }, o.xTitle));
    svg.append(s("text", { x: 12, y: top + (rows * cell) / 2, "text-anchor": "middle", "font-size": 12,
      transform: `rotate(-90 12 ${top + (rows * cell) / 2})` }, o.yTitle));
    (o.colLabels || []).forEach((l, j) => svg.append(s("text", { x: left + j * cell + cell / 2, y: top - 4, "font-size": 10,
      transform: `rotate(-60 ${left + j * cell + cell / 2} ${top - 4})` }, tok(l))));
    (o.rowLabels || []).forEach((l, i) => svg.append(s("text", { x: left - 4, y: top + i * cell + cell * 0.7,
      "text-anchor": "end", "font-size": 10 }, tok(l))));
    matrix.forEach((row, i) => row.forEach((v, j) => {
      const fill = v === null ? "#f4f4f4" : o.color ? o.color(v, i, j) : (o.diverging ? diverging(v, scale) : sequential(v, scale));
      const r = s("rect", { x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1, fill,
        "data-row": i, "data-col": j, "data-value": v, class: "cell", stroke: "#e6e6e6", "stroke-width": 0.5 });
      if (o.outline && o.outline(i, j)) { r.setAttribute("stroke", "#000"); r.setAttribute("stroke-width", 2); }
      tooltip(r, o.tip ? o.tip(v, i, j) : `${(o.rowLabels || [])[i] ?? i} × ${(o.colLabels || [])[j] ?? j}: ${fmt(v, 4)}`);
      if (o.onclick) { r.style.cursor = "pointer"; r.addEventListener("click", () => o.onclick(i, j)); }
      svg.append(r);
    }));
    return h("div", {}, o.title ? h("h3", { text: o.title }) : null, svg,
      o.noLegend ? null : legend(o.diverging ? "diverging" : "sequential", o.legend || "value", scale));
  }

  function table(headers, rows) {
    return h("table", { class: "data" }, h("thead", {}, h("tr", {}, ...headers.map((x) => h("th", { text: x })))),
      h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c instanceof Node ? c : String(c)))))));
  }

  function lineChart(series, o) {
    const W = 360, H = 160, L = 40, B = 28;
    const all = series.flatMap((x) => x.values);
    const lo = Math.min(...all), hi = Math.max(...all), n = Math.max(...series.map((x) => x.values.length));
    const X = (i) => L + (i / Math.max(n - 1, 1)) * (W - L - 10), Y = (v) => 10 + (1 - (v - lo) / (hi - lo || 1)) * (H - B - 10);
    const svg = s("svg", { width: W, height: H });
    svg.append(s("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#999" }));
    svg.append(s("line", { x1: L, y1: 10, x2: L, y2: H - B, stroke: "#999" }));
    svg.append(s("text", { x: (W + L) / 2, y: H - 6, "text-anchor": "middle", "font-size": 11 }, o.xTitle));
    svg.append(s("text", { x: 2, y: 10, "font-size": 10 }, fmt(hi, 2)));
    svg.append(s("text", { x: 2, y: H - B, "font-size": 10 }, fmt(lo, 2)));
    series.forEach((sr, k) => {
      svg.append(s("polyline", { fill: "none", stroke: sr.color, "stroke-width": 2,
        points: sr.values.map((v, i) => `${X(i)},${Y(v)}`).join(" ") }));
      svg.append(s("text", { x: W - 120, y: 16 + 12 * k, "font-size": 10, fill: sr.color }, sr.name));
    });
    return h("div", {}, h("h3", { text: o.title }), svg);
  }

  // -- attribution --------------------------------------------------------------------------------
  function heatmap(r) {
    const units = r.unit_spans ? r.unit_spans.map(([a, b]) => r.input_tokens.slice(a, b).join("")) : r.input_tokens;
    const box = h("div", { class: "attribution" });
    r.target_tokens.forEach((t, ti) => {
      const scores = r.scores[ti], scale = absMax(scores);
      const row = h("div", { class: "heatmap", "data-target": ti },
        h("span", { class: "target", text: `→ ${JSON.stringify(t)} (log p ${fmt(r.target_logprobs[ti], 2)})` }));
      units.forEach((u, i) => {
        const c = h("span", { class: "attr-cell", "data-index": i, "data-token": u, "data-score": String(scores[i]),
          style: `background:${diverging(scores[i], scale)}`, text: tok(u) });
        tooltip(c, `${JSON.stringify(u)}: ${scores[i].toExponential(3)}`);
        row.append(c);
      });
      box.append(row, legend("diverging", `score (${r.target_metric}; red raises the target, blue lowers it)`, scale));
    });
    return box;
  }

  function faithfulness(f) {
    return h("div", { class: "faithfulness" },
      table(["", ...f.ks.map((k) => k + "%"), "AOPC"], [
        ["comprehensiveness (drop when top-k% removed: higher is better)", ...f.comprehensiveness.map((x) => fmt(x)), fmt(f.aopc_comprehensiveness)],
        ["sufficiency (drop when only top-k% kept: lower is better)", ...f.sufficiency.map((x) => fmt(x)), fmt(f.aopc_sufficiency)]]),
      lineChart([{ name: `by attribution (AUC ${fmt(f.deletion_auc, 2)})`, values: f.deletion_curve, color: "#c62828" },
                 { name: `random order (AUC ${fmt(f.random_deletion_auc, 2)})`, values: f.random_deletion_curve, color: "#888" }],
        { title: "Deletion curve: F after removing the top units", xTitle: "units removed" }));
  }

  function attribution(el, r) {
    el.append(h("p", { class: "hint", text: `method ${r.method}; one row per target token, one cell per input ${r.unit_spans ? "word" : "token"}; hover a cell for its score.` }));
    el.append(heatmap(r));
    if (r.convergence) {
      const c = r.convergence;
      el.append(h("h3", { text: "Integrated gradients convergence (completeness)" }),
        table(["target", "Σ attributions − (f(x) − f(baseline))", "relative error", "f(x)", "f(baseline)"],
          r.target_tokens.map((t, i) => [JSON.stringify(t), fmt(c.delta[i], 4), fmt(c.relative_error[i], 4), fmt(c.f_input[i], 3), fmt(c.f_baseline[i], 3)])),
        h("p", { class: "hint", text: `${c.n_steps} steps, ${c.rule} rule; under ~0.05 relative error the scores add up to the output change.` }));
    }
    if (r.faithfulness) el.append(h("h3", { text: "Faithfulness" }), faithfulness(r.faithfulness));
  }

  function compare(el, views) {
    const wrap = h("div", { class: "compare" });
    for (const v of views) {
      const card = h("div", { "data-method": v.result ? v.result.method : "" });
      card.append(h("h3", { text: v.result ? v.result.method : `${v.status}…` }));
      if (v.result) {
        card.append(heatmap(v.result));
        const f = v.result.faithfulness;
        if (f) card.append(table(["comprehensiveness AOPC ↑", "sufficiency AOPC ↓", "deletion AUC ↓"],
          [[fmt(f.aopc_comprehensiveness), fmt(f.aopc_sufficiency), fmt(f.deletion_auc, 2)]]));
      } else if (v.error) card.append(h("div", { class: "error", text: v.error.title }));
      wrap.append(card);
    }
    el.append(h("p", { class: "hint", text: "The same input explained by each method; faithfulness: how much the target's score drops when the top-ranked tokens are removed (comprehensiveness, higher is better) or kept alone (sufficiency, lower is better)." }), wrap);
  }

  // -- attention ----------------------------------------------------------------------------------
  function thumb(matrix, size) {
    const c = h("canvas", { width: size, height: size, class: "head-thumb" });
    const ctx = c.getContext("2d"), n = matrix.length, cell = size / n, max = absMax(matrix);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, size, size);
    matrix.forEach((row, i) => row.forEach((v, j) => { if (v > 0) { ctx.fillStyle = sequential(v, max); ctx.fillRect(j * cell, i * cell, Math.ceil(cell), Math.ceil(cell)); } }));
    return c;
  }

  function attention(el, r) {
    if (!r.layers.length) return json(el, r);
    const measures = ["weights", "norms"].filter((m) => r.layers[0][m]);
    let measure = measures[0];
    const toggle = h("div", { class: "toggle" }, h("b", { text: "show: " }), ...measures.map((m) => h("label", {},
      h("input", { type: "radio", name: "measure", value: m, id: "measure-" + m, ...(m === measure ? { checked: "" } : {}),
        onchange: () => { measure = m; draw(); } }), m === "weights" ? " attention weights α" : " norms ‖α f(x)‖ (Kobayashi et al.)")));
    const gridBox = h("div"), matrixBox = h("div", { id: "head-matrix" });
    el.append(h("p", { class: "hint", text: "Each thumbnail is one head's map (rows: query token, columns: key token; darker = more). Click one to open it with its tokens." }),
      toggle, gridBox, matrixBox);
    let opened = null;
    function open(li, hi) {
      opened = [li, hi];
      const L = r.layers[li], m = L[measure][hi];
      matrixBox.replaceChildren(grid(m, { title: `Layer ${L.layer}, head ${r.heads[hi]} (KV head ${r.kv_heads[hi]}): ${measure}`,
        rowLabels: r.tokens, colLabels: r.tokens, xTitle: "key token (attended to)", yTitle: "query token",
        legend: measure === "weights" ? "attention weight" : "‖α f(x)‖", left: 110, top: 90, cls: "head-matrix",
        tip: (v, i, j) => `query ${JSON.stringify(r.tokens[i])} → key ${JSON.stringify(r.tokens[j])}: ${fmt(v, 4)}` }));
    }
    function draw() {
      const t = h("table", { class: "heads" }, h("tr", {}, h("th", { text: "layer \\ head" }), ...r.heads.map((x) => h("th", { text: "H" + x }))));
      r.layers.forEach((L, li) => {
        const tr = h("tr", {}, h("th", { text: "L" + L.layer }));
        (L[measure] || []).forEach((m, hi) => {
          const c = thumb(m, 56);
          c.dataset.layer = L.layer; c.dataset.head = r.heads[hi];
          c.title = `layer ${L.layer}, head ${r.heads[hi]}: click to open`;
          c.addEventListener("click", () => open(li, hi));
          tr.append(h("td", {}, c));
        });
        t.append(tr);
      });
      gridBox.replaceChildren(t);
      if (opened) open(...opened);
    }
    draw();
  }

  // -- logit lens ---------------------------------------------------------------------------------
  function logitLens(el, r) {
    const hasTarget = r.target_token !== null && r.target_token !== undefined;
    el.append(h("p", { class: "hint", text: `Each cell: the most probable next token read from the residual stream after that layer (rows) at that position (columns)${hasTarget ? `; colour: probability of the target ${JSON.stringify(r.target_token)}` : "; colour: the top token's probability"}.` }));
    const t = h("table", { class: "data lens" });
    t.append(h("tr", {}, h("th", { text: "layer \\ position" }), ...r.positions.map((p) => h("th", { class: "tok", text: `${p}: ${tok(r.tokens[p])}` }))));
    for (const L of r.layers) {
      const tr = h("tr", {}, h("th", { text: `${L.layer}${L.site === "resid_mid" ? " (mid)" : ""}` }));
      L.top_tokens.forEach((tops, pi) => {
        const p = hasTarget && L.target_prob ? L.target_prob[pi] : L.top_probs[pi][0];
        const td = h("td", { class: "tok", style: `background:${sequential(p, 1)}`, text: tok(tops[0]) });
        tooltip(td, tops.map((x, k) => `${JSON.stringify(x)} ${fmt(L.top_probs[pi][k], 3)}`).join("  ") +
          (hasTarget && L.target_prob ? `  | target p=${fmt(L.target_prob[pi], 4)} rank ${L.target_rank[pi]}` : ""));
        tr.append(td);
      });
      t.append(tr);
    }
    el.append(t, legend("sequential", hasTarget ? "target probability" : "top-token probability", 1));
  }

  // -- FFN sub-updates ----------------------------------------------------------------------------
  function ffn(el, r) {
    el.append(h("p", { class: "hint", text: `FFN sub-updates m_i·v_i at position ${r.position} (${JSON.stringify(r.token)}), read in the vocabulary (${r.projection}). Score = |m_i|·‖v_i‖.` }));
    for (const L of r.layers) {
      el.append(h("h3", { text: `Layer ${L.layer} (‖update‖ ${fmt(L.update_norm, 2)})` }),
        table(["unit", "coefficient m", "‖v‖", "score", "tokens it promotes"], L.sub_updates.map((u) =>
          [u.index, fmt(u.coefficient), fmt(u.value_norm), fmt(u.score), u.top_tokens.map((x) => JSON.stringify(x.token)).join(" ")])),
        h("p", {}, h("b", { text: "promoted: " }), L.promoted.map((x) => `${JSON.stringify(x.token)} +${fmt(x.delta, 2)}`).join(", "),
          h("br"), h("b", { text: "suppressed: " }), L.suppressed.map((x) => `${JSON.stringify(x.token)} ${fmt(x.delta, 2)}`).join(", ")));
    }
  }

  // -- probe and steering accuracy grids ----------------------------------------------------------
  function accuracyGrid(acc, layers, title, outline) {
    const m = Array.isArray(acc[0]) ? acc : acc.map((x) => [x]);
    const heads = m[0].map((_, j) => (Array.isArray(acc[0]) ? "H" + j : "all"));
    return grid(m, { title, rowLabels: layers.map((l) => "L" + l), colLabels: heads, xTitle: "head", yTitle: "layer",
      scale: 1, legend: "validation accuracy", outline, cell: 22, left: 50, top: 40 });
  }

  function probe(el, r) {
    el.append(h("p", { class: "hint", text: `Linear probes on ${r.site} (${r.position} token), ${r.validation}; ${r.n_examples} examples, chance ${fmt(r.chance)}.` }),
      accuracyGrid(r.accuracy, r.layers, "Probe accuracy [layer][head]"),
      h("h3", { text: "Best sites" }), table(["layer", "head", "accuracy", "±"], r.best.map((b) => [b.layer, b.head ?? "", fmt(b.accuracy), fmt(b.accuracy_std)])));
  }

  function steering(el, r) {
    const chosen = new Set(r.heads.map((x) => `${x.layer}:${x.head}`));
    el.append(h("p", { class: "hint", text: `Steering profile ${r.profile_id}: ${r.heads.length} heads (outlined) by probe accuracy, direction ${r.direction}, ${r.validation}, chance ${fmt(r.chance)}.` }),
      accuracyGrid(r.accuracy_grid, r.accuracy_grid.map((_, i) => i), "Head probe accuracy [layer][head]", (i, j) => chosen.has(`${i}:${j}`)),
      table(["layer", "head", "accuracy", "σ"], r.heads.map((x) => [x.layer, x.head, fmt(x.accuracy), fmt(x.sigma)])));
  }

  const PATTERN_COLORS = { vertical: "#1e88e5", diagonal: "#43a047", "vertical+diagonal": "#00897b", block: "#fb8c00", heterogeneous: "#bdbdbd" };
  function patterns(el, r) {
    const idx = Object.keys(PATTERN_COLORS);
    el.append(grid(r.grid.map((row) => row.map((p) => idx.indexOf(p))), { title: "Head pattern class [layer][head] (Kovaleva et al.)",
      rowLabels: r.layers.map((l) => "L" + l), colLabels: r.heads.map((x) => "H" + x), xTitle: "head", yTitle: "layer", cell: 22, left: 50, top: 40,
      color: (v) => PATTERN_COLORS[idx[v]], tip: (v, i, j) => `L${r.layers[i]} H${r.heads[j]}: ${idx[v]}`, noLegend: true }),
      h("div", { class: "legend" }, ...idx.map((p) => h("span", {}, h("span", { style: `display:inline-block;width:10px;height:10px;background:${PATTERN_COLORS[p]}` }), ` ${p} ${fmt((r.distribution[p] || 0) * 100, 0)}%`))));
  }

  // -- syntactic attention (Clark et al. 2019; SAS of Chen et al. 2023) ---------------------------
  function syntax(el, r) {
    const hs = (x) => `L${x.layer} H${x.head} (${x.direction})`;
    el.append(h("p", { class: "hint", text: `SAS ${fmt(r.sas)}: best head ${hs(r.best)} over ${r.n_words} scored words in ${r.n_sentences} sentences; best fixed-offset baseline ${fmt(r.baseline.score)} (offset ${r.baseline.offset}).` }),
      grid(r.uas, { title: "Unlabeled attachment score of each head read as a parse [layer][head]", rowLabels: r.layers.map((l) => "L" + l),
        colLabels: r.heads.map((x) => "H" + x), xTitle: "head", yTitle: "layer", cell: 22, left: 50, top: 40, scale: 1, legend: "UAS (best direction)" }),
      h("h3", { text: "Per relation: the best heads" }),
      table(["relation", "words", "best head", "accuracy", "next", "offset baseline"], r.relations.map((x) => [x.relation, x.count,
        hs(x.top[0]), fmt(x.top[0].score), x.top.slice(1).map((t) => `${hs(t)} ${fmt(t.score, 2)}`).join(", "), `${fmt(x.baseline.score)} (${x.baseline.offset})`])));
  }

  // -- label words as anchors (Wang et al. 2023) --------------------------------------------------
  function anchors(el, r) {
    const f = r.flows, a = r.auc, rw = r.reweighting;
    const marks = new Set(r.label_positions);
    el.append(h("p", { class: "hint", text: `Labels ${r.labels.map((l, i) => `${l} (${JSON.stringify(r.label_tokens[i])})`).join(", ")}; accuracy ${fmt(r.accuracy)} over ${r.predictions.length} quer${r.predictions.length === 1 ? "y" : "ies"}.` }),
      h("div", { class: "prompt" }, ...r.tokens.map((t, i) => h("span", { class: "tok", style: marks.has(i) ? "background:#ffcc80" : i === r.target_position ? "background:#90caf9" : "", text: tok(t) }))));
    if (f) el.append(lineChart([{ name: "S_wp text→label", color: "#2e7d32", values: f.s_wp }, { name: "S_pq label→target", color: "#c62828", values: f.s_pq },
      { name: "S_ww other", color: "#1565c0", values: f.s_ww }], { title: `Information flow per layer (mean saliency, ${f.n_queries} quer${f.n_queries === 1 ? "y" : "ies"})`, xTitle: "layer" }));
    if (a) el.append(lineChart([{ name: "AUC-ROC", color: "#6a1b9a", values: a.auc }, ...(a.r ? [{ name: "R_l", color: "#f9a825", values: a.r }] : [])],
      { title: `Target's attention on label words as a predictor of the answer (${a.n_queries} queries)`, xTitle: "layer" }));
    if (rw) {
      el.append(h("h3", { text: `Anchor re-weighting (${rw.anchors_id}, ${rw.n_fit} fit examples)` }),
        table(["", "accuracy", "loss"], [["vanilla", fmt(rw.accuracy_before), fmt(rw.loss_before)], ["re-weighted", fmt(rw.accuracy_after), fmt(rw.loss_after)],
          ...(rw.accuracy_more_demos !== null && rw.accuracy_more_demos !== undefined ? [["fit examples as demonstrations", fmt(rw.accuracy_more_demos), "–"]] : [])]));
      r.labels.forEach((label, c) => el.append(grid(rw.beta.map((row) => row.map((hb) => hb[c])), { title: `β for "${label}" [layer][head]`, diverging: true,
        rowLabels: rw.beta.map((_, i) => "L" + i), colLabels: rw.beta[0].map((_, j) => "H" + j), xTitle: "head", yTitle: "layer", cell: 14, left: 50, top: 40, legend: "β" })));
    }
  }

  // -- knowledge neurons and edits ----------------------------------------------------------------
  function neurons(el, r) {
    const W = 520, H = 200, L = 40, B = 30, ns = r.neurons;
    const layers = ns.map((n) => n.layer), lo = Math.min(...layers, 0), hi = Math.max(...layers, 1);
    const maxScore = Math.max(1e-9, ...ns.map((n) => n.score || 0));
    const svg = s("svg", { width: W, height: H });
    svg.append(s("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#999" }));
    svg.append(s("text", { x: (W + L) / 2, y: H - 6, "text-anchor": "middle", "font-size": 11 }, "layer"));
    svg.append(s("text", { x: 12, y: H / 2, "font-size": 11, transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle" }, "IG score"));
    for (let l = lo; l <= hi; l++) svg.append(s("text", { x: L + ((l - lo) / (hi - lo || 1)) * (W - L - 20), y: H - B + 12, "font-size": 9, "text-anchor": "middle" }, l));
    for (const n of ns) {
      const c = s("circle", { cx: L + ((n.layer - lo) / (hi - lo || 1)) * (W - L - 20), cy: H - B - ((n.score || 0) / maxScore) * (H - B - 20), r: 5, fill: "#c62828", "data-layer": n.layer, "data-index": n.index });
      tooltip(c, `layer ${n.layer}, neuron ${n.index}: score ${fmt(n.score, 4)}`);
      svg.append(c);
    }
    el.append(h("h3", { text: `Knowledge neurons for ${JSON.stringify(r.answer_tokens.join(""))} by layer` }), svg,
      h("h3", { text: "Answer probability when the neurons are suppressed / enhanced" }),
      table(["prompt", "p", "suppressed", "enhanced", "random neurons suppressed"], [...r.prompts, ...r.controls.map((c) => ({ ...c, prompt: "(control) " + c.prompt }))]
        .map((p) => [p.prompt, fmt(p.prob, 4), fmt(p.suppressed, 4), fmt(p.enhanced, 4), fmt(p.random_suppressed, 4)])));
  }

  function edit(el, r) {
    const sets = ["reliability", "generalization", "locality"].filter((k) => r[k]);
    el.append(h("p", { class: "hint", text: `Edit set ${r.edit_id} (${r.operation}) on ${r.neurons.length} neurons.` }),
      table(["set", "score", "p before", "p after"], sets.map((k) => [k, fmt(r[k].score), fmt(r[k].prob_before, 4), fmt(r[k].prob_after, 4)])));
  }

  // -- activation patching ------------------------------------------------------------------------
  function axisLabels(r, axis) {
    if (axis === "layer") return r.layers.map((l) => "L" + l);
    if (axis === "position") return (r.positions || []).map((p) => `${p}: ${r.clean_tokens[p] ?? ""}`);
    return (r.heads || []).map((x) => (axis === "kv_head" ? "KV" : "H") + x);
  }
  function patching(el, r) {
    el.append(h("p", { class: "hint", text: `Normalised effect of patching each component (${r.metric}; 1 = the clean run, 0 = the corrupted run) over ${r.n_pairs} pair(s). Clean ${fmt(r.clean_metric)}, corrupted ${fmt(r.corrupted_metric)}. ${r.forwards} forwards.` }));
    const [a0, a1, a2] = r.axes;
    const opts = (title) => ({ title, diverging: true, scale: Math.max(1, absMax(r.effects)), legend: "normalised effect", xTitle: a2 || a1, yTitle: a2 ? a1 : a0, left: 110, top: 90 });
    if (r.axes.length === 2) el.append(grid(r.effects, { ...opts(`Effect [${a0}][${a1}]`), rowLabels: axisLabels(r, a0), colLabels: axisLabels(r, a1) }));
    else r.effects.forEach((m, i) => el.append(grid(m, { ...opts(`${axisLabels(r, a0)[i]}: effect [${a1}][${a2}]`), rowLabels: axisLabels(r, a1), colLabels: axisLabels(r, a2) })));
    if (r.checks) el.append(h("h3", { text: `Attribution patching vs exact (r = ${fmt(r.correlation)})` }), table(["index", "estimate", "exact"], r.checks.map((c) => [c.index.join(","), fmt(c.estimate), fmt(c.exact)])));
  }

  // -- circuit ------------------------------------------------------------------------------------
  const ROLE_COLORS = { name_mover: "#c62828", negative_name_mover: "#6a1b9a", backup_name_mover: "#ef9a9a", s_inhibition: "#1565c0",
    induction: "#2e7d32", duplicate_token: "#f9a825", previous_token: "#00838f", logits: "#000" };
  function circuit(el, r) {
    const g = r.graph, nodes = g.nodes;
    const nl = r.direct_effects.length, nh = r.direct_effects[0] ? r.direct_effects[0].length : 1;
    const W = 760, H = 60 + nh * 26, L = 60, cellX = (W - L - 120) / Math.max(nl, 1);
    const pos = {};
    for (const n of nodes) pos[n.id] = n.layer === null || n.layer === undefined ? [W - 60, H / 2] : [L + n.layer * cellX + cellX / 2, 30 + n.head * 26];
    const svg = s("svg", { width: W, height: H + 30, class: "circuit" });
    for (let l = 0; l < nl; l += Math.ceil(nl / 15)) svg.append(s("text", { x: L + l * cellX + cellX / 2, y: H + 12, "font-size": 9, "text-anchor": "middle" }, l));
    for (let hh = 0; hh < nh; hh++) svg.append(s("text", { x: L - 8, y: 34 + hh * 26, "font-size": 9, "text-anchor": "end" }, "H" + hh));
    svg.append(s("text", { x: (W - 60) / 2, y: H + 26, "font-size": 11, "text-anchor": "middle" }, "layer"));
    svg.append(s("text", { x: 12, y: H / 2, "font-size": 11, transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle" }, "head"));
    const maxE = absMax(g.edges.map((e) => e.effect));
    for (const e of g.edges) {
      const [x1, y1] = pos[e.source] || [0, 0], [x2, y2] = pos[e.target] || [0, 0];
      const line = s("line", { x1, y1, x2, y2, stroke: e.effect < 0 ? "#1565c0" : "#c62828", "stroke-opacity": 0.6,
        "stroke-width": 1 + 4 * Math.abs(e.effect) / maxE, class: "edge" });
      tooltip(line, `${e.source} → ${e.target} via ${e.via}: effect ${fmt(e.effect, 3)}`);
      svg.append(line);
    }
    for (const n of nodes) {
      const [x, y] = pos[n.id];
      const c = s("circle", { cx: x, cy: y, r: n.role === "logits" ? 10 : 7, fill: ROLE_COLORS[n.role] || "#999", stroke: "#fff", class: "node", "data-id": n.id });
      tooltip(c, `${n.id}: ${n.role}`);
      svg.append(c);
      if (n.role === "logits") svg.append(s("text", { x: x + 12, y: y + 4, "font-size": 11 }, "logits"));
    }
    const b = r.behaviour, f = r.faithfulness;
    el.append(h("p", { class: "hint", text: `IOI circuit: logit diff ${fmt(b.logit_diff)} (IO above S in ${fmt(b.io_above_s * 100, 0)}% of prompts). Faithfulness F(C)/F(M) = ${fmt(f.ratio)} with ${f.n_heads} heads (${f.ablation} ablation). Edges: path-patching effect (red positive, blue negative).` }),
      svg, h("div", { class: "legend" }, ...Object.entries(ROLE_COLORS).map(([k, c]) => h("span", {}, h("span", { style: `display:inline-block;width:10px;height:10px;border-radius:5px;background:${c}` }), " " + k))),
      grid(r.direct_effects, { title: "Direct effect on the logits [layer][head]", diverging: true, rowLabels: r.direct_effects.map((_, i) => "L" + i),
        colLabels: r.direct_effects[0].map((_, j) => "H" + j), xTitle: "head", yTitle: "layer", cell: 16, left: 50, top: 40, legend: "normalised path effect" }),
      h("h3", { text: "Knock-outs" }), table(["class", "heads", "logit diff", "drop"], r.knockouts.map((k) => [k.role, k.heads.join(" "), fmt(k.logit_diff), fmt(k.drop)])));
  }

  // -- generate -----------------------------------------------------------------------------------
  function tokens(list, lps) {
    return h("div", {}, ...list.map((t, i) => {
      const sp = h("span", { class: "tok", style: `background:${sequential(Math.exp(lps[i]), 1)}`, text: t });
      tooltip(sp, `${JSON.stringify(t)} log p ${fmt(lps[i], 3)}`);
      return sp;
    }));
  }
  function generate(el, r) {
    const cols = [h("div", {}, h("h3", { text: r.baseline_text !== null && r.baseline_text !== undefined ? "steered / edited" : "generated" }), tokens(r.tokens, r.token_logprobs))];
    if (r.baseline_tokens) cols.push(h("div", {}, h("h3", { text: "baseline (no interventions)" }), tokens(r.baseline_tokens, r.baseline_token_logprobs)));
    el.append(h("div", { class: "side" }, ...cols), legend("sequential", "token probability", 1),
      h("p", { class: "hint", text: `finish: ${r.finish_reason}; prompt ${r.prompt_tokens} tokens` }));
  }

  // -- head redundancy (Bian et al. 2021) and importance (Michel et al. 2019) ----------------------
  function redundancy(el, r) {
    const name = (x) => `L${x[0]} H${x[1]}`, p = r.pruning;
    el.append(h("p", { class: "hint", text: `${r.heads.length} heads over ${r.n_texts} texts (${r.n_tokens} tokens); ${r.distance} distance, clusters cut at ${r.threshold}: ${r.clusters.length} clusters of ${r.clusters.reduce((a, c) => a + c.length, 0)} heads. Base ${r.metric} ${fmt(r.base_loss, 4)}; ${r.forwards} forwards.` }));
    if (p) el.append(h("p", { class: "hint", text: `Pruning (${p.order} order, ${p.criterion} within ${p.tolerance}): ${p.n_heads} heads (${fmt(p.fraction * 100, 0)}%) masked together, ${r.metric} ${fmt(p.loss_before, 4)} → ${fmt(p.loss_after, 4)} (${fmt(p.relative_change * 100, 2)}%), measured.` }));
    el.append(grid(r.matrix, { title: "Head × head distance", rowLabels: r.heads.map(name), colLabels: r.heads.map(name), xTitle: "head", yTitle: "head",
      legend: "distance", left: 60, top: 60, cell: Math.max(3, Math.min(22, Math.floor(640 / Math.max(r.heads.length, 1)))) }));
    const layers = [...new Set(r.heads.map((x) => x[0]))], nh = Math.max(...r.heads.map((x) => x[1])) + 1;
    const by = Object.fromEntries(r.scores.map((x) => [`${x.layer}:${x.head}`, x]));
    const cellOf = (f) => layers.map((l) => [...Array(nh).keys()].map((k) => { const x = by[`${l}:${k}`]; return x && x[f] !== null && x[f] !== undefined ? x[f] : null; }));
    const pruned = new Set((p ? p.heads : []).map((x) => `${x[0]}:${x[1]}`));
    const opts = { rowLabels: layers.map((l) => "L" + l), colLabels: [...Array(nh).keys()].map((k) => "H" + k), xTitle: "head", yTitle: "layer", cell: 22, left: 50, top: 40,
      outline: (i, j) => pruned.has(`${layers[i]}:${j}`) };
    if (r.scores.some((x) => x.loss_change !== null && x.loss_change !== undefined)) el.append(grid(cellOf("loss_change"), { ...opts, title: "Loss change when the head is masked [layer][head] (outlined: the pruning proposal)", diverging: true, legend: "Δ loss" }));
    if (r.scores.some((x) => x.gradient_importance !== null && x.gradient_importance !== undefined)) el.append(grid(cellOf("gradient_importance"), { ...opts, title: "Gradient importance |∂L/∂ξ| [layer][head]", legend: "importance" }));
    el.append(grid(cellOf("redundancy"), { ...opts, title: "Redundancy: 1 − distance to the nearest head [layer][head]", legend: "redundancy" }));
    if (r.random_control) el.append(h("p", { class: "hint", text: `Random token sequences: distance matrices correlate r = ${fmt(r.random_control.matrix_correlation)}, clusterings agree ARI = ${fmt(r.random_control.adjusted_rand)} (${r.random_control.n_clusters} clusters).` }));
    el.append(h("h3", { text: "Clusters" }), table(["#", "size", "heads"], r.clusters.slice(0, 30).map((c, i) => [i, c.length, c.map(name).join(", ")])));
  }

  function json(el, r) { el.append(h("pre", { class: "json", text: JSON.stringify(r, null, 1) })); }

  // -- a sweep across checkpoints (any kind; result.sweep === true) ------------------------------------
  // One chart per scalar against log(1 + step): the change point's interval shaded, the largest jump
  // drawn thick; the series as a table; one checkpoint's own result drawn with its kind's view.
  function stepChart(name, sc) {
    const W = 520, H = 180, L = 48, B = 34, lx = (st) => Math.log1p(st);
    const x0 = lx(sc.steps[0]), x1 = lx(sc.steps[sc.steps.length - 1]);
    const lo = Math.min(...sc.values), hi = Math.max(...sc.values);
    const X = (st) => L + ((lx(st) - x0) / (x1 - x0 || 1)) * (W - L - 14);
    const Y = (v) => 10 + (1 - (v - lo) / (hi - lo || 1)) * (H - B - 10);
    const svg = s("svg", { width: W, height: H, class: "sweep-chart", "data-scalar": name });
    const cp = sc.change_point, jump = sc.largest_jump;
    if (cp) {
      svg.append(s("rect", { x: X(cp.previous_step), y: 10, width: Math.max(2, X(cp.step) - X(cp.previous_step)),
        height: H - B - 10, fill: cp.sparse ? "#ffe0b2" : "#e3f2fd", class: "change-point" }));
    }
    svg.append(s("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#999" }));
    svg.append(s("line", { x1: L, y1: 10, x2: L, y2: H - B, stroke: "#999" }));
    svg.append(s("text", { x: (W + L) / 2, y: H - 4, "text-anchor": "middle", "font-size": 11 }, "training step (log scale)"));
    for (const st of [sc.steps[0], sc.steps[Math.floor(sc.steps.length / 2)], sc.steps[sc.steps.length - 1]]) {
      svg.append(s("text", { x: X(st), y: H - B + 12, "text-anchor": "middle", "font-size": 9 }, st));
    }
    svg.append(s("text", { x: 2, y: 14, "font-size": 10 }, fmt(hi, 3)));
    svg.append(s("text", { x: 2, y: H - B, "font-size": 10 }, fmt(lo, 3)));
    svg.append(s("polyline", { fill: "none", stroke: "#1565c0", "stroke-width": 1.5,
      points: sc.steps.map((st, i) => `${X(st)},${Y(sc.values[i])}`).join(" ") }));
    if (jump) {
      const i = sc.steps.indexOf(jump.to_step);
      svg.append(s("line", { x1: X(jump.from_step), y1: Y(sc.values[i - 1]), x2: X(jump.to_step), y2: Y(sc.values[i]),
        stroke: "#c62828", "stroke-width": 3, class: "largest-jump" }));
    }
    sc.steps.forEach((st, i) => {
      const dot = s("circle", { cx: X(st), cy: Y(sc.values[i]), r: 3, fill: "#1565c0" });
      tooltip(dot, `step ${st}: ${name} = ${fmt(sc.values[i], 4)}`);
      svg.append(dot);
    });
    const notes = [];
    if (jump) notes.push(`largest jump ${fmt(jump.delta, 3)} from step ${jump.from_step} to ${jump.to_step} (red)`);
    if (cp) notes.push(`change point at step ${cp.step} (after ${cp.previous_step}): ${fmt(cp.before, 3)} → ${fmt(cp.after, 3)}, ` +
      `${fmt(cp.variance_explained * 100, 0)}% of the variance` + (cp.sparse ? `; too few checkpoints around it, add e.g. ${cp.suggested_steps.join(", ")}` : ""));
    return h("div", {}, h("h3", { text: name }), svg, h("p", { class: "hint", text: notes.join(". ") }));
  }
  function sweep(el, r, v, kindView) {
    const names = Object.keys(r.scalars);
    el.append(h("p", { class: "hint", text: `Sweep of ${r.kind} over ${r.steps.length} checkpoints: ${r.finished} finished, ` +
      `${r.failed} failed, ${r.canceled} canceled. Shaded: the interval where the change point happened (orange: checkpoints too sparse there).` }));
    for (const w of r.warnings) el.append(h("div", { class: "banner", text: `${w.type}: ${w.detail}` }));
    for (const name of names) el.append(stepChart(name, r.scalars[name]));
    el.append(table(["step", "status", ...names, "error"], r.series.map((p) => [p.step, p.status,
      ...names.map((n) => (p.scalars[n] === undefined ? "–" : fmt(p.scalars[n], 4))), p.error ? p.error.title : ""])));
    const withResult = r.series.filter((p) => p.result);
    if (withResult.length && kindView) {
      const box = h("div", { class: "sweep-point" });
      const pick = h("select", { "aria-label": "checkpoint", onchange: () => {
        box.replaceChildren();
        const p = withResult[Number(pick.value)];
        kindView(box, p.result, { ...v, kind: r.kind, result: p.result });
      } }, ...withResult.map((p, i) => h("option", { value: i, text: `step ${p.step}` })));
      el.append(h("h3", { text: "One checkpoint's result" }), pick, box);
      pick.dispatchEvent(new Event("change"));
    }
  }

  window.LanternViews = {
    attribution, compare, attention, logit_lens: logitLens, ffn_projection: ffn, probe, steering_fit: steering,
    attention_patterns: patterns, knowledge_neurons: neurons, knowledge_edit: edit, activation_patching: patching,
    circuit, generate, syntactic_attention: syntax, head_redundancy: redundancy, icl_anchors: anchors, json,
  };
  // every view also shows the raw result at the end, folded; a sweep's result (any kind) draws as a sweep
  for (const [k, fn] of Object.entries(window.LanternViews)) {
    if (k === "json" || k === "compare") continue;
    window.LanternViews[k] = (el, r, v) => {
      try { if (r && r.sweep === true) sweep(el, r, v, fn); else fn(el, r, v); }
      catch (e) { el.append(h("div", { class: "error", text: `could not draw this result: ${e.message}` })); }
      el.append(h("details", {}, h("summary", { text: "raw result (JSON)" }), h("pre", { class: "json", text: JSON.stringify(r, null, 1) })));
    };
  }
})();
