/**
 * Arbiter probe (the client of the witness arbiter, `witness-server.ts`): ok while THIS node holds the witness's
 * lease for its mirror. Used by the split-brain checker when it is given `arbiter: "HOST:PORT"`: two nodes that
 * cannot see each other but both reach the witness cannot both hold the lease, so at most one goes ALONE. (A ping
 * witness cannot arbitrate: both see it.)
 *
 * The probe keeps the lease in the background: a claim every `renewMs` while `shouldClaim()` says so (default:
 * always; the primary renews and keeps it, the other node is denied while the primary lives and granted once
 * the primary stopped renewing for a ttl). The lease counts from the time a claim was SENT (see
 * `src/core/arbiter.ts`, and its clock-rate assumption). A run is ok only while the lease stays valid for at least
 * `reportMarginMs` more, so a holder cut from the witness reports the loss before the witness can grant the
 * lease elsewhere.
 *
 * `close()` (the checker stopped: clean stop or swap) and `shouldClaim()` turning false send a RELEASE, so the
 * other node is not kept waiting a ttl.
 *
 * ## Timing chain and the defaults ({@link ARBITER_DEFAULTS})
 *
 * T = ttl 1000, m = margin 0.1, R = renew 100, M = reportMargin 400, G = permitGuard 100, the checker every
 * I = 50 ms (timeout 150, rise 1, fall 1), a run waits A = 100 ms at most for its claim's answer; the mirror's
 * permit P = 450 (MirrorDriver `permitMs`), membership LAN (a dead peer seen in D = 500-650 ms).
 * A claim sent at s (holder's clock) and received at r >= s: the witness may grant another node from r + T on
 * (its clock); the holder believes in the lease until V = s + T(1 - m) = s + 900 (its clock, at most as slow as
 * the witness's by the factor 1 - m).
 *
 * 1. Permit (the helper acks writes alone): the MirrorDriver renews it for min(P, V - now - G) (`permitCap`, see
 *    {@link ArbiterProbe.permitBudgetMs}), never on the verdict alone. It ends at renewal + ipc + min(P, V - renewal
 *    - G) <= V - G + ipc < s + T <= r + T: before the witness can grant the peer, for ANY pattern of lost, late or
 *    reordered claims and answers, any stall of the holder's event loop, and whatever its membership view says,
 *    as long as the helper reads the command within G = 100 ms (within G + mT = 200 ms when both clocks run at the
 *    same rate: mT is the clock-rate allowance). (The earlier chain through the verdict needed
 *    M >= P + I + A + a stall of up to P: ttl 2000 and M 1150 with the old 900 ms permit, and failovers of 2.4 s.)
 * 2. Fence (two applications): the last ok verdict at t0 had V - t0 > M; the next run, at most I (+ A while it
 *    claims) later, fails and the engine steps a cut-off primary down then: before V - M + I + A = V - 250, at
 *    least 250 + mT = 350 ms before the witness can grant the peer. That fences a primary that held the lease. A
 *    peer that already holds the lease at the cut (granted while the primary held none, e.g. after a witness
 *    restart) needs no grant: mirror-node keeps `failoverFenceMs` 300, counted from the peer's departure, which the
 *    ordinary lease wait (about T after the primary's last renewal) has already covered: it costs nothing then.
 * 3. Load: the verdict stays ok while one claim of the last T(1 - m) - M = 500 ms was answered: 4 lost or late
 *    renewals in a row (R = 100) are tolerated (the old ttl 2000 allowed 650 ms / 3 at R = 200). A failed verdict
 *    never steps a primary down while its peer is in view (the engine's step-down needs no peer in view), and the
 *    permit cap matters only while degraded (no secondary acking), so a loaded witness or node costs nothing more
 *    than the no-witness mode unless membership also lost the peer.
 * 4. A fresh grant is valid for about T(1 - m) - rtt = 900 > M + R: the new holder is ok at its first run.
 * 5. Failover (primary killed at k, last renewal s in (k - R, k]): the peer is granted at its first claim after
 *    r + T (a claim every R, and one per checker run while not held: <= I later), ok at that run, then ALONE,
 *    mount, VIP, app: about T - U(0, R) + I + 150 = 1.0-1.2 s (detection D < T - R is hidden by the lease wait,
 *    and so is mirror-node's fence, D + 300 = 0.8-0.95 s: a shorter ttl would gain 100-150 ms at most).
 * 6. Constructor checks: 0 < R and M + R < T(1 - m); the mirror's peerWait (3000 in mirror-node) > T + I.
 *
 * Measured (2-vCPU VM, namespaces, LAN preset, examples/mirror-node.ts --arbiter): the primary SIGKILLed, its
 * secondary saw it down after 529 ms, was granted the lease after 915 ms, ALONE after 988 ms, first ack after
 * 1001 ms (test/lab/arbiter.test.ts; with ttl 2000 / margin 1150 / fence 300 it was 2366 ms to ALONE);
 * `npm run bench:mirror -- --only failover --witness --trials 30`: kill -> the other node answers p50 1086 ms,
 * p99 1415 ms (29 of 30 within 1183 ms), 0 acknowledged writes lost; 40 trials on a machine at load average 7-10
 * (other jobs): p50 1132, p99 1493 ms (the same load took the no-witness failover from ~600 to 872 ms).
 * `--only load --witness` (120 s of stress-ng on both cores): 0 step-downs, 0 failovers, 0 failed verdicts of the
 * primary, as without the witness. Invariant: test/unit/arbiter-permit.test.ts.
 */
import { createSocket, type Socket } from "node:dgram";
import { isIPv6 } from "node:net";
import { ArbiterLease, decodeArbiter, encodeArbiter, type ArbiterMessage } from "../core/arbiter.js";
import { hmacSha256 } from "../runtime/crypto.js";
import { systemClock, type Clock } from "../runtime/clock.js";
import type { Probe, ProbeResult } from "./probe.js";

/**
 * The arbiter's defaults, chosen by the timing chain of the module comment: failover about 1.0-1.2 s after a
 * primary's death, and its replication permit always ending before the witness can grant the peer. The checker
 * fields are the split-brain checker's defaults when it is given `arbiter` (src/checkers/config.ts).
 */
export const ARBITER_DEFAULTS = {
  ttlMs: 1000,
  renewMs: 100,
  margin: 0.1,
  reportMarginMs: 400,
  permitGuardMs: 100,
  checker: { interval: 50, timeout: 150, rise: 1, fall: 1 },
} as const;

export interface ArbiterProbeOptions {
  /** Witness address (IPv4 or IPv6 literal). */
  readonly host: string;
  /** Witness UDP port. */
  readonly port: number;
  /** The cluster key (at least 32 bytes). */
  readonly key: Uint8Array;
  /** This node's id (as in membership). */
  readonly node: string;
  /** The lease's name at the witness: one per mirror module (both nodes must use the same). Default `mirror`. */
  readonly lease?: string;
  /** Lease length asked for, ms. Default 1000. A failover waits up to this long after the primary's last renewal. */
  readonly ttlMs?: number;
  /** Claim period, ms. Default 100 with the default ttl, else ttl / 10. */
  readonly renewMs?: number;
  /** Clock-rate safety margin, 0..1: the lease counts until send + ttl x (1 - margin). Default 0.1. */
  readonly margin?: number;
  /**
   * A run is ok only while the lease stays valid this much longer, ms, so that the module learns of the loss
   * (and a cut-off primary leaves the role) before the witness may grant it elsewhere. Default 400 with the
   * default ttl, else 0.4 x ttl; keep the checker's interval + 100 ms well below it (see the module comment).
   */
  readonly reportMarginMs?: number;
  /**
   * {@link ArbiterProbe.permitBudgetMs} ends a permit this long before the lease ends on this node's clock, ms:
   * it must cover the delay until the permit's holder (the replication helper) reads it. Default 100.
   */
  readonly permitGuardMs?: number;
  /** Whether this node wants the lease now (claims when true, releases once when it turns false). Default: always. */
  readonly shouldClaim?: () => boolean;
  /**
   * Whether this node's claims yield (e.g. a secondary with its primary in view): a yielding claim gets a free
   * lease, but is not renewed once another node asked for it; the witness then names that node as the holder, and
   * the lease passes to it after it lapsed. While the other node holds it, this node's claims are denied with the
   * holder named (`lease held by n0 for 800 ms`; `lease.holder` in the result), which the engine reads when its
   * primary is lost: the lease still names the primary, so wait for it to lapse. Default: never.
   */
  readonly yieldWhen?: () => boolean;
  /** Monotonic time source. Default: the system clock. */
  readonly clock?: Clock;
}

/** Longest wait of a run for the answer to its claim, ms (keep the checker's timeout above it). */
const ANSWER_WAIT_MS = 100;

/** Holds the witness's lease; ok while held. See the module comment. */
export class ArbiterProbe implements Probe {
  readonly name: string;
  readonly #o: Required<Omit<ArbiterProbeOptions, "shouldClaim" | "yieldWhen" | "clock">> & { shouldClaim: () => boolean; yieldWhen: () => boolean; clock: Clock };
  readonly #lease: ArbiterLease;
  readonly #mac: ReturnType<typeof hmacSha256>;
  #socket: Socket | undefined;
  #cancel: (() => void) | undefined;
  #seq: number;
  #claiming = false;
  #waiters: (() => void)[] = [];
  #closed = false;
  /** Datagrams dropped (bad MAC, garbage, not for this node). */
  drops = 0;

  constructor(opts: ArbiterProbeOptions) {
    const d = ARBITER_DEFAULTS;
    const ttlMs = opts.ttlMs ?? d.ttlMs;
    // Proportional defaults for another ttl: the same chain scaled (renew ttl / 10, report margin 0.4 x ttl).
    const scale = ttlMs / d.ttlMs;
    this.#o = {
      host: opts.host,
      port: opts.port,
      key: opts.key,
      node: opts.node,
      lease: opts.lease ?? "mirror",
      ttlMs,
      renewMs: opts.renewMs ?? d.renewMs * scale,
      margin: opts.margin ?? d.margin,
      reportMarginMs: opts.reportMarginMs ?? d.reportMarginMs * scale,
      permitGuardMs: opts.permitGuardMs ?? d.permitGuardMs,
      shouldClaim: opts.shouldClaim ?? (() => true),
      yieldWhen: opts.yieldWhen ?? (() => false),
      clock: opts.clock ?? systemClock,
    };
    if (!(this.#o.permitGuardMs >= 0)) throw new RangeError(`arbiter permitGuardMs must be >= 0, got ${this.#o.permitGuardMs}`);
    if (!(this.#o.renewMs > 0 && this.#o.renewMs < ttlMs * (1 - this.#o.margin))) throw new RangeError(`arbiter renewMs must be in (0, ttl x (1 - margin)), got ${this.#o.renewMs}`);
    if (!(this.#o.reportMarginMs >= 0 && this.#o.reportMarginMs + this.#o.renewMs < ttlMs * (1 - this.#o.margin)))
      throw new RangeError(`arbiter reportMarginMs + renewMs must stay below ttl x (1 - margin) (${ttlMs * (1 - this.#o.margin)} ms), got ${this.#o.reportMarginMs} + ${this.#o.renewMs}`);
    this.#lease = new ArbiterLease({ ttlMs, margin: this.#o.margin });
    this.#mac = hmacSha256(opts.key);
    // Above any sequence a previous run of this node used (a few dozen claims a second never catch up with 1000 a ms).
    this.#seq = Date.now() * 1000;
    this.name = `arbiter:${opts.host}:${opts.port}`;
  }

  /** The lease state, for status output and tests. */
  get lease(): ArbiterLease {
    return this.#lease;
  }

  /**
   * The longest replication permit (ms) this node may grant now: it ends `permitGuardMs` before the lease ends on
   * this node's clock, hence before the witness can grant the lease to the peer, whatever happens to the following
   * renewals (0 when the lease is not held). Pass it as MirrorDriver `permitCap`: the permit then never outlives
   * the lease, without relying on the verdict's report margin or on membership (see the module comment, point 1).
   */
  permitBudgetMs(): number {
    return this.#lease.permitBudget(this.#o.clock.now(), this.#o.permitGuardMs);
  }

  #ensureStarted(): void {
    if (this.#socket !== undefined) return;
    const sock = createSocket({ type: isIPv6(this.#o.host) ? "udp6" : "udp4" });
    sock.on("message", (msg) => this.#onDatagram(msg));
    sock.on("error", () => undefined);
    this.#socket = sock;
    this.#tick();
  }

  #tick(): void {
    if (this.#closed) return;
    if (this.#o.shouldClaim()) {
      this.#claiming = true;
      this.#sendClaim();
    } else if (this.#claiming) {
      this.#claiming = false;
      this.#sendRelease();
    }
    this.#cancel = this.#o.clock.setTimer(this.#o.renewMs, () => this.#tick());
  }

  #send(msg: ArbiterMessage): void {
    const s = this.#socket;
    if (s === undefined) return;
    s.send(encodeArbiter(msg, this.#mac), this.#o.port, this.#o.host, () => undefined);
  }

  #sendClaim(): void {
    const seq = ++this.#seq;
    this.#lease.claimSent(seq, this.#o.clock.now());
    const boot = this.#lease.boot;
    this.#send({ t: "claim", module: this.#o.lease, node: this.#o.node, seq, ttl: this.#o.ttlMs, ...(this.#o.yieldWhen() ? { yield: true } : {}), ...(boot !== undefined ? { boot } : {}) });
  }

  #sendRelease(): void {
    const seq = ++this.#seq;
    this.#lease.release(seq);
    const boot = this.#lease.boot;
    this.#send({ t: "release", module: this.#o.lease, node: this.#o.node, seq, ...(boot !== undefined ? { boot } : {}) });
  }

  #onDatagram(bytes: Uint8Array): void {
    const d = decodeArbiter(bytes, this.#mac);
    if (!d.ok || d.msg.node !== this.#o.node || d.msg.module !== this.#o.lease) {
      this.drops++;
      return;
    }
    if (this.#lease.receive(d.msg, this.#o.clock.now())) {
      // The witness (re)started or this probe just started: claim again with its nonce; a waiting run waits for
      // that answer rather than report a denial that only asked for the nonce.
      if (this.#claiming && !this.#closed) this.#sendClaim();
      return;
    }
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Ok while the lease is held for at least `reportMarginMs` more. Waits briefly for an answer when not held. */
  async run(signal: AbortSignal): Promise<ProbeResult> {
    this.#closed = false;
    this.#ensureStarted();
    if (!this.#verdict().ok && this.#o.shouldClaim() && !signal.aborted) {
      // Not held: claim now and wait for the answer (or the runner's timeout) rather than report a stale view.
      this.#claiming = true;
      this.#sendClaim();
      // At most ANSWER_WAIT_MS (below the checker's timeout): a lost answer then yields this probe's own verdict,
      // which names the holder when one is known, rather than a bare timeout.
      await new Promise<void>((resolve) => {
        const cancel = this.#o.clock.setTimer(ANSWER_WAIT_MS, () => done());
        const done = (): void => {
          cancel();
          signal.removeEventListener("abort", done);
          resolve();
        };
        this.#waiters.push(done);
        signal.addEventListener("abort", done, { once: true });
      });
    }
    return this.#verdict();
  }

  #verdict(): ProbeResult {
    const now = this.#o.clock.now();
    const remaining = this.#lease.remaining(now);
    if (remaining > this.#o.reportMarginMs) return { ok: true, detail: `lease held for ${Math.round(remaining)} ms`, lease: {} };
    const deny = this.#lease.lastDeny;
    const last = this.#lease.lastAnswerAt;
    // The engine reads the holder from `lease` in a failed verdict (src/core/module/machine.ts, leaseHolder): name
    // it whenever the witness named one recently, also while this node's own lease runs out.
    const denied = (d: NonNullable<typeof deny>): ProbeResult => ({
      ok: false,
      detail: `lease held by ${d.holder} for ${d.remainingMs} ms`,
      lease: { holder: d.holder, remainingMs: d.remainingMs },
    });
    if (remaining > 0 && deny !== undefined && now - deny.at <= 2 * this.#o.renewMs) return denied(deny);
    if (remaining > 0) return { ok: false, detail: `lease ending in ${Math.round(remaining)} ms, not renewed`, lease: {} };
    if (!this.#o.shouldClaim()) return { ok: false, detail: "lease not claimed (not wanted in this role)", lease: {} };
    // No `lease` here: nothing is known of it (the engine then treats the witness as unreachable, not as denying).
    if (last === undefined || now - last > this.#o.ttlMs) return { ok: false, detail: `witness unreachable (no answer for ${last === undefined ? "ever" : `${Math.round(now - last)} ms`})` };
    // Only a recent denial names the holder (a node that stopped claiming for a while keeps an old one).
    if (deny !== undefined && now - deny.at <= 2 * this.#o.renewMs) return denied(deny);
    return { ok: false, detail: "lease not held", lease: {} };
  }

  /** Releases the lease if claimed, so the other node need not wait a ttl, and closes the socket. */
  close(): void {
    if (this.#closed) return;
    if (this.#claiming) this.#sendRelease();
    this.#closed = true;
    this.#cancel?.();
    const s = this.#socket;
    this.#socket = undefined;
    // Let the release leave before closing.
    if (s !== undefined) setTimeout(() => s.close(), 50).unref();
    for (const f of this.#waiters) f();
    this.#waiters = [];
  }
}
