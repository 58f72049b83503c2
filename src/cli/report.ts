import { Command } from 'commander';
import { writeReport } from '../report/html.ts';

export function reportCommand(): Command {
  return new Command('report')
    .description('(re)write RUN_DIR/report.html from its metrics.jsonl')
    .argument('<run_dir>', 'a keel train run directory')
    .option('--json', 'print {"report": PATH}')
    .action((runDir: string, o) => {
      const file = writeReport(runDir);
      process.stdout.write(o.json ? JSON.stringify({ report: file }) + '\n' : `wrote ${file}\n`);
    });
}
