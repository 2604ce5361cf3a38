// Delivery admin: show only the fields the chosen channel uses (the channel select carries
// the map in data-fields; the server hides them the same way on a saved delivery).
(function () {
  function apply(select) {
    var map = JSON.parse(select.dataset.fields);
    var shown = map[select.value] || [];
    map.all.forEach(function (name) {
      var row = document.querySelector(".form-row.field-" + name) ||
        document.querySelector(".fieldBox.field-" + name);
      if (row) row.hidden = shown.indexOf(name) < 0;
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var select = document.querySelector("select#id_channel[data-fields]");
    if (!select) return;
    apply(select);
    select.addEventListener("change", function () { apply(select); });
  });
})();
