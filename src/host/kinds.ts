// The module kinds every host runs (before those given in its options).
import { farmKind } from "../farm/kind.js";
import type { HostExtension } from "./host.js";
import { mirrorKind, noReplicationKind } from "../mirror/kind.js";

export const BUILTIN_EXTENSIONS: readonly HostExtension[] = [noReplicationKind, farmKind, mirrorKind];
