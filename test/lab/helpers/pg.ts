// PostgreSQL clients in a lab namespace: psql and pgbench against an address (the VIP), and pgbench's
// per-transaction logs read back. Used by the mirror PostgreSQL lab test.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Lab, LabHost, LabProcess } from "../../../src/testing/lab.js";

export const PG_BIN = "/usr/lib/postgresql/15/bin";

/**
 * A libpq connection string for `host`. Keepalives every second (2 lost probes: the connection is dead) so that a
 * client whose server vanished mid-query (link down: no FIN, no RST until the VIP has moved) gives up within a few
 * seconds instead of TCP's two hours.
 */
export function conninfo(host: string, port: number, extra = ""): string {
  return `host=${host} port=${port} user=postgres dbname=postgres connect_timeout=2 keepalives_idle=1 keepalives_interval=1 keepalives_count=2 tcp_user_timeout=3000 ${extra}`.trim();
}

/** psql -At in `who`'s namespace; rejects with psql's stderr on failure. */
export async function psql(lab: Lab, who: LabHost, conn: string, sql: string, timeoutMs = 20_000): Promise<string> {
  const r = await lab.exec(who, [`${PG_BIN}/psql`, conn, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], { timeoutMs });
  if (r.code !== 0) throw new Error(`psql failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** One pgbench run in a lab namespace, with its `-P 1` progress lines followed as they come. */
export class Pgbench {
  readonly proc: LabProcess;
  out = "";
  private waiters: { pred: () => boolean; resolve: () => void }[] = [];
  constructor(lab: Lab, who: LabHost, args: string[], conn: string, cwd: string) {
    this.proc = lab.spawn(who, [`${PG_BIN}/pgbench`, ...args, conn], { cwd });
    const feed = (d: Buffer | string) => {
      this.out += d.toString();
      this.waiters = this.waiters.filter((w) => (w.pred() ? (w.resolve(), false) : true));
    };
    this.proc.stdout.on("data", feed);
    this.proc.stderr.on("data", feed);
  }

  /** The elapsed times of the progress lines that reported transactions (`progress: 2.0 s, 812.3 tps, ...`). */
  progress(): number[] {
    return [...this.out.matchAll(/progress: ([\d.]+) s, ([\d.]+) tps/g)].filter((m) => Number(m[2]) > 0).map((m) => Number(m[1]));
  }

  /** Resolves once pgbench reported transactions at `seconds` or later; rejects if it exits first or after `timeoutMs`. */
  async runningFor(seconds: number, timeoutMs: number): Promise<void> {
    const ok = () => this.progress().some((s) => s >= seconds);
    if (ok()) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.waiters.push({ pred: ok, resolve })),
      this.proc.exited.then(() => {
        if (!ok()) throw new Error(`pgbench exited before ${seconds} s of transactions:\n${this.out.slice(-1500)}`);
      }),
      new Promise<void>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`pgbench: no progress at ${seconds} s within ${timeoutMs} ms:\n${this.out.slice(-1500)}`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  }
}

/**
 * The transactions pgbench logged as done (`-l`: `client_id transaction_no time script_no epoch us`; `time` is
 * `failed` or `skipped` for others), from the files `<prefix>.<pid>[.<thread>]` in `dir`.
 */
export function loggedTransactions(dir: string, prefix: string): { client: number; txno: number }[] {
  const done: { client: number; txno: number }[] = [];
  for (const f of readdirSync(dir).filter((n) => n.startsWith(`${prefix}.`))) {
    for (const line of readFileSync(join(dir, f), "utf8").split("\n")) {
      const [client, txno, time] = line.split(" ");
      if (client === undefined || txno === undefined || time === undefined || !/^\d+$/.test(time)) continue;
      done.push({ client: Number(client), txno: Number(txno) });
    }
  }
  return done;
}
