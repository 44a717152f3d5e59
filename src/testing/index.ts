// Test helpers users can import: fake clock, fake network, the simulator, the namespace lab.
export {};
export { Lab, LabError, cleanStaleLabs, ensureBpffs, resolveLabOptions, LAB_LIMITS, MAX_RETAINED_LINES } from "./lab.js";
export type { LabOptions, LabHost, LabProcess, ExecResult, LabMountOptions, LabSpawnOptions, LabExecOptions } from "./lab.js";
