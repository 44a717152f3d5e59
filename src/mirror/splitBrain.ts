// How a mirror module's split-brain checkers and its MirrorDriver fit together. An application that has a
// split-brain checker (a ping/TCP witness, or the witness arbiter's lease) needs three things wired that the
// checker and the driver cannot do alone; this is the one place that wires them (the daemon and
// examples/mirror-node.ts both call it):
// - the replication permit is bounded by the arbiter's lease (`permitCap` = `ArbiterProbe.permitBudgetMs()`), so a
//   primary's writes acknowledged alone always end before the witness can grant the peer (src/checkers/arbiter.ts,
//   timing chain point 1);
// - a SECOND with its primary in view hands back a lease it holds (`yieldWhen`), so the lease follows the primary,
//   also after a swap;
// - a failover waits `failoverFenceMs` after the peer left the view, so that a cut-off primary has begun leaving the
//   role before this node mounts and starts the application (MirrorDriverOptions.failoverFenceMs).
import type { ArbiterProbe } from "../checkers/arbiter.js";
import type { MirrorDriverOptions } from "./mirror.js";

/**
 * The failover fence with a split-brain checker, ms: a ping witness's isolation check runs every 100 ms, and 300 ms
 * covers it and the spread of the two nodes' loss detection. With the arbiter the lease is the fence when the
 * primary holds it, but a secondary may hold the lease itself at the cut (granted while the primary held none, e.g.
 * just after the witness restarted) and take over as soon as it sees the loss, up to ~150 ms before the primary
 * does (chaos replay partition-primary: 25 ms of two primaries without it). The fence counts from the peer's
 * departure, so after a lease wait (about a ttl) it has run out: it costs the ordinary failover nothing.
 */
export const SPLIT_BRAIN_FENCE_MS = 300;

/** A checker entry as a module's `checkers` list holds it (config file or code): only `type` is read here, and for a
 *  `split-brain` entry `arbiter` and the code-only `onProbe` / `yieldWhen` (src/checkers/config.ts). */
export interface CheckerEntryLike {
  readonly type: string;
}
interface ArbiterFields {
  readonly arbiter?: unknown;
  readonly onProbe?: (probe: ArbiterProbe) => void;
  readonly yieldWhen?: () => boolean;
}

export interface MirrorSplitBrainOptions {
  /**
   * Whether this node is the SECOND with its primary in view now (module state SECOND and the peer in the
   * membership view): its claims on the arbiter's lease then yield. Used for arbiter entries without their own
   * `yieldWhen`.
   */
  readonly secondWithPeer: () => boolean;
  /** The failover fence, ms, overriding the default ({@link SPLIT_BRAIN_FENCE_MS} with a split-brain checker, else none). */
  readonly failoverFenceMs?: number;
}

export interface MirrorSplitBrainWiring<C> {
  /** The module's checkers, arbiter entries given `onProbe` (chained to theirs) and `yieldWhen`. */
  readonly checkers: C[];
  /** What to pass to `new MirrorDriver({...})`: `failoverFenceMs` and, with an arbiter, `permitCap`. */
  readonly driver: Pick<MirrorDriverOptions, "failoverFenceMs" | "permitCap">;
}

/**
 * Wires a mirror module's checkers to its driver (see the file comment). With no split-brain checker it returns the
 * checkers unchanged and no driver options (besides an explicit `failoverFenceMs`). More than one arbiter entry is
 * refused: the permit can follow one lease only.
 */
export function mirrorSplitBrain<C extends CheckerEntryLike>(checkers: readonly C[], o: MirrorSplitBrainOptions): MirrorSplitBrainWiring<C> {
  // The arbiter's probe exists once the checkers run (the module left STOP); until then no lease, so no permit.
  let probe: ArbiterProbe | undefined;
  let arbiters = 0;
  const wired = checkers.map((c): C => {
    const f = c as C & ArbiterFields;
    if (c.type !== "split-brain" || f.arbiter === undefined) return c;
    arbiters++;
    const own = f.onProbe;
    return {
      ...c,
      onProbe: (p: ArbiterProbe) => {
        probe = p;
        own?.(p);
      },
      yieldWhen: f.yieldWhen ?? o.secondWithPeer,
    };
  });
  if (arbiters > 1) throw new RangeError(`checkers: ${arbiters} split-brain checkers with an arbiter; a mirror module takes one (its replication permit follows one lease)`);
  const fence = o.failoverFenceMs ?? (checkers.some((c) => c.type === "split-brain") ? SPLIT_BRAIN_FENCE_MS : undefined);
  return {
    checkers: wired,
    driver: {
      ...(fence !== undefined ? { failoverFenceMs: fence } : {}),
      ...(arbiters > 0 ? { permitCap: () => probe?.permitBudgetMs() ?? 0 } : {}),
    },
  };
}
