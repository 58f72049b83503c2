/** `keel analyze FILE`: loss spikes in any run's log (Keel, other trainers' JSONL, CSV, TensorBoard). */
import { Command } from 'commander';
import { UserError } from '../errors.ts';
import { FORMAT_NAMES, readLog, resolveMetric } from '../io/logs.ts';
import { ANALYZE_DEFAULTS, analyzeSeries, defaultSpikeOptions, isLossLike, type SpikeSummary } from '../monitor/spikes.ts';
import { formatNumber } from '../report/format.ts';
import { float, int } from './args.ts';

export function analyzeCommand(): Command {
  return new Command('analyze')
    .description(
      'find loss spikes in a training log: Keel metrics.jsonl (or a run dir), JSONL with a step key, CSV with a step column, an llm.c log or a TensorBoard events.out.tfevents.* file (or a dir holding one)',
    )
    .argument('<file>', 'log file, or a directory with metrics.jsonl or events.out.tfevents.*')
    .option('--metric <name>', 'series to analyse: exact name, or the one whose last /-segment matches (loss → train/loss)', 'loss')
    .option('--window <n>', 'rolling window (values) for mean and σ; nothing is flagged until it is full', int(2), ANALYZE_DEFAULTS.window)
    .option('--threshold <z>', 'flag values more than Z σ above the window mean', float(0, true), ANALYZE_DEFAULTS.threshold)
    .option('--jump <x>', `also flag values more than X (relative) above the EMA; 0 disables (default: ${ANALYZE_DEFAULTS.jump} for losses, 0 for other metrics)`, float(0))
    .option('--recover-sigma <k>', 'a spike has recovered when the value is back at or below the pre-spike mean + K σ', float(0), ANALYZE_DEFAULTS.recoverSigma)
    .option('--json', 'print {"metric", "points", "spikes": [{"start", "peak", "end", "height", "height_sigma", "recovered", …}], "summary"}')
    .action((file: string, o) => {
      const log = readLog(file);
      const metric = resolveMetric(log, o.metric);
      const points = log.series(metric);
      if (points.length === 0) throw new UserError(`metric "${metric}" in ${log.file} has no points`);
      const jump: number = o.jump ?? defaultSpikeOptions(metric).jump;
      const opts = { window: o.window, threshold: o.threshold, jump, recoverSigma: o.recoverSigma, metric };
      const { spikes, summary } = analyzeSeries(points, opts);
      if (summary.active_from === null) {
        const finite = points.filter((p) => Number.isFinite(p.value)).length;
        throw new UserError(
          `"${metric}" in ${log.file} has ${finite} finite values; spike detection needs more than --window ${o.window} (try --window ${Math.max(2, Math.floor(finite / 4))})`,
        );
      }
      if (o.json) {
        const out = {
          file: log.file,
          format: log.format,
          metric,
          points: points.length,
          options: { window: o.window, threshold: o.threshold, jump, recover_sigma: o.recoverSigma },
          spikes: spikes.map((s) => ({
            start: s.start,
            peak: s.peak,
            end: s.end,
            height: s.height,
            height_sigma: s.height_sigma,
            recovered: s.recovered,
            value: s.value,
            mean: s.mean,
            std: s.std,
            points: s.points,
          })),
          summary,
        };
        process.stdout.write(JSON.stringify(out) + '\n');
        return;
      }
      const unit = isLossLike(metric) ? 'nats' : 'units';
      const jumpText = jump > 0 ? `, or > ${formatNumber(jump * 100)}% above the EMA` : '';
      process.stdout.write(
        `${metric} in ${log.file} (${FORMAT_NAMES[log.format]}): ${points.length} points, steps ${summary.first_step}–${summary.last_step}; ` +
          `tested from step ${summary.active_from} (window ${o.window}, z > ${formatNumber(o.threshold)}${jumpText})\n`,
      );
      if (spikes.length) process.stdout.write(spikeTable(spikes, unit));
      const nr = summary.not_recovered ? `, ${summary.not_recovered} not recovered` : '';
      process.stdout.write(
        spikes.length === 0 ? 'no spikes\n' : `${spikes.length} spike${spikes.length === 1 ? '' : 's'}: ${summary.recovered} recovered${nr}\n`,
      );
    });
}

function spikeTable(spikes: SpikeSummary[], unit: string): string {
  const signed = (x: number) => (Number.isNaN(x) ? 'nan' : (x > 0 ? '+' : '') + formatNumber(x));
  const rows = [
    ['start', 'peak', 'end', `height (${unit})`, 'height (σ)', 'peak value'],
    ...spikes.map((s) => [
      String(s.start),
      String(s.peak),
      s.end === null ? 'not recovered' : String(s.end),
      signed(s.height),
      formatNumber(s.height_sigma),
      formatNumber(s.value),
    ]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => '  ' + r.map((cell, c) => cell.padStart(widths[c])).join('   ')).join('\n') + '\n';
}
