// Exact counts without reloading the page: POST the condition tree, show the numbers or the
// problems with their paths. Used by the portal's audience page and the admin query builder.
(function () {
  function csrfToken() {
    var match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }
  function sampleTable(sample) {
    var table = document.createElement("table");
    table.className = "table sample";
    var head = table.createTHead().insertRow();
    sample.columns.forEach(function (c) {
      var th = document.createElement("th"); th.scope = "col"; th.textContent = c; head.appendChild(th);
    });
    var body = table.createTBody();
    sample.rows.forEach(function (r) {
      var tr = body.insertRow();
      r.forEach(function (v) { tr.insertCell().textContent = v; });
    });
    var caption = table.createCaption();
    caption.textContent = "Sample (first " + sample.rows.length + " rows)";
    return table;
  }
  function render(output, data, ok) {
    output.textContent = "";
    if (ok) {
      var text = data.rows.toLocaleString() + " row" + (data.rows === 1 ? "" : "s");
      if (data.contacts !== data.rows) text += ", " + data.contacts.toLocaleString() + " distinct contacts";
      output.textContent = text + " (" + data.milliseconds + " ms)";
      output.className = "count-result ok";
      if (data.words) {
        // The conditions counted, in words (never the JSON).
        var words = document.createElement("span");
        words.className = "conditions-words";
        words.textContent = " for: " + data.words + ".";
        output.appendChild(words);
      }
      if (data.sample) output.appendChild(sampleTable(data.sample));
      return;
    }
    var list = document.createElement("ul");
    (data.errors || [{ path: "", message: "The count failed." }]).forEach(function (e) {
      var item = document.createElement("li");
      item.textContent = (e.path ? e.path + ": " : "") + e.message;
      list.appendChild(item);
    });
    output.appendChild(list);
    output.className = "count-result errors";
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-count-url]");
    if (!button) return;
    event.preventDefault();
    var form = button.form || document;
    var output = document.getElementById(button.dataset.output);
    var dimension = form.querySelector("[name=dimension]");
    var conditions = form.querySelector("[name=conditions]");
    var entity = form.querySelector("[name=entity]");
    output.textContent = "Counting…";
    fetch(button.dataset.countUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({
        dimension: dimension ? dimension.value : "contact",
        conditions: conditions ? conditions.value : "{}",
        entity: entity && entity.tagName === "SELECT" ? entity.value : "",
        sample: button.dataset.sample === "true",
      }),
    })
      .then(function (response) {
        return response.json().then(function (data) { render(output, data, response.ok); });
      })
      .catch(function () { render(output, { errors: [{ path: "", message: "The server did not answer." }] }, false); });
  });
  // A counting form is never submitted: Enter in one of its fields must not reload the page.
  // (A listener here, not onsubmit="…" in the template: the Content-Security-Policy forbids
  // inline event handlers.)
  document.addEventListener("submit", function (event) {
    if (event.target.matches("form[data-count-form]")) event.preventDefault();
  });
})();
