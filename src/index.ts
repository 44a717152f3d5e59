// Public surface of holdfast. Programs import from here; "holdfast/testing" has the fakes, the simulator and the
// namespace lab; "holdfast/config" the configuration codecs; "holdfast/internals" the pure cores, wire formats
// and bucket arithmetic (for tools and tests, with no stability promise beyond the package version).

// ---- a node, composed: the host and its module kinds ---------------------------------------------
export { Host, COMMANDS, type HostOptions, type HostEvents, type HostState, type HostedModule, type HostExtension, type ModuleExtension, type ExtensionContext, type PrepareContext, type ExtensionCommand, type MetricSample, type ModuleView, type CommandName } from "./host/host.js";
export { decodeHostConfig, loadHostConfig, isHostConfig, DEFAULT_LOG_DIR, DEFAULT_STATE_DIR, DEFAULT_REPLICATION_PORT, type HostConfig, type HostConfigInput, type HostNode, type FarmEntry, type ReplicationSyncEntry, type DecodeOptions, type Written } from "./host/config.js";
export { traceHost, type TraceLine, type TraceOptions } from "./host/trace.js";
export { farmKind, farmOf, defaultSharedMac } from "./farm/kind.js";
export { mirrorKind, noReplicationKind, mirrorDriverOf, type ResyncInfo } from "./mirror/kind.js";

// ---- errors -------------------------------------------------------------------------------------
export * from "./core/errors.js";

// ---- Membership ---------------------------------------------------------------------------------
export { Membership, DEFAULT_HEARTBEAT_PORT } from "./runtime/membership.js";
export type { MembershipOptions, MembershipEvents } from "./runtime/membership.js";
export { LAN, WAN, SLOW, PRESETS } from "./core/membership/config.js";
export type * from "./core/membership/index.js";
export { generateKey, parseKey, MIN_KEY_BYTES } from "./runtime/crypto.js";
export { nextIncarnation, INCARNATION_FILE, type IncarnationOptions } from "./runtime/incarnation.js";
export { UdpTransport, type Transport } from "./runtime/transport.js";
export { systemClock, type Clock } from "./runtime/clock.js";

// ---- Module: the module engine's driver ---------------------------------------------------------
export { Module, FileModuleStore, bindMembership, loadModulesFile, wallClock, type ModuleOptions, type ModuleEvents, type ModuleStateStore, type ModuleMembership } from "./runtime/module.js";
export type { VipDriver } from "./runtime/module.js";
export { defineModule, resolveModule, MODULE_STATES, HOOK_NAMES, isPrimaryState, decodeModuleReport, ModuleDefaults, RestartPresets } from "./core/module/index.js";
export type * from "./core/module/index.js";
export { runHook, type HookResult, type HookRunRequest } from "./runtime/hooks.js";
export { EventLog, formatLogLine, type ModuleLogRecord } from "./runtime/event-log.js";

// ---- VirtualIp: one interface, a driver per kind --------------------------------------------------
export type { VirtualIp } from "./runtime/module.js";
export { MirrorVip, type MirrorVipOptions } from "./mirror/vip.js";
export { FarmVip, type FarmVipOptions } from "./farm/vip.js";

// ---- farm: PacketFilter and the bucket driver ---------------------------------------------------
export { PacketFilter, EbpfBackend, NftablesBackend, UserspaceBackend } from "./farm/filter/index.js";
export type { PacketFilterOptions, PacketFilterEvents, FilterBackend, FilterBackendName, FilterBackendOptions, FilterCounters, FilterConfig, FilterRule, FilterDecision, PacketFlow } from "./farm/filter/index.js";
export { FarmDriver, type FarmDriverOptions } from "./farm/farm.js";
export { withMetaFields, type MetaFields } from "./farm/meta.js";
export { BUCKET_COUNT, type BalanceBy } from "./core/buckets.js";

// ---- mirror: FileReplicator, the replication driver, split brain --------------------------------
export { FileReplicator, FileReplicatorOptions } from "./mirror/FileReplicator.js";
export type { FileReplicatorEvents, ReplicatorMetrics, ResyncMode, PrimaryReplicationState, PrimaryReplicatorOptions, SecondaryReplicatorOptions } from "./mirror/FileReplicator.js";
export { ApiReplicator, ApiReplicatorOptions, ReplicatedFile, type ApiReplicatorEvents } from "./mirror/ApiReplicator.js";
export { createFileReplicator, JsFuseReplicator, type ReplicatorEngine, type EngineChoice, type EngineReplicator, type CreateFileReplicatorOptions } from "./mirror/jsfuse/index.js";
export { ReplicatorError } from "./mirror/errors.js";
export { generateReplicationKey } from "./mirror/key.js";
export { PathFilter } from "./mirror/pathFilter.js";
export { MARKER_FILE, MARKER_SOURCE } from "./mirror/marker.js";
export { MirrorDriver, MirrorError, type MountNamespaceInfo, type MirrorDriverOptions, type MirrorDriverEvents, type MirrorEndpoint, type MirrorMembership, type MirrorReplicatorTuning, type ReplicatorLike } from "./mirror/mirror.js";
export { mirrorSplitBrain, SPLIT_BRAIN_FENCE_MS, type MirrorSplitBrainOptions, type MirrorSplitBrainWiring, type CheckerEntryLike } from "./mirror/splitBrain.js";

// ---- Checker: probe + hysteresis, in groups per module ------------------------------------------
export type { Checker } from "./checkers/runner.js";
export { CheckerRunner, type CheckerRunnerOptions, type CheckerRunnerEvents, type CheckerResult } from "./checkers/runner.js";
export { CheckerGroup, type CheckerGroupEvents, type CheckerStatus } from "./checkers/group.js";
export { CHECKER_TYPES, CheckerDefaults, createChecker, createProbe } from "./checkers/config.js";
export type { CheckerType, CheckerConfig, CheckerCommon, ProcessCheckerConfig, InterfaceCheckerConfig, IpCheckerConfig, TcpCheckerConfig, PingCheckerConfig, CustomCheckerConfig, ModuleCheckerConfig, SplitBrainCheckerConfig } from "./checkers/config.js";
export type { CheckerAction, CheckerVerdict } from "./core/checker.js";
export { Hysteresis, type HysteresisOptions, type HysteresisState, type ProbeOutcome } from "./core/hysteresis.js";
export type { Probe, ProbeResult } from "./checkers/probe.js";
export { ProcessProbe, type ProcessProbeOptions } from "./checkers/process.js";
export { InterfaceProbe, type InterfaceProbeOptions } from "./checkers/interface.js";
export { IpProbe, type IpProbeOptions } from "./checkers/ip.js";
export { TcpProbe, type TcpProbeOptions } from "./checkers/tcp.js";
export { PingProbe, type PingProbeOptions } from "./checkers/ping.js";
export { CustomProbe, type CustomProbeOptions, type CustomCheckFunction } from "./checkers/custom.js";
export { ModuleProbe, type ModuleProbeOptions, type ModuleStateSnapshot, type ModuleStatusSource, type ModuleHttpSource } from "./checkers/module.js";
export { SplitBrainProbe, type SplitBrainProbeOptions } from "./checkers/split-brain.js";
export { ArbiterProbe, type ArbiterProbeOptions } from "./checkers/arbiter.js";
export { WitnessServer, type WitnessServerOptions, type WitnessServerEvents } from "./checkers/witness-server.js";
