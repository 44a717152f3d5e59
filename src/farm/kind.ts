/**
 * The farm module kind: for each farm module named under `farm:` in the node's configuration, the
 * VIP on every node (shared MAC), the packet filter (eBPF, nftables or userspace) and the bucket ownership
 * driven by membership ({@link FarmDriver}). The module's `start_both` starts the app; once it succeeded the
 * filter and VIP are installed and this node takes its share of the buckets.
 */
import { parseIp } from "../core/buckets.js";
import type { HostExtension, ModuleExtension } from "../host/host.js";
import { FarmDriver } from "./farm.js";
import { DEFAULT_LEASE_MS, PacketFilter } from "./filter/index.js";
import { FarmVip } from "./vip.js";

/** `02:bf:` + the first IPv4 VIP's four bytes (or the last four of an IPv6 one): unicast, flooded. */
export function defaultSharedMac(vips: readonly string[]): string {
  const a = parseIp(vips[0] as string);
  const last4 = a.subarray(a.length - 4);
  return ["02", "bf", ...[...last4].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

const attached = new WeakMap<object, Map<string, { driver: FarmDriver; filter: PacketFilter; vip: FarmVip }>>();

/** The farm driver, packet filter and VIP the farm kind attached to module `module` of `host`. */
export function farmOf(host: object, module: string): { driver: FarmDriver; filter: PacketFilter; vip: FarmVip } | undefined {
  return attached.get(host)?.get(module);
}

export const farmKind: HostExtension = {
  name: "farm",
  attach({ host, module, nodeId, config, publish }): ModuleExtension | undefined {
    const f = config.farm[module.name];
    if (module.definition.kind !== "farm" || !f) return undefined;
    const addresses = module.definition.vips.map((v) => v.split("/")[0] as string);
    const log = (line: string) => module.note("info", line);
    const filter = new PacketFilter({
      iface: f.iface,
      vips: addresses,
      rules: f.rules ?? [],
      defaultBy: "address+port",
      ...(f.seed !== undefined ? { seed: f.seed } : {}),
      backend: f.backend ?? "auto",
      ...(f.avoid !== undefined ? { avoid: f.avoid } : {}),
      instance: `hf_${module.name.replace(/[^A-Za-z0-9_]/g, "_")}`.slice(0, 20),
      log,
      // After a freeze the stale table must not come back with the lease (the peers took these buckets meanwhile):
      // released at once, retaken by the driver once the peers are heard again (driver.stalled below).
      releaseOnLapse: true,
    });
    const vip = new FarmVip({ iface: f.iface, addresses, mac: f.mac ?? defaultSharedMac(addresses), instance: `hfv_${module.name.replace(/[^A-Za-z0-9_]/g, "_")}`.slice(0, 20), log });
    const driver = new FarmDriver({
      module: module.name,
      nodeId,
      vip,
      filter,
      nodes: host.membership.settings.nodes.map((n) => n.id),
      // A stall shorter than this cannot have let the peers take this node's buckets.
      stallMinMs: host.membership.settings.timing.lossTimeoutMs - host.membership.settings.timing.pulseMs,
      // This node's held set (buckets it owns or may still hold connections in) goes to its peers in the heartbeat
      // metadata (`held.<module>`), so each owner knows where it needs the strict socket lookup.
      publishHeld: (held) => publish("held", held),
    });
    driver.on("buckets", (e) => module.note("info", `farm buckets: ${e.reason}`));
    driver.on("error", (e) => module.note("error", `farm: ${e.message}`));
    filter.on("lease-lapsed", (e) => driver.stalled(`filter lease lapsed for ${e.lapsedMs} ms`, e.lapsedMs + (filter.options.leaseMs ?? DEFAULT_LEASE_MS)));
    const unbind = driver.bind(module, host.membership);
    let mine = attached.get(host);
    if (!mine) attached.set(host, (mine = new Map()));
    mine.set(module.name, { driver, filter, vip });
    return {
      vip: driver,
      driver,
      details: () => {
        const owned: number[] = [];
        driver.owned.forEach((v, b) => v && owned.push(b));
        return { buckets: { owned, total: driver.owned.length, backend: filter.backend ?? "none" } };
      },
      metrics: () => {
        let n = 0;
        driver.owned.forEach((v) => (n += v));
        return [{ name: "holdfast_farm_buckets_owned", help: "Farm buckets this node accepts", type: "gauge", labels: { module: module.name }, value: n }];
      },
      close: async () => {
        unbind();
        await driver.remove().catch(() => undefined);
        attached.get(host)?.delete(module.name);
      },
    };
  },
};
