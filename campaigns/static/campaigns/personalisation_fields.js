// Personalisation-field inline (campaign admin): each field definition shows only the options
// of its type (a text field has no file extensions). The type select carries the map in
// data-options; the server keeps only the chosen type's options whatever is posted.
(function () {
  // A field of a multi-field line: its box's wrapper (which also holds its help text).
  function box(form, name) {
    var inLine = form.querySelector(".fieldBox.field-" + name);
    return inLine ? inLine.parentElement : form.querySelector(".form-row.field-" + name);
  }
  // The admin styles these boxes display:flex, which beats the hidden attribute alone.
  function show(element, visible) {
    element.hidden = !visible;
    element.style.display = visible ? "" : "none";
  }
  function apply(select) {
    var form = select.closest(".inline-related");
    if (!form) return;
    var map = JSON.parse(select.dataset.options);
    var kept = map[select.value] || [];
    map.all.forEach(function (name) {
      var element = box(form, name);
      if (element) show(element, kept.indexOf(name) >= 0);
    });
    form.querySelectorAll(".form-row").forEach(function (row) {
      var boxes = row.querySelectorAll(".fieldBox");
      if (!boxes.length) return;
      show(row, Array.prototype.some.call(boxes, function (b) { return !b.parentElement.hidden; }));
    });
  }
  function applyAll(root) {
    root.querySelectorAll("select[data-options]").forEach(apply);
  }
  document.addEventListener("DOMContentLoaded", function () { applyAll(document); });
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("select[data-options]")) apply(event.target);
  });
  document.addEventListener("formset:added", function (event) { applyAll(event.target); });
})();
