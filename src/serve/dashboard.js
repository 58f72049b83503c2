// @ts-check
/* The live dashboard of `keel serve` (src/serve/server.ts serves it at /): the runs, and for the
   chosen one its loss, gradient norm and LR multiplier charts with every decision other than
   proceed marked and listed, updated live over Server-Sent Events. Plain script, no build;
   uPlot is loaded before it. Authentication is the session cookie the login URL set. */
(function () {
  'use strict';
  /** @type {any} */
  const uPlot = /** @type {any} */ (window).uPlot;
  const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
  /** @type {{ step: number[], loss: (number|null)[], grad: (number|null)[], lr: (number|null)[], events: any[] }} */
  let series = { step: [], loss: [], grad: [], lr: [], events: [] };
  /** @type {any[]} */
  let charts = [];
  /** @type {EventSource | null} */
  let stream = null;
  let lrMultiplier = 1;

  async function api(/** @type {string} */ route) {
    const r = await fetch('/api/v1' + route, { credentials: 'same-origin' });
    if (!r.ok) throw new Error(route + ': HTTP ' + r.status);
    return r.json();
  }

  async function listRuns() {
    const { runs } = await api('/runs');
    const ul = $('runs');
    ul.replaceChildren(...runs.map((/** @type {any} */ r) => {
      const li = document.createElement('li');
      li.textContent = r.name + ' (#' + r.id + ', ' + r.reports + ' reports)';
      li.dataset.id = String(r.id);
      li.onclick = () => openRun(r.id, r.name);
      return li;
    }));
    const current = ul.dataset.current;
    if (!current && runs.length > 0) openRun(runs[runs.length - 1].id, runs[runs.length - 1].name);
  }

  /** @param {{report: any, decision: any}} row */
  function add(row) {
    const { report: r, decision: d } = row;
    series.step.push(series.step.length + 1);
    series.loss.push(r.loss);
    series.grad.push(r.grad_norm);
    if (d.lr) lrMultiplier = d.lr.multiplier;
    series.lr.push(lrMultiplier);
    if (d.kind !== 'proceed' || (d.spikes && d.spikes.length)) series.events.push({ at: series.step.length, step: r.step, attempt: r.attempt, kind: d.kind, reason: d.reason });
  }

  function draw() {
    charts.forEach((c) => c.destroy());
    const panels = $('panels');
    panels.replaceChildren();
    const marks = series.events;
    const markers = {
      hooks: {
        draw: [(/** @type {any} */ u) => {
          const ctx = u.ctx;
          ctx.save();
          for (const e of marks) {
            const x = u.valToPos(e.at, 'x', true);
            ctx.strokeStyle = e.kind === 'proceed' ? '#dc2626' : e.kind === 'skip' ? '#9333ea' : e.kind === 'rollback' ? '#d97706' : '#0d9488';
            ctx.setLineDash([4, 3]);
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          }
          ctx.restore();
        }],
      },
    };
    const width = Math.min(900, panels.clientWidth || 900);
    for (const [title, ys] of /** @type {[string, (number|null)[]][]} */ ([['loss', series.loss], ['gradient norm', series.grad], ['LR multiplier', series.lr]])) {
      const div = document.createElement('section');
      div.className = 'panel';
      const h = document.createElement('h2');
      h.textContent = title;
      div.append(h);
      panels.append(div);
      charts.push(new uPlot({ width, height: 200, plugins: [markers], scales: { x: { time: false } }, series: [{ label: 'report' }, { label: title, stroke: '#2563eb' }] }, [series.step, ys], div));
    }
    const tbody = $('decisions');
    tbody.replaceChildren(...marks.slice(-200).reverse().map((e) => {
      const tr = document.createElement('tr');
      for (const v of [e.step, e.attempt, e.kind, e.reason]) {
        const td = document.createElement('td');
        td.textContent = String(v);
        tr.append(td);
      }
      return tr;
    }));
    $('status').textContent = series.step.length + ' reports, last step ' + (series.step.length ? 'shown' : '—');
    $('last').textContent = String(series.step.length);
  }

  async function openRun(/** @type {number} */ id, /** @type {string} */ name) {
    $('runs').dataset.current = String(id);
    $('title').textContent = name;
    series = { step: [], loss: [], grad: [], lr: [], events: [] };
    lrMultiplier = 1;
    const { rows } = await api('/runs/' + id + '/metrics?max=5000');
    rows.forEach(add);
    draw();
    if (stream) stream.close();
    stream = new EventSource('/api/v1/runs/' + id + '/events');
    stream.onmessage = (m) => {
      JSON.parse(m.data).rows.forEach(add);
      draw();
    };
  }

  listRuns().catch((e) => { $('status').textContent = String(e); });
  setInterval(() => listRuns().catch(() => {}), 5000);
})();
