export * from "./types.js";
export * from "./config.js";
export * from "./policy.js";
export * from "./machine.js";
export * from "./log.js";
export * from "./report.js";
