// Public surface of holdfast. Everything a user imports comes from here (or from "holdfast/testing").
export * from "./core/errors.js";
export { decodeOrThrow } from "./core/decode.js";
export type { CheckerAction, CheckerVerdict } from "./core/checker.js";
export * from "./core/module/index.js";
export { FileReplicator, FileReplicatorOptions } from "./mirror/FileReplicator.js";
export type { FileReplicatorEvents, ReplicatorMetrics, ResyncMode, PrimaryReplicationState, PrimaryReplicatorOptions, SecondaryReplicatorOptions } from "./mirror/FileReplicator.js";
export { ReplicatorError } from "./mirror/errors.js";
export { generateReplicationKey } from "./mirror/key.js";
