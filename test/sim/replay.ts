// Replays one simulated membership schedule with a full trace:  npm run sim -- --seed N [--real-hmac]
import { randomSchedule, runMembershipSchedule } from "../../src/testing/sim/membership-sim.js";
import { generateKey, hmacSha256, parseKey } from "../../src/runtime/crypto.js";

const args = process.argv.slice(2);
const i = args.indexOf("--seed");
const seed = i >= 0 ? Number(args[i + 1]) : NaN;
if (!Number.isFinite(seed)) {
  console.error("usage: npm run sim -- --seed N [--real-hmac]");
  process.exit(2);
}
const schedule = randomSchedule(seed >>> 0);
const keys = new Map<string, Uint8Array>();
const realMac = (k: string) => {
  if (!keys.has(k)) keys.set(k, parseKey(generateKey()));
  return hmacSha256(keys.get(k) as Uint8Array);
};
const r = runMembershipSchedule(schedule, { trace: true, ...(args.includes("--real-hmac") ? { mac: realMac } : {}) });
console.log(JSON.stringify({ ...schedule, timing: undefined }, null, 1));
for (const line of r.trace) console.log(line);
console.log(`converged ${r.convergedAfterMs} ms after faults stopped (bound ${r.boundMs} ms); ${r.delivered} datagrams; ${r.adversarial} adversarial`);
for (const v of r.violations) console.log(`VIOLATION ${v.invariant} @${v.at}ms: ${v.detail}`);
process.exit(r.violations.length > 0 ? 1 : 0);
