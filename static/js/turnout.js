/* Turnout UI behaviour: small, delegated, and optional (every page reads without it). */
(function () {
  "use strict";

  function alertBar(text) {
    var bar = document.getElementById("alerts");
    if (!bar) return;
    var p = document.createElement("p");
    p.textContent = text;
    bar.replaceChildren(p);
  }

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches && el.matches("[data-autosubmit]") && el.form) el.form.submit();
  });

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-dialog-open]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-dialog-open"));
      if (dialog && dialog.showModal) {
        event.preventDefault();
        dialog.showModal();  // focuses the dialog's [autofocus] control; Esc closes it
      }
      return;
    }
    var closer = event.target.closest("[data-dialog-close]");
    if (closer) {
      var d = closer.closest("dialog");
      if (d) { event.preventDefault(); d.close(); }
      return;
    }
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      var source = document.getElementById(copy.getAttribute("data-copy"));
      if (!source) return;
      var text = source.textContent.trim();
      var done = function () {
        copy.textContent = "Copied";
        var status = document.getElementById(copy.getAttribute("data-copy") + "-status");
        if (status) status.textContent = "Copied to the clipboard.";
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
      } else {
        selectText(source);
        try { if (document.execCommand("copy")) done(); } catch (e) { /* selected for a manual copy */ }
      }
    }
  });

  function selectText(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  /* Errors htmx does not swap (403, 5xx, network): say so in words. */
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status === 403) {
      alertBar("You don't have permission to do that with your role.");
    } else if (xhr.status === 429) {
      alertBar("Too many requests; wait a moment and try again.");
    } else {
      var rid = xhr.getResponseHeader("X-Request-ID");
      alertBar("Something went wrong on the server (" + xhr.status + ")." + (rid ? " Request id: " + rid : ""));
    }
  });
  document.addEventListener("htmx:sendError", function () {
    alertBar("The server could not be reached. Check your connection and try again.");
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var bar = document.getElementById("alerts");
    var verb = (event.detail.requestConfig && event.detail.requestConfig.verb) || "get";
    if (bar && verb !== "get") bar.replaceChildren();
  });

  /* Refreshes that wait while someone is working. The condition lives here, not in an htmx trigger
     filter: those are evaluated with eval, which the Content-Security-Policy refuses (allowEval is off).
     data-poll-pause="dialog": no refresh of the element while any dialog is open;
     data-poll-pause="inside": none while focus, an open dialog or an open <details> is inside it.
     The next refresh comes at its usual time. */
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    var mode = elt && elt.getAttribute ? elt.getAttribute("data-poll-pause") : null;
    if (!mode) return;
    var busy = mode === "inside"
      ? elt.contains(document.activeElement) || !!elt.querySelector("dialog[open], details[open]")
      : !!document.querySelector("dialog[open]");
    if (busy) event.preventDefault();
  });

  /* Upload progress for forms marked data-progress="<progress id>". */
  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = event.target.closest ? event.target.closest("form[data-progress]") : null;
    if (!form || !event.detail.lengthComputable) return;
    var bar = document.getElementById(form.getAttribute("data-progress"));
    if (bar) {
      bar.hidden = false;
      bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
      bar.textContent = bar.value + "%";
    }
  });

  /* After a swap, move focus where the new content asks (a status line, an error). */
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail.elt;
    var focus = target && target.querySelector ? target.querySelector("[data-focus]") : null;
    if (focus) {
      if (!focus.hasAttribute("tabindex")) focus.setAttribute("tabindex", "-1");
      focus.focus();
    }
    drawCharts(target);
  });

  /* Charts: <canvas data-chart="<the chart's JSON>"> (an attribute, not a <script>: htmx drops scripts from
     swapped content). Chart.js is vendored; pages work without it. */
  var charts = new WeakMap();
  function drawCharts(root) {
    if (!window.Chart) return;
    (root || document).querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var spec;
      try { spec = JSON.parse(canvas.getAttribute("data-chart")); } catch (e) { return; }
      if (!spec || !spec.labels) return;
      var existing = charts.get(canvas) || window.Chart.getChart(canvas);
      if (existing) existing.destroy();
      charts.set(canvas, new window.Chart(canvas, {
        type: "line",
        data: {
          labels: spec.labels,
          datasets: spec.series.map(function (s) {
            return { label: s.label, data: s.data, borderColor: s.color, backgroundColor: s.color,
                     pointRadius: spec.labels.length > 20 ? 0 : 3, borderWidth: 2, tension: 0.2, spanGaps: true };
          })
        },
        options: {
          animation: false, responsive: true, maintainAspectRatio: false,
          interaction: { mode: "index", intersect: false },
          scales: { y: { beginAtZero: true, title: { display: !!spec.unit, text: spec.unit || "" } },
                    x: { ticks: { maxTicksLimit: 8 } } },
          plugins: { legend: { position: "bottom" } }
        }
      }));
    });
  }
  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });

  /* Tabs: <a role="tab" data-tab href="?env=…" aria-controls="panel id">. Without script each tab is a
     link to the page with that panel shown; with it, the panel switches in place and the URL follows. */
  function selectTab(tab) {
    var list = tab.closest("[role=tablist]");
    if (!list) return;
    list.querySelectorAll("[role=tab]").forEach(function (other) {
      var on = other === tab;
      other.setAttribute("aria-selected", on ? "true" : "false");
      var panel = document.getElementById(other.getAttribute("aria-controls"));
      if (panel) panel.hidden = !on;
    });
    var url = new URL(tab.href, window.location.href);
    url.hash = "";
    window.history.replaceState(null, "", url.pathname + url.search);
  }
  document.addEventListener("click", function (event) {
    var tab = event.target.closest ? event.target.closest("[role=tab][data-tab]") : null;
    if (!tab || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    selectTab(tab);
  });
  document.addEventListener("keydown", function (event) {
    var tab = event.target.closest ? event.target.closest("[role=tab][data-tab]") : null;
    if (!tab || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
    var tabs = Array.prototype.slice.call(tab.closest("[role=tablist]").querySelectorAll("[role=tab]"));
    var next = tabs[(tabs.indexOf(tab) + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
    next.focus();
    selectTab(next);
  });
  /* A link to "#state-<env>" (the dashboard's bars) opens that environment's tab. */
  document.addEventListener("DOMContentLoaded", function () {
    var match = /^#state-(.+)$/.exec(window.location.hash);
    var tab = match ? document.getElementById("tab-" + match[1]) : null;
    if (tab && tab.getAttribute("aria-selected") !== "true") {
      selectTab(tab);
      var card = document.getElementById("state-" + match[1]);
      if (card) card.scrollIntoView();
    }
  });
})();
