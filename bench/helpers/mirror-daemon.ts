// The configuration of one node of a 2-node mirror run by the shipped daemon (MembershipCluster's daemon mode), as
// the benches use it: module db (n0 the first primary), the record app (examples/daemon/apps/records-app.mjs)
// started by start_prim inside the replication mount and stopped by stop_prim, the directory replicated
// synchronously (backing `<node dir>/data`, mount `<node dir>/mnt`), optionally the witness arbiter's lease.
import { join } from "node:path";
import type { Lab, LabHost } from "../../src/testing/lab.js";
import { writeRecordAppHooks } from "../../examples/daemon/lab-cluster.js";

export interface MirrorDaemonOptions {
  readonly lab: Lab;
  readonly vip: string;
  /** The replication (and arbiter) key file. */
  readonly key: string;
  readonly replPort: number;
  readonly appPort: number;
  readonly recordBytes: number;
  /** The witness arbiter `HOST:PORT`, for a split-brain checker holding its lease. */
  readonly arbiter?: string;
  /** Or a witness address to ping (judged within 300 ms of a cut, before membership declares the peer lost). */
  readonly witness?: string;
  /** Bounded wait for the secondary's ack, ms. Default 1000 (the example node's). */
  readonly ackTimeoutMs?: number;
  /** A node's directory (data/, mnt/, state/, log/, hooks/ go under it). Default: the lab's directory of the node. */
  readonly dir?: (h: LabHost) => string;
}

export function mirrorDaemonConfig(o: MirrorDaemonOptions): (h: LabHost) => Record<string, unknown> {
  const [n0, n1] = o.lab.nodes as [LabHost, LabHost];
  return (h) => {
    const dir = o.dir?.(h) ?? o.lab.dir(h);
    const app = writeRecordAppHooks(dir, o.appPort, o.recordBytes);
    return {
      modules: [
        {
          name: "db",
          kind: "mirror",
          vips: [`${o.vip}/24`],
          mirror: { defaultPrimary: n0.name, peerWait: 3000 },
          hooks: { start_prim: app.start, stop_prim: app.stop },
          checkers: o.arbiter
            ? [{ type: "split-brain", name: "witness", arbiter: o.arbiter, keyFile: o.key, node: h.name, lease: "mirror-db" }]
            : o.witness
              ? [{ type: "split-brain", name: "witness", witnesses: [o.witness], interval: 100, timeout: 200, rise: 1, fall: 1 }]
              : [],
        },
      ],
      replication: {
        db: {
          mode: "sync",
          directories: [{ path: join(dir, "mnt"), backing: join(dir, "data") }],
          keyFile: o.key,
          iface: "eth0",
          nodes: { [n0.name]: { address: o.lab.addr(n0), port: o.replPort }, [n1.name]: { address: o.lab.addr(n1), port: o.replPort } },
          ackTimeoutMs: o.ackTimeoutMs ?? 1000,
          statsIntervalMs: 500,
        },
      },
      stateDir: join(dir, "state"),
      logDir: join(dir, "log"),
    };
  };
}
