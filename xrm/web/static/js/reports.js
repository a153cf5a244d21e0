/* Report charts: each <canvas data-xrm-chart="ID"> is drawn with Chart.js from the JSON
   in <script type="application/json" id="ID"> (the server computed every figure, its
   text in the user's locale and the link to its records).  A click on a bar, point or
   slice opens the records behind it.  Drawn on page load and whenever htmx brings a new
   report body (a parameter changed); the old chart is destroyed first. */
(function () {
  "use strict";

  var PALETTE = ["#0d6efd", "#198754", "#fd7e14", "#6f42c1", "#d63384", "#20c997",
                 "#ffc107", "#0dcaf0", "#6c757d", "#dc3545", "#6610f2", "#adb5bd"];

  function color(index, alpha) {
    var hex = PALETTE[index % PALETTE.length];
    if (alpha === undefined) return hex;
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function numbers(locale) {
    var format;
    try { format = new Intl.NumberFormat(locale); } catch (e) { format = new Intl.NumberFormat(); }
    return function (value) { return format.format(value); };
  }

  function config(spec) {
    var kind = spec.kind;
    var short = numbers(spec.locale);
    var sets = spec.datasets.map(function (set, index) {
      var data = set.data;
      var out = { label: set.label, data: data };
      if (kind === "pie") {
        out.backgroundColor = data.map(function (_, i) { return color(i, 0.85); });
        out.borderColor = "#fff";
      } else if (kind === "line") {
        out.borderColor = color(index);
        out.backgroundColor = color(index, 0.2);
        out.tension = 0.2;
        out.pointRadius = 4;
        out.pointHoverRadius = 6;
      } else if (kind === "funnel") {
        // a funnel: each stage a bar centred on zero, as wide as its figure
        out.data = data.map(function (v) { return v === null ? null : [-v / 2, v / 2]; });
        out.backgroundColor = data.map(function (_, i) { return color(i, 0.85); });
        out.barPercentage = 1.0;
        out.categoryPercentage = 0.9;
        out.maxBarThickness = 56;
      } else {
        out.backgroundColor = color(index, 0.8);
        out.borderColor = color(index);
        out.borderWidth = 1;
        out.maxBarThickness = 72;
      }
      return out;
    });
    var tooltip = {
      callbacks: {
        label: function (ctx) {
          var text = spec.datasets[ctx.datasetIndex].text[ctx.dataIndex];
          var name = kind === "pie" ? ctx.label : ctx.dataset.label;
          return name ? name + ": " + text : text;
        },
      },
    };
    var options = {
      responsive: true,
      maintainAspectRatio: true,
      aspectRatio: kind === "pie" ? 1.6 : 2,
      plugins: {
        legend: { display: kind === "pie" || spec.datasets.length > 1 },
        tooltip: tooltip,
      },
      onClick: function (event, elements) {
        if (!elements.length) return;
        var hit = elements[0];
        var link = spec.datasets[hit.datasetIndex].links[hit.index];
        if (link) window.location.assign(link);
      },
      onHover: function (event, elements) {
        var target = event.native && event.native.target;
        if (target) target.style.cursor = elements.length ? "pointer" : "default";
      },
    };
    if (kind === "funnel") {
      options.indexAxis = "y";
      options.scales = {
        x: { display: false, stacked: true },
        y: { grid: { display: false } },
      };
    } else if (kind !== "pie") {
      var stacked = kind === "stacked_bar";
      options.scales = {
        x: { stacked: stacked },
        y: { stacked: stacked, beginAtZero: true, ticks: { callback: function (v) { return short(v); } } },
      };
    }
    return {
      type: kind === "pie" ? "pie" : kind === "line" ? "line" : "bar",
      data: { labels: spec.labels, datasets: sets },
      options: options,
    };
  }

  function draw(canvas) {
    if (canvas.xrmChart || typeof Chart === "undefined") return;
    var source = document.getElementById(canvas.dataset.xrmChart);
    if (!source) return;
    var spec;
    try { spec = JSON.parse(source.textContent); } catch (e) { return; }
    if (!spec || !spec.datasets) return;
    canvas.xrmChart = new Chart(canvas, config(spec));
    canvas.dataset.drawn = "true";
  }

  function init(root) {
    (root || document).querySelectorAll("canvas[data-xrm-chart]").forEach(draw);
  }

  function release(root) {
    (root || document).querySelectorAll("canvas[data-xrm-chart]").forEach(function (canvas) {
      if (canvas.xrmChart) { canvas.xrmChart.destroy(); canvas.xrmChart = null; }
    });
  }

  document.addEventListener("htmx:beforeSwap", function (event) { release(event.detail.target); });
  document.addEventListener("htmx:load", function (event) { init(event.target); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document);
  }
})();
