/**
 * The farm wiring for the reference daemon: for each farm module named under `farm:` in the config, the
 * VIP on every node (shared MAC), the packet filter (eBPF, nftables or userspace) and the bucket ownership
 * driven by membership ({@link FarmDriver}). The module's `start_both` starts the app; once it succeeded the
 * filter and VIP are installed and this node takes its share of the buckets.
 */
import { parseIp } from "../../src/core/buckets.js";
import { FarmDriver } from "../../src/farm/farm.js";
import { DEFAULT_LEASE_MS, PacketFilter } from "../../src/farm/filter/index.js";
import { FarmVip } from "../../src/farm/vip.js";
import type { DaemonExtension, ModuleExtension } from "./daemon.js";

/** `02:bf:` + the first IPv4 VIP's four bytes (or the last four of an IPv6 one): unicast, flooded. */
export function defaultSharedMac(vips: readonly string[]): string {
  const a = parseIp(vips[0] as string);
  const last4 = a.subarray(a.length - 4);
  return ["02", "bf", ...[...last4].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

export const farmExtension: DaemonExtension = {
  name: "farm",
  attach({ daemon, module, nodeId, config }): ModuleExtension | undefined {
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
      reportIn: (meta, name) => (meta as { r?: Record<string, unknown> } | null | undefined)?.r?.[name],
      nodes: daemon.membership.settings.nodes.map((n) => n.id),
      stallMinMs: daemon.membership.settings.timing.lossTimeoutMs - daemon.membership.settings.timing.pulseMs,
      // No publishHeld: the daemon owns its heartbeat metadata (reports and extras) and offers extensions no field
      // of their own yet, so peers never learn this node's held set and every owned bucket stays contested (the
      // eBPF owner makes the strict socket lookup for every mid-flow packet, as before contested sets existed).
    });
    driver.on("buckets", (e) => module.note("info", `farm buckets: ${e.reason}`));
    driver.on("error", (e) => module.note("error", `farm: ${e.message}`));
    filter.on("lease-lapsed", (e) => driver.stalled(`filter lease lapsed for ${e.lapsedMs} ms`, e.lapsedMs + (filter.options.leaseMs ?? DEFAULT_LEASE_MS)));
    const unbind = driver.bind(module, daemon.membership);
    return {
      vip: driver,
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
      },
    };
  },
};
