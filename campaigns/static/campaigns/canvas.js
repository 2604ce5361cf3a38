// The workflow canvas: Drawflow (vendored) draws the steps and transitions; this file loads
// the graph (json_script), keeps each step's key, type and settings in its node data, asks
// the server for the selected step's settings form (HTML) and checks it there, saves the
// whole graph with its version, simulates and shows the counts on the transitions.
(function () {
  "use strict";

  var root = document.getElementById("wf-canvas");
  if (!root || typeof Drawflow === "undefined") return;
  var DATA = JSON.parse(document.getElementById("wf-canvas-data").textContent);
  var MODE = root.dataset.mode;
  var URLS = DATA.urls;
  var TYPES = {};
  DATA.palette.forEach(function (item) { TYPES[item.type] = item; });

  var container = document.getElementById("wf-drawflow");
  var editor = new Drawflow(container);
  editor.reroute = false;
  editor.start();
  editor.editor_mode = MODE === "edit" ? "edit" : "fixed";

  var state = { version: DATA.graph.version, counts: {}, selected: null, dirty: false };
  var statusBox = root.querySelector("[data-status]");
  var problemList = root.querySelector("[data-problems]");
  var form = root.querySelector("[data-step-form]");
  var fieldsBox = root.querySelector("[data-step-fields]");
  var panelTitle = root.querySelector("[data-panel-title]");
  var meta = root.querySelector("[data-step-meta]");
  var actions = root.querySelector("[data-step-actions]");
  var labelInput = root.querySelector("[data-step-label]");
  var localEditInput = root.querySelector("[data-step-local-edit]");
  var connectOutput = root.querySelector("[data-connect-output]");
  var connectTarget = root.querySelector("[data-connect-target]");
  var csrf = root.querySelector("input[name=csrfmiddlewaretoken]").value;

  function escapeHtml(text) {
    return String(text == null ? "" : text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function say(text, isError) {
    statusBox.textContent = text;
    statusBox.classList.toggle("is-error", !!isError);
    statusBox.setAttribute("role", isError ? "alert" : "status");
  }

  function nodes() { return editor.drawflow.drawflow.Home.data; }

  function nodeOf(key) {
    var all = nodes();
    for (var id in all) { if (all[id].data.key === key) return all[id]; }
    return null;
  }

  function nodeElement(id) { return container.querySelector("#node-" + id); }

  function nodeHtml(data) {
    var info = TYPES[data.type] || { label: data.type };
    var mine = MODE === "local" && data.editable && data.editable.length;
    return '<div class="wf-node" data-key="' + escapeHtml(data.key) + '">' +
      '<div class="wf-node-title">' + escapeHtml(data.label || data.key) + "</div>" +
      '<div class="wf-node-type">' + escapeHtml(info.label) + "</div>" +
      (mine ? '<div class="wf-node-mine">yours to change</div>' : "") +
      '<ul class="wf-node-problems"></ul></div>';
  }

  function outputLabel(data, label) {
    return data.type === "exclusion" && label === "out" ? "kept" : label;
  }

  function decorate(id) {
    var node = nodes()[id];
    var element = nodeElement(id);
    if (!node || !element) return;
    element.setAttribute("tabindex", "0");
    element.setAttribute("role", "button");
    element.setAttribute("aria-label", (node.data.label || node.data.key) + ", " +
      ((TYPES[node.data.type] || {}).label || node.data.type));
    element.dataset.key = node.data.key;
    (node.data.outputs || []).forEach(function (label, index) {
      var port = element.querySelector(".output_" + (index + 1));
      if (port) {
        port.dataset.label = outputLabel(node.data, label);
        port.setAttribute("title", "Output " + outputLabel(node.data, label));
      }
    });
  }

  function addStep(data, x, y) {
    var outputs = (data.outputs || []).length;
    var id = editor.addNode(data.type, 1, outputs, x, y, "wf-type-" + data.type, data,
      nodeHtml(data));
    decorate(id);
    return id;
  }

  function arrowKey(source, label, target) { return source + "|" + label + "|" + target; }

  function load(graph) {
    editor.clear();
    state.counts = {};
    var ids = {};
    graph.steps.forEach(function (step) {
      ids[step.key] = addStep({
        key: step.key, type: step.type, label: step.label, settings: step.settings,
        local_edit: step.local_edit, outputs: step.outputs, editable: step.editable
      }, step.x, step.y);
    });
    graph.arrows.forEach(function (arrow) {
      var source = nodes()[ids[arrow.source]];
      if (!source || ids[arrow.target] === undefined) return;
      var index = source.data.outputs.indexOf(arrow.label);
      if (index < 0) return;
      editor.addConnection(ids[arrow.source], ids[arrow.target], "output_" + (index + 1), "input_1");
      if (arrow.count !== null && arrow.count !== undefined) {
        state.counts[arrowKey(arrow.source, arrow.label, arrow.target)] = arrow.count;
      }
    });
    // Steps made outside the canvas (admin rows, copies) may all sit at one spot: lay
    // them out for reading (their positions are saved only with the next save).
    var spots = {};
    graph.steps.forEach(function (step) { spots[step.x + "," + step.y] = true; });
    if (graph.steps.length > 1 && Object.keys(spots).length < graph.steps.length) layout(true);
    drawCounts();
    state.dirty = false;
  }

  // Counts on the transitions -----------------------------------------------------------------

  function drawCounts() {
    Array.prototype.forEach.call(container.querySelectorAll(".wf-count"), function (el) { el.remove(); });
    var all = nodes();
    Object.keys(all).forEach(function (id) {
      var node = all[id];
      Object.keys(node.outputs).forEach(function (port) {
        var label = node.data.outputs[parseInt(port.split("_")[1], 10) - 1];
        node.outputs[port].connections.forEach(function (link) {
          var target = all[link.node];
          if (!target) return;
          var key = arrowKey(node.data.key, label, target.data.key);
          var svg = container.querySelector("svg.connection.node_in_node-" + link.node +
            ".node_out_node-" + id + "." + port);
          if (!svg) return;
          svg.dataset.arrow = key;
          if (!(key in state.counts)) return;
          var path = svg.querySelector("path");
          var middle = path.getPointAtLength(path.getTotalLength() / 2);
          var text = document.createElementNS("http://www.w3.org/2000/svg", "text");
          text.setAttribute("class", "wf-count");
          text.setAttribute("x", middle.x);
          text.setAttribute("y", middle.y - 6);
          text.setAttribute("text-anchor", "middle");
          text.dataset.arrow = key;
          text.textContent = state.counts[key].toLocaleString("en");
          svg.appendChild(text);
        });
      });
    });
  }

  // The graph as the server wants it ----------------------------------------------------------

  function graph() {
    var all = nodes();
    var steps = [];
    var arrows = [];
    Object.keys(all).forEach(function (id) {
      var node = all[id];
      steps.push({
        key: node.data.key, type: node.data.type, label: node.data.label || "",
        settings: node.data.settings || {}, local_edit: !!node.data.local_edit,
        x: Math.round(node.pos_x), y: Math.round(node.pos_y)
      });
      // Inputs in the order they were connected: an exclusion keeps from its first input.
      (node.inputs.input_1 ? node.inputs.input_1.connections : []).forEach(function (link) {
        var source = all[link.node];
        if (!source) return;
        var label = source.data.outputs[parseInt(link.input.split("_")[1], 10) - 1];
        arrows.push({ source: source.data.key, label: label, target: node.data.key });
      });
    });
    return { steps: steps, arrows: arrows };
  }

  function post(url, body, json) {
    var headers = { "X-CSRFToken": csrf, "X-Requested-With": "fetch" };
    if (json) headers["Content-Type"] = "application/json";
    return fetch(url, { method: "POST", headers: headers, body: body, credentials: "same-origin" });
  }

  function clearProblems() {
    problemList.textContent = "";
    Array.prototype.forEach.call(container.querySelectorAll(".wf-has-problem"), function (el) {
      el.classList.remove("wf-has-problem");
    });
    Array.prototype.forEach.call(container.querySelectorAll(".wf-node-problems"), function (el) {
      el.textContent = "";
    });
  }

  function showProblems(problems) {
    clearProblems();
    problems.forEach(function (problem) {
      var item = document.createElement("li");
      item.textContent = problem.message || problem;
      problemList.appendChild(item);
      var node = problem.step ? nodeOf(problem.step) : null;
      if (!node) return;
      var element = nodeElement(node.id);
      element.classList.add("wf-has-problem");
      var entry = document.createElement("li");
      entry.textContent = problem.message;
      element.querySelector(".wf-node-problems").appendChild(entry);
    });
  }

  function save() {
    say("Saving…");
    return post(URLS.save, JSON.stringify({ version: state.version, graph: graph() }), true)
      .then(function (response) {
        return response.json().then(function (body) { return [response.status, body]; });
      })
      .then(function (result) {
        var status = result[0], body = result[1];
        if (status === 200) {
          state.version = body.version;
          root.querySelector("[data-version]").textContent = body.version;
          clearProblems();
          state.dirty = false;
          say("Saved (version " + body.version + ").");
          return true;
        }
        showProblems(body.problems || []);
        say(body.error || "The workflow was not saved.", true);
        return false;
      })
      .catch(function () { say("The server could not be reached; nothing was saved.", true); });
  }

  function simulate() {
    if (state.dirty) { say("Save the workflow first: the simulation runs the saved one.", true); return; }
    say("Simulating…");
    post(URLS.simulate, "", false).then(function (response) {
      return response.json().then(function (body) { return [response.status, body]; });
    }).then(function (result) {
      if (result[0] !== 200) {
        showProblems((result[1].problems || []).map(function (m) { return { message: m }; }));
        say(result[1].error || "The simulation could not start.", true);
        return;
      }
      poll(result[1].run, 0);
    });
  }

  function poll(runId, attempt) {
    fetch(URLS.graph, { credentials: "same-origin" }).then(function (r) { return r.json(); })
      .then(function (body) {
        var run = body.run;
        if (run && run.id === runId && run.finished) {
          state.counts = {};
          body.arrows.forEach(function (arrow) {
            if (arrow.count !== null) state.counts[arrowKey(arrow.source, arrow.label, arrow.target)] = arrow.count;
          });
          drawCounts();
          say("Simulation " + run.state + ": the counts are on the transitions.", run.state !== "completed");
        } else if (attempt < 120) {
          setTimeout(function () { poll(runId, attempt + 1); }, 1000);
        } else {
          say("The simulation is still running; reload later to see its counts.");
        }
      });
  }

  // Palette: drag a type onto the canvas, or press Enter on it --------------------------------

  function newKey(type) {
    var n = 1;
    while (nodeOf(type + "-" + n)) n += 1;
    return type + "-" + n;
  }

  function createStep(type, x, y) {
    var info = TYPES[type];
    var id = addStep({ key: newKey(type), type: type, label: "", settings: {}, local_edit: false,
      outputs: info.outputs.slice(), editable: [] }, x, y);
    state.dirty = true;
    select(id);
    var element = nodeElement(id);
    if (element) element.focus();
    return id;
  }

  function dropPosition(event) {
    var rect = editor.precanvas.getBoundingClientRect();
    return [(event.clientX - rect.x) / editor.zoom, (event.clientY - rect.y) / editor.zoom];
  }

  Array.prototype.forEach.call(root.querySelectorAll(".wf-palette-item"), function (button) {
    button.addEventListener("dragstart", function (event) {
      event.dataTransfer.setData("text/plain", button.dataset.type);
    });
    button.addEventListener("click", function () {
      var count = Object.keys(nodes()).length;
      createStep(button.dataset.type, 40 + (count % 4) * 230, 40 + Math.floor(count / 4) * 140);
    });
  });
  container.addEventListener("dragover", function (event) { event.preventDefault(); });
  container.addEventListener("drop", function (event) {
    event.preventDefault();
    var type = event.dataTransfer.getData("text/plain");
    if (!TYPES[type] || MODE !== "edit") return;
    var at = dropPosition(event);
    createStep(type, at[0], at[1]);
  });

  // Selection and the side panel --------------------------------------------------------------

  function select(id) {
    var node = nodes()[id];
    if (!node) return;
    state.selected = id;
    Array.prototype.forEach.call(container.querySelectorAll(".wf-current"), function (el) {
      el.classList.remove("wf-current");
    });
    nodeElement(id).classList.add("wf-current");
    panelTitle.textContent = (node.data.label || node.data.key) + " — " +
      ((TYPES[node.data.type] || {}).label || node.data.type);
    meta.hidden = MODE !== "edit";
    labelInput.value = node.data.label || "";
    localEditInput.checked = !!node.data.local_edit;
    fillConnect(node);
    var may = MODE === "edit" || (MODE === "local" && node.data.editable && node.data.editable.length);
    actions.hidden = !may;
    var body = new FormData();
    body.append("action", "render");
    body.append("type", node.data.type);
    body.append("key", node.data.key);
    body.append("settings", JSON.stringify(node.data.settings || {}));
    fieldsBox.textContent = "Loading…";
    post(URLS.step, body, false).then(function (response) {
      if (!response.ok) throw new Error(String(response.status));
      return response.text();
    }).then(function (html) {
      showFields(html);
    }).catch(function () { fieldsBox.textContent = "The settings could not be loaded."; });
  }

  function showFields(html) {
    fieldsBox.innerHTML = html; // rendered by the server from the typed form (escaped there)
    if (window.campaignsQueryBuilder) window.campaignsQueryBuilder.mount(fieldsBox);
  }

  // A delivery's content for a sample recipient: texts as text, the HTML body in a sandboxed
  // frame (no scripts, no same-origin access).
  function showPreview(preview) {
    var old = fieldsBox.querySelector(".wf-preview");
    if (old) old.remove();
    if (!preview) return;
    var box = document.createElement("section");
    box.className = "wf-preview";
    box.setAttribute("aria-label", "Preview");
    var title = document.createElement("h4");
    title.textContent = "Preview (sample recipient)";
    box.appendChild(title);
    ["subject", "push_title", "text_body"].forEach(function (key) {
      if (!preview[key]) return;
      var block = document.createElement("pre");
      block.className = "wf-preview-" + key;
      block.textContent = preview[key];
      box.appendChild(block);
    });
    if (preview.html_body) {
      var frame = document.createElement("iframe");
      frame.setAttribute("sandbox", "");
      frame.setAttribute("title", "HTML body preview");
      frame.srcdoc = preview.html_body;
      box.appendChild(frame);
    }
    fieldsBox.appendChild(box);
  }

  function fillConnect(node) {
    connectOutput.textContent = "";
    connectTarget.textContent = "";
    (node.data.outputs || []).forEach(function (label, index) {
      connectOutput.appendChild(new Option(outputLabel(node.data, label), "output_" + (index + 1)));
    });
    var all = nodes();
    Object.keys(all).forEach(function (id) {
      if (String(id) === String(node.id)) return;
      connectTarget.appendChild(new Option(all[id].data.label || all[id].data.key, id));
    });
  }

  function setOutputs(id, labels) {
    var node = nodes()[id];
    var have = Object.keys(node.outputs).length;
    for (var n = have; n < labels.length; n += 1) editor.addNodeOutput(id);
    for (var m = have; m > labels.length; m -= 1) editor.removeNodeOutput(id, "output_" + m);
    nodes()[id].data.outputs = labels;
    decorate(id);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var id = state.selected;
    var node = nodes()[id];
    if (!node) return;
    var body = new FormData(form);
    body.append("action", "check");
    body.append("type", node.data.type);
    body.append("key", node.data.key);
    body.append("settings", JSON.stringify(node.data.settings || {}));
    post(URLS.step, body, false).then(function (response) {
      if (response.status === 403) throw new Error("refused");
      return response.json();
    }).then(function (result) {
      if (!result.ok) {
        showFields(result.html);
        say("The settings have problems: see the fields.", true);
        return;
      }
      var data = node.data;
      data.settings = result.settings;
      if (MODE === "edit") {
        data.label = labelInput.value.trim();
        data.local_edit = localEditInput.checked;
      }
      editor.updateNodeDataFromId(id, data);
      var title = nodeElement(id).querySelector(".wf-node-title");
      if (title) title.textContent = data.label || data.key;
      setOutputs(id, result.outputs);
      showPreview(result.preview);
      state.dirty = true;
      say("Settings of “" + (data.label || data.key) + "” applied: save the workflow to keep them.");
    }).catch(function () { say("You may not change this step.", true); });
  });

  container.addEventListener("click", function (event) {
    var element = event.target.closest(".drawflow-node");
    if (element) select(element.id.slice(5));
  });

  // Keyboard: Enter opens a step, arrows move it, Delete removes it --------------------------

  function moveBy(id, dx, dy) {
    var node = nodes()[id];
    node.pos_x += dx;
    node.pos_y += dy;
    var element = nodeElement(id);
    element.style.left = node.pos_x + "px";
    element.style.top = node.pos_y + "px";
    editor.updateConnectionNodes("node-" + id);
    drawCounts();
    state.dirty = true;
  }

  function remove(id) {
    if (!nodes()[id]) return;
    editor.removeNodeId("node-" + id);
  }

  container.addEventListener("keydown", function (event) {
    var element = event.target.closest && event.target.closest(".drawflow-node");
    if (!element) return;
    var id = element.id.slice(5);
    var moves = { ArrowLeft: [-20, 0], ArrowRight: [20, 0], ArrowUp: [0, -20], ArrowDown: [0, 20] };
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      select(id);
    } else if (MODE === "edit" && moves[event.key]) {
      event.preventDefault();
      moveBy(id, moves[event.key][0], moves[event.key][1]);
    } else if (MODE === "edit" && event.key === "Delete") {
      event.preventDefault();
      event.stopImmediatePropagation();
      remove(id);
    }
  }, true);

  editor.on("nodeRemoved", function (id) {
    if (String(state.selected) === String(id)) {
      state.selected = null;
      fieldsBox.textContent = "Select a step to see its settings.";
      panelTitle.textContent = "No step selected";
      meta.hidden = true;
      actions.hidden = true;
    }
    state.dirty = true;
  });
  ["connectionCreated", "connectionRemoved"].forEach(function (name) {
    editor.on(name, function () { state.dirty = true; drawCounts(); });
  });
  editor.on("nodeMoved", function () { state.dirty = true; drawCounts(); });

  // Auto-layout: columns by longest distance from a start ------------------------------------

  function layout(quiet) {
    var all = nodes();
    var level = {};
    Object.keys(all).forEach(function (id) { level[id] = 0; });
    var ids = Object.keys(all);
    for (var round = 0; round < ids.length; round += 1) {
      var changed = false;
      ids.forEach(function (id) {
        Object.keys(all[id].outputs).forEach(function (port) {
          all[id].outputs[port].connections.forEach(function (link) {
            if (level[link.node] < level[id] + 1 && level[id] + 1 <= ids.length) {
              level[link.node] = level[id] + 1;
              changed = true;
            }
          });
        });
      });
      if (!changed) break;
    }
    var rows = {};
    ids.forEach(function (id) {
      var column = level[id];
      rows[column] = (rows[column] || 0) + 1;
      var node = all[id];
      moveBy(id, 40 + column * 250 - node.pos_x, 30 + (rows[column] - 1) * 150 - node.pos_y);
    });
    if (!quiet) say("Laid out: save to keep the positions.");
  }

  // Toolbar -----------------------------------------------------------------------------------

  root.querySelector(".wf-toolbar").addEventListener("click", function (event) {
    var button = event.target.closest("[data-action]");
    if (!button) return;
    var action = button.dataset.action;
    if (action === "save") save();
    else if (action === "simulate") simulate();
    else if (action === "layout") layout(false);
    else if (action === "delete" && state.selected) remove(state.selected);
    else if (action === "zoom-in") editor.zoom_in();
    else if (action === "zoom-out") editor.zoom_out();
    else if (action === "zoom-reset") editor.zoom_reset();
  });

  root.querySelector("[data-action=connect]").addEventListener("click", function () {
    if (!state.selected || !connectOutput.value || !connectTarget.value) return;
    editor.addConnection(state.selected, connectTarget.value, connectOutput.value, "input_1");
  });

  editor.on("zoom", function () { drawCounts(); });

  load(DATA.graph);
})();
