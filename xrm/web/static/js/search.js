/* The global search box of the top bar: "/" (outside a field) or Ctrl+K / Cmd+K focuses
   it; htmx fills its dropdown as the user types (ui/_search_box.html); the arrow keys move
   through the hits, Escape closes it, Enter in the box opens the results page. */
(function () {
  "use strict";

  function box() { return document.getElementById("global-search"); }
  function menu() { return document.getElementById("global-search-results"); }
  function items() { var m = menu(); return m ? Array.prototype.slice.call(m.querySelectorAll(".xrm-search-item")) : []; }

  function typing(target) {
    if (!target || !target.closest) return false;
    return !!target.closest("input, textarea, select, [contenteditable=''], [contenteditable='true'], trix-editor");
  }

  function open(shown) {
    var m = menu(), input = box();
    if (!m || !input) return;
    m.classList.toggle("show", shown);
    input.setAttribute("aria-expanded", shown ? "true" : "false");
  }

  function focusBox() {
    var input = box();
    if (!input) return;
    input.focus();
    input.select();
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented) return;
    var input = box();
    if (!input) return;
    if ((event.ctrlKey || event.metaKey) && !event.altKey && (event.key === "k" || event.key === "K")) {
      event.preventDefault();
      focusBox();
      return;
    }
    if (event.key === "/" && !event.ctrlKey && !event.metaKey && !event.altKey && !typing(event.target)) {
      event.preventDefault();
      focusBox();
      return;
    }
    var inside = event.target === input || (menu() && menu().contains(event.target));
    if (!inside) return;
    if (event.key === "Escape") {
      event.preventDefault();
      open(false);
      input.blur();
      return;
    }
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    var list = items();
    if (!list.length) return;
    event.preventDefault();
    open(true);
    var at = list.indexOf(document.activeElement);
    if (event.key === "ArrowDown") {
      list[at < 0 ? 0 : Math.min(at + 1, list.length - 1)].focus();
    } else if (at <= 0) {
      input.focus();
    } else {
      list[at - 1].focus();
    }
  });

  // the dropdown opens when htmx brings it something, and closes when focus leaves the box
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "global-search-results") {
      var input = box();
      open(!!input && (document.activeElement === input || menu().contains(document.activeElement)));
    }
  });
  document.addEventListener("focusin", function (event) {
    var form = box() && box().form;
    if (form && !form.contains(event.target)) open(false);
  });
  document.addEventListener("click", function (event) {
    var form = box() && box().form;
    if (form && !form.contains(event.target)) open(false);
  });
})();
