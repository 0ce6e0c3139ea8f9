/* Draws the page's charts from the JSON the server put in #chart-data (see analytics/views.py:
   chart()). Chart.js is vendored in static/vendor/chartjs. */
(function () {
  "use strict";

  var source = document.getElementById("chart-data");
  if (!source || typeof Chart === "undefined") {
    return;
  }
  // Drawn at once: no animation to wait for when reading the page or testing it.
  Chart.defaults.animation = false;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.maintainAspectRatio = false;

  function percentTick(value) {
    return Math.round(value * 1000) / 10 + "%";
  }

  var NODE_COLORS = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2",
                     "#db2777", "#65a30d"];

  // Paths: flows between (step, event type) nodes, drawn by the vendored
  // chartjs-chart-sankey plugin; a node's colour follows its event type at every step.
  function buildSankey(canvas, spec) {
    var colorOf = {};
    function color(key) {
      var name = spec.labels[key] || key;
      if (!(name in colorOf)) {
        colorOf[name] = NODE_COLORS[Object.keys(colorOf).length % NODE_COLORS.length];
      }
      return colorOf[name];
    }
    new Chart(canvas, {
      type: "sankey",
      data: {
        datasets: [{
          data: spec.flows,
          labels: spec.labels,
          colorFrom: function (context) { return color(context.dataset.data[context.dataIndex].from); },
          colorTo: function (context) { return color(context.dataset.data[context.dataIndex].to); },
          colorMode: "gradient",
          size: "max"
        }]
      },
      options: { plugins: { legend: { display: false } } }
    });
  }

  function build(spec) {
    var canvas = document.getElementById("chart-" + spec.id);
    if (!canvas) {
      return;
    }
    if (spec.type === "sankey") {
      buildSankey(canvas, spec);
      return;
    }
    var isLine = spec.type === "line";
    var valueAxis = spec.horizontal ? "x" : "y";
    var categoryAxis = spec.horizontal ? "y" : "x";
    var scales = {};
    scales[valueAxis] = {
      beginAtZero: true,
      stacked: spec.stacked,
      ticks: spec.percent ? { callback: percentTick } : {},
      max: spec.percent && isLine ? 1 : undefined
    };
    scales[categoryAxis] = { stacked: spec.stacked, ticks: { autoSkip: true, maxTicksLimit: 16 } };
    new Chart(canvas, {
      type: spec.type,
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map(function (dataset) {
          return {
            label: dataset.label,
            data: dataset.data,
            borderColor: dataset.color,
            backgroundColor: isLine ? dataset.color : dataset.color + "cc",
            borderWidth: isLine ? 2 : 0,
            pointRadius: spec.labels.length > 40 ? 0 : 2,
            spanGaps: true,
            tension: 0.2
          };
        })
      },
      options: {
        indexAxis: spec.horizontal ? "y" : "x",
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { display: spec.datasets.length > 1, position: "bottom" },
          tooltip: spec.percent ? {
            callbacks: {
              label: function (context) {
                var value = context.parsed[valueAxis];
                return context.dataset.label + ": " + (value === null ? "–" : percentTick(value));
              }
            }
          } : {}
        },
        scales: scales
      }
    });
  }

  JSON.parse(source.textContent).forEach(build);
}());
