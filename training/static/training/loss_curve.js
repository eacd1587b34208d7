// Live loss curve of a training run: draws the stored points as an SVG polyline, then (while the run
// is queued or running) polls the run's progress endpoint for new points every two seconds.
(function () {
  "use strict";
  var svg = document.getElementById("loss-curve");
  if (!svg) return;
  var NS = "http://www.w3.org/2000/svg";
  var W = 800, H = 260, PAD = 40;
  var points = JSON.parse(document.getElementById("loss-points").textContent || "[]");
  var summary = document.getElementById("curve-summary");
  var statusEl = document.getElementById("run-status");
  var stageEl = document.getElementById("run-stage");

  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function draw() {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var usable = points.filter(function (p) { return p.loss !== null && isFinite(p.loss); });
    if (!usable.length) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6b7280" }, "waiting for the first step…"));
      return;
    }
    var maxStep = Math.max.apply(null, usable.map(function (p) { return p.step; }));
    var losses = usable.map(function (p) { return p.loss; });
    var lo = Math.min.apply(null, losses), hi = Math.max.apply(null, losses);
    if (hi === lo) { hi = lo + 1; }
    function x(step) { return PAD + (W - 2 * PAD) * (maxStep <= 1 ? 0.5 : (step - 1) / (maxStep - 1)); }
    function y(loss) { return H - PAD - (H - 2 * PAD) * (loss - lo) / (hi - lo); }
    svg.appendChild(el("line", { x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD, stroke: "#9ca3af" }));
    svg.appendChild(el("line", { x1: PAD, y1: PAD, x2: PAD, y2: H - PAD, stroke: "#9ca3af" }));
    svg.appendChild(el("text", { x: PAD - 4, y: y(hi) + 4, "text-anchor": "end", "font-size": 11 }, hi.toFixed(3)));
    svg.appendChild(el("text", { x: PAD - 4, y: y(lo) + 4, "text-anchor": "end", "font-size": 11 }, lo.toFixed(3)));
    svg.appendChild(el("text", { x: W - PAD, y: H - PAD + 16, "text-anchor": "end", "font-size": 11 }, "step " + maxStep));
    svg.appendChild(el("polyline", {
      fill: "none", stroke: "#2f5fd0", "stroke-width": 2,
      points: usable.map(function (p) { return x(p.step).toFixed(1) + "," + y(p.loss).toFixed(1); }).join(" ")
    }));
    var last = usable[usable.length - 1];
    if (summary) {
      summary.textContent = "step " + last.step + ": loss " + last.loss.toFixed(4) +
        (last.learning_rate ? ", lr " + last.learning_rate.toExponential(2) : "") +
        (last.tokens_per_s ? ", " + Math.round(last.tokens_per_s) + " tokens/s" : "");
    }
  }

  function poll() {
    // No point yet: ask for all of them (the endpoint takes only steps >= 0).
    var url = svg.dataset.progressUrl + (points.length ? "?after_step=" + points[points.length - 1].step : "");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.ok) return r.json();
        // Say so and keep asking: a page that silently stops would show "running" for ever.
        if (summary) summary.textContent = "live updates paused (HTTP " + r.status + "); reload the page to see the latest";
        setTimeout(poll, 5000);
        return null;
      })
      .then(function (body) {
        if (!body) return;
        points = points.concat(body.points);
        draw();
        if (statusEl) { statusEl.textContent = body.status; statusEl.className = "status status-" + body.status; }
        if (stageEl) stageEl.textContent = body.stage;
        var silent = document.getElementById("run-worker-silent");
        if (silent) {
          silent.hidden = !body.worker_silent_s;
          var seconds = document.getElementById("run-silent-s");
          if (seconds && body.worker_silent_s) seconds.textContent = body.worker_silent_s;
        }
        if (body.status === "queued" || body.status === "running") setTimeout(poll, 2000);
        else setTimeout(function () { window.location.reload(); }, 1500);  // show the gate decision
      })
      .catch(function () { setTimeout(poll, 5000); });
  }

  draw();
  if (svg.dataset.live === "1") setTimeout(poll, 2000);
})();
