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
    .option(
      '--jump <x>',
      `also flag values more than X (relative) above the EMA; 0 disables (default: ${ANALYZE_DEFAULTS.jump} for losses, 0 for other metrics)`,
      float(0),
    )
    .option(
      '--min-rise <x>',
      "a z-score flag must also rise at least X (relative) above the window mean, so a flat series's tiny σ does not turn a 1e-4 bump into a 10,000σ spike",
      float(0),
      ANALYZE_DEFAULTS.minRise,
    )
    .option('--recover-sigma <k>', 'a spike has recovered when the value is back at or below the pre-spike mean + K σ', float(0), ANALYZE_DEFAULTS.recoverSigma)
    .option(
      '--json',
      'print {"metric", "points", "spikes": [{"start", "peak", "end", "height", "height_sigma", "recovered", …}], "nonfinite": {"count", "steps"}, "summary"}',
    )
    .action((file: string, o) => {
      const log = readLog(file);
      const metric = resolveMetric(log, o.metric);
      const all = log.series(metric);
      if (all.length === 0) throw new UserError(`metric "${metric}" in ${log.file} has no points`);
      // NaN and ±Infinity are reported as what they are, not as spikes of infinite height: the
      // spike analysis sees the finite values only.
      const points = all.filter((p) => Number.isFinite(p.value));
      const nonfinite = all.filter((p) => !Number.isFinite(p.value)).map((p) => p.step);
      const jump: number = o.jump ?? defaultSpikeOptions(metric).jump;
      const opts = { window: o.window, threshold: o.threshold, jump, recoverSigma: o.recoverSigma, minRise: o.minRise, metric };
      const { spikes, summary } = analyzeSeries(points, opts);
      if (summary.active_from === null) {
        const finite = points.length;
        throw new UserError(
          `"${metric}" in ${log.file} has ${finite} finite values; spike detection needs more than --window ${o.window} (try --window ${Math.max(2, Math.floor(finite / 4))})`,
        );
      }
      if (o.json) {
        const out = {
          file: log.file,
          format: log.format,
          metric,
          points: all.length,
          options: { window: o.window, threshold: o.threshold, jump, recover_sigma: o.recoverSigma, min_rise: o.minRise },
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
          nonfinite: { count: nonfinite.length, steps: nonfinite },
          summary: { ...summary, points: all.length },
        };
        process.stdout.write(JSON.stringify(out) + '\n');
        return;
      }
      const unit = isLossLike(metric) ? 'nats' : 'units';
      const riseText = o.minRise > 0 ? ` and ≥ ${formatNumber(o.minRise * 100)}% above the mean` : '';
      const jumpText = jump > 0 ? `, or > ${formatNumber(jump * 100)}% above the EMA` : '';
      process.stdout.write(
        `${metric} in ${log.file} (${FORMAT_NAMES[log.format]}): ${all.length} points, steps ${all[0].step}–${all.at(-1)!.step}; ` +
          `tested from step ${summary.active_from} (window ${o.window}, z > ${formatNumber(o.threshold)}${riseText}${jumpText})\n`,
      );
      if (nonfinite.length)
        process.stdout.write(
          `${nonfinite.length} non-finite value${nonfinite.length === 1 ? '' : 's'} (NaN or ±Infinity) at step${nonfinite.length === 1 ? '' : 's'} ${stepList(nonfinite)}\n`,
        );
      if (spikes.length) process.stdout.write(spikeTable(spikes, unit));
      const nr = summary.not_recovered ? `, ${summary.not_recovered} not recovered` : '';
      process.stdout.write(
        spikes.length === 0 ? 'no spikes\n' : `${spikes.length} spike${spikes.length === 1 ? '' : 's'}: ${summary.recovered} recovered${nr}\n`,
      );
    });
}

/** "5, 6, 9" or, past ten, the first ten and a count. */
function stepList(steps: number[]): string {
  return steps.length <= 10 ? steps.join(', ') : `${steps.slice(0, 10).join(', ')} and ${steps.length - 10} more`;
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
