export * from "./config.js";
export * from "./wire.js";
export * from "./membership.js";
