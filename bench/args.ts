/**
 * What every bench script shares: its command-line flags (`--name value`, `--flag`) and random
 * inputs. Shared statistics are src/util/stats.ts.
 */
const argv = process.argv.slice(2);

/** The value after `--name`, or `dflt` when the flag is absent. */
export function opt(name: string, dflt: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
}

/** Whether `--name` was given. */
export function flag(name: string): boolean {
  return argv.includes(`--${name}`);
}

/** n uniform values in [−s, s). */
export function randomFloats(n: number, s = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (Math.random() * 2 - 1) * s;
  return a;
}
