/*
 * Keel report, browser side. Inlined into report.html after uPlot; reads the JSON payload
 * written by src/report/html.ts and draws one uPlot chart per panel. Plain ES2017, no modules,
 * no network.
 */
(function () {
  'use strict';
  var payload = JSON.parse(document.getElementById('keel-data').textContent);
  var PALETTE = ['#2563eb', '#ea580c', '#16a34a', '#9333ea', '#0891b2', '#db2777'];
  var hiddenEvents = {}; // event kind -> true when toggled off
  var charts = []; // { chart, panel, el, height }

  /* Mirrors formatNumber in format.ts: 12.3k, 2.346, 3e-4. */
  function fmt(v) {
    if (v == null || !isFinite(v)) return '—';
    if (v === 0) return '0';
    var a = Math.abs(v);
    var units = ['', 'k', 'M', 'G', 'T'];
    if (Number(a.toPrecision(4)) >= 1000 && a < 1e15) {
      var u = 0;
      while (u < units.length - 1 && Number(a.toPrecision(3)) >= 1000) { a /= 1000; u++; }
      return (v < 0 ? '-' : '') + String(Number(a.toPrecision(3))) + units[u];
    }
    if (Number.isInteger(v)) return String(v);
    if (a < 1e-3 || a >= 1e15) return v.toExponential(2).replace(/\.?0+e/, 'e').replace('e-0', 'e-').replace('e+', 'e');
    return String(Number(v.toPrecision(4)));
  }

  /*
   * uPlot wants one shared x array. Series are logged at different steps (val every N steps),
   * so x is the union and a series holds `undefined` where it has no point: uPlot bridges
   * undefined but breaks lines at null, which keeps real gaps (non-finite values) visible.
   */
  function align(panel, logY) {
    var seen = new Set();
    panel.series.forEach(function (s) { payload.data[s.key].x.forEach(function (x) { seen.add(x); }); });
    var xs = Array.from(seen).sort(function (a, b) { return a - b; });
    var at = new Map(xs.map(function (x, i) { return [x, i]; }));
    var cols = panel.series.map(function (s) {
      var d = payload.data[s.key];
      var col = new Array(xs.length).fill(undefined);
      for (var i = 0; i < d.x.length; i++) {
        var v = d.y[i];
        if (logY && v != null && v <= 0) v = null; // log scale cannot place them
        col[at.get(d.x[i])] = v;
      }
      return col;
    });
    return [xs].concat(cols);
  }

  /* Y axis wide enough for its longest tick label, so small learning rates are not clipped. */
  function axisSize(self, values, axisIdx, cycleNum) {
    var axis = self.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    var size = axis.ticks.size + axis.gap;
    var longest = (values || []).reduce(function (a, v) { return v && v.length > a.length ? v : a; }, '');
    if (longest) {
      self.ctx.font = axis.font[0];
      size += self.ctx.measureText(longest).width / devicePixelRatio;
    }
    return Math.ceil(size) + 4;
  }

  function ticks(self, splits) {
    return splits.map(function (v) { return v == null ? '' : fmt(v); });
  }

  function visibleEvents() {
    return payload.events.filter(function (e) { return e.step != null && !hiddenEvents[e.event]; });
  }

  /* Vertical dashed markers for run events, plus a tooltip naming the one under the cursor. */
  function eventsPlugin(el) {
    var tip = document.createElement('div');
    tip.className = 'event-tip';
    return {
      hooks: {
        init: function (u) { u.over.appendChild(tip); },
        draw: function (u) {
          var ctx = u.ctx, b = u.bbox, dpr = devicePixelRatio;
          ctx.save();
          ctx.beginPath();
          ctx.rect(b.left, b.top, b.width, b.height);
          ctx.clip();
          ctx.lineWidth = dpr;
          ctx.setLineDash([4 * dpr, 3 * dpr]);
          visibleEvents().forEach(function (e) {
            var x = Math.round(u.valToPos(e.step, 'x', true)) + 0.5;
            if (x < b.left || x > b.left + b.width) return;
            ctx.strokeStyle = e.color;
            ctx.globalAlpha = 0.75;
            ctx.beginPath();
            ctx.moveTo(x, b.top);
            ctx.lineTo(x, b.top + b.height);
            ctx.stroke();
            ctx.globalAlpha = 1;
            ctx.fillStyle = e.color; // a small flag at the top makes markers findable
            ctx.beginPath();
            ctx.moveTo(x - 4 * dpr, b.top);
            ctx.lineTo(x + 4 * dpr, b.top);
            ctx.lineTo(x, b.top + 6 * dpr);
            ctx.fill();
          });
          ctx.restore();
        },
        setCursor: function (u) {
          var left = u.cursor.left;
          var near = null;
          if (left != null && left >= 0) {
            visibleEvents().forEach(function (e) {
              var d = Math.abs(u.valToPos(e.step, 'x') - left);
              if (d <= 4 && (!near || d < near.d)) near = { d: d, e: e };
            });
          }
          if (!near) { tip.style.display = 'none'; return; }
          tip.textContent = 'step ' + near.e.step + ': ' + near.e.event;
          tip.style.display = 'block';
          tip.style.left = Math.min(left + 8, u.over.clientWidth - tip.offsetWidth) + 'px';
          tip.style.top = '4px';
        },
      },
    };
  }

  function chartOptions(panel, el, logY, width, height) {
    var series = [{ label: 'step', value: function (u, v) { return v == null ? '—' : String(v); } }];
    var nx = Math.max.apply(null, panel.series.map(function (s) { return payload.data[s.key].x.length; }));
    panel.series.forEach(function (s, i) {
      var color = s.color || PALETTE[i % PALETTE.length];
      var n = payload.data[s.key].x.length;
      var sparse = n < 30 || n * 4 < nx; // eval-style series: show the measured points
      series.push({
        label: s.label,
        stroke: color,
        width: 1.5,
        spanGaps: !!s.spanGaps,
        points: sparse ? { show: true, size: 5, stroke: color, fill: '#fff' } : {},
        value: function (u, v) { return fmt(v); },
      });
    });
    var grid = { stroke: '#eef0f3', width: 1 };
    var axisStyle = { stroke: '#4b5563', grid: grid, ticks: { stroke: '#d1d5db', width: 1, size: 4 } };
    return {
      width: width,
      height: height,
      cursor: { sync: { key: 'keel-step' }, drag: { x: true, y: false } },
      scales: { x: { time: false }, y: logY ? { distr: 3, log: 10 } : {} },
      axes: [
        Object.assign({ label: 'step', values: ticks, space: 60 }, axisStyle),
        Object.assign({ label: panel.yLabel || panel.title, values: ticks, size: axisSize }, axisStyle),
      ],
      series: series,
      legend: { live: true },
      plugins: panel.events ? [eventsPlugin(el)] : [],
    };
  }

  function build(entry) {
    if (entry.chart) entry.chart.destroy();
    var width = Math.max(entry.el.clientWidth, 280);
    var opts = chartOptions(entry.panel, entry.el, entry.logY, width, entry.height);
    entry.chart = new uPlot(opts, align(entry.panel, entry.logY), entry.el);
  }

  function eventLegend(entry) {
    var kinds = [];
    payload.events.forEach(function (e) {
      if (e.step != null && kinds.every(function (k) { return k.event !== e.event; })) kinds.push({ event: e.event, color: e.color, n: 0 });
    });
    if (kinds.length === 0) return null;
    payload.events.forEach(function (e) { kinds.forEach(function (k) { if (k.event === e.event) k.n++; }); });
    var box = document.createElement('div');
    box.className = 'event-legend';
    kinds.forEach(function (k) {
      var label = document.createElement('label');
      var cb = document.createElement('input');
      cb.type = 'checkbox';
      // Routine, frequent events (every checkpoint of a long run) would hide the curve: start them off.
      if (k.n > 25) hiddenEvents[k.event] = true;
      cb.checked = !hiddenEvents[k.event];
      cb.addEventListener('change', function () {
        hiddenEvents[k.event] = !cb.checked;
        entry.chart.redraw(false, false);
      });
      var sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = k.color;
      label.append(cb, sw, k.event + ' (' + k.n + ')');
      box.appendChild(label);
    });
    return box;
  }

  function addPanel(panel, root) {
    var card = document.createElement('div');
    card.className = 'panel' + (panel.wide ? ' wide' : '');
    var head = document.createElement('div');
    head.className = 'panel-head';
    var h = document.createElement('h2');
    h.textContent = panel.title;
    var toggle = document.createElement('label');
    var cb = document.createElement('input');
    cb.type = 'checkbox';
    cb.checked = !!panel.logY;
    toggle.append(cb, ' log y');
    head.append(h, toggle);
    var el = document.createElement('div');
    el.className = 'chart';
    card.append(head, el);
    root.appendChild(card);
    var entry = { panel: panel, el: el, logY: !!panel.logY, height: panel.wide ? 340 : 240, chart: null };
    var legend = panel.events ? eventLegend(entry) : null;
    build(entry);
    if (legend) card.appendChild(legend);
    cb.addEventListener('change', function () { entry.logY = cb.checked; build(entry); });
    charts.push(entry);
  }

  /* Follow the window: resize every chart to its container, at most once per frame. */
  var pending = false;
  function resizeAll() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () {
      pending = false;
      charts.forEach(function (c) {
        var w = Math.max(c.el.clientWidth, 280);
        if (w !== c.chart.width) c.chart.setSize({ width: w, height: c.height });
      });
    });
  }

  var root = document.getElementById('panels');
  payload.panels.forEach(function (p) { addPanel(p, root); });
  if (typeof ResizeObserver === 'function') new ResizeObserver(resizeAll).observe(root);
  else window.addEventListener('resize', resizeAll);
})();
