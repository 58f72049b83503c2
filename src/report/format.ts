/**
 * Compact number and duration formatting shared by the report and the CLI progress line.
 * Kept free of Node APIs so the same rules can be mirrored in the browser script.
 */

const UNITS = ['', 'k', 'M', 'G', 'T'];

/** Drops trailing zeros of a fixed/precision string: "12.30" → "12.3", "1.00" → "1". */
function trimZeros(s: string): string {
  return s.includes('.') && !s.includes('e') ? s.replace(/\.?0+$/, '') : s;
}

/**
 * Numbers for humans in little space: 12345 → "12.3k", 2.34567 → "2.346", 0.0003 → "3e-4".
 * Non-finite values print as "nan" / "inf" rather than throwing, since a diverged loss is
 * exactly when the user needs to see the line.
 */
export function formatNumber(n: number): string {
  if (Number.isNaN(n)) return 'nan';
  if (!Number.isFinite(n)) return n > 0 ? 'inf' : '-inf';
  if (n === 0) return '0';
  const abs = Math.abs(n);
  if (abs >= 1e15)
    return n
      .toExponential(2)
      .replace(/\.?0+e/, 'e')
      .replace('e+', 'e');
  if (Number(abs.toPrecision(4)) >= 1000) {
    let unit = 0;
    let scaled = abs;
    // Pick the unit after rounding, so 999_950 becomes "1M" and not "1000k".
    while (unit < UNITS.length - 1 && Number(scaled.toPrecision(3)) >= 1000) {
      scaled /= 1000;
      unit++;
    }
    return (n < 0 ? '-' : '') + trimZeros(scaled.toPrecision(3)) + UNITS[unit];
  }
  if (Number.isInteger(n)) return String(n);
  if (abs < 1e-3)
    return n
      .toExponential(2)
      .replace(/\.?0+e/, 'e')
      .replace('e-0', 'e-')
      .replace('e+', 'e');
  return trimZeros(n.toPrecision(4));
}

/** Seconds as "9s", "1m23s", "2h05m", "3d04h"; "--" when unknown (no rate yet). */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  if (seconds < 10) return `${trimZeros(seconds.toFixed(1))}s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const pad = (v: number) => String(v).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${pad(Math.floor((s % 86400) / 3600))}h`;
}

/** `digits` decimals (4 for a loss, the experiments' tables); '—' for a missing or non-finite value. */
export function formatFixed(v: number | null | undefined, digits: number): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(digits);
}
