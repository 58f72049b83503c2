/**
 * A Hugging Face model directory holds, besides its weights, the files `from_pretrained` needs
 * to rebuild the model and its tokenizer. `keel average` on such directories writes a directory
 * of the same shape: the averaged weights plus these files, copied from the first input, so the
 * average loads directly.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';

/** Model config, generation config, tokenizer and processor files; never weights. */
const SIDE_FILE =
  /^(?:(?:config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|preprocessor_config|chat_template)\.(?:json|jinja)|vocab\.(?:json|txt)|merges\.txt|tokenizer\.model|spiece\.model)$/;

/** The side files of an input directory (empty for a file, or a directory with none). */
export function hfSideFiles(input: string): string[] {
  if (!fs.existsSync(input) || !fs.statSync(input).isDirectory()) return [];
  return fs
    .readdirSync(input, { withFileTypes: true })
    .filter((e) => e.isFile() && SIDE_FILE.test(e.name))
    .map((e) => e.name)
    .sort();
}

/** Copies `names` from `from` into `to` (each file atomically). */
export function copySideFiles(from: string, to: string, names: readonly string[]): void {
  for (const n of names) writeFileAtomic(path.join(to, n), fs.readFileSync(path.join(from, n)));
}
