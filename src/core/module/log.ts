/**
 * Readable one-line renderings of module events and effects: the text of the event log and of the
 * scenario goldens. Pure.
 */
import type { ModuleEffect, ModuleEvent, ModuleReport } from "./types.js";

/** One readable line for an event, e.g. `tcp:app:8080 failed (refused 3/3) -> restart (2 of 3 in 24h)`. */
export function formatEvent(e: ModuleEvent): string {
  switch (e.type) {
    case "state": {
      const flags = [e.ready ? "ready" : "", e.transient ? `transient -> ${e.next ?? "?"}` : ""].filter(Boolean).join(", ");
      const head = e.from === e.to ? e.to : `${e.from} -> ${e.to}`;
      return `state ${head}${flags ? ` [${flags}]` : ""}: ${e.cause}`;
    }
    case "command":
      return `${e.cause}${e.force ? " (FORCED)" : ""}`;
    case "hook":
      return `hook ${e.hook} ${e.ok ? "ok" : "failed"}${e.detail ? ` (${e.detail})` : ""} ${e.cause}`;
    case "checker":
      return `checker ${e.checker} ${e.ok ? "ok" : "failed"}${e.reason ? ` (${e.reason})` : ""} ${e.cause}`;
    case "decision":
      return `${e.level === "info" ? "" : `${e.level.toUpperCase()}: `}${e.cause}`;
  }
}

/** Compact rendering of a report: `PRIM ready gen=2 up-to-date candidate`. */
export function formatReport(r: ModuleReport): string {
  const parts: string[] = [r.next ? `${r.state}->${r.next}` : r.state];
  if (r.ready) parts.push("ready");
  parts.push(`gen=${r.generation}`);
  parts.push(r.upToDate ? "up-to-date" : "stale");
  if (r.candidate) parts.push("candidate");
  if (r.claim) parts.push("claim");
  if (r.swap) parts.push("swap");
  if (r.aloneWrites) parts.push("alone-writes");
  if (r.splitBrain) parts.push("split-brain");
  if (r.forced) parts.push("forced");
  if (r.diverged) parts.push("diverged");
  return parts.join(" ");
}

/** One line per effect (scenario goldens, debugging). */
export function formatEffect(e: ModuleEffect): string {
  switch (e.type) {
    case "runHook":
      return `run ${e.hook} (${e.state} -> ${e.nextState}: ${e.reason})`;
    case "cancelHook":
      return `cancel ${e.hook}`;
    case "resetCheckers":
      return "reset checkers";
    case "addVip":
      return "add VIP";
    case "removeVip":
      return "remove VIP";
    case "resync":
      return `resync ${e.mode} (${e.cause})`;
    case "advertise":
      return `advertise ${formatReport(e.report)}`;
    case "persist": {
      const s = e.state;
      return `persist gen=${s.generation}${s.upToDate ? " up-to-date" : " stale"}${s.initialized ? "" : " uninitialized"}${
        s.soleOwner ? " sole-owner" : ""
      }${s.aloneWrites ? " alone-writes" : ""}${s.splitBrain ? " split-brain" : ""}${s.forced ? " forced" : ""}${
        s.diverged ? " diverged" : ""
      } restarts=${s.restarts.length}`;
    }
    case "emit":
      return `event ${formatEvent(e.event)}`;
  }
}
