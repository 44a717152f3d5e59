// The hook guards (src/runtime/containment.ts) a host process started: the lab tests that kill a daemon alone
// find and kill (or count) them.
import { readFileSync, readdirSync } from "node:fs";
import { GUARD_NAME } from "../../../src/runtime/containment.js";

/** Pids of the hook guards whose parent is `pid`. */
export function hookGuardsOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid && readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").includes(GUARD_NAME)) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
