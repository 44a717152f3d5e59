/**
 * A minimal binding to the system's libnftables (`libnftables.so.1`, shipped with the `nftables` package
 * and used by the `nft` command) through koffi: run an nft script in this process, synchronously.
 *
 * Why: the nftables backend renews its lease every leaseMs/4 (100 ms by default). Spawning `nft -f -` costs
 * ~20 ms of a core each time (measured here); one `nft_run_cmd_from_buffer` call of the same transaction
 * costs ~0.1-0.2 ms. When the library cannot be loaded, {@link NftRunner} falls back to spawning `nft`.
 */
import koffi from "koffi";
import { withNetns } from "../../native/libbpf.js";
import { runNft } from "./nftables.js";

type Fn = (...args: unknown[]) => unknown;
interface Api { ctxNew: Fn; ctxFree: Fn; run: Fn; bufferError: Fn; bufferOutput: Fn; getError: Fn }
let api: Api | undefined;
let apiError: unknown;

function bind(): Api {
  if (api) return api;
  if (apiError) throw apiError;
  try {
    const lib = koffi.load("libnftables.so.1");
    api = {
      ctxNew: lib.func("void *nft_ctx_new(uint32_t flags)"),
      ctxFree: lib.func("void nft_ctx_free(void *ctx)"),
      run: lib.func("int nft_run_cmd_from_buffer(void *ctx, const char *buf)"),
      bufferError: lib.func("int nft_ctx_buffer_error(void *ctx)"),
      bufferOutput: lib.func("int nft_ctx_buffer_output(void *ctx)"),
      getError: lib.func("const char *nft_ctx_get_error_buffer(void *ctx)"),
    };
    return api;
  } catch (err) {
    apiError = err;
    throw err;
  }
}

/**
 * Runs nft scripts (one atomic transaction each) in a network namespace (`netns` path) or in the calling
 * one: in-process through libnftables when it loads, else by spawning `nft -f -`.
 */
export class NftRunner {
  readonly #netns: string | undefined;
  #ctx: unknown;
  #inProcess: boolean;

  constructor(netns?: string) {
    this.#netns = netns;
    try {
      const a = bind();
      const ctx = this.#inNs(() => a.ctxNew(0));
      if (!ctx) throw new Error("nft_ctx_new returned NULL");
      a.bufferError(ctx);
      a.bufferOutput(ctx);
      this.#ctx = ctx;
      this.#inProcess = true;
    } catch {
      this.#inProcess = false;
    }
  }

  /** True when scripts run in this process (libnftables), false when `nft` is spawned. */
  get inProcess(): boolean {
    return this.#inProcess;
  }

  #inNs<T>(fn: () => T): T {
    return this.#netns ? withNetns(this.#netns, fn) : fn();
  }

  /** Runs one script (synchronously when in-process). Rejects with nft's error message. */
  async run(script: string): Promise<void> {
    if (!this.#inProcess || !this.#ctx) {
      await runNft(["-f", "-"], script, this.#netns);
      return;
    }
    const a = bind();
    const ctx = this.#ctx;
    const rc = Number(this.#inNs(() => a.run(ctx, script)));
    if (rc !== 0) throw new Error(`nft: ${String(a.getError(ctx) ?? "").trim() || `error ${rc}`}`);
  }

  /** Frees the context. Idempotent. */
  close(): void {
    if (this.#ctx) bind().ctxFree(this.#ctx);
    this.#ctx = undefined;
    this.#inProcess = false;
  }
}
