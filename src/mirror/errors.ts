import { HoldfastError } from "../core/errors.js";

/**
 * A failure of the replication helper or of its supervision. Stable codes:
 * - `HOLDFAST_MIRROR_HELPER_MISSING`: the helper binary is not where it should be (rebuild: scripts/build-native.sh).
 * - `HOLDFAST_MIRROR_START_FAILED`: the helper exited or did not report ready in time; `stderr` holds its last words.
 * - `HOLDFAST_MIRROR_HELPER_DIED`: the helper exited while running (and was not, or could no longer be, restarted).
 * - `HOLDFAST_MIRROR_TIMEOUT`: a wait (for sync, for stop) ran out.
 * - `HOLDFAST_MIRROR_PEER`: the peer refused or was refused (authentication, protocol).
 */
export class ReplicatorError extends HoldfastError {
  /** The helper's last stderr lines, when relevant. */
  readonly stderr: string;
  constructor(
    code:
      | "HOLDFAST_MIRROR_HELPER_MISSING"
      | "HOLDFAST_MIRROR_START_FAILED"
      | "HOLDFAST_MIRROR_HELPER_DIED"
      | "HOLDFAST_MIRROR_TIMEOUT"
      | "HOLDFAST_MIRROR_PEER",
    message: string,
    options?: { cause?: unknown; stderr?: string },
  ) {
    super(code, message, options);
    this.stderr = options?.stderr ?? "";
  }
}
