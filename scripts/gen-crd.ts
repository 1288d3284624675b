// Writes the HotStandbyCluster CRD, generated from src/api, to crds/ and to the
// Helm chart's crds/. Run: npm run gen:crd (a unit test fails when the
// committed files differ from what this produces).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderCrdYaml, CRD_FILE_NAME, CRD_OUTPUT_DIRS } from '../src/api/render.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const yaml = renderCrdYaml();
for (const dir of CRD_OUTPUT_DIRS) {
  const file = path.join(root, dir, CRD_FILE_NAME);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, yaml);
  console.log(`wrote ${path.relative(root, file)}`);
}
