/**
 * The reference daemon's core: the SDK's {@link Host} (membership, the modules and their kinds, checkers, VIPs,
 * stores, ordered shutdown) built from the daemon's configuration file, exactly as a program builds one in code.
 * What the daemon adds lives beside it: the control API and console (api.ts), the CLI (cli.ts, commands.ts),
 * metrics (metrics.ts); here only the API's view of the cluster (each node's API URL).
 */
import { Host, type HostEvents, type HostOptions, type HostState, type HostedModule } from "holdfast";
import { CommandRefusedError } from "holdfast";
import type { DaemonConfig } from "./config.js";

export { COMMANDS, type CommandName, type ExtensionCommand, type MetricSample, type ModuleExtension, type ModuleView } from "holdfast";
export type { HostExtension as DaemonExtension, ExtensionContext, PrepareContext } from "holdfast";

/** A module as the daemon runs it. */
export type ModuleHost = HostedModule;
export type DaemonOptions = HostOptions;
export type DaemonEvents = HostEvents;

/** What `GET /api/v1/state` returns: the host's view of the cluster, with each node's API URL. */
export interface ClusterState extends Omit<HostState, "nodes"> {
  readonly nodes: readonly (HostState["nodes"][number] & { readonly apiUrl: string })[];
}

export class Daemon extends Host {
  declare readonly config: DaemonConfig;

  constructor(config: DaemonConfig, opts: DaemonOptions = {}) {
    super(config, opts);
  }

  /** The whole cluster as this node sees it (own modules in full, peers' from their heartbeats). */
  override state(): ClusterState {
    const s = super.state();
    const url = new Map(this.config.nodes.map((n) => [n.id, n.apiUrl]));
    return { ...s, nodes: s.nodes.map((n) => ({ ...n, apiUrl: url.get(n.id) ?? "" })) };
  }

  /** Runs a command on a module (see {@link Host.command}). */
  host(name: string): ModuleHost {
    return this.hosted(name);
  }
}

export { CommandRefusedError };
