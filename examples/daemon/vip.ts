/**
 * A VIP driver using iproute2: `ip addr add VIP/len dev IF`, then a gratuitous ARP (`arping -U`, RFC 5227
 * announcement) for IPv4 so that clients switch at once; `ip addr del` on removal. The interface is the one
 * the kernel routes the VIP's subnet through (`ip -j route get`), unless given. IPv6 relies on the
 * kernel's own unsolicited neighbour advertisement when the address is added (RFC 4861 §7.2.6).
 *
 * The farm module (shared MAC, ARP rewriting) and the mirror module bring their own drivers later;
 * this one is what the reference daemon uses for plain module VIPs.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { VipDriver } from "../../src/runtime/module.js";

const run = promisify(execFile);

export class IpCommandVipDriver implements VipDriver {
  constructor(private readonly iface?: string) {}

  private async device(vip: string): Promise<string> {
    if (this.iface) return this.iface;
    const addr = vip.split("/")[0] as string;
    const { stdout } = await run("ip", ["-j", "route", "get", addr]);
    const dev = (JSON.parse(stdout) as { dev?: string }[])[0]?.dev;
    if (!dev) throw new Error(`no route to ${addr}: cannot tell which interface carries VIP ${vip}`);
    return dev;
  }

  private async holders(addr: string): Promise<string[]> {
    const { stdout } = await run("ip", ["-j", "addr", "show"]);
    const links = JSON.parse(stdout) as { ifname: string; addr_info?: { local: string }[] }[];
    return links.filter((l) => l.addr_info?.some((a) => a.local === addr)).map((l) => l.ifname);
  }

  async add(vip: string): Promise<void> {
    if ((await this.holders(vip.split("/")[0] as string)).length > 0) return;
    const dev = await this.device(vip);
    await run("ip", ["addr", "replace", vip, "dev", dev]);
    const addr = vip.split("/")[0] as string;
    if (!addr.includes(":")) {
      // Best effort: a missing arping delays clients (ARP cache timeout) but does not break the VIP.
      run("arping", ["-U", "-c", "2", "-w", "2", "-I", dev, addr]).catch(() => undefined);
    }
  }

  async remove(vip: string): Promise<void> {
    for (const dev of await this.holders(vip.split("/")[0] as string)) await run("ip", ["addr", "del", vip, "dev", dev]);
  }
}
