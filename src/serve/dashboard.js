// @ts-check
/* The live dashboard of `keel serve` (src/serve/server.ts serves it at /): the runs, and for the
   chosen one the panels of report.html: loss with validation, gradient norm, learning rate,
   batch size, noise scale and diagnostics (the last three when the run sends them), every
   decision other than proceed marked on each chart (its kind at the top, its reason in the table
   below), updated live over Server-Sent Events. A module script (its names stay out of the
   page's globals), no build; uPlot is loaded before it. Authentication is the session cookie
   the login link set.
   x is the report's position in the run (a rollback replays steps, so the step number alone
   would go backwards); the cursor's legend shows the step. */
/** @type {any} */
const uPlot = /** @type {any} */ (window).uPlot;
const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const NOISE_EMA = 0.05; // weight of the newest step's sums in the noise-scale estimate
const MAX_DIAG_SERIES = 6;
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#d97706', '#0891b2'];
const MARK = { skip: '#9333ea', rollback: '#d97706', stop: '#111827', set_lr: '#0d9488', set_batch: '#0d9488', proceed: '#dc2626' };

/**
 * @typedef {{ x: number[], step: number[], loss: (number|null)[], val: (number|null)[], grad: (number|null)[],
 *   lr: (number|null)[], batch: (number|null)[], noise: (number|null)[], diag: Map<string, (number|null)[]>,
 *   events: any[], lrMultiplier: number, ema: {g2: number, trace: number, n: number} }} Series
 */
/** @returns {Series} */
const empty = () => ({
  x: [],
  step: [],
  loss: [],
  val: [],
  grad: [],
  lr: [],
  batch: [],
  noise: [],
  diag: new Map(),
  events: [],
  lrMultiplier: 1,
  ema: { g2: 0, trace: 0, n: 0 },
});
let series = empty();
/** @type {any[]} */
let charts = [];
/** @type {EventSource | null} */
let stream = null;
let pending = false;

async function api(/** @type {string} */ route) {
  const r = await fetch('/api/v1' + route, { credentials: 'same-origin' });
  if (!r.ok) throw new Error(route + ': HTTP ' + r.status);
  return r.json();
}

async function listRuns() {
  const { runs } = await api('/runs');
  const ul = $('runs');
  ul.replaceChildren(
    ...runs.map((/** @type {any} */ r) => {
      const li = document.createElement('li');
      li.textContent = r.name + ' (#' + r.id + ', ' + r.reports + ' reports' + (r.mirror ? ', keel train' : '') + ')';
      li.dataset.id = String(r.id);
      li.onclick = () => openRun(r.id, r.name);
      return li;
    }),
  );
  if (!ul.dataset.current && runs.length > 0) openRun(runs[runs.length - 1].id, runs[runs.length - 1].name);
}

/** B_simple from the EMA of one step's unbiased ‖G‖² and tr(Σ) (src/monitor/noise_scale.ts noiseFromSums). */
function noiseScale(/** @type {any} */ n) {
  if (!n || !(n.b_big > n.b_small)) return null;
  const g2 = (n.b_big * n.g_big_sq - n.b_small * n.g_small_sq) / (n.b_big - n.b_small);
  const trace = (n.g_small_sq - n.g_big_sq) / (1 / n.b_small - 1 / n.b_big);
  const e = series.ema;
  const a = e.n === 0 ? 1 : NOISE_EMA;
  e.g2 += a * (g2 - e.g2);
  e.trace += a * (trace - e.trace);
  e.n += 1;
  return e.g2 > 0 && e.trace > 0 ? e.trace / e.g2 : null;
}

/** @param {{report: any, decision: any}} row */
function addRow(row) {
  const { report: r, decision: d } = row;
  const i = series.x.length;
  series.x.push(i + 1);
  series.step.push(r.step);
  series.loss.push(r.loss);
  series.val.push(null);
  series.grad.push(r.grad_norm);
  series.lr.push(r.lr === null || r.lr === undefined ? null : r.lr);
  series.batch.push(r.batch);
  series.noise.push(noiseScale(r.noise));
  for (const [k, v] of Object.entries(r.diag || {})) {
    if (typeof v !== 'number') continue;
    if (!series.diag.has(k)) {
      if (series.diag.size >= MAX_DIAG_SERIES) continue;
      series.diag.set(k, Array(i).fill(null));
    }
  }
  for (const [k, ys] of series.diag) ys.push(r.diag && typeof r.diag[k] === 'number' ? r.diag[k] : null);
  if (d.lr) series.lrMultiplier = d.lr.multiplier;
  if (d.kind !== 'proceed' || d.spikes?.length) series.events.push({ at: i + 1, step: r.step, attempt: r.attempt, kind: d.kind, reason: d.reason });
}

/** An evaluation lands on the newest report of its step. @param {{step: number, metrics: Record<string, number>}} e */
function addEval(e) {
  const i = series.step.lastIndexOf(e.step);
  if (i >= 0 && typeof e.metrics.val_loss === 'number') series.val[i] = e.metrics.val_loss;
}

/** @returns {[string, string[], (number|null)[][], boolean][]} title, labels, series, log scale */
function panels() {
  const s = series;
  const has = (/** @type {(number|null)[]} */ ys) => ys.some((y) => y !== null);
  /** @type {[string, string[], (number|null)[][], boolean][]} */
  const out = [
    ['loss', ['train', 'validation'], [s.loss, s.val], false],
    ['gradient norm', ['‖g‖'], [s.grad], true],
  ];
  out.push(has(s.lr) ? ['learning rate', ['lr'], [s.lr], false] : ['LR multiplier', ['× schedule'], [s.lr.map(() => s.lrMultiplier)], false]);
  out.push(['batch size (sequences)', ['batch'], [s.batch], false]);
  if (has(s.noise)) out.push(['noise scale B_simple (sequences)', ['B_simple'], [s.noise], true]);
  if (s.diag.size > 0) out.push(['diagnostics', [...s.diag.keys()], [...s.diag.values()], false]);
  return out;
}

const markers = {
  hooks: {
    draw: [
      (/** @type {any} */ u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.font = `${10 * devicePixelRatio}px system-ui`;
        for (const e of series.events) {
          const x = u.valToPos(e.at, 'x', true);
          ctx.strokeStyle = ctx.fillStyle = /** @type {any} */ (MARK)[e.kind] || '#dc2626';
          ctx.setLineDash([4, 3]);
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
          ctx.fillText(e.kind === 'proceed' ? 'spike' : e.kind, x + 3, u.bbox.top + 12 * devicePixelRatio);
        }
        ctx.restore();
      },
    ],
  },
};

function draw() {
  pending = false;
  charts.forEach((c) => c.destroy());
  charts = [];
  const root = $('panels');
  root.replaceChildren();
  const width = Math.min(900, root.clientWidth || 900);
  for (const [title, labels, ys, log] of panels()) {
    const div = document.createElement('section');
    div.className = 'panel';
    div.dataset.panel = title;
    const h = document.createElement('h2');
    h.textContent = title;
    div.append(h);
    root.append(div);
    const opts = {
      width,
      height: 180,
      plugins: [markers],
      scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
      series: [
        { label: 'step', value: (/** @type {any} */ _u, /** @type {number} */ v) => (v ? String(series.step[v - 1]) : '—') },
        ...labels.map((l, k) => ({ label: l, stroke: COLORS[k % COLORS.length], spanGaps: true, points: { show: l === 'validation' } })),
      ],
    };
    const data = [series.x, ...ys.map((y) => (log ? y.map((v) => (v !== null && v > 0 ? v : null)) : y))];
    charts.push(new uPlot(opts, data, div));
  }
  $('decisions').replaceChildren(
    ...series.events
      .slice(-200)
      .reverse()
      .map((e) => {
        const tr = document.createElement('tr');
        for (const v of [e.step, e.attempt, e.kind, e.reason]) {
          const td = document.createElement('td');
          td.textContent = String(v);
          tr.append(td);
        }
        return tr;
      }),
  );
  const n = series.x.length;
  $('status').textContent = n ? `last step ${series.step[n - 1]}, batch ${series.batch[n - 1]}` : 'no reports yet';
  $('last').textContent = String(n);
}

/** Redraws at most once per animation frame, however many events arrive. */
function schedule() {
  if (!pending) requestAnimationFrame(draw);
  pending = true;
}

async function openRun(/** @type {number} */ id, /** @type {string} */ name) {
  $('runs').dataset.current = String(id);
  $('title').textContent = name;
  series = empty();
  const { rows, evals } = await api('/runs/' + id + '/metrics?max=5000');
  rows.forEach(addRow);
  (evals || []).forEach(addEval);
  draw();
  if (stream) stream.close();
  stream = new EventSource('/api/v1/runs/' + id + '/events');
  stream.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    (ev.rows || []).forEach(addRow);
    (ev.evals || []).forEach(addEval);
    schedule();
  };
}

listRuns().catch((e) => {
  $('status').textContent = String(e);
});
setInterval(() => listRuns().catch(() => {}), 5000);

export {}; // a module: nothing is exported, its names stay its own
