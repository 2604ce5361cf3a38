// Personalisation-field inline (campaign admin): each field definition shows only the options
// of its type (a text field has no file extensions). The type select carries the map in
// data-options; the server keeps only the chosen type's options whatever is posted.
(function () {
  function box(form, name) {
    return form.querySelector(".fieldBox.field-" + name) ||
      form.querySelector(".form-row.field-" + name);
  }
  function apply(select) {
    var form = select.closest(".inline-related");
    if (!form) return;
    var map = JSON.parse(select.dataset.options);
    var kept = map[select.value] || [];
    map.all.forEach(function (name) {
      var element = box(form, name);
      if (element) element.hidden = kept.indexOf(name) < 0;
    });
    form.querySelectorAll(".form-row").forEach(function (row) {
      var boxes = row.querySelectorAll(".fieldBox");
      if (!boxes.length) return;
      row.hidden = Array.prototype.every.call(boxes, function (b) { return b.hidden; });
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
