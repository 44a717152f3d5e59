// "holdfast/internals": the pure cores (membership, module engine), the wire formats, the bucket arithmetic and
// the filter's compiled form. For tools, simulations and tests; programs use "holdfast".
export * from "./core/membership/index.js";
export * from "./core/module/index.js";
export * from "./core/buckets.js";
export { compileFilter, decide, nftRuleset, FarmProgram } from "./farm/filter/index.js";
export { ArbiterWitness, ArbiterLease, encodeArbiter, decodeArbiter, type ArbiterMessage, type ArbiterWitnessOptions, type ArbiterLeaseOptions } from "./core/arbiter.js";
export { hmacSha256 } from "./runtime/crypto.js";
export { groupAlive } from "./runtime/hooks.js";
export { garpFrames, type NeighbourAdvertiser, type CommandRunner as MirrorVipCommandRunner } from "./mirror/vip.js";
export { readExtentLog, summarizeExtentLog, type ExtentRecord } from "./mirror/extentLog.js";
export { helperPath } from "./mirror/helper.js";
export { chooseEngine, probeEngines, runJsFuseDaemon, type EngineProbe } from "./mirror/jsfuse/index.js";
export { globMatch } from "./mirror/pathFilter.js";
export { decodeOrThrow } from "./core/decode.js";
