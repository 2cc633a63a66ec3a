// Verifies signed webhook deliveries with the Standard Webhooks reference library (npm
// `standardwebhooks`), as a receiver would. Usage:
//   node standard-webhooks-verify.mjs <file with [{secret, headers, body}, ...]>
// Prints one JSON line: [{ok: true, payload} | {ok: false, error}, ...] in the same order.
import { readFileSync } from 'node:fs';
import { Webhook } from 'standardwebhooks';

const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const results = cases.map(({ secret, headers, body }) => {
  try {
    return { ok: true, payload: new Webhook(secret).verify(body, headers) };
  } catch (e) {
    return { ok: false, error: String(e?.message || e) };
  }
});
process.stdout.write(JSON.stringify(results) + '\n');
