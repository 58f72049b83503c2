// @ts-check
/*
 * Keel report, browser side. Inlined into report.html after uPlot as a module script (its
 * names stay out of the page's globals); reads the JSON payload written by src/report/html.ts
 * and draws one uPlot chart per panel. Plain ES2017, no imports, no network.
 */
// Types for tsc only (JSDoc): the payload is what src/report/html.ts and heatmap.ts build.
/** @typedef {import('./html.ts').ChartPayload} ChartPayload */
/** @typedef {import('./html.ts').PanelSpec} PanelSpec */
/** @typedef {import('./heatmap.ts').HeatmapPayload} HeatmapPayload */
/** @typedef {HeatmapPayload['stats'][number]} HeatmapStat */
/** @typedef {ChartPayload['events'][number]} ChartEvent */
/** @typedef {{ panel: PanelSpec, el: HTMLElement, logY: boolean, height: number, chart: any }} ChartEntry */
/** @typedef {{ lo: number, hi: number, log?: boolean, color: (t: number) => string, t: (v: number) => number }} ColorScale */
/**
 * @typedef {{ W: number, H: number, rows: number, rh: number, gutter: number, top: number, plotH: number,
 *   left: number, right: number, labels: boolean }} Geometry
 */
/**
 * @typedef {{ key: string, bar: HTMLCanvasElement, wrap: HTMLElement, canvas: HTMLCanvasElement, tip: HTMLElement,
 *   g?: Geometry, scale?: ColorScale }} Card
 */
/**
 * @typedef {{ hm: HeatmapPayload, host: HTMLElement, steps: number[], edges: number[], hidden: Record<string, boolean>,
 *   cards: Card[], statByKey: Record<string, HeatmapStat> }} View
 */

/** @type {any} uPlot, inlined before this script */
var uPlot = /** @type {any} */ (window).uPlot;
/** @type {ChartPayload} */
var payload = JSON.parse(/** @type {HTMLElement} */ (document.getElementById('keel-data')).textContent || '{}');
var PALETTE = ['#2563eb', '#ea580c', '#16a34a', '#9333ea', '#0891b2', '#db2777'];
/** @type {Record<string, boolean>} event kind -> true when toggled off */
var hiddenEvents = {};
/** @type {ChartEntry[]} */
var charts = [];

/** Mirrors formatNumber in format.ts: 12.3k, 2.346, 3e-4. @param {number | null | undefined} v */
function fmt(v) {
  if (v == null || !Number.isFinite(v)) return '—';
  if (v === 0) return '0';
  var a = Math.abs(v);
  var units = ['', 'k', 'M', 'G', 'T'];
  if (Number(a.toPrecision(4)) >= 1000 && a < 1e15) {
    var u = 0;
    while (u < units.length - 1 && Number(a.toPrecision(3)) >= 1000) {
      a /= 1000;
      u++;
    }
    return (v < 0 ? '-' : '') + String(Number(a.toPrecision(3))) + units[u];
  }
  if (Number.isInteger(v)) return String(v);
  if (a < 1e-3 || a >= 1e15)
    return v
      .toExponential(2)
      .replace(/\.?0+e/, 'e')
      .replace('e-0', 'e-')
      .replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}

/*
 * uPlot wants one shared x array. Series are logged at different steps (val every N steps),
 * so x is the union and a series holds `undefined` where it has no point: uPlot bridges
 * undefined but breaks lines at null, which keeps real gaps (non-finite values) visible.
 */
/** @param {PanelSpec} panel @param {boolean} logY */
function align(panel, logY) {
  /** @type {Set<number>} */
  var seen = new Set();
  panel.series.forEach(function (s) {
    payload.data[s.key].x.forEach(function (x) {
      seen.add(x);
    });
  });
  var xs = Array.from(seen).sort(function (a, b) {
    return a - b;
  });
  var at = new Map(
    xs.map(function (x, i) {
      return [x, i];
    }),
  );
  var cols = panel.series.map(function (s) {
    var d = payload.data[s.key];
    var col = new Array(xs.length).fill(undefined);
    for (var i = 0; i < d.x.length; i++) {
      var v = d.y[i];
      if (logY && v != null && v <= 0) v = null; // log scale cannot place them
      col[/** @type {number} */ (at.get(d.x[i]))] = v;
    }
    return col;
  });
  return [/** @type {(number | null | undefined)[]} */ (xs)].concat(cols);
}

/* Y axis wide enough for its longest tick label, so small learning rates are not clipped. */
/** @param {any} self uPlot @param {string[] | null} values @param {number} axisIdx @param {number} cycleNum */
function axisSize(self, values, axisIdx, cycleNum) {
  var axis = self.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  var size = axis.ticks.size + axis.gap;
  var longest = (values || []).reduce(function (a, v) {
    return v && v.length > a.length ? v : a;
  }, '');
  if (longest) {
    self.ctx.font = axis.font[0];
    size += self.ctx.measureText(longest).width / devicePixelRatio;
  }
  return Math.ceil(size) + 4;
}

/** @param {any} _self uPlot @param {(number | null)[]} splits */
function ticks(_self, splits) {
  return splits.map(function (v) {
    return v == null ? '' : fmt(v);
  });
}

function visibleEvents() {
  return payload.events.filter(function (e) {
    return e.step != null && !hiddenEvents[e.event];
  });
}

/* Vertical dashed markers for run events, plus a tooltip naming the one under the cursor. */
function eventsPlugin() {
  var tip = document.createElement('div');
  tip.className = 'event-tip';
  return {
    hooks: {
      init: function (/** @type {any} */ u) {
        u.over.appendChild(tip);
      },
      draw: function (/** @type {any} */ u) {
        var ctx = u.ctx,
          b = u.bbox,
          dpr = devicePixelRatio;
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
      setCursor: function (/** @type {any} */ u) {
        var left = u.cursor.left;
        /** @type {{ d: number, e: ChartEvent } | null} */
        var near = null;
        if (left != null && left >= 0) {
          visibleEvents().forEach(function (e) {
            var d = Math.abs(u.valToPos(e.step, 'x') - left);
            if (d <= 4 && (!near || d < near.d)) near = { d: d, e: e };
          });
        }
        if (!near) {
          tip.style.display = 'none';
          return;
        }
        var hit = /** @type {{ d: number, e: ChartEvent }} */ (near);
        tip.textContent = 'step ' + hit.e.step + ': ' + hit.e.event;
        tip.style.display = 'block';
        tip.style.left = Math.min(left + 8, u.over.clientWidth - tip.offsetWidth) + 'px';
        tip.style.top = '4px';
      },
    },
  };
}

/** @param {PanelSpec} panel @param {boolean} logY @param {number} width @param {number} height */
function chartOptions(panel, logY, width, height) {
  /** @type {object[]} */
  var series = [
    {
      label: 'step',
      value: function (/** @type {any} */ _u, /** @type {number | null} */ v) {
        return v == null ? '—' : String(v);
      },
    },
  ];
  var nx = Math.max.apply(
    null,
    panel.series.map(function (s) {
      return payload.data[s.key].x.length;
    }),
  );
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
      value: function (/** @type {any} */ _u, /** @type {number | null} */ v) {
        return fmt(v);
      },
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
    plugins: panel.events ? [eventsPlugin()] : [],
  };
}

/** @param {ChartEntry} entry */
function build(entry) {
  if (entry.chart) entry.chart.destroy();
  var width = Math.max(entry.el.clientWidth, 280);
  var opts = chartOptions(entry.panel, entry.logY, width, entry.height);
  entry.chart = new uPlot(opts, align(entry.panel, entry.logY), entry.el);
}

/** @param {ChartEntry} entry */
function eventLegend(entry) {
  /** @type {{ event: string, color: string, n: number }[]} */
  var kinds = [];
  payload.events.forEach(function (e) {
    if (
      e.step != null &&
      kinds.every(function (k) {
        return k.event !== e.event;
      })
    )
      kinds.push({ event: e.event, color: e.color, n: 0 });
  });
  if (kinds.length === 0) return null;
  payload.events.forEach(function (e) {
    kinds.forEach(function (k) {
      if (k.event === e.event) k.n++;
    });
  });
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

/** @param {PanelSpec} panel @param {HTMLElement} root */
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
  /** @type {ChartEntry} */
  var entry = { panel: panel, el: el, logY: !!panel.logY, height: panel.wide ? 340 : 240, chart: null };
  var legend = panel.events ? eventLegend(entry) : null;
  build(entry);
  if (legend) card.appendChild(legend);
  cb.addEventListener('change', function () {
    entry.logY = cb.checked;
    build(entry);
  });
  charts.push(entry);
}

/**
 * `fn`, run at most once per animation frame however often the returned function is called
 * (resize events come in bursts).
 * @param {() => void} fn
 * @returns {() => void}
 */
function oncePerFrame(fn) {
  var queued = false;
  return function () {
    if (queued) return;
    queued = true;
    requestAnimationFrame(function () {
      queued = false;
      fn();
    });
  };
}

/* Follow the window: resize every chart to its container. */
var resizeAll = oncePerFrame(function () {
  charts.forEach(function (c) {
    var w = Math.max(c.el.clientWidth, 280);
    if (w !== c.chart.width) c.chart.setSize({ width: w, height: c.height });
  });
});

/*
 * Per-tensor diagnostics (src/report/heatmap.ts): one canvas per statistic, x = diagnosed
 * step, y = tensor. Colours: viridis (sequential, linear or log10) and RdBu (diverging around
 * 0), both perceptually ordered; grey = no value. Markers: dashed verticals at spikes and
 * interventions. Hover: every statistic of the cell and its histogram of r.
 * The functions below share one `view`: the payload, its host element, the column edges,
 * the cards drawn and the marker kinds toggled off.
 */
/** @param {HeatmapPayload} hm @param {HTMLElement} host */
function heatmaps(hm, host) {
  /** @type {Record<string, HeatmapStat>} */
  var statByKey = {};
  hm.stats.forEach(function (s) {
    statByKey[s.key] = s;
  });
  /** @type {View} */
  var view = { hm: hm, host: host, steps: hm.steps, edges: columnEdges(hm.steps), hidden: {}, cards: [], statByKey: statByKey };
  markerLegend(view);
  (hm.initial.length
    ? hm.initial
    : hm.stats.slice(0, 4).map(function (s) {
        return s.key;
      })
  ).forEach(function (key) {
    addCard(view, key);
  });
  var redrawAll = oncePerFrame(function () {
    view.cards.forEach(function (c) {
      if (!c.g || Math.max(c.wrap.clientWidth, 320) !== c.g.W) drawHeatmap(view, c);
    });
  });
  if (typeof ResizeObserver === 'function') new ResizeObserver(redrawAll).observe(host);
  else window.addEventListener('resize', redrawAll);
}

/* Column edges in step units: midpoints between diagnosed steps, half a gap beyond the ends. */
/** @param {number[]} steps */
function columnEdges(steps) {
  var n = steps.length;
  var gap0 = n > 1 ? steps[1] - steps[0] : 1,
    gapN = n > 1 ? steps[n - 1] - steps[n - 2] : 1;
  var edges = [steps[0] - gap0 / 2];
  for (var i = 1; i < n; i++) edges.push((steps[i - 1] + steps[i]) / 2);
  edges.push(steps[n - 1] + gapN / 2);
  return edges;
}

var VIRIDIS = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89', '#35b779', '#6ece58', '#b5de2b', '#fde725'];
var RDBU = ['#2166ac', '#4393c3', '#92c5de', '#d1e5f0', '#f7f7f7', '#fddbc7', '#f4a582', '#d6604d', '#b2182b'];
var NONE = '#e5e7eb';

/** A canvas's 2-D context (every browser that runs this script has one). @param {HTMLCanvasElement} cv */
function context2d(cv) {
  return /** @type {CanvasRenderingContext2D} */ (cv.getContext('2d'));
}

/**
 * The canvas sized to W×H CSS pixels at the screen's pixel ratio, and its context drawing in CSS pixels.
 * @param {HTMLCanvasElement} cv @param {number} W @param {number} H
 */
function sizedContext(cv, W, H) {
  var dpr = window.devicePixelRatio || 1;
  cv.width = Math.round(W * dpr);
  cv.height = Math.round(H * dpr);
  cv.style.width = W + 'px';
  cv.style.height = H + 'px';
  var ctx = context2d(cv);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/** @param {string} hex */
function rgb(hex) {
  return [1, 3, 5].map(function (i) {
    return parseInt(hex.slice(i, i + 2), 16);
  });
}
/** @param {string[]} hexes @returns {(t: number) => string} */
function ramp(hexes) {
  var stops = hexes.map(rgb);
  /** @type {string[]} */
  var lut = [];
  for (var k = 0; k < 256; k++) {
    var t = (k / 255) * (stops.length - 1),
      i = Math.min(Math.floor(t), stops.length - 2),
      f = t - i;
    var c = [0, 1, 2].map(function (j) {
      return Math.round(stops[i][j] + f * (stops[i + 1][j] - stops[i][j]));
    });
    lut.push('rgb(' + c.join(',') + ')');
  }
  return function (t) {
    return lut[Math.max(0, Math.min(255, Math.round(t * 255)))];
  };
}
var SEQ = ramp(VIRIDIS),
  DIV = ramp(RDBU);

/* Maps a value to [0, 1] for the statistic's colour scale; domain from the data unless fixed. */
/** @param {HeatmapPayload} hm @param {HeatmapStat} stat @returns {ColorScale} */
function scaleOf(hm, stat) {
  var lo = Infinity,
    hi = -Infinity,
    amax = 0;
  hm.values[stat.key].forEach(function (row) {
    row.forEach(function (v) {
      if (v == null || !Number.isFinite(v)) return;
      if (stat.scale === 'log' && v <= 0) return;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      if (Math.abs(v) > amax) amax = Math.abs(v);
    });
  });
  if (stat.scale === 'diverging') {
    var m = stat.max != null ? stat.max : amax || 1;
    return {
      lo: -m,
      hi: m,
      color: DIV,
      t: function (v) {
        return (v + m) / (2 * m);
      },
    };
  }
  if (stat.min != null) lo = stat.min;
  if (stat.max != null) hi = stat.max;
  if (!Number.isFinite(lo)) {
    lo = stat.scale === 'log' ? 1e-8 : 0;
    hi = stat.scale === 'log' ? 1 : 1;
  }
  if (stat.scale === 'log') {
    var a = Math.log10(lo),
      b = Math.log10(hi);
    if (b - a < 1e-9) {
      a -= 0.5;
      b += 0.5;
    }
    return {
      lo: Math.pow(10, a),
      hi: Math.pow(10, b),
      log: true,
      color: SEQ,
      t: function (v) {
        return v <= 0 ? 0 : (Math.log10(v) - a) / (b - a);
      },
    };
  }
  if (hi - lo < 1e-12) {
    hi = lo + 1;
  }
  return {
    lo: lo,
    hi: hi,
    color: SEQ,
    t: function (v) {
      return (v - lo) / (hi - lo);
    },
  };
}

/** @param {number} lo @param {number} hi @param {number} count */
function niceTicks(lo, hi, count) {
  var span = hi - lo,
    raw = span / Math.max(count, 1);
  var mag = Math.pow(10, Math.floor(Math.log10(raw))),
    step = mag;
  [1, 2, 5, 10].some(function (f) {
    step = f * mag;
    return step >= raw;
  });
  var out = [];
  for (var v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(Math.round(v));
  return out;
}

/** @param {HeatmapPayload} hm @param {Card} card @returns {Geometry} */
function geometry(hm, card) {
  var W = Math.max(card.wrap.clientWidth, 320);
  var rows = hm.tensors.length;
  var rh = Math.max(3, Math.min(14, Math.floor(600 / rows)));
  var ctx = context2d(card.canvas);
  ctx.font = '11px system-ui, sans-serif';
  var labelW = 0;
  if (rh >= 9)
    hm.labels.forEach(function (l) {
      labelW = Math.max(labelW, ctx.measureText(l).width);
    });
  var groupW = 0;
  hm.groups.forEach(function (g) {
    groupW = Math.max(groupW, ctx.measureText(g.label).width);
  });
  var gutter = Math.min(Math.ceil(groupW + (labelW ? labelW + 14 : 0) + 12), Math.floor(W * 0.45));
  var top = 10,
    plotH = rows * rh;
  return { W: W, H: top + plotH + 26, rows: rows, rh: rh, gutter: gutter, top: top, plotH: plotH, left: gutter, right: W - 10, labels: rh >= 9 };
}

/** @param {Card} card @param {HeatmapStat} stat @param {ColorScale} sc */
function drawColorbar(card, stat, sc) {
  var W = 260,
    H = 30,
    x0 = 8,
    x1 = W - 8;
  var ctx = sizedContext(card.bar, W, H);
  ctx.clearRect(0, 0, W, H);
  for (var x = x0; x < x1; x++) {
    ctx.fillStyle = sc.color((x - x0) / (x1 - x0));
    ctx.fillRect(x, 2, 1.5, 10);
  }
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#4b5563';
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left';
  ctx.fillText(fmt(sc.lo), x0, 15);
  ctx.textAlign = 'right';
  ctx.fillText(fmt(sc.hi) + (sc.log ? ' (log)' : ''), x1, 15);
  if (stat.ref != null) {
    var t = sc.t(stat.ref);
    if (t > 0.08 && t < 0.92) {
      var rx = x0 + t * (x1 - x0);
      ctx.fillStyle = '#111827';
      ctx.fillRect(Math.round(rx), 0, 1, 14);
      ctx.textAlign = 'center';
      ctx.fillText(stat.refLabel || fmt(stat.ref), rx, 15);
    }
  }
}

/** @param {number[]} h */
function histCanvas(h) {
  var W = 200,
    H = 48;
  var cv = document.createElement('canvas');
  var ctx = sizedContext(cv, W, H);
  var max = Math.max.apply(null, h.concat([1e-9])),
    bw = W / h.length;
  ctx.fillStyle = 'rgba(255,255,255,.15)';
  ctx.fillRect(0, 0, W, H - 10);
  ctx.fillStyle = '#93c5fd';
  h.forEach(function (f, i) {
    var bh = (f / max) * (H - 12);
    ctx.fillRect(i * bw + 0.5, H - 10 - bh, Math.max(bw - 1, 1), bh);
  });
  ctx.fillStyle = '#f9fafb';
  ctx.font = '9px system-ui, sans-serif';
  ctx.textBaseline = 'bottom';
  [-2, -1, 0, 1, 2].forEach(function (v) {
    var x = ((v + 2) / 4) * (W - bw) + bw / 2;
    ctx.textAlign = v === -2 ? 'left' : v === 2 ? 'right' : 'center';
    ctx.fillText(String(v), x, H);
  });
  return cv;
}

/** @param {View} view */
function visibleMarkers(view) {
  return view.hm.markers.filter(function (m) {
    return !view.hidden[m.event];
  });
}

/** @param {View} view @param {Geometry} g @param {number} step */
function xOf(view, g, step) {
  return g.left + ((step - view.edges[0]) / (view.edges[view.edges.length - 1] - view.edges[0])) * (g.right - g.left);
}

/** @param {View} view @param {Card} card */
function drawHeatmap(view, card) {
  var g = geometry(view.hm, card);
  card.g = g;
  var ctx = sizedContext(card.canvas, g.W, g.H);
  ctx.clearRect(0, 0, g.W, g.H);
  var stat = view.statByKey[card.key],
    sc = scaleOf(view.hm, stat);
  card.scale = sc;
  var vals = view.hm.values[card.key];
  for (var c = 0; c < view.steps.length; c++) {
    // Whole-pixel cell view.edges: no anti-aliased seams between columns.
    var x0 = Math.round(xOf(view, g, view.edges[c])),
      x1 = Math.max(Math.round(xOf(view, g, view.edges[c + 1])), x0 + 1);
    for (var r = 0; r < g.rows; r++) {
      var v = vals[r][c];
      ctx.fillStyle = v == null || !Number.isFinite(v) ? NONE : sc.color(sc.t(v));
      ctx.fillRect(x0, g.top + r * g.rh, x1 - x0, g.rh);
    }
  }
  // Layer separators and labels.
  ctx.font = '11px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  view.hm.groups.forEach(function (grp) {
    var y = g.top + grp.start * g.rh;
    if (grp.start > 0) {
      ctx.fillStyle = '#ffffff';
      ctx.fillRect(g.left, y - 0.5, g.right - g.left, 1);
      ctx.fillStyle = '#9ca3af';
      ctx.fillRect(4, y - 0.5, g.gutter - 8, 1);
    }
    ctx.fillStyle = '#1f2937';
    ctx.textAlign = 'left';
    ctx.font = '600 11px system-ui, sans-serif';
    ctx.fillText(grp.label, 4, g.labels ? y + g.rh / 2 : y + (grp.count * g.rh) / 2);
  });
  if (g.labels) {
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#4b5563';
    ctx.textAlign = 'right';
    view.hm.labels.forEach(function (l, r) {
      ctx.fillText(l, g.gutter - 6, g.top + r * g.rh + g.rh / 2);
    });
  }
  // Step axis.
  ctx.fillStyle = '#4b5563';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  niceTicks(view.edges[0], view.edges[view.edges.length - 1], Math.floor((g.right - g.left) / 90)).forEach(function (s) {
    var x = xOf(view, g, s);
    ctx.fillRect(Math.round(x), g.top + g.plotH, 1, 4);
    ctx.fillText(fmt(s), x, g.top + g.plotH + 6);
  });
  // Markers: dashed verticals with a flag on top.
  ctx.save();
  ctx.beginPath();
  ctx.rect(g.left, 0, g.right - g.left, g.top + g.plotH);
  ctx.clip();
  ctx.setLineDash([4, 3]);
  ctx.lineWidth = 1.5;
  visibleMarkers(view).forEach(function (m) {
    var x = Math.round(xOf(view, g, m.step)) + 0.5;
    ctx.strokeStyle = m.color;
    ctx.beginPath();
    ctx.moveTo(x, g.top);
    ctx.lineTo(x, g.top + g.plotH);
    ctx.stroke();
    ctx.fillStyle = m.color;
    ctx.beginPath();
    ctx.moveTo(x - 5, 0);
    ctx.lineTo(x + 5, 0);
    ctx.lineTo(x, g.top);
    ctx.fill();
  });
  ctx.restore();
  drawColorbar(card, stat, sc);
}

/* The cell under the mouse, or null. */
/** @param {View} view @param {Card} card @param {number} px @param {number} py */
function cellAt(view, card, px, py) {
  var g = card.g;
  if (!g || px < g.left || px > g.right || py < g.top || py >= g.top + g.plotH) return null;
  var step = view.edges[0] + ((px - g.left) / (g.right - g.left)) * (view.edges[view.edges.length - 1] - view.edges[0]);
  var c = 0;
  while (c < view.steps.length - 1 && view.edges[c + 1] <= step) c++;
  return { row: Math.floor((py - g.top) / g.rh), col: c };
}

/** @param {View} view @param {Card} card @param {MouseEvent} e */
function showTip(view, card, e) {
  var rect = card.canvas.getBoundingClientRect();
  var px = e.clientX - rect.left,
    py = e.clientY - rect.top;
  var cell = cellAt(view, card, px, py);
  if (!cell) {
    card.tip.style.display = 'none';
    return;
  }
  var at = cell;
  var g = /** @type {Geometry} */ (card.g); // cellAt found a cell: the card has been drawn
  var tip = card.tip;
  tip.textContent = '';
  var head = document.createElement('div');
  head.className = 'hm-tip-head';
  head.textContent = view.hm.tensors[at.row] + ' · step ' + view.steps[at.col];
  tip.appendChild(head);
  visibleMarkers(view).forEach(function (m) {
    if (Math.abs(xOf(view, g, m.step) - px) <= 4) {
      var d = document.createElement('div');
      d.textContent = 'step ' + m.step + ': ' + m.event;
      d.style.color = m.color;
      tip.appendChild(d);
    }
  });
  var table = document.createElement('table');
  view.hm.stats.forEach(function (s) {
    var v = view.hm.values[s.key][at.row][at.col];
    var tr = document.createElement('tr');
    if (s.key === card.key) tr.className = 'current';
    var th = document.createElement('th'),
      td = document.createElement('td');
    th.textContent = s.label;
    td.textContent = fmt(v);
    tr.append(th, td);
    table.appendChild(tr);
  });
  tip.appendChild(table);
  var h = view.hm.hist?.[at.row][at.col];
  if (h) {
    var cap = document.createElement('div');
    cap.textContent = 'histogram of r (update / lr)';
    tip.append(cap, histCanvas(h));
  }
  tip.style.display = 'block';
  var wrapW = card.wrap.clientWidth;
  var left = px + 14;
  if (left + tip.offsetWidth > wrapW) left = Math.max(0, px - 14 - tip.offsetWidth);
  tip.style.left = left + 'px';
  tip.style.top = Math.max(0, Math.min(py + 10, g.H - tip.offsetHeight)) + 'px';
}

/** @param {View} view @param {string} key */
function addCard(view, key) {
  /** @type {Card} */
  var card = {
    key: key,
    bar: document.createElement('canvas'),
    wrap: document.createElement('div'),
    canvas: document.createElement('canvas'),
    tip: document.createElement('div'),
  };
  var box = document.createElement('div');
  box.className = 'panel heatmap';
  var head = document.createElement('div');
  head.className = 'panel-head';
  var sel = document.createElement('select');
  view.hm.stats.forEach(function (s) {
    var o = document.createElement('option');
    o.value = s.key;
    o.textContent = s.label;
    sel.appendChild(o);
  });
  sel.value = key;
  var doc = document.createElement('span');
  doc.className = 'hm-doc';
  card.bar.className = 'hm-bar';
  head.append(sel, doc, card.bar);
  card.wrap.className = 'hm-wrap';
  card.tip.className = 'hm-tip';
  card.wrap.append(card.canvas, card.tip);
  box.append(head, card.wrap);
  view.host.appendChild(box);
  function setDoc() {
    doc.textContent = view.statByKey[card.key].doc;
  }
  setDoc();
  sel.addEventListener('change', function () {
    card.key = sel.value;
    setDoc();
    drawHeatmap(view, card);
  });
  card.canvas.addEventListener('mousemove', function (/** @type {MouseEvent} */ e) {
    showTip(view, card, e);
  });
  card.canvas.addEventListener('mouseleave', function () {
    card.tip.style.display = 'none';
  });
  view.cards.push(card);
  drawHeatmap(view, card);
}

/** @param {View} view */
function markerLegend(view) {
  /** @type {{ event: string, color: string, n: number }[]} */
  var kinds = [];
  view.hm.markers.forEach(function (m) {
    var k = kinds.filter(function (x) {
      return x.event === m.event;
    })[0];
    if (!k) kinds.push((k = { event: m.event, color: m.color, n: 0 }));
    k.n++;
  });
  if (kinds.length === 0) return;
  var box = document.createElement('div');
  box.className = 'event-legend';
  kinds.forEach(function (k) {
    if (k.n > 25 && k.event !== 'spike') view.hidden[k.event] = true;
    var label = document.createElement('label');
    var cb = document.createElement('input');
    cb.type = 'checkbox';
    cb.checked = !view.hidden[k.event];
    cb.addEventListener('change', function () {
      view.hidden[k.event] = !cb.checked;
      view.cards.forEach(function (c) {
        drawHeatmap(view, c);
      });
    });
    var sw = document.createElement('span');
    sw.className = 'swatch';
    sw.style.background = k.color;
    label.append(cb, sw, k.event + ' (' + k.n + ')');
    box.appendChild(label);
  });
  view.host.appendChild(box);
}

var root = /** @type {HTMLElement} */ (document.getElementById('panels'));
payload.panels.forEach(function (p) {
  addPanel(p, root);
});
if (typeof ResizeObserver === 'function') new ResizeObserver(resizeAll).observe(root);
else window.addEventListener('resize', resizeAll);
var heatmapHost = document.getElementById('heatmap-cards');
if (payload.heatmaps && heatmapHost) heatmaps(payload.heatmaps, heatmapHost);

export {}; // a module: nothing is exported, its names stay its own
