/**
 * Interface probe (SafeKit's `intf` checker): a network interface is administratively up and has carrier.
 *
 * Asks the kernel through `ip -j link show dev IF` (netlink, in the network namespace of this process) rather
 * than reading `/sys/class/net/IF/{operstate,carrier}`: `/sys` belongs to the network namespace it was mounted
 * in, so a daemon started in a namespace with `nsenter --net` would read the host's interfaces there.
 */
import { runCommand, type Probe, type ProbeResult } from "./probe.js";

export interface InterfaceProbeOptions {
  /** Interface name, e.g. `eth0`. */
  readonly interface: string;
  /**
   * Also require carrier (`LOWER_UP`, no `NO-CARRIER`): a cable pulled or a switch port down fails the probe
   * even though the interface is still administratively up. Default `true`.
   */
  readonly carrier?: boolean;
  /** The `ip` binary. Default `ip` (from PATH). */
  readonly ipCommand?: string;
}

interface IpLink {
  readonly ifname?: string;
  readonly flags?: readonly string[];
  readonly operstate?: string;
}

/** Link up (and carrier) of one interface. See {@link InterfaceProbeOptions}. */
export class InterfaceProbe implements Probe {
  readonly name: string;
  readonly #opts: InterfaceProbeOptions;

  constructor(opts: InterfaceProbeOptions) {
    this.#opts = opts;
    this.name = `interface:${opts.interface}`;
  }

  async run(signal: AbortSignal): Promise<ProbeResult> {
    const dev = this.#opts.interface;
    const out = await runCommand([this.#opts.ipCommand ?? "ip", "-j", "link", "show", "dev", dev], signal);
    if (out.code !== 0) return { ok: false, detail: `interface ${dev}: ${out.stderr.trim() || `ip exited with ${out.code}`}` };
    const links = JSON.parse(out.stdout) as IpLink[];
    const link = links.find((l) => l.ifname === dev) ?? links[0];
    if (link === undefined) return { ok: false, detail: `interface ${dev} not found` };
    const flags = link.flags ?? [];
    const state = `flags ${flags.join(",") || "none"}, operstate ${link.operstate ?? "?"}`;
    if (!flags.includes("UP")) return { ok: false, detail: `interface ${dev} is administratively down (${state})` };
    const wantCarrier = this.#opts.carrier ?? true;
    if (wantCarrier && (!flags.includes("LOWER_UP") || flags.includes("NO-CARRIER"))) {
      return { ok: false, detail: `interface ${dev} has no carrier (${state})` };
    }
    return { ok: true, detail: `interface ${dev} up (${state})` };
  }
}
