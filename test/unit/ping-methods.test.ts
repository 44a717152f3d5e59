// How the ping probe sends: raw-socket when it loads, else a raw socket through koffi, else the ping binary
// (src/checkers/ping.ts). The loaders are injected to simulate a missing raw-socket. Real echoes go to the
// loopback addresses only.
import { afterEach, describe, expect, it } from "vitest";
import { accessSync, constants } from "node:fs";
import { join } from "node:path";
import { DEFAULT_PING_LOADERS, PingProbe, pingMethod, setPingLoaders, type PingLoaders, type PingMethod } from "../../src/checkers/ping.js";
import { NotSupportedError } from "../../src/core/errors.js";
import { runUnprivileged } from "./helpers/unprivileged.js";

const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
if (!isRoot) console.warn("skipping the real-echo ping tests: raw ICMP sockets need root (CAP_NET_RAW)");

function hasPingBinary(): boolean {
  for (const d of (process.env.PATH ?? "").split(":").concat("/usr/bin", "/bin")) {
    try {
      accessSync(join(d, "ping"), constants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}
const pingBinary = hasPingBinary();
if (!pingBinary) console.warn("skipping the ping-binary echo test: no ping executable (Debian package iputils-ping)");

const missing = (what: string) => (): never => {
  throw new Error(`Cannot find module '${what}'`);
};

let restore: (() => void) | undefined;
const probes: PingProbe[] = [];
afterEach(() => {
  for (const p of probes.splice(0)) p.close();
  restore?.();
  restore = undefined;
});

function probe(host: string, method?: PingMethod): PingProbe {
  const p = new PingProbe(method === undefined ? { host } : { host, method });
  probes.push(p);
  return p;
}

function inject(loaders: Partial<PingLoaders>): void {
  restore = setPingLoaders(loaders);
}

describe("PingProbe method choice", () => {
  it("loads nothing when constructed, and raw-socket once, at first use", async () => {
    let calls = 0;
    inject({ rawSocket: () => (calls++, missing("raw-socket")()), libc: missing("koffi"), pingBinary: () => "/nonexistent/ping" });
    const p = probe("127.0.0.1");
    expect(calls).toBe(0);
    expect(p.method).toBe("ping-binary");
    expect(calls).toBe(1);
    expect(probe("::1").method).toBe("ping-binary"); // memoized for the process
    expect(calls).toBe(1);
  });

  it("falls back to koffi when raw-socket cannot be loaded", () => {
    inject({ rawSocket: missing("raw-socket") });
    expect(pingMethod()).toBe("koffi");
    expect(probe("127.0.0.1").method).toBe("koffi");
  });

  it("falls back to the ping binary when neither raw-socket nor koffi loads", () => {
    inject({ rawSocket: missing("raw-socket"), libc: missing("koffi"), pingBinary: () => "/usr/bin/ping" });
    expect(pingMethod()).toBe("ping-binary");
  });

  it("prefers raw-socket when it loads", () => {
    inject({ rawSocket: () => ({}) as ReturnType<PingLoaders["rawSocket"]> });
    expect(probe("127.0.0.1").method).toBe("raw-socket");
  });

  it("fails with a NotSupportedError that names every missing method", async () => {
    inject({ rawSocket: missing("raw-socket"), libc: missing("koffi"), pingBinary: missing("ping") });
    const p = probe("127.0.0.1");
    expect(p.method).toBeUndefined();
    const err: unknown = await p.run(AbortSignal.timeout(1000)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotSupportedError);
    expect((err as Error).message).toMatch(/raw-socket: Cannot find module 'raw-socket'; koffi: Cannot find module 'koffi'; ping-binary: Cannot find module 'ping'/);
  });

  it("a forced method does not fall back", () => {
    inject({ libc: missing("koffi") });
    expect(probe("127.0.0.1", "koffi").method).toBeUndefined();
    expect(probe("127.0.0.1", "raw-socket").method).toBe("raw-socket");
  });
});

describe("PingProbe over a koffi raw socket", () => {
  it.skipIf(!isRoot)("pings 127.0.0.1 and ::1 when raw-socket is absent", async () => {
    inject({ rawSocket: missing("raw-socket") });
    for (const host of ["127.0.0.1", "::1"]) {
      const p = probe(host);
      for (let i = 0; i < 3; i++) {
        const r = await p.run(AbortSignal.timeout(2000));
        expect(r).toMatchObject({ ok: true, detail: expect.stringMatching(new RegExp(`^ping ${host.replace(/\./g, "\\.")} reply in \\d+\\.\\d\\d ms$`)) });
      }
      expect(p.method).toBe("koffi");
    }
  });

  it.skipIf(!isRoot)("two probes share the socket and each gets its own reply", async () => {
    const a = probe("127.0.0.1", "koffi");
    const b = probe("127.0.0.2", "koffi");
    const [ra, rb] = await Promise.all([a.run(AbortSignal.timeout(2000)), b.run(AbortSignal.timeout(2000))]);
    expect(ra.detail).toMatch(/^ping 127\.0\.0\.1 reply in/);
    expect(rb.detail).toMatch(/^ping 127\.0\.0\.2 reply in/);
  });

  it.skipIf(!isRoot)("waits for an unanswered echo without blocking the event loop, until the signal aborts", async () => {
    // The real socket, but a sendto that sends nothing: no reply will come.
    const libc = DEFAULT_PING_LOADERS.libc();
    inject({ libc: () => ({ ...libc, sendto: (_fd, _buf, len) => len }) });
    const p = probe("127.0.0.1", "koffi");
    let ticks = 0;
    const tick = setInterval(() => ticks++, 10);
    const t0 = performance.now();
    const err: unknown = await p.run(AbortSignal.timeout(250)).catch((e: unknown) => e);
    clearInterval(tick);
    expect((err as Error).name).toBe("TimeoutError");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(240);
    expect(ticks).toBeGreaterThanOrEqual(15);
  });

  it.skipIf(!isRoot)("a send error is a failed result, not a throw", async () => {
    const libc = DEFAULT_PING_LOADERS.libc();
    inject({ libc: () => ({ ...libc, sendto: () => -1, errno: () => 101 }) }); // ENETUNREACH
    const r = await probe("127.0.0.1", "koffi").run(AbortSignal.timeout(1000));
    expect(r).toEqual({ ok: false, detail: "ping 127.0.0.1 send failed: sendto: Network is unreachable (ENETUNREACH)" });
  });

  it.skipIf(!isRoot)("without CAP_NET_RAW: a NotSupportedError naming the capability (no packet sent)", async () => {
    const code = [
      `import { PingProbe } from ${JSON.stringify(join(import.meta.dirname, "../../src/checkers/ping.ts"))};`,
      `const p = new PingProbe({ host: "127.0.0.1", method: "koffi" });`,
      `try { await p.run(AbortSignal.timeout(1000)); console.log("no error"); }`,
      `catch (e) { console.log(JSON.stringify({ name: e.name, feature: e.feature, message: e.message })); }`,
    ].join("\n");
    const out = await runUnprivileged(code);
    expect(JSON.parse(out)).toEqual({
      name: "NotSupportedError",
      feature: "raw ICMP socket",
      message: expect.stringMatching(/Operation not permitted \(EPERM\).*needs CAP_NET_RAW/),
    });
  });
});

describe("PingProbe through the ping binary", () => {
  it.skipIf(!isRoot || !pingBinary)("pings 127.0.0.1 and ::1 when neither raw-socket nor koffi loads", async () => {
    inject({ rawSocket: missing("raw-socket"), libc: missing("koffi") });
    for (const host of ["127.0.0.1", "::1"]) {
      const p = probe(host);
      const r = await p.run(AbortSignal.timeout(3000));
      expect(r).toMatchObject({ ok: true, detail: expect.stringMatching(/ reply in \d+\.\d\d ms$/) });
      expect(p.method).toBe("ping-binary");
    }
  });
});
