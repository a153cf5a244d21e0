/* The generated UI's own script: widgets (tom-select, trix), list selection, the filter
   builder's rows, kanban drag and drop, the form-layout editor, toasts.  The server
   renders everything; this only wires vendored libraries to the markup it sends. */
(function () {
  "use strict";

  var body = function () { return document.body; };
  var text = function (key, fallback) { return (body() && body().dataset[key]) || fallback; };
  var csrf = function () {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };

  // ------------------------------------------------------------------ toasts
  function toast(message, level) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var el = document.createElement("div");
    var bg = level === "danger" ? "danger" : level === "success" ? "success" : level === "warning" ? "warning" : "secondary";
    el.className = "toast align-items-center border-0 show text-bg-" + bg;
    el.setAttribute("role", level === "danger" ? "alert" : "status");
    el.setAttribute("data-xrm-toast", "");
    el.setAttribute("data-level", level || "info");
    var inner = document.createElement("div");
    inner.className = "d-flex";
    var msg = document.createElement("div");
    msg.className = "toast-body";
    msg.textContent = message;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "btn-close btn-close-white me-2 m-auto";
    close.setAttribute("data-bs-dismiss", "toast");
    close.setAttribute("aria-label", "Close");
    inner.appendChild(msg);
    inner.appendChild(close);
    el.appendChild(inner);
    box.appendChild(el);
    arm(el);
  }

  function arm(el) {
    if (el.dataset.armed) return;
    el.dataset.armed = "1";
    var delay = el.dataset.level === "danger" ? 12000 : 6000;
    setTimeout(function () { el.remove(); }, delay);
  }

  // ------------------------------------------------------------------ widgets
  function lookup(el) {
    if (el.tomselect || typeof TomSelect === "undefined") return;
    var url = el.dataset.xrmLookup;
    var multiple = el.multiple;
    new TomSelect(el, {
      valueField: "value",
      labelField: "text",
      searchField: ["text"],
      allowEmptyOption: true,
      maxOptions: 50,
      loadThrottle: 250,
      preload: "focus",
      placeholder: text("textSearch", "Type to search…"),
      plugins: multiple ? ["remove_button"] : [],
      score: function () { return function () { return 1; }; },  // the server already matched
      shouldLoad: function () { return true; },
      load: function (query, callback) {
        var sep = url.indexOf("?") >= 0 ? "&" : "?";
        fetch(url + sep + "q=" + encodeURIComponent(query), { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (r) { return r.ok ? r.json() : []; })
          .then(function (rows) { callback(rows); })
          .catch(function () { callback(); });
      },
    });
  }

  function plainSelect(el) {
    if (el.tomselect || typeof TomSelect === "undefined") return;
    new TomSelect(el, { plugins: el.multiple ? ["remove_button"] : [], maxOptions: 500, allowEmptyOption: true });
  }

  function tags(el) {
    if (el.tomselect || typeof TomSelect === "undefined") return;
    new TomSelect(el, {
      create: true,
      persist: false,
      delimiter: ",",
      placeholder: text("textTags", "Add tags…"),
      plugins: ["remove_button"],
      createFilter: function (input) { return input.length <= 64; },
    });
  }

  function init(root) {
    root = root || document;
    root.querySelectorAll("[data-xrm-lookup]").forEach(lookup);
    root.querySelectorAll("select[data-xrm-select]").forEach(plainSelect);
    root.querySelectorAll("input[data-xrm-tags]").forEach(tags);
    root.querySelectorAll("[data-xrm-toast]").forEach(arm);
    root.querySelectorAll(".xrm-cards").forEach(kanbanColumn);
    root.querySelectorAll("[data-xrm-layout]").forEach(layoutEditor);
    root.querySelectorAll("[data-xrm-columns]").forEach(columnsEditor);
    root.querySelectorAll("[data-xrm-column-chooser]").forEach(columnChooser);
    root.querySelectorAll(".xrm-filter-op").forEach(syncOperator);
    updateSelection();
  }

  // ------------------------------------------------------------------ lists
  function updateSelection() {
    var counter = document.querySelector(".xrm-selected-count");
    if (!counter) return;
    var n = document.querySelectorAll('input[name="ids"]:checked').length;
    counter.textContent = n ? counter.dataset.template.replace("{n}", n) : "";
    var bulk = counter.closest(".xrm-bulk");
    if (bulk) bulk.classList.toggle("d-none", n === 0);
  }

  function syncOperator(select) {
    var row = select.closest(".xrm-filter-row");
    if (!row) return;
    var option = select.options[select.selectedIndex];
    var value = row.querySelector(".xrm-filter-value");
    if (value && option) {
      value.classList.toggle("d-none", option.dataset.novalue === "true");
      // a date picker holds one date: lists, ranges and day counts are typed as text
      if (value.dataset.input === "date") {
        var typed = ["in", "not_in", "between", "last_n_days", "next_n_days", "older_than_days"].indexOf(option.value) >= 0;
        value.type = typed ? "text" : "date";
      }
    }
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches("[data-xrm-select-all]")) {
      document.querySelectorAll('input[name="ids"]').forEach(function (box) { box.checked = target.checked; });
      updateSelection();
    } else if (target.matches('input[name="ids"]')) {
      updateSelection();
    } else if (target.matches("[data-xrm-filter-field]")) {
      // another field: the row comes back with that field's operators and value input
      var filterRow = target.closest(".xrm-filter-row");
      var url = target.dataset.xrmFilterField + "?path=" + encodeURIComponent(target.value);
      if (filterRow && window.htmx) htmx.ajax("GET", url, { target: filterRow, swap: "outerHTML" });
    } else if (target.matches(".xrm-filter-op")) {
      syncOperator(target);
    } else if (target.matches("[data-xrm-autosubmit]")) {
      target.form && target.form.requestSubmit();
    } else if (target.matches("[data-xrm-file-name]")) {
      var label = target.closest("form").querySelector("[data-xrm-file-label]");
      if (label) label.textContent = target.files.length ? target.files[0].name : "";
    } else if (target.matches('input[type="file"][data-max-size]') && target.files.length) {
      var limit = parseInt(target.dataset.maxSize, 10);
      if (limit && target.files[0].size > limit) {
        target.classList.add("is-invalid");
      } else {
        target.classList.remove("is-invalid");
      }
    }
  });

  document.addEventListener("click", function (event) {
    var remove = event.target.closest("[data-xrm-remove-row]");
    if (remove) {
      var row = remove.closest(".xrm-filter-row");
      if (row) row.remove();
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.xrmConfirm && !window.confirm(form.dataset.xrmConfirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
      return;
    }
    // a file over its limit is refused here, before the whole form travels for nothing
    var inputs = form.querySelectorAll ? form.querySelectorAll('input[type="file"][data-max-size]') : [];
    for (var i = 0; i < inputs.length; i++) {
      var input = inputs[i];
      var limit = parseInt(input.dataset.maxSize, 10);
      if (limit && input.files.length && input.files[0].size > limit) {
        event.preventDefault();
        event.stopImmediatePropagation();
        input.classList.add("is-invalid");
        toast(input.dataset.tooLarge || text("textError", "Something went wrong."), "danger");
        return;
      }
    }
  }, true);

  // ------------------------------------------------------------------ kanban
  function kanbanColumn(el) {
    if (el.dataset.sortable || typeof Sortable === "undefined") return;
    var board = el.closest(".xrm-board");
    if (!board || board.dataset.canMove !== "true") return;
    el.dataset.sortable = "1";
    Sortable.create(el, {
      group: "kanban",
      animation: 120,
      forceFallback: true,  // pointer events: the same on touch screens, mice and test drivers
      fallbackTolerance: 3,
      onEnd: function (evt) {
        if (evt.from === evt.to) return;
        var card = evt.item;
        var data = new FormData();
        data.append("id", card.dataset.id);
        data.append("version", card.dataset.version);
        data.append("value", evt.to.dataset.value);
        card.classList.add("xrm-saving");
        fetch(board.dataset.moveUrl, {
          method: "POST",
          body: data,
          credentials: "same-origin",
          headers: { "X-CSRFToken": csrf(), Accept: "application/json" },
        })
          .then(function (r) { return r.json().catch(function () { return { ok: false }; }); })
          .then(function (result) {
            card.classList.remove("xrm-saving");
            if (result.ok) {
              card.dataset.version = result.version;
              counts(board);
            } else {
              evt.from.insertBefore(card, evt.from.children[evt.oldIndex] || null);
              toast(result.message || text("textError", "Something went wrong."), "danger");
            }
          })
          .catch(function () {
            card.classList.remove("xrm-saving");
            evt.from.insertBefore(card, evt.from.children[evt.oldIndex] || null);
            toast(text("textError", "Something went wrong."), "danger");
          });
      },
    });
  }

  function counts(board) {
    board.querySelectorAll(".xrm-column").forEach(function (column) {
      var badge = column.querySelector(".xrm-column-count");
      if (badge) badge.textContent = column.querySelectorAll(".xrm-card").length;
    });
  }

  // ------------------------------------------------------------------ admin: form layout
  function layoutEditor(root) {
    if (root.dataset.ready || typeof Sortable === "undefined") return;
    root.dataset.ready = "1";
    var arm = function (list) {
      if (list.dataset.sortable) return;
      list.dataset.sortable = "1";
      Sortable.create(list, { group: "fields", animation: 120, forceFallback: true, fallbackTolerance: 3 });
    };
    var armSections = function (container) {
      if (container.dataset.sortable) return;
      container.dataset.sortable = "1";
      Sortable.create(container, { group: "sections", animation: 120, handle: ".xrm-handle", forceFallback: true });
    };
    root.querySelectorAll(".xrm-layout-fields").forEach(arm);
    root.querySelectorAll(".xrm-layout-sections").forEach(armSections);
    var palette = root.querySelector(".xrm-palette");
    root.addEventListener("click", function (event) {
      var button = event.target.closest("[data-layout-action]");
      if (!button) return;
      var action = button.dataset.layoutAction;
      if (action === "remove-field") {
        var item = button.closest("[data-field]");
        if (palette && item) palette.appendChild(item);
      } else if (action === "remove-section") {
        var section = button.closest(".xrm-layout-section");
        section.querySelectorAll("[data-field]").forEach(function (f) { palette && palette.appendChild(f); });
        section.remove();
      } else if (action === "add-section") {
        var template = root.querySelector("template.xrm-section-template");
        var tab = button.closest(".xrm-layout-tab");
        var clone = template.content.firstElementChild.cloneNode(true);
        tab.querySelector(".xrm-layout-sections").appendChild(clone);
        clone.querySelectorAll(".xrm-layout-fields").forEach(arm);
      } else if (action === "add-column") {
        var row = button.closest(".xrm-layout-section").querySelector(".xrm-layout-columns");
        if (row.children.length >= 4) return;
        var ul = document.createElement("ul");
        ul.className = "xrm-layout-fields list-unstyled col";
        row.appendChild(ul);
        arm(ul);
      } else if (action === "add-tab") {
        var tabTemplate = root.querySelector("template.xrm-tab-template");
        var newTab = tabTemplate.content.firstElementChild.cloneNode(true);
        root.querySelector(".xrm-layout-tabs").appendChild(newTab);
        newTab.querySelectorAll(".xrm-layout-fields").forEach(arm);
        newTab.querySelectorAll(".xrm-layout-sections").forEach(armSections);
      } else if (action === "add-related") {
        var sel = root.querySelector("[data-related-choice]");
        if (!sel || !sel.value) return;
        var relTemplate = root.querySelector("template.xrm-related-template");
        var rel = relTemplate.content.firstElementChild.cloneNode(true);
        rel.dataset.related = sel.value;
        rel.querySelector(".xrm-related-name").textContent = sel.options[sel.selectedIndex].text;
        root.querySelector(".xrm-layout-tab:last-child .xrm-layout-sections").appendChild(rel);
        sel.remove(sel.selectedIndex);
      }
    });
    var form = root.closest("form");
    form.addEventListener("submit", function () {
      var tabs = [];
      root.querySelectorAll(".xrm-layout-tab").forEach(function (tab) {
        var sections = [];
        tab.querySelectorAll(".xrm-layout-section").forEach(function (section) {
          var entry = { label: (section.querySelector(".xrm-section-label") || {}).value || "" };
          if (section.dataset.related) {
            entry.related = section.dataset.related;
          } else {
            entry.columns = [];
            section.querySelectorAll(".xrm-layout-fields").forEach(function (column) {
              var names = [];
              column.querySelectorAll("[data-field]").forEach(function (f) { names.push(f.dataset.field); });
              entry.columns.push(names);
            });
          }
          sections.push(entry);
        });
        tabs.push({ label: (tab.querySelector(".xrm-tab-label") || {}).value || "", sections: sections });
      });
      form.querySelector('input[name="layout"]').value = JSON.stringify({ tabs: tabs });
    });
  }

  // ------------------------------------------------------------------ admin: view columns
  function columnsEditor(root) {
    if (root.dataset.ready || typeof Sortable === "undefined") return;
    root.dataset.ready = "1";
    root.querySelectorAll(".xrm-column-list").forEach(function (list) {
      Sortable.create(list, { group: "columns", animation: 120, forceFallback: true, fallbackTolerance: 3 });
    });
    var form = root.closest("form");
    form.addEventListener("submit", function () {
      var names = [];
      root.querySelectorAll(".xrm-column-list.xrm-chosen [data-path]").forEach(function (item) { names.push(item.dataset.path); });
      form.querySelector('input[name="columns"]').value = names.join(",");
    });
  }

  // ------------------------------------------------------------------ list: column chooser
  // The ticked columns, in the order they were dragged to, go out as one "cols" value
  // (without scripts the checkboxes go out as "col" values, in page order).
  function columnChooser(form) {
    if (form.dataset.ready) return;
    form.dataset.ready = "1";
    var list = form.querySelector(".xrm-column-options");
    if (typeof Sortable !== "undefined") {
      Sortable.create(list, { animation: 120, handle: ".xrm-handle", forceFallback: true, fallbackTolerance: 3 });
    }
    form.addEventListener("htmx:configRequest", function (event) {
      if (event.target !== form) return;  // the Reset button sends its own "cols"
      var names = [];
      list.querySelectorAll('input[name="col"]').forEach(function (box) { if (box.checked) names.push(box.value); });
      delete event.detail.parameters.col;
      delete event.detail.parameters.columns_form;
      event.detail.parameters.cols = names.join(",");
    });
  }

  // ------------------------------------------------------------------ read view: inline edit
  // Escape leaves a field being edited in place as it was (its Cancel link).
  document.addEventListener("keydown", function (event) {
    // a widget that used the key itself (an open type-ahead closing) keeps it
    if (event.key !== "Escape" || event.defaultPrevented || !event.target.closest) return;
    var form = event.target.closest(".xrm-inline-form");
    var cancel = form && form.querySelector('[data-testid="inline-cancel"]');
    if (cancel) {
      event.preventDefault();
      cancel.click();
    }
  });

  // ------------------------------------------------------------------ htmx
  document.addEventListener("htmx:load", function (event) { init(event.target); });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var holder = document.createElement("div");
    holder.innerHTML = xhr && xhr.responseText ? xhr.responseText : "";
    var found = holder.querySelector("[data-xrm-toast] .toast-body");
    toast(found ? found.textContent.trim() : text("textError", "Something went wrong."), "danger");
  });
  // The quick-create dialog of a lookup: open when its form arrives; a record saved in it
  // is selected in the lookup that opened it, and the dialog closes.
  document.addEventListener("htmx:afterSwap", function (event) {
    var dialog = event.detail.target;
    if (!dialog || dialog.id !== "xrm-quick-dialog") return;
    var made = dialog.querySelector("[data-xrm-quick-created]");
    if (made && made.dataset.reload) {  // made from a calendar: show it in its place
      window.location.reload();
      return;
    }
    if (made) {
      var select = document.querySelector('#record-form [name="' + made.dataset.target + '"]');
      if (select) {
        if (select.tomselect) {
          select.tomselect.addOption({ value: made.dataset.value, text: made.dataset.text });
          select.tomselect.setValue(made.dataset.value);
        } else {
          select.add(new Option(made.dataset.text, made.dataset.value, true, true));
        }
        select.dispatchEvent(new Event("change", { bubbles: true }));
      }
      dialog.close();
      dialog.innerHTML = "";
    } else if (!dialog.open) {
      dialog.showModal();
    }
  });
  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-xrm-dialog-close]")) return;
    var dialog = event.target.closest("dialog");
    if (dialog) { dialog.close(); dialog.innerHTML = ""; }
  });
  // ------------------------------------------------------------------ calendars
  // A day or a half hour with data-xrm-quick opens the quick-create dialog there (its href,
  // the full form, serves a new tab and browsers without scripts).  In the week and day
  // grid the arrows move between half hours (Up/Down) and days (Left/Right); Enter opens.
  document.addEventListener("click", function (event) {
    var link = event.target.closest("[data-xrm-quick]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || typeof htmx === "undefined") return;
    if (!document.getElementById("xrm-quick-dialog")) return;
    event.preventDefault();
    htmx.ajax("GET", link.dataset.xrmQuick, { target: "#xrm-quick-dialog", swap: "innerHTML" });
  });
  document.addEventListener("keydown", function (event) {
    var slot = event.target.closest && event.target.closest("[data-xrm-slot]");
    if (!slot) return;
    var day = slot.parentElement;
    var target = null;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      var slots = Array.prototype.slice.call(day.querySelectorAll("[data-xrm-slot]"));
      target = slots[slots.indexOf(slot) + (event.key === "ArrowDown" ? 1 : -1)];
    } else if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      var next = event.key === "ArrowRight" ? day.nextElementSibling : day.previousElementSibling;
      if (next) target = next.querySelector('[data-xrm-slot][data-time="' + slot.dataset.time + '"]');
    }
    if (!target) return;
    event.preventDefault();
    slot.tabIndex = -1;
    target.tabIndex = 0;
    target.focus();
  });
  function scrollGrid(root) {
    (root || document).querySelectorAll("[data-xrm-timegrid]").forEach(function (grid) {
      var body = grid.querySelector("[data-xrm-scroll]");
      var hour = grid.querySelector(".xrm-tg-hour");
      if (body && hour) body.scrollTop = hour.offsetHeight * Number(grid.dataset.workStart || 8);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { scrollGrid(document); });

  // ------------------------------------------------------------------ tree views
  // A node's toggle opens its children (loaded once with htmx) and closes them again; its
  // href (the page with the node in expand=) serves browsers without scripts.  Right and
  // Left arrows on a focused toggle open and close, Up and Down move between rows.
  function treeToggle(link, open) {
    var item = link.closest("[role=treeitem]");
    var group = item && item.querySelector(":scope > [role=group]");
    if (!group) return;
    var expanded = item.getAttribute("aria-expanded") === "true";
    if (open === undefined) open = !expanded;
    if (open === expanded) return;
    if (open && !group.dataset.loaded && typeof htmx !== "undefined") {
      group.dataset.loaded = "1";
      htmx.ajax("GET", link.dataset.url, { target: group, swap: "innerHTML" }).then(function () {
        group.hidden = false;
        item.setAttribute("aria-expanded", "true");
      });
      return;
    }
    group.hidden = !open;
    item.setAttribute("aria-expanded", open ? "true" : "false");
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest("[data-xrm-tree-toggle]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    treeToggle(link);
  });
  document.addEventListener("keydown", function (event) {
    var here = event.target.closest && event.target.closest(".xrm-tree-title");
    if (!here) return;
    var link = here.querySelector("[data-xrm-tree-toggle]");
    if (event.key === "ArrowRight" && link) { event.preventDefault(); treeToggle(link, true); return; }
    if (event.key === "ArrowLeft" && link) { event.preventDefault(); treeToggle(link, false); return; }
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    var rows = Array.prototype.filter.call(document.querySelectorAll(".xrm-tree .xrm-tree-title"), function (el) { return el.offsetParent !== null; });
    var at = rows.indexOf(here) + (event.key === "ArrowDown" ? 1 : -1);
    if (at < 0 || at >= rows.length) return;
    event.preventDefault();
    var target = rows[at].querySelector("[data-xrm-tree-toggle]") || rows[at].querySelector("a");
    if (target) target.focus();
  });
  document.addEventListener("htmx:sendError", function () { toast(text("textError", "Something went wrong."), "danger"); });
  // A live-rules answer must not replace the field the user is typing in.
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var target = event.detail.target;
    if (target && document.activeElement && target.contains(document.activeElement) && document.activeElement.tagName !== "BODY") {
      event.detail.shouldSwap = false;
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document);
  }
})();
