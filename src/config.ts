// "holdfast/config": the codecs behind a node's configuration, for tools that extend or check it (the reference
// daemon adds its control API's section with them). Programs build a Host with "holdfast" alone.
export {
  HOST_CONFIG_PROPS,
  HostConfigCodec,
  FarmEntryCodec,
  ReplicationSyncCodec,
  ReplicationEntryCodec,
  NodeEntryCodec,
  NonEmptyString,
  Port,
  optional,
  strict,
  parseConfigText,
  requireNodeId,
} from "./host/config.js";
export { decodeOrThrow } from "./core/decode.js";
export { CheckerConfigCodec, decodeCheckerConfig, parseHostPort, readKeyFile } from "./checkers/config.js";
export { ModuleDefinitionCodec, ModulesFileCodec, ModuleReportCodec, HookSpecCodec, HooksCodec, CheckerEntryCodec, CheckerActionCodec, DurationMs, VipCidr, resolveModules, parseModulesText } from "./core/module/index.js";
export { MembershipOptionsC, MembershipTimingOverridesC, ClusterNodeC, validateMembershipOptions } from "./core/membership/config.js";
