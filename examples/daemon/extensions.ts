/**
 * Built-in daemon extensions: no replication (`mode: none`), the farm wiring (VIP + filter + buckets,
 * farm.ts) and the mirror wiring (`mode: sync`: MirrorDriver + MirrorVip, mirror.ts).
 */
import type { DaemonExtension, ModuleExtension } from "./daemon.js";
import { farmExtension } from "./farm.js";
import { mirrorExtension } from "./mirror.js";

/**
 * `replication: { <module>: { mode: none } }`: a mirror module with no replicated data. Its secondary is in
 * sync as soon as it is SECOND with a primary in view, which the module engine learns through
 * `module.replication({ inSync: true })` (the input the replication layer feeds otherwise).
 */
export const noReplication: DaemonExtension = {
  name: "replication-none",
  attach({ daemon, module, config }): ModuleExtension | undefined {
    if (module.definition.kind !== "mirror" || config.replication[module.name]?.mode !== "none") return undefined;
    const check = () => {
      const s = module.status;
      if (s.state === "SECOND" && !s.transient && !s.ready) queueMicrotask(() => module.replication({ inSync: true }));
    };
    module.on("state", check);
    daemon.membership.on("peerMeta", check);
    daemon.membership.on("viewChange", check);
    return {
      details: () => {
        const s = module.status;
        return {
          replication: {
            state: s.state === "SECOND" ? (s.ready ? "in sync (no replicated data)" : "waiting for the primary") : isPrimary(s.state) ? "primary (no replicated data)" : "idle",
            ...(s.state === "SECOND" ? { percent: s.ready ? 100 : 0 } : {}),
          },
        };
      },
      close: async () => {
        module.off("state", check);
        daemon.membership.off("peerMeta", check);
        daemon.membership.off("viewChange", check);
      },
    };
  },
};

function isPrimary(s: string): boolean {
  return s === "PRIM" || s === "ALONE";
}

/** Extensions every daemon runs (before those given in its options). */
export const BUILTIN_EXTENSIONS: readonly DaemonExtension[] = [noReplication, farmExtension, mirrorExtension];
