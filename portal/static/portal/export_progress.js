// An export's progress without reloading: poll the small status endpoint, move the bar and
// show the download link when the file is ready. Without JavaScript the page refreshes itself.
// Used by the portal's export page and the admin's export job page.
(function () {
  function start(box) {
    var url = box.getAttribute("data-export-status");
    var text = box.querySelector("[data-export-text]");
    var bar = box.querySelector("[data-export-progress]");
    var count = box.querySelector("[data-export-count]");
    var download = box.querySelector("[data-export-download]");
    var badge = document.querySelector("[data-export-state]");
    var delay = 1000;
    function show(data) {
      if (bar) { bar.value = data.progress; bar.textContent = data.progress + "%"; }
      if (count) count.textContent = data.done_rows.toLocaleString() + " / " + data.total_rows.toLocaleString();
      if (badge) { badge.textContent = data.state_display; badge.className = "badge state-" + data.state; }
      if (text) {
        if (data.state === "queued") text.textContent = "Your export is being prepared: waiting for a worker.";
        else if (data.state === "running") text.textContent = "Your export is being prepared: " + data.done_rows.toLocaleString() + " of " + data.total_rows.toLocaleString() + " rows written.";
        else if (data.state === "done") text.textContent = "Your export is ready: " + data.done_rows.toLocaleString() + " rows.";
        else text.textContent = data.message || data.state_display;
      }
      if (download && data.download_url) {
        var link = download.querySelector("a");
        if (link) link.href = data.download_url;
        download.hidden = false;
      }
    }
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          show(data);
          if (!data.finished) { delay = Math.min(delay * 1.5, 5000); setTimeout(poll, delay); }
        })
        .catch(function () { setTimeout(poll, 5000); });
    }
    poll();
  }
  function init() {
    var boxes = document.querySelectorAll("[data-export-status]");
    for (var i = 0; i < boxes.length; i++) start(boxes[i]);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
