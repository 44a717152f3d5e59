/**
 * Sharing one node's heartbeat metadata between writers. `bindMembership` publishes the modules' reports as the
 * whole metadata object (`{ modules: ... }`); the farm driver also publishes its held set (`{ held: { <module>:
 * text } }`, see FarmDriver's `publishHeld`). This wrapper keeps extra top-level fields and merges them into every
 * object the wrapped writer sets.
 *
 * @example
 * const meta = withMetaFields(membership);
 * const farm = new FarmDriver({ ..., publishHeld: (held) => meta.set("held", { web: held }) });
 * bindMembership(meta.membership, [module]);
 */
import type { ModuleMembership } from "../runtime/module.js";

export interface MetaFields {
  /** Pass this to the writer of the base object (e.g. `bindMembership`): its setMeta merges the extra fields in. */
  readonly membership: ModuleMembership;
  /** Sets (or, with undefined, removes) one extra top-level field and republishes at once. */
  set(key: string, value: unknown): void;
}

export function withMetaFields(inner: ModuleMembership): MetaFields {
  let base: Record<string, unknown> = {};
  const extra = new Map<string, unknown>();
  const publish = () => inner.setMeta({ ...base, ...Object.fromEntries(extra) });
  const membership: ModuleMembership = {
    get view() {
      return inner.view;
    },
    get nodeId() {
      return inner.nodeId;
    },
    setMeta: (meta: unknown) => {
      base = typeof meta === "object" && meta !== null ? (meta as Record<string, unknown>) : {};
      publish();
    },
    peerMeta: (id: string) => inner.peerMeta(id),
    on: inner.on.bind(inner),
    off: inner.off.bind(inner),
    // Peer silence and timing pass through: bindMembership's step-down of a cut-off primary needs them.
    ...(inner.peerSilenceMs ? { peerSilenceMs: inner.peerSilenceMs.bind(inner) } : {}),
    ...(inner.settings ? { settings: inner.settings } : {}),
  };
  return {
    membership,
    set(key, value) {
      if (value === undefined) extra.delete(key);
      else extra.set(key, value);
      publish();
    },
  };
}
