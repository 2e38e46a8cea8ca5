// Builds dist/ with tsc only: ES modules (dist/esm) and CommonJS (dist/cjs), each with its type
// declarations. dist/ is committed; test.sh rebuilds it and fails when it differs from the commit.
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
rmSync(new URL("./dist", import.meta.url), { recursive: true, force: true });
for (const project of ["tsconfig.json", "tsconfig.cjs.json"]) {
  execFileSync(process.execPath, [tsc, "-p", project], { stdio: "inherit", cwd: import.meta.dirname });
}
// The package is "type": "module"; this marks the CommonJS half as such for Node.
writeFileSync(new URL("./dist/cjs/package.json", import.meta.url), '{ "type": "commonjs" }\n');
