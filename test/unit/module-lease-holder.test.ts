/**
 * The module engine learns who holds the witness arbiter's lease from the verdict's typed `lease`, never from its
 * reason text (which is for logs): a failover waits for a lease that names the lost primary to lapse.
 */
import { describe, expect, it } from "vitest";
import { Harness } from "../scenarios/harness.js";

/** c primary, d its in-sync secondary denied the lease (verdict given by `deny`); then c crashes. */
function crashPrimary(deny: string): Harness {
  const h = new Harness();
  h.quiet = true;
  for (const line of ["mirror c d splitbrain", "checker c sb ok lease=- lease held for 700 ms", deny, "cmd c prim", "cmd d start", "hooks ok", "sync d", "crash c", "hooks ok"]) h.exec(line);
  return h;
}

describe("module engine: the witness arbiter's lease holder", () => {
  it("is read from the verdict's lease: a reason that does not name it still makes the failover wait", () => {
    const d = crashPrimary("checker d sb fail wait lease=c denied (1/1)").node("d").core.status;
    expect(d).toMatchObject({ state: "SECOND", transient: false });
    expect(d.reason).toMatch(/split-brain witness denies the lease \(denied \(1\/1\)\): lease held by c, waiting up to 2000ms/);
  });

  it("is not read from the reason text: `lease held by c` in a verdict without lease is a witness unreachable", () => {
    const h = crashPrimary("checker d sb fail wait lease held by c for 900 ms (1/1)");
    const d = h.node("d").core.status;
    expect(d.reason).not.toMatch(/waiting up to/);
    expect(h.node("d").core.persisted).toMatchObject({ upToDate: false }); // outdated at once, as with no arbiter
  });
});
