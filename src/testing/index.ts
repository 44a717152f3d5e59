// Test helpers users can import: fake clock, fake network, the simulator, the namespace lab.
export {};
export { Lab, LabError, cleanStaleLabs, ensureBpffs, resolveLabOptions, LAB_LIMITS, MAX_RETAINED_LINES } from "./lab.js";
export type { LabOptions, LabHost, LabProcess, ExecResult, LabMountOptions, LabSpawnOptions, LabExecOptions } from "./lab.js";
export { startLoopbackPair, snapshotTree, treeDiff, pollUntil, killMountNamespace, mountNamespaceOf, processesInMountNamespace } from "../mirror/testing.js";
export type { LoopbackPair, Entry as TreeEntry } from "../mirror/testing.js";
export { FakeClock } from "./sim/clock.js";
export { FakeNetwork, type FakeNetworkOptions, type LinkState } from "./sim/network.js";
export { Rng } from "./sim/rng.js";
export { randomSchedule, runMembershipSchedule, simMac, type MembershipSchedule, type SimFault, type SimResult, type SimViolation } from "./sim/membership-sim.js";
export { MemoryFilterBackend, craftPacket, FrameSender, type PacketSpec } from "../farm/filter/index.js";
// In-memory ports of a Module (`Module.create` requires `vip` and `store`; production: MirrorVip / FarmVip, FileModuleStore).
export { MemoryVipDriver, MemoryModuleStore } from "../runtime/module.js";
