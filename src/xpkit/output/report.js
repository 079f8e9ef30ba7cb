// The report's script: draws every chart under `root` (the page's document, or a
// notebook output's element) from its JSON, and wires the toggles and copy buttons.
// Returns select(id, group, note, axis) and a promise that resolves once all are drawn.
function xpkitCharts(root) {
  "use strict";
  var config = {
    responsive: true,
    displaylogo: false,
    displayModeBar: "hover",
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"]
  };
  var pending = [];
  root.querySelectorAll("script[data-chart]").forEach(function (node) {
    var figure = JSON.parse(node.textContent);
    var div = document.getElementById(node.getAttribute("data-chart"));
    if (!div) { return; }
    // The figure's height on the element too: a responsive resize sizes the plot to it.
    if (figure.layout.height) { div.style.height = figure.layout.height + "px"; }
    pending.push(Plotly.newPlot(div, figure.data, figure.layout, config).then(fitTicks));
  });

  // Percent ticks of a lift axis, as many as fit the plot's width (a narrow screen gets
  // fewer rather than overlapping or slanted ones).
  function fitTicks(div) {
    if (!div.hasAttribute("data-fit-ticks") || !div._fullLayout || !div._fullLayout._size) {
      return Promise.resolve(div);
    }
    var n = Math.max(3, Math.min(9, Math.floor(div._fullLayout._size.w / 80)));
    if (div._fullLayout.xaxis.nticks === n) { return Promise.resolve(div); }
    return Plotly.relayout(div, { "xaxis.nticks": n });
  }
  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () {
      root.querySelectorAll(".js-plotly-plot[data-fit-ticks]").forEach(fitTicks);
    }, 200);
  });

  // Show the traces of one group (meta.group; "*" is every group's), e.g. TOT or a metric.
  function select(id, group, note, axis) {
    var div = document.getElementById(id);
    var visible = div.data.map(function (trace) {
      var g = trace.meta && trace.meta.group;
      return g === "*" || g === group;
    });
    var done = Plotly.restyle(div, { visible: visible });
    if (axis) {
      done = done.then(function () { return Plotly.relayout(div, { "yaxis.title.text": axis }); });
    }
    var caption = root.querySelector('[data-note-of="' + id + '"]');
    if (caption) { caption.textContent = note || ""; }
    return done;
  }

  root.querySelectorAll("button[data-toggle-for]").forEach(function (button) {
    button.addEventListener("click", function () {
      var id = button.getAttribute("data-toggle-for");
      button.parentNode.querySelectorAll("button").forEach(function (b) {
        b.setAttribute("aria-pressed", b === button ? "true" : "false");
      });
      select(id, button.getAttribute("data-group"), button.getAttribute("data-note"));
    });
  });
  root.querySelectorAll("select[data-toggle-for]").forEach(function (menu) {
    menu.addEventListener("change", function () {
      var option = menu.options[menu.selectedIndex];
      select(menu.getAttribute("data-toggle-for"), option.value,
             option.getAttribute("data-note"), option.getAttribute("data-axis"));
    });
  });

  function copyText(text, button) {
    function done(ok) {
      var label = button.textContent;
      button.textContent = ok ? "Copied" : "Select and copy by hand";
      setTimeout(function () { button.textContent = label; }, 1500);
    }
    function fallback() {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, fallback);
    } else {
      fallback();
    }
  }
  root.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      copyText(document.getElementById(button.getAttribute("data-copy")).textContent, button);
    });
  });

  return { select: select, ready: Promise.all(pending), charts: pending.length };
}
