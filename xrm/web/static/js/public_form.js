/* Public web forms: inside an iframe (embed.js), tell the page that embeds us how tall we
   are, so the frame fits the form with its messages; and bring the error summary into
   view after a refused submission. */
(function () {
  "use strict";
  var name = document.body.getAttribute("data-form");
  function report() {
    if (window.parent === window) return;
    // The height is no secret, so any embedding page may hear it; embed.js checks our origin.
    window.parent.postMessage({ xrmForm: name, height: document.documentElement.scrollHeight }, "*");
  }
  report();
  window.addEventListener("load", report);
  window.addEventListener("resize", report);
  var summary = document.getElementById("form-errors");
  if (summary) {
    summary.focus();
  }
})();
