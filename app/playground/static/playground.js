/* keras-serve playground: plain JavaScript, no dependencies, public API only.
 *
 * GET  models                                  the models and their versions
 * GET  models/{name}/versions/{v}              metadata: inputs, classes, metrics, card
 * GET  models/{name}/versions/{v}/history.png  the training history plot
 * POST models/{name}/versions/{v}/predict      one instance -> probabilities
 * POST models/digits/versions/{v}/predict/image  an uploaded PNG/JPEG
 *
 * URLs are relative, so the page also works behind a path prefix.
 *
 * Every answer comes with "Use via API": the exact request the page made, as curl,
 * Python (httpx) and JavaScript (fetch), for the native API and for OIP v2.
 */
"use strict";

(function () {
  const MISSING = "__missing__";
  const SIDE = 28; // what the network sees: 28x28, MNIST style
  const CAPTURE = 70; // the drawing pad as sent to the service, which prepares it
  const PEN_WIDTH = 20; // canvas pixels on a 280-pixel pad: about 2 pixels at 28x28

  // ---------------------------------------------------------------- helpers

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function request(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      throw new ApiError(0, "the service could not be reached");
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error : "HTTP " + response.status;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  function getJSON(url) {
    return request(url, { headers: { Accept: "application/json" } });
  }

  function postJSON(url, data) {
    return request(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(data),
    });
  }

  function postFile(url, file) {
    const form = new FormData();
    form.append("file", file, file.name || "digit.png");
    return request(url, { method: "POST", headers: { Accept: "application/json" }, body: form });
  }

  /** Build an element; strings become text nodes (never HTML). */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function percent(p) {
    return (p * 100).toFixed(2) + " %";
  }

  function number(value, digits) {
    if (typeof value !== "number") return "–";
    return value.toLocaleString("en", { maximumFractionDigits: digits });
  }

  function pretty(name) {
    return name.replace(/_/g, " ");
  }

  /** Run fn after `wait` ms of quiet, but at least every `maxWait` ms while calls keep coming. */
  function debounce(fn, wait, maxWait) {
    let timer = null;
    let first = 0;
    const run = () => {
      clearTimeout(timer);
      timer = null;
      first = 0;
      fn();
    };
    const call = () => {
      const now = Date.now();
      if (!first) first = now;
      clearTimeout(timer);
      const left = maxWait ? Math.max(0, Math.min(wait, first + maxWait - now)) : wait;
      timer = setTimeout(run, left);
    };
    call.flush = () => {
      if (timer !== null) run();
    };
    call.cancel = () => {
      clearTimeout(timer);
      timer = null;
      first = 0;
    };
    return call;
  }

  function kindOf(card) {
    const arch = (card && card.architecture) || "";
    if (/conv/i.test(arch)) return "CNN";
    if (/dense/i.test(arch)) return "MLP";
    return "";
  }

  // ---------------------------------------------------------------- "Use via API"

  /** The absolute URL of a page-relative API path, as a client elsewhere must call it. */
  function absolute(path) {
    return new URL(path, document.baseURI).href;
  }

  /** A value as a readable literal: objects one key a line, number arrays on one line
   * (a 28x28 image is 28 lines, not 812). Python spells null/true/false its own way. */
  function literal(value, indent, python) {
    const pad = (python ? "    " : "  ").repeat(indent + 1);
    const end = (python ? "    " : "  ").repeat(indent);
    if (value === null || value === undefined) return python ? "None" : "null";
    if (value === true) return python ? "True" : "true";
    if (value === false) return python ? "False" : "false";
    if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
    if (Array.isArray(value)) {
      if (value.every((v) => typeof v === "number" || typeof v === "string")) {
        return "[" + value.map((v) => JSON.stringify(v)).join(", ") + "]";
      }
      return "[\n" + value.map((v) => pad + literal(v, indent + 1, python) + ",").join("\n") + "\n" + end + "]";
    }
    const items = Object.entries(value).map(
      ([k, v]) => pad + JSON.stringify(k) + ": " + literal(v, indent + 1, python) + ",",
    );
    return "{\n" + items.join("\n") + "\n" + end + "}";
  }

  /** JSON for a command line: compact, single-quoted for the shell. */
  function shellQuote(text) {
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  /** The request as curl, Python and JavaScript. `request` is {url, body} or {url, file}. */
  function snippets(request) {
    const url = absolute(request.url);
    if (request.file) {
      const name = request.file;
      return {
        curl: "curl -s -X POST " + shellQuote(url) + " -F " + shellQuote("file=@" + name),
        python:
          "import httpx\n\n" +
          "with open(" + JSON.stringify(name) + ', "rb") as image:\n' +
          "    response = httpx.post(\n" +
          "        " + JSON.stringify(url) + ",\n" +
          '        files={"file": (' + JSON.stringify(name) + ', image, "image/png")},\n' +
          "    )\n" +
          "print(response.json())\n",
        javascript:
          "// file: a File, e.g. from <input type=\"file\">\n" +
          "const form = new FormData();\n" +
          'form.append("file", file);\n' +
          "const response = await fetch(" + JSON.stringify(url) + ', { method: "POST", body: form });\n' +
          "console.log(await response.json());\n",
      };
    }
    const json = JSON.stringify(request.body);
    return {
      curl:
        "curl -s -X POST " + shellQuote(url) + " \\\n" +
        "  -H 'Content-Type: application/json' \\\n" +
        "  -d " + shellQuote(json),
      python:
        "import httpx\n\n" +
        "response = httpx.post(\n" +
        "    " + JSON.stringify(url) + ",\n" +
        "    json=" + literal(request.body, 1, true) + ",\n" +
        ")\n" +
        "print(response.json())\n",
      javascript:
        "const response = await fetch(" + JSON.stringify(url) + ", {\n" +
        '  method: "POST",\n' +
        '  headers: { "Content-Type": "application/json" },\n' +
        "  body: JSON.stringify(" + literal(request.body, 1, false) + "),\n" +
        "});\n" +
        "console.log(await response.json());\n",
    };
  }

  /** OIP v2 datatypes of the native input types (as the service's signature maps them). */
  const V2_DATATYPES = { number: "FP32", integer: "INT64", category: "BYTES", ordinal: "BYTES", image: "UINT8" };

  /** One native instance as an OIP v2 inference request: a tensor per input, batch of one.
   * BYTES tensors hold strings only, so a missing category travels as "?" (the marker the
   * service reads as missing); a missing number has no v2 form (null: no v2 snippet). */
  function v2Body(inputs, instance, parameters) {
    if (inputs.some((f) => V2_DATATYPES[f.type] !== "BYTES" && instance[f.name] === null)) return null;
    const body = {
      inputs: inputs.map((field) => {
        let value = instance[field.name];
        if (value === null) value = "?";
        if (field.type === "image") {
          const shape = [value.length, value[0].length]; // as drawn; "prepare" fits it
          return { name: field.name, shape: [1, ...shape], datatype: "UINT8", data: value.flat() };
        }
        return { name: field.name, shape: [1], datatype: V2_DATATYPES[field.type] || "FP32", data: [value] };
      }),
    };
    if (parameters) body.parameters = parameters;
    return body;
  }

  /** The "Use via API" panel: protocol and language tabs over a copyable snippet. */
  class ApiPanel {
    constructor(container) {
      this.root = h("details", { className: "api" });
      this.root.hidden = true;
      this.protocol = "native";
      this.language = "curl";
      this.requests = {};
      const summary = h("summary", { text: "Use via API" });
      this.protocols = h("div", { className: "tabs protocols", role: "tablist", "aria-label": "Protocol" });
      this.languages = h("div", { className: "tabs languages", role: "tablist", "aria-label": "Language" });
      for (const [key, text] of [["native", "Native"], ["v2", "OIP v2"]]) {
        this.protocols.append(this.tab(key, text, "protocol"));
      }
      for (const [key, text] of [["curl", "curl"], ["python", "Python"], ["javascript", "JavaScript"]]) {
        this.languages.append(this.tab(key, text, "language"));
      }
      this.code = h("code", {});
      this.pre = h("pre", { className: "snippet" }, this.code);
      this.copy = h("button", { type: "button", className: "copy", text: "Copy" });
      this.copy.addEventListener("click", () => this.copyText());
      this.note = h("p", { className: "api-note" });
      this.root.append(
        summary,
        h("div", { className: "api-bar" }, this.protocols, this.languages, this.copy),
        this.pre,
        this.note,
      );
      container.append(this.root);
    }

    tab(key, text, kind) {
      const button = h("button", { type: "button", role: "tab", "data-key": key, text: text });
      button.addEventListener("click", () => {
        this[kind] = key;
        this.render();
      });
      return button;
    }

    /** Show the snippets of one request: {native: {url, body|file}, v2: {url, body} | null}. */
    show(requests) {
      this.requests = requests;
      this.root.hidden = false;
      this.render();
    }

    hide() {
      this.root.hidden = true;
    }

    render() {
      if (!this.requests[this.protocol]) this.protocol = "native";
      const request = this.requests[this.protocol];
      const why =
        this.requests.native && this.requests.native.file
          ? "The Open Inference Protocol takes tensors, not uploaded files"
          : "A missing number has no form in the Open Inference Protocol's tensors";
      for (const button of this.protocols.children) {
        const on = button.dataset.key === this.protocol;
        button.setAttribute("aria-selected", String(on));
        button.disabled = !this.requests[button.dataset.key];
        button.title = button.disabled ? why : "";
      }
      for (const button of this.languages.children) {
        button.setAttribute("aria-selected", String(button.dataset.key === this.language));
      }
      this.root.dataset.protocol = this.protocol;
      this.root.dataset.language = this.language;
      if (!request) return;
      this.code.textContent = snippets(request)[this.language];
      this.note.textContent =
        this.protocol === "v2"
          ? "Open Inference Protocol v2 (KServe, Triton clients): the answer's probabilities follow the classes parameter."
          : "The native API: one instance, or {\"instances\": [...]} for several." +
            (this.requests.v2 ? "" : " (" + why + ".)");
    }

    async copyText() {
      const text = this.code.textContent;
      try {
        await navigator.clipboard.writeText(text);
        this.copy.textContent = "Copied";
      } catch (err) {
        // no clipboard (plain http away from localhost): select the text instead
        const range = document.createRange();
        range.selectNodeContents(this.code);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        this.copy.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => (this.copy.textContent = "Copy"), 1500);
    }
  }

  // ---------------------------------------------------------------- bar chart

  /** Probabilities as bars; the rows are built once per class list and then updated. */
  class Bars {
    constructor(container) {
      this.container = container;
      // ten narrow columns get whole percents; the exact value is in the title and data-probability
      this.compact = container.classList.contains("vertical");
      this.rows = new Map();
      this.key = "";
    }

    setClasses(classes) {
      const key = classes.join("\u0000");
      if (key === this.key) return;
      this.key = key;
      this.rows.clear();
      this.container.replaceChildren();
      for (const name of classes) {
        const fill = h("span", { className: "bar-fill" });
        const value = h("span", { className: "bar-value", text: "" });
        const row = h(
          "div",
          { className: "bar", "data-class": name },
          h("span", { className: "bar-name", text: name }),
          h("span", { className: "bar-track" }, fill),
          value,
        );
        this.container.append(row);
        this.rows.set(name, { row, fill, value });
      }
    }

    show(probabilities, label) {
      for (const [name, parts] of this.rows) {
        const p = probabilities[name];
        const known = typeof p === "number";
        parts.row.dataset.probability = known ? String(p) : "";
        parts.row.classList.toggle("top", name === label);
        parts.fill.style.setProperty("--p", known ? String(p) : "0");
        parts.value.textContent = !known ? "" : this.compact ? Math.round(p * 100) + "%" : percent(p);
        parts.row.title = known ? name + ": " + p : name;
      }
    }

    reset() {
      this.show({}, null);
    }
  }

  // ---------------------------------------------------------------- prediction display

  class Answer {
    constructor(root) {
      this.root = root;
      this.prediction = root.querySelector(".prediction");
      this.confidence = root.querySelector(".confidence");
      this.error = root.querySelector(".error");
      this.note = root.querySelector(".note");
      this.bars = new Bars(root.querySelector(".bars"));
      this.api = new ApiPanel(root);
      this.seq = 0;
    }

    /** A token for one request: answers to older requests are dropped. */
    next() {
      this.seq += 1;
      this.root.classList.add("busy");
      return this.seq;
    }

    current(token) {
      return token === this.seq;
    }

    /** Show an answer, and the request that got it (`requests`, see ApiPanel.show). */
    show(token, body, classes, requests) {
      if (!this.current(token)) return;
      if (requests) this.api.show(requests);
      const result = body.predictions[0];
      this.root.classList.remove("busy");
      this.error.hidden = true;
      this.prediction.dataset.version = String(body.version);
      if (typeof result.prediction === "number") {
        // a regression model answers one value, no classes
        this.bars.setClasses([]);
        this.prediction.textContent = result.prediction.toPrecision(6);
        this.confidence.textContent = "v" + body.version;
      } else if (!result.probabilities) {
        // a multi-output model: one named answer per output, shown as text
        this.bars.setClasses([]);
        this.prediction.textContent = Object.entries(result)
          .filter(([, v]) => v && typeof v === "object" && ("label" in v || "prediction" in v))
          .map(([k, v]) => k + ": " + ("label" in v ? v.label : Number(v.prediction).toPrecision(6)))
          .join(" · ");
        this.confidence.textContent = "v" + body.version;
      } else {
        this.bars.setClasses(classes);
        this.bars.show(result.probabilities, result.label);
        this.prediction.textContent = result.label;
        this.confidence.textContent = percent(result.probabilities[result.label]) + " · v" + body.version;
      }
      if (this.note) {
        const unknown = result.unknown_categories || [];
        const outside = result.out_of_range || [];
        const notes = [];
        if (unknown.length) notes.push("Values the model never saw in: " + unknown.join(", "));
        if (outside.length) notes.push("Outside the training range: " + outside.join(", "));
        this.note.hidden = notes.length === 0;
        this.note.textContent = notes.join(". ");
      }
      const why = this.root.querySelector(".explanation");
      if (why) renderExplanation(why, result.explanation);
      this.root.dataset.state = "answered";
    }

    fail(token, message) {
      if (token !== undefined && !this.current(token)) return;
      this.root.classList.remove("busy");
      this.error.hidden = false;
      this.error.textContent = message;
      this.root.dataset.state = "error";
    }

    /** An error with nothing stale beside it: the previous answer goes. */
    failClean(message) {
      this.clear("");
      this.api.hide();
      this.fail(undefined, message);
    }

    clear(message) {
      this.seq += 1; // answers in flight are now stale
      this.root.classList.remove("busy");
      this.error.hidden = true;
      this.prediction.textContent = "–";
      this.confidence.textContent = message || "";
      this.bars.reset();
      this.api.hide();
      if (this.note) this.note.hidden = true;
      this.root.dataset.state = "empty";
    }
  }

  // ---------------------------------------------------------------- the drawing

  /**
   * The drawing's grey levels at CAPTURE x CAPTURE (the browser scales the pad down),
   * white ink on black, 0-255; null when nothing is drawn. The MNIST-style preparation
   * (crop, fit into 20x20, centre by mass in 28x28) is the service's: requests ask for
   * it with "prepare", as uploads get it, so the page keeps no copy of it.
   */
  function capture(canvas) {
    const small = document.createElement("canvas");
    small.width = small.height = CAPTURE;
    const ctx = small.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(canvas, 0, 0, CAPTURE, CAPTURE);
    const { data } = ctx.getImageData(0, 0, CAPTURE, CAPTURE);
    let max = 0;
    const rows = [];
    for (let y = 0; y < CAPTURE; y++) {
      const row = new Array(CAPTURE);
      for (let x = 0; x < CAPTURE; x++) {
        row[x] = data[(y * CAPTURE + x) * 4]; // white ink on black: red is the intensity
        if (row[x] > max) max = row[x];
      }
      rows.push(row);
    }
    return max < 30 ? null : rows;
  }


  // ---------------------------------------------------------------- one model

  class ModelView {
    constructor(summary) {
      this.name = summary.name;
      this.summary = summary;
      this.versions = new Map(); // version -> metadata
      this.version = null;

      const fragment = document.getElementById("model-template").content.cloneNode(true);
      this.section = fragment.querySelector(".model");
      this.section.id = "model-" + this.name;
      this.section.dataset.model = this.name;
      this.select = this.section.querySelector(".version-select");
      this.select.id = this.name + "-version";
      this.select.addEventListener("change", () => this.choose(Number(this.select.value)));
      this.play = this.section.querySelector(".play");
    }

    async load() {
      const serving = this.summary.versions.filter((v) => v.status === "AVAILABLE");
      const title = this.section.querySelector(".model-title");
      title.replaceChildren(this.name);
      if (this.summary.default_version === null || serving.length === 0) {
        this.section.querySelector(".serving").textContent = "No version is serving right now.";
        this.select.disabled = true;
        this.section.querySelector(".card").hidden = true;
        return;
      }
      const found = await Promise.all(
        serving.map((v) => getJSON(this.url(v.version)).catch(() => null)),
      );
      for (const meta of found) if (meta && meta.card) this.versions.set(meta.version, meta);
      this.select.replaceChildren();
      for (const info of this.summary.versions) {
        const meta = this.versions.get(info.version);
        const kind = meta ? kindOf(meta.card) : "";
        let text = String(info.version) + (kind ? " (" + kind + ")" : "");
        if (info.version === this.summary.default_version) text += " · default";
        if (!meta) text += " · " + info.status.toLowerCase();
        this.select.append(
          h("option", { value: info.version, disabled: !meta, text: text }),
        );
      }
      const first = this.versions.has(this.summary.default_version)
        ? this.summary.default_version
        : Math.max(...this.versions.keys());
      this.select.value = String(first);
      this.choose(first);
    }

    url(version, rest) {
      return (
        "models/" + encodeURIComponent(this.name) + "/versions/" + version + (rest ? "/" + rest : "")
      );
    }

    v2url(version) {
      return "v2/models/" + encodeURIComponent(this.name) + "/versions/" + version + "/infer";
    }

    choose(version) {
      const meta = this.versions.get(version);
      if (!meta) return;
      const previous = this.version;
      this.version = version;
      this.meta = meta;
      this.section.dataset.version = String(version);
      this.renderHeader();
      renderCard(this.section.querySelector(".card-body"), meta, this.url(version, "history.png"));
      const tabular = !(meta.inputs.length > 0 && meta.inputs[0].type === "image");
      renderInsight(this.section.querySelector(".insight"), (rest) => this.url(version, rest), tabular);
      if (!this.playground) {
        const image = meta.inputs.length > 0 && meta.inputs[0].type === "image";
        this.playground = image ? new DigitsPlayground(this) : new FormPlayground(this);
        this.play.append(this.playground.root);
      }
      this.playground.update(meta, previous !== null);
    }

    renderHeader() {
      const meta = this.meta;
      const title = this.section.querySelector(".model-title");
      title.replaceChildren(meta.title || this.name, " ", h("code", { text: this.name }));
      this.section.querySelector(".model-description").textContent = meta.description || "";
      const info = meta.versions.find((v) => v.version === this.version) || {};
      const where = [info.runtime, info.device].filter(Boolean).join(" on ");
      const serving = this.section.querySelector(".serving");
      const pinned =
        this.version === meta.default_version
          ? "the default: requests without a version get it"
          : "pinned; the default is v" + meta.default_version;
      serving.replaceChildren(
        h("strong", { className: "serving-version", text: "Serving v" + this.version }),
        " · " + (info.status || "").toLowerCase(),
        where ? " · " + where : "",
        h("br"),
        h("small", { text: pinned }),
      );
    }
  }

  // ---------------------------------------------------------------- insight

  /** Shapley attributions as signed bars, largest effect first (app/insight/explain.py). */
  function renderExplanation(root, explanation) {
    root.replaceChildren();
    root.hidden = !explanation || !explanation.attributions;
    if (root.hidden) return;
    const entries = Object.entries(explanation.attributions).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
    const top = Math.max(1e-9, ...entries.map((e) => Math.abs(e[1])));
    root.append(
      h("h4", {
        text:
          "Why " + explanation.class + ": " + percent(explanation.base) + " on average → " +
          percent(explanation.value) + " here",
      }),
    );
    for (const [name, value] of entries) {
      const width = (50 * Math.abs(value)) / top;
      const bar = h("span", { className: "shap-bar " + (value >= 0 ? "up" : "down") });
      bar.style.width = width + "%";
      bar.style.marginLeft = value >= 0 ? "50%" : 50 - width + "%";
      root.append(
        h(
          "div",
          { className: "shap-row", "data-field": name },
          h("span", { className: "shap-name", text: pretty(name) }),
          h("span", { className: "shap-track" }, bar),
          h("span", { className: "shap-value", text: (value >= 0 ? "+" : "−") + Math.abs(value * 100).toFixed(1) + " pts" }),
        ),
      );
    }
  }

  /** Calibration plot, drift per field and live accuracy of one version. */
  async function renderInsight(root, url, tabular) {
    const img = root.querySelector(".calibration");
    img.onerror = () => {
      img.hidden = true;
    };
    img.hidden = false;
    img.src = url("calibration.png");
    const live = root.querySelector(".insight-live");
    live.replaceChildren();
    const [drift, perf] = await Promise.all([
      tabular ? getJSON(url("drift")).catch(() => null) : null,
      getJSON(url("performance")).catch(() => null),
    ]);
    if (perf) {
      const card = perf.card_test || {};
      live.append(
        h("p", {
          className: "live-accuracy",
          text: perf.labelled
            ? "Live accuracy " + percent(perf.live.accuracy) + " on " + perf.labelled + " labelled predictions (test: " + percent(card.accuracy) + ")"
            : "No feedback yet: POST /feedback with a request id and its true label.",
        }),
      );
    }
    if (drift && !drift.rows) {
      live.append(h("p", { text: "No traffic yet for drift: it compares recent requests with the training data." }));
    } else if (drift && drift.fields) {
      const table = h("table", { className: "drift" });
      table.append(h("thead", null, h("tr", null, h("th", { text: "Field" }), h("th", { text: "PSI" }), h("th", { text: "Status" }), h("th", { text: "Missing" }), h("th", { text: "Unknown / out of range" }))));
      const body = h("tbody");
      for (const [name, f] of Object.entries(drift.fields)) {
        const odd = f.unknown_rate !== undefined ? f.unknown_rate : f.out_of_range_rate;
        body.append(
          h("tr", { "data-field": name, className: f.status },
            h("th", { scope: "row", text: pretty(name) }),
            h("td", { text: f.psi.toFixed(3) }),
            h("td", { text: f.status.replace(/_/g, " ") }),
            h("td", { text: percent(f.missing_rate) }),
            h("td", { text: percent(odd || 0) }),
          ),
        );
      }
      table.append(body);
      live.append(h("p", { text: "Drift over the last " + drift.rows + " instances (window " + drift.window + "; PSI 0.1 watch, 0.25 drift)" }), h("div", { className: "matrix-scroll" }, table));
    }
  }

  // ---------------------------------------------------------------- model card

  function renderCard(body, meta, historyUrl) {
    const card = meta.card || {};
    const metrics = meta.metrics || {};
    const test = metrics.test || metrics.sample || {}; // imported models: scored on the sample
    const base = metrics.baseline || {};

    const facts = [
      ["Parameters", number(card.parameters, 0)],
      ["Architecture", card.architecture || "–"],
      ["Task", !card.task ? "–" : card.task === "regression" ? card.task : card.task + " · " + (meta.classes || []).length + " classes"],
      ["Epochs run", number(card.epochs_run, 0)],
      ["Test rows", number(test.rows, 0)],
      ["Trained", card.created ? card.created.slice(0, 10) : "–"],
    ];
    const dl = body.querySelector(".facts");
    dl.replaceChildren();
    for (const [name, value] of facts) {
      dl.append(
        h("div", { "data-fact": name.toLowerCase().replace(/ /g, "-") }, h("dt", { text: name }), h("dd", { text: value })),
      );
    }

    const table = body.querySelector(".metrics");
    const rows = [
      ["Accuracy", "accuracy", true],
      ["ROC AUC", "roc_auc", true],
      ["Log loss", "loss", false],
      ["MAE", "mae", false],
      ["RMSE", "rmse", false],
    ];
    table.replaceChildren(
      h(
        "thead",
        null,
        h("tr", null, h("th", { text: "Metric" }), h("th", { text: "Model" }), h("th", { text: "Baseline" }), h("th", { text: "Δ" })),
      ),
    );
    const tbody = h("tbody");
    for (const [label, key, higher] of rows) {
      const a = test[key];
      const b = base[key];
      if (typeof a !== "number") continue;
      let delta = "";
      let better = null;
      if (typeof b === "number") {
        const d = a - b;
        delta = (d >= 0 ? "+" : "−") + Math.abs(d).toFixed(4);
        better = higher ? d >= 0 : d <= 0;
      }
      tbody.append(
        h(
          "tr",
          { "data-metric": key },
          h("th", { scope: "row", text: label }),
          h("td", { className: "model-value", text: a.toFixed(4) }),
          h("td", { className: "baseline-value", text: typeof b === "number" ? b.toFixed(4) : "–" }),
          h("td", { className: better === null ? "" : better ? "better" : "worse", text: delta }),
        ),
      );
    }
    table.append(tbody);
    body.querySelector(".baseline-note").textContent = card.baseline
      ? "Baseline: " + card.baseline + ", scored on the same test set."
      : "";

    renderMatrix(body.querySelector(".matrix"), test.confusion_matrix, meta.classes || []);

    const img = body.querySelector(".history");
    const link = body.querySelector(".history-link");
    link.hidden = false;
    img.onerror = () => {
      link.hidden = true;
    };
    img.src = historyUrl;
    link.href = historyUrl;
  }

  function renderMatrix(table, matrix, classes) {
    table.replaceChildren();
    if (!Array.isArray(matrix) || matrix.length === 0) {
      table.append(h("tbody", null, h("tr", null, h("td", { text: "not recorded" }))));
      return;
    }
    const names = classes.length === matrix.length ? classes : matrix.map((_, i) => String(i));
    table.append(
      h(
        "thead",
        null,
        h("tr", null, h("th", { className: "corner", title: "rows: true class, columns: predicted class", "aria-label": "true class by predicted class" }), names.map((n) => h("th", { scope: "col", text: n }))),
      ),
    );
    const tbody = h("tbody");
    matrix.forEach((row, i) => {
      const total = row.reduce((s, v) => s + v, 0) || 1;
      tbody.append(
        h(
          "tr",
          null,
          h("th", { scope: "row", text: names[i] }),
          row.map((count, j) => {
            const cell = h("td", { className: i === j ? "hit" : count ? "miss" : "", text: count, title: names[i] + " predicted as " + names[j] + ": " + count });
            cell.style.setProperty("--share", String(count / total));
            return cell;
          }),
        ),
      );
    });
    table.append(tbody);
  }

  // ---------------------------------------------------------------- digits

  class DigitsPlayground {
    constructor(view) {
      this.view = view;
      this.root = document.getElementById("image-template").content.firstElementChild.cloneNode(true);
      this.canvas = this.root.querySelector(".draw");
      this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
      this.preview = this.root.querySelector(".input28");
      this.answer = new Answer(this.root.querySelector(".answer"));
      this.uploadPreview = this.root.querySelector(".upload-preview");
      this.file = this.root.querySelector(".file");
      this.file.id = view.name + "-file";
      this.source = null; // "drawing" or a File
      this.drawing = false;
      this.last = null;
      this.objectUrl = null;
      this.predictSoon = debounce(() => this.predict(), 150, 400);
      // the occlusion map, once the drawing rests (its own request: predictions stay fast)
      this.explainSoon = debounce(() => this.explainNow(), 500, 0);
      this.saliency = this.root.querySelector(".saliency28");
      this.lastInstance = null;

      this.root.querySelector(".clear").addEventListener("click", () => this.clear());
      this.file.addEventListener("change", () => {
        const file = this.file.files && this.file.files[0];
        if (file) this.upload(file);
        this.file.value = "";
      });
      this.bindPointer();
      this.blank();
    }

    update(meta, versionChanged) {
      this.meta = meta;
      this.answer.bars.setClasses(meta.classes);
      if (!versionChanged || this.source === null) {
        if (this.source === null) this.answer.clear("Draw a digit to see what the model thinks.");
        return;
      }
      if (this.source === "drawing") this.predict();
      else this.upload(this.source);
    }

    blank() {
      const ctx = this.ctx;
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
      const small = this.preview.getContext("2d");
      small.fillStyle = "#000";
      small.fillRect(0, 0, SIDE, SIDE);
      this.lastInstance = null;
      if (this.explainSoon) this.explainSoon.cancel();
      if (this.saliency) this.saliency.closest("figure").hidden = true;
    }

    clear() {
      this.predictSoon.cancel();
      this.source = null;
      this.blank();
      this.showUpload(null);
      this.answer.clear("Draw a digit to see what the model thinks.");
    }

    point(event) {
      const rect = this.canvas.getBoundingClientRect();
      return {
        x: ((event.clientX - rect.left) * this.canvas.width) / rect.width,
        y: ((event.clientY - rect.top) * this.canvas.height) / rect.height,
      };
    }

    stroke(from, to) {
      const ctx = this.ctx;
      ctx.strokeStyle = "#fff";
      ctx.fillStyle = "#fff";
      ctx.lineWidth = PEN_WIDTH;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      if (!from) {
        ctx.beginPath();
        ctx.arc(to.x, to.y, PEN_WIDTH / 2, 0, Math.PI * 2);
        ctx.fill();
        return;
      }
      ctx.beginPath();
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }

    bindPointer() {
      const canvas = this.canvas;
      canvas.addEventListener("pointerdown", (event) => {
        if (event.button !== 0 || this.drawing) return; // one pen, one finger at a time
        event.preventDefault();
        canvas.setPointerCapture(event.pointerId);
        if (this.source !== "drawing") {
          this.blank(); // a new drawing replaces an uploaded image
          this.showUpload(null);
        }
        this.source = "drawing";
        this.drawing = true;
        this.pointer = event.pointerId;
        this.last = this.point(event);
        this.stroke(null, this.last);
        this.predictSoon();
      });
      canvas.addEventListener("pointermove", (event) => {
        if (!this.drawing || event.pointerId !== this.pointer) return;
        event.preventDefault();
        const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
        for (const e of events.length ? events : [event]) {
          const p = this.point(e);
          this.stroke(this.last, p);
          this.last = p;
        }
        this.predictSoon();
      });
      const end = (event) => {
        if (!this.drawing || event.pointerId !== this.pointer) return;
        this.drawing = false;
        this.last = null;
        if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
        this.predictSoon.flush();
      };
      canvas.addEventListener("pointerup", end);
      canvas.addEventListener("pointercancel", end);
    }

    async predict() {
      if (this.source !== "drawing" || this.view.version === null) return;
      const image = capture(this.canvas);
      if (!image) {
        this.answer.clear("Draw a digit to see what the model thinks.");
        return;
      }
      const version = this.view.version;
      const token = this.answer.next();
      const instance = { [this.meta.inputs[0].name]: image };
      // the service prepares raw pixels as it prepares uploads ("prepare")
      const native = { instances: [instance], prepare: true };
      const requests = {
        native: { url: this.view.url(version, "predict"), body: native },
        v2: { url: this.view.v2url(version), body: v2Body(this.meta.inputs, instance, { prepare: true }) },
      };
      try {
        const body = await postJSON(requests.native.url, native);
        this.answer.show(token, body, this.meta.classes, requests);
        this.lastInstance = instance;
        this.lastPrepared = body.predictions[0].prepared;
        this.showInput(this.lastPrepared);
        this.explainSoon();
      } catch (err) {
        this.answer.fail(token, err.message);
      }
    }

    /** Where the model looks: the occlusion map of the last drawing, over it in red. */
    async explainNow() {
      const instance = this.lastInstance;
      const figure = this.saliency.closest("figure");
      if (!instance || this.view.version === null || this.source !== "drawing") {
        figure.hidden = true;
        return;
      }
      try {
        const request = { instances: [instance], prepare: true };
        const body = await postJSON(this.view.url(this.view.version, "explain"), request);
        if (instance !== this.lastInstance) return;
        const image = this.lastPrepared;
        const map = body.predictions[0].explanation.saliency;
        const top = Math.max(1e-6, ...map.flat());
        const ctx = this.saliency.getContext("2d");
        const data = ctx.createImageData(SIDE, SIDE);
        for (let y = 0; y < SIDE; y++) {
          for (let x = 0; x < SIDE; x++) {
            const i = (y * SIDE + x) * 4;
            const heat = Math.max(0, map[y][x]) / top;
            const v = image[y][x] * 0.6;
            data.data[i] = Math.min(255, v + 255 * heat);
            data.data[i + 1] = data.data[i + 2] = v * (1 - heat);
            data.data[i + 3] = 255;
          }
        }
        ctx.putImageData(data, 0, 0);
        figure.hidden = false;
      } catch (err) {
        figure.hidden = true; // the prediction stands without its map
      }
    }

    async upload(file) {
      this.predictSoon.cancel();
      this.source = file;
      this.blank();
      this.showUpload(file);
      const token = this.answer.next();
      try {
        const url = this.view.url(this.view.version, "predict/image");
        const body = await postFile(url, file);
        const requests = { native: { url: url, file: file.name || "digit.png" }, v2: null };
        this.answer.show(token, body, this.meta.classes, requests);
      } catch (err) {
        this.answer.fail(token, err.message);
      }
    }

    showInput(image) {
      const small = this.preview.getContext("2d");
      const data = small.createImageData(SIDE, SIDE);
      image.forEach((row, y) =>
        row.forEach((v, x) => {
          const i = (y * SIDE + x) * 4;
          data.data[i] = data.data[i + 1] = data.data[i + 2] = v;
          data.data[i + 3] = 255;
        }),
      );
      small.putImageData(data, 0, 0);
    }

    showUpload(file) {
      if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
      this.objectUrl = file ? URL.createObjectURL(file) : null;
      this.uploadPreview.hidden = !file;
      const img = this.uploadPreview.querySelector("img");
      if (file) img.src = this.objectUrl;
      else img.removeAttribute("src");
    }
  }

  // ---------------------------------------------------------------- forms

  /** A warning when a number lies outside what training saw (the card's seen_min/seen_max,
   * the range the service itself uses); the prediction is still made. */
  function outsideTraining(field, value) {
    if (typeof value !== "number" || field.seen_min === null || field.seen_max === null) return "";
    if (field.seen_min === undefined || field.seen_max === undefined) return "";
    if (value >= field.seen_min && value <= field.seen_max) return "";
    return (
      "Outside the range seen in training (" + number(field.seen_min, 4) + " – " +
      number(field.seen_max, 4) + "): the model is guessing beyond its data."
    );
  }

  class FormPlayground {
    constructor(view) {
      this.view = view;
      this.root = document.getElementById("form-template").content.firstElementChild.cloneNode(true);
      this.form = this.root.querySelector("form");
      this.fields = this.root.querySelector(".fields");
      this.answer = new Answer(this.root.querySelector(".answer"));
      this.inputsKey = "";
      this.predictSoon = debounce(() => this.predict(), 300, 0);
      this.form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.predictSoon.cancel();
        this.predict();
      });
      this.form.addEventListener("input", () => this.predictSoon());
      this.form.addEventListener("change", () => this.predictSoon());
      this.root.querySelector(".reset").addEventListener("click", () => {
        this.fill(this.meta.card.example || {});
        this.predict();
      });
    }

    update(meta) {
      this.meta = meta;
      const key = JSON.stringify(meta.inputs);
      if (key !== this.inputsKey) {
        // another version with other inputs: keep what was typed where the names match
        const values = this.inputsKey ? this.snapshot() : meta.card.example || {};
        this.inputsKey = key;
        this.build(meta.inputs);
        this.fill(values);
      }
      this.answer.bars.setClasses(meta.classes);
      this.predict();
    }

    build(inputs) {
      this.fields.replaceChildren();
      for (const field of inputs) {
        const id = this.view.name + "-" + field.name;
        const hint = [];
        let control;
        if (field.type === "category" || field.type === "ordinal") {
          control = h("select", { id: id, name: field.name });
          for (const value of field.allowed || []) control.append(h("option", { value: value, text: value }));
          if (field.nullable) control.append(h("option", { value: MISSING, text: "missing" }));
          if (field.type === "ordinal") hint.push("ordered levels");
        } else {
          const integer = field.type === "integer";
          control = h("input", {
            id: id,
            name: field.name,
            type: "number",
            inputmode: integer ? "numeric" : "decimal",
            step: integer ? "1" : "any",
            min: field.minimum,
            max: field.maximum,
            required: !field.nullable,
          });
          if (field.minimum !== null || field.maximum !== null) {
            hint.push("range " + number(field.minimum, 4) + " – " + number(field.maximum, 4));
          }
          if (field.seen_min !== null && field.seen_max !== null) {
            hint.push("seen in training " + number(field.seen_min, 4) + " – " + number(field.seen_max, 4));
          }
          if (field.nullable) {
            const missing = h("input", { type: "checkbox", className: "missing", "data-for": field.name });
            missing.addEventListener("change", () => {
              control.disabled = missing.checked;
            });
            control = h("span", { className: "with-missing" }, control, h("label", null, missing, " missing"));
          }
        }
        this.fields.append(
          h(
            "div",
            { className: "field", "data-field": field.name, "data-type": field.type },
            h("label", { for: id }, h("span", { className: "field-name", text: pretty(field.name) }), field.description ? h("small", { text: field.description }) : null),
            control,
            h("small", { className: "hint", text: hint.join(" · ") }),
            h("small", { className: "warning", role: "status", hidden: true }),
            h("small", { className: "invalid", hidden: true }),
          ),
        );
      }
    }

    fill(values) {
      for (const field of this.meta.inputs) {
        const control = this.form.elements.namedItem(field.name);
        if (!control) continue;
        const value = values[field.name];
        const missing = value === null || value === "?" || value === undefined;
        if (control.tagName === "SELECT") {
          if (missing && field.nullable) control.value = MISSING;
          else if (!missing && [...control.options].some((o) => o.value === String(value))) control.value = String(value);
        } else {
          const box = this.form.querySelector('.missing[data-for="' + CSS.escape(field.name) + '"]');
          if (box) {
            box.checked = missing && value !== undefined;
            control.disabled = box.checked;
          }
          control.value = missing ? "" : String(value);
        }
      }
    }

    /** What the form holds now, by field name, unchecked. */
    snapshot() {
      const values = {};
      for (const wrap of this.fields.querySelectorAll(".field")) {
        const name = wrap.dataset.field;
        const control = this.form.elements.namedItem(name);
        if (!control) continue;
        if (control.tagName === "SELECT") values[name] = control.value === MISSING ? null : control.value;
        else values[name] = control.disabled ? null : control.value === "" ? undefined : Number(control.value);
      }
      return values;
    }

    /** The instance as the API takes it, or null (with messages shown) when invalid. */
    values(check) {
      const instance = {};
      let valid = true;
      for (const field of this.meta.inputs) {
        const control = this.form.elements.namedItem(field.name);
        const wrap = this.form.querySelector('.field[data-field="' + CSS.escape(field.name) + '"]');
        const message = wrap.querySelector(".invalid");
        let problem = "";
        if (control.tagName === "SELECT") {
          instance[field.name] = control.value === MISSING ? null : control.value;
        } else if (control.disabled) {
          instance[field.name] = null;
        } else if (control.value === "" || !control.checkValidity()) {
          problem = control.validationMessage || "enter a number";
        } else {
          instance[field.name] = Number(control.value);
        }
        if (check) {
          message.hidden = !problem;
          message.textContent = problem;
          control.setAttribute("aria-invalid", problem ? "true" : "false");
          const warning = wrap.querySelector(".warning");
          const unseen = problem ? "" : outsideTraining(field, instance[field.name]);
          warning.hidden = !unseen;
          warning.textContent = unseen;
          wrap.classList.toggle("unseen", Boolean(unseen));
        }
        if (problem) valid = false;
      }
      return valid || !check ? instance : null;
    }

    async predict() {
      if (this.view.version === null) return;
      const instance = this.values(true);
      if (!instance) {
        // no stale answer beside the error; answers to earlier rows in flight are dropped
        this.answer.failClean("Fix the highlighted fields to get a prediction.");
        return;
      }
      const token = this.answer.next();
      const version = this.view.version;
      const requests = {
        native: { url: this.view.url(version, "predict"), body: instance },
        v2: null,
      };
      const v2 = v2Body(this.meta.inputs, instance);
      if (v2) requests.v2 = { url: this.view.v2url(version), body: v2 };
      try {
        // the explanation rides along (?explain=true); the request shown is the plain one
        // a regression model has no class to explain, a multi-output model (heads) no one class
        const card = this.meta.card || {};
        const unexplained = card.task === "regression" || Boolean(card.heads);
        const body = await postJSON(requests.native.url + (unexplained ? "" : "?explain=true"), instance);
        this.answer.show(token, body, this.meta.classes, requests);
      } catch (err) {
        this.answer.fail(token, err.message);
      }
    }
  }

  // ---------------------------------------------------------------- page

  async function main() {
    const status = document.getElementById("page-status");
    const container = document.getElementById("models");
    const nav = document.getElementById("model-nav");
    let models;
    try {
      models = await getJSON("models");
    } catch (err) {
      status.textContent = "Could not list the models: " + err.message;
      status.classList.add("error");
      return;
    }
    if (!models.length) {
      status.textContent = "No models are deployed.";
      return;
    }
    const views = models.map((summary) => new ModelView(summary));
    // image models first: drawing a digit is the quickest way in
    const order = await Promise.all(views.map((v) => v.load().then(() => v, (err) => {
      v.section.querySelector(".serving").textContent = "Could not load: " + err.message;
      return v;
    })));
    order.sort((a, b) => Number(b.playground instanceof DigitsPlayground) - Number(a.playground instanceof DigitsPlayground));
    for (const view of order) {
      container.append(view.section);
      nav.append(h("a", { href: "#" + view.section.id, text: view.name }));
    }
    status.hidden = true;
    document.body.dataset.ready = "true";
  }

  main();
})();
