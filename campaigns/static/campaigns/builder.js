// Query builder: edit a condition tree with menus built from the targeting registry, without
// writing JSON. The JSON textarea stays the source of truth (the builder writes it), so the
// server validates exactly what is sent. Mount: <div data-query-builder data-registry-id=…
// data-target=conditions-textarea-id data-dimension-field=select-id>.
(function () {
  "use strict";
  var NO_VALUE = ["is_empty", "is_not_empty", "exists", "not_exists"];
  var DAYS = ["in_last_days", "in_next_days", "more_than_days_ago"];
  var LISTS = ["in", "not_in"];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function options(select, pairs, selected) {
    pairs.forEach(function (pair) {
      var option = el("option", { value: pair[0], text: pair[1] });
      if (pair[0] === selected) option.selected = true;
      select.appendChild(option);
    });
    return select;
  }

  function Builder(root) {
    this.root = root;
    this.registry = JSON.parse(document.getElementById(root.dataset.registryId).textContent);
    this.target = document.getElementById(root.dataset.target);
    this.dimensionField = document.getElementById(root.dataset.dimensionField);
    var self = this;
    this.dimensionField.addEventListener("change", function () { self.reset({}); });
    // Follow hand-edited JSON while the user types (not on blur, which would move the page
    // under a click on the count button).
    var pending = null;
    this.target.addEventListener("input", function () {
      clearTimeout(pending);
      pending = setTimeout(function () { self.load(true); }, 300);
    });
    this.load();
  }

  Builder.prototype.dimension = function () {
    return this.dimensionField.value || "contact";
  };

  Builder.prototype.load = function (fromTyping) {
    var tree;
    try { tree = JSON.parse(this.target.value || "{}"); } catch (e) { return; }
    this.reset(tree, fromTyping);
  };

  Builder.prototype.reset = function (tree, keepText) {
    this.root.textContent = "";
    this.group = this.makeGroup(this.dimension(), tree, true);
    this.root.appendChild(this.group.node);
    if (!keepText) this.write();
  };

  Builder.prototype.write = function () {
    this.target.value = JSON.stringify(this.group.read());
  };

  Builder.prototype.makeGroup = function (dimension, tree, top) {
    var self = this;
    var mode = tree && tree.or ? "or" : "and";
    var children = tree && (tree.and || tree.or);
    if (!children) children = tree && Object.keys(tree).length ? [tree] : [];
    var list = el("ul", { class: "qb-list" });
    var combinator = options(el("select", { "aria-label": "Combine the conditions" }),
      [["and", "All of these"], ["or", "Any of these"]], mode);
    var group = { node: null, rows: [] };
    var addCondition = el("button", { type: "button", class: "button qb-add", text: "+ condition" });
    var addGroup = el("button", { type: "button", class: "button qb-add", text: "+ group" });
    group.node = el("div", { class: "qb-group" + (top ? " qb-top" : "") },
      [el("div", { class: "qb-head" }, [combinator, addCondition, addGroup]), list]);

    function add(row) {
      group.rows.push(row);
      var remove = el("button", { type: "button", class: "qb-remove", "aria-label": "Remove", text: "×" });
      var item = el("li", {}, [row.node, remove]);
      remove.addEventListener("click", function () {
        group.rows.splice(group.rows.indexOf(row), 1);
        list.removeChild(item);
        self.write();
      });
      list.appendChild(item);
    }
    children.forEach(function (child) {
      if (child.and || child.or) add(self.makeGroup(dimension, child, false));
      else add(self.makeCondition(dimension, child));
    });
    addCondition.addEventListener("click", function () {
      add(self.makeCondition(dimension, {})); self.write();
    });
    addGroup.addEventListener("click", function () {
      add(self.makeGroup(dimension, {}, false)); self.write();
    });
    combinator.addEventListener("change", function () { mode = combinator.value; self.write(); });
    group.read = function () {
      var parts = group.rows.map(function (row) { return row.read(); })
        .filter(function (part) { return part && Object.keys(part).length; });
      if (!parts.length) return {};
      var out = {}; out[mode] = parts; return out;
    };
    return group;
  };

  Builder.prototype.makeCondition = function (dimension, condition) {
    var self = this;
    var spec = this.registry[dimension];
    var choices = [["", "— choose —"]];
    Object.keys(spec.fields).forEach(function (key) {
      choices.push(["f:" + key, spec.fields[key].label + " (" + key + ")"]);
    });
    Object.keys(spec.relations).forEach(function (key) {
      choices.push(["r:" + key, spec.relations[key].label + " (related)"]);
    });
    var current = condition.relation ? "r:" + condition.relation
      : condition.field ? "f:" + condition.field : "";
    var what = options(el("select", { "aria-label": "Field" }), choices, current);
    var op = el("select", { "aria-label": "Operator" });
    var valueBox = el("span", { class: "qb-value" });
    var whereBox = el("div", { class: "qb-where" });
    var row = { node: el("div", { class: "qb-condition" }, [what, op, valueBox, whereBox]) };
    var inputs = [];
    var where = null;

    function meta() {
      var key = what.value.slice(2);
      return what.value.charAt(0) === "r" ? { relation: spec.relations[key], key: key }
        : what.value ? { field: spec.fields[key], key: key } : null;
    }
    function renderOperators(selected) {
      op.textContent = "";
      var m = meta();
      if (!m) return;
      var ops = m.relation ? m.relation.operators : m.field.operators;
      options(op, ops.map(function (o) { return [o, o.replace(/_/g, " ")]; }), selected || ops[0]);
    }
    function renderValue(value) {
      valueBox.textContent = ""; whereBox.textContent = ""; inputs = []; where = null;
      var suffix = "";
      var m = meta();
      if (!m) return;
      var operator = op.value;
      if (m.relation) {
        if (operator === "count_gte") inputs.push(el("input", { type: "number", min: "1", value: value || 1, "aria-label": "At least" }));
        where = self.makeGroup(m.relation.dimension, condition.where || {}, false);
        whereBox.appendChild(el("span", { class: "qb-where-label", text: "where" }));
        whereBox.appendChild(where.node);
      } else if (NO_VALUE.indexOf(operator) >= 0) {
        // no value
      } else if (m.field.type === "bool") {
        inputs.push(options(el("select", { "aria-label": "Value" }), [["true", "yes"], ["false", "no"]], String(value !== false)));
      } else if (operator === "between") {
        var pair = Array.isArray(value) ? value : ["", ""];
        var kind = m.field.type === "number" ? "number" : "date";
        inputs.push(el("input", { type: kind, value: pair[0], "aria-label": "From" }));
        inputs.push(el("input", { type: kind, value: pair[1], "aria-label": "To" }));
      } else if (DAYS.indexOf(operator) >= 0) {
        inputs.push(el("input", { type: "number", min: "0", value: value === undefined ? 30 : value, "aria-label": "Days" }));
        suffix = " days";
      } else if (LISTS.indexOf(operator) >= 0) {
        inputs.push(el("input", { type: "text", value: Array.isArray(value) ? value.join(", ") : "", placeholder: "a, b, c", "aria-label": "Values" }));
      } else if (m.field.type === "choice") {
        inputs.push(options(el("select", { "aria-label": "Value" }), m.field.choices.map(function (c) { return [c, c]; }), value));
      } else {
        var type = m.field.type === "number" ? "number" : (m.field.type === "date" || m.field.type === "datetime") ? "date" : "text";
        inputs.push(el("input", { type: type, value: value === undefined ? "" : value, "aria-label": "Value" }));
      }
      inputs.forEach(function (input) {
        valueBox.appendChild(input);
        input.addEventListener("input", function () { self.write(); });
        input.addEventListener("change", function () { self.write(); });
      });
      if (suffix) valueBox.appendChild(el("span", { text: suffix }));
      whereBox.addEventListener("change", function () { self.write(); });
    }
    function parse(raw, type) {
      if (type === "number") return raw === "" ? raw : Number(raw);
      return raw;
    }
    row.read = function () {
      var m = meta();
      if (!m) return {};
      if (m.relation) {
        var out = { relation: m.key, op: op.value };
        if (op.value === "count_gte") out.value = parseInt(inputs[0].value, 10);
        var w = where ? where.read() : {};
        if (Object.keys(w).length) out.where = w;
        return out;
      }
      var result = { field: m.key, op: op.value };
      var type = m.field.type;
      if (NO_VALUE.indexOf(op.value) >= 0) return result;
      if (type === "bool") result.value = inputs[0].value === "true";
      else if (op.value === "between") result.value = [parse(inputs[0].value, type), parse(inputs[1].value, type)];
      else if (DAYS.indexOf(op.value) >= 0) result.value = parseInt(inputs[0].value, 10);
      else if (LISTS.indexOf(op.value) >= 0) {
        result.value = inputs[0].value.split(",").map(function (s) { return s.trim(); })
          .filter(function (s) { return s; }).map(function (s) { return parse(s, type); });
      } else result.value = parse(inputs[0].value, type);
      return result;
    };
    what.addEventListener("change", function () { renderOperators(); renderValue(); self.write(); });
    op.addEventListener("change", function () { renderValue(); self.write(); });
    renderOperators(condition.op);
    renderValue(condition.value);
    return row;
  };

  function mount(scope) {
    var where = scope && scope.querySelectorAll ? scope : document;
    Array.prototype.forEach.call(where.querySelectorAll("[data-query-builder]"), function (root) {
      if (!root.builder) root.builder = new Builder(root);
    });
  }
  // The workflow canvas loads step forms after the page: it mounts their builders itself.
  window.campaignsQueryBuilder = { mount: mount };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
  else mount();
})();
