/**
 * IP probe (SafeKit's `ip` checker): an address is configured on this node, usable (not tentative, DAD not
 * failed), optionally on a given interface. Asks the kernel through `ip -j addr` (netlink, in this process's
 * network namespace).
 */
import { isIP } from "node:net";
import { runCommand, type Probe, type ProbeResult } from "./probe.js";

export interface IpProbeOptions {
  /** The address, IPv4 or IPv6, without prefix length (e.g. `198.18.0.100` or `fd00:4844::100`). */
  readonly address: string;
  /** Only look on this interface. Default: any interface. */
  readonly interface?: string;
  /** The `ip` binary. Default `ip` (from PATH). */
  readonly ipCommand?: string;
}

interface IpAddrInfo {
  readonly family?: string;
  readonly local?: string;
  readonly tentative?: boolean;
  readonly dadfailed?: boolean;
}
interface IpAddrLink {
  readonly ifname?: string;
  readonly addr_info?: readonly IpAddrInfo[];
}

/**
 * Canonical text of an address so that `fd00:4844:0::1` and `fd00:4844::1` compare equal. A zone
 * (`fe80::1%eth0`) is dropped: replies and address listings name the interface separately.
 */
export function canonicalAddress(addr: string): string {
  const family = isIP(addr);
  if (family === 4) return addr;
  if (family !== 6) throw new TypeError(`not an IP address: ${addr}`);
  const bare = addr.split("%")[0] as string;
  // Let the URL parser compress and lower-case IPv6 (RFC 5952 form).
  return new URL(`http://[${bare}]/`).hostname.slice(1, -1);
}

/** An address present on this node. See {@link IpProbeOptions}. */
export class IpProbe implements Probe {
  readonly name: string;
  readonly #opts: IpProbeOptions;
  readonly #want: string;

  constructor(opts: IpProbeOptions) {
    this.#want = canonicalAddress(opts.address);
    this.#opts = opts;
    this.name = `ip:${opts.address}`;
  }

  async run(signal: AbortSignal): Promise<ProbeResult> {
    const argv = [this.#opts.ipCommand ?? "ip", "-j", "addr", "show"];
    if (this.#opts.interface !== undefined) argv.push("dev", this.#opts.interface);
    const where = this.#opts.interface === undefined ? "" : ` on ${this.#opts.interface}`;
    const out = await runCommand(argv, signal);
    if (out.code !== 0) return { ok: false, detail: `address ${this.#opts.address}${where}: ${out.stderr.trim() || `ip exited with ${out.code}`}` };
    const links = JSON.parse(out.stdout) as IpAddrLink[];
    for (const link of links) {
      for (const a of link.addr_info ?? []) {
        if (a.local === undefined || isIP(a.local) === 0 || canonicalAddress(a.local) !== this.#want) continue;
        if (a.dadfailed === true) return { ok: false, detail: `address ${this.#opts.address} on ${link.ifname}: duplicate address detection failed` };
        if (a.tentative === true) return { ok: false, detail: `address ${this.#opts.address} on ${link.ifname}: tentative (DAD in progress)` };
        return { ok: true, detail: `address ${this.#opts.address} present on ${link.ifname}` };
      }
    }
    return { ok: false, detail: `address ${this.#opts.address} absent${where}` };
  }
}
