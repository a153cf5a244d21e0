// The Import page's run: the form is posted with fetch and the answer read as it comes,
// one JSON line per progress step and the outcome's HTML last; Cancel aborts the request,
// which stops the import on the server (nothing half-done is kept).
(function () {
  "use strict";

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, name) {
      return values[name] === undefined ? "" : String(values[name]);
    });
  }

  async function run(button) {
    var form = button.form;
    var bar = document.getElementById("import-progress");
    var text = document.getElementById("import-progress-text");
    var result = document.getElementById("import-result");
    var cancel = form.querySelector("[data-xrm-import-cancel]");
    var controller = new AbortController();
    button.disabled = true;
    bar.classList.remove("d-none");
    cancel.classList.remove("d-none");
    cancel.onclick = function () { controller.abort(); };
    result.innerHTML = "";
    var response;
    try {
      response = await fetch(button.formAction, {
        method: "POST",
        body: new FormData(form),
        headers: { "Accept": "application/x-ndjson", "HX-Request": "true" },
        credentials: "same-origin",
        signal: controller.signal,
      });
    } catch (error) {
      button.disabled = false;
      cancel.classList.add("d-none");
      return;
    }
    if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("application/x-ndjson")) {
      var work = document.getElementById("import-work");
      if (work) { work.innerHTML = await response.text(); }
      return;
    }
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffered = "";
    var inner = bar.querySelector(".progress-bar");
    try {
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) { break; }
        buffered += decoder.decode(chunk.value, { stream: true });
        var lines = buffered.split("\n");
        buffered = lines.pop();
        lines.forEach(function (line) {
          if (!line) { return; }
          var data = JSON.parse(line);
          if (data.done) {
            bar.classList.add("d-none");
            cancel.classList.add("d-none");
            text.textContent = "";
            if (data.html) { result.innerHTML = data.html; }
            if (data.error) { result.textContent = data.error; result.className = "alert alert-danger mt-3"; }
            return;
          }
          var share = data.total ? Math.min(100, Math.round(100 * data.rows / data.total)) : 50;
          inner.style.width = share + "%";
          text.textContent = fill(text.dataset.template, data);
        });
      }
    } catch (error) {
      text.textContent = "";
      bar.classList.add("d-none");
    }
    button.disabled = false;
    cancel.classList.add("d-none");
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-xrm-import-run]");
    if (!button || !window.fetch || !window.TextDecoder) { return; }
    event.preventDefault();
    run(button);
  });
})();
