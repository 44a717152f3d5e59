import type { ModuleReport } from "../../../src/core/module/types.js";

/** A peer's report of the mirror module `db` as heartbeats carry it: up to date, a candidate, ready unless WAIT. */
export const mirrorReport = (state: ModuleReport["state"], extra: Partial<ModuleReport> = {}): ModuleReport => ({
  module: "db",
  state,
  ready: state !== "WAIT",
  upToDate: true,
  generation: 1,
  candidate: true,
  ...extra,
});
