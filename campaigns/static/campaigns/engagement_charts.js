// Engagement report charts (Chart.js, vendored): the data comes from json_script elements,
// the page has no inline script (CSP).
(function () {
  "use strict";

  function data(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function draw() {
    if (typeof window.Chart === "undefined") {
      return;
    }
    var timeline = data("engagement-timeline-data");
    var canvas = document.getElementById("engagement-timeline");
    if (timeline && canvas) {
      canvas.chart = new window.Chart(canvas, {
        type: "line",
        data: {
          labels: timeline.labels,
          datasets: [
            { label: "Opens (human)", data: timeline.opens, borderColor: "#1f6feb", tension: 0.2 },
            { label: "Clicks (human)", data: timeline.clicks, borderColor: "#2da44e", tension: 0.2 },
            { label: "Machine opens and clicks", data: timeline.machine, borderColor: "#8c959f",
              borderDash: [4, 4], tension: 0.2 }
          ]
        },
        options: {
          animation: false,
          interaction: { mode: "index", intersect: false },
          scales: { y: { beginAtZero: true, ticks: { precision: 0 } } }
        }
      });
    }
    var entities = data("engagement-entities-data");
    var bars = document.getElementById("engagement-entities");
    if (entities && bars) {
      bars.chart = new window.Chart(bars, {
        type: "bar",
        data: {
          labels: entities.map(function (row) { return row.entity; }),
          datasets: [
            { label: "Open rate (%)", data: entities.map(function (row) { return row.open_rate; }),
              backgroundColor: "#1f6feb" },
            { label: "Click rate (%)", data: entities.map(function (row) { return row.click_rate; }),
              backgroundColor: "#2da44e" }
          ]
        },
        options: { animation: false, scales: { y: { beginAtZero: true, max: 100 } } }
      });
    }
    document.documentElement.setAttribute("data-charts", "ready");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
