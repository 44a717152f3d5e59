/**
 * A thin binding to the system's `libbpf.so.1` (Debian 12: package libbpf1, pulled in by iproute2) through
 * koffi: open and load a BPF object, find programs and maps, update and read maps, attach a tc program
 * (clsact hook) and run a program on a crafted packet (BPF_PROG_TEST_RUN). No compiler is needed at run
 * time: the object is prebuilt (src/native/farm.bpf.o).
 *
 * libbpf >= 1.0 semantics are assumed: functions return a negative errno, pointer-returning functions
 * return NULL and set errno.
 *
 * All calls are synchronous and run on the calling thread (this matters for {@link withNetns}).
 */
import koffi from "koffi";
import { HoldfastError, NotSupportedError } from "../core/errors.js";

/** A libbpf call failed. `errno` is the positive error number (e.g. 1 = EPERM, 22 = EINVAL). */
export class BpfError extends HoldfastError {
  readonly errno: number;
  readonly call: string;
  constructor(call: string, errno: number, detail = "") {
    super("HOLDFAST_BPF_FAILED", `${call} failed: ${errnoName(errno)}${detail ? ` (${detail})` : ""}`);
    this.errno = errno;
    this.call = call;
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 4: "EINTR", 7: "E2BIG", 9: "EBADF", 12: "ENOMEM", 13: "EACCES", 16: "EBUSY", 17: "EEXIST",
  19: "ENODEV", 22: "EINVAL", 28: "ENOSPC", 38: "ENOSYS", 95: "EOPNOTSUPP", 524: "ENOTSUPP",
};
/** `EPERM (1)` style name for an errno. */
export function errnoName(errno: number): string {
  return `${ERRNO_NAMES[errno] ?? "errno"} (${errno})`;
}

/** tc attach points (enum bpf_tc_attach_point). */
export const BPF_TC_INGRESS = 1;
export const BPF_TC_EGRESS = 2;
/** tc verdicts returned by a classifier in direct-action mode. */
export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;

type Fn = (...args: unknown[]) => unknown;

interface Api {
  open_file: Fn; open_mem: Fn; load: Fn; close: Fn; find_prog: Fn; prog_fd: Fn; find_map: Fn; map_fd: Fn;
  update: Fn; lookup: Fn; test_run: Fn; hook_create: Fn; hook_destroy: Fn; attach: Fn; detach: Fn; query: Fn;
  ncpus: Fn; set_print: Fn;
  if_nametoindex: Fn; setns: Fn; open: Fn; closefd: Fn;
}

let api: Api | undefined;
let loadError: unknown;

/**
 * Defines a named koffi type once per process: a second evaluation of this module (ESM and CJS builds
 * both loaded, or a test runner re-evaluating modules) would otherwise fail with "Duplicate type name".
 */
export function koffiType<T>(name: string, define: () => T): T {
  try {
    return define();
  } catch (err) {
    if (String(err).includes("Duplicate type name")) return koffi.type(name) as T;
    throw err;
  }
}

const TcHook = koffiType("holdfast_bpf_tc_hook", () => koffi.struct("holdfast_bpf_tc_hook", {
  sz: "size_t", ifindex: "int", attach_point: "int", parent: "uint32_t",
}));
const TcOpts = koffiType("holdfast_bpf_tc_opts", () => koffi.struct("holdfast_bpf_tc_opts", {
  sz: "size_t", prog_fd: "int", flags: "uint32_t", prog_id: "uint32_t", handle: "uint32_t", priority: "uint32_t",
}));
const TestRunOpts = koffiType("holdfast_bpf_test_run_opts", () => koffi.struct("holdfast_bpf_test_run_opts", {
  sz: "size_t", data_in: "void *", data_out: "void *", data_size_in: "uint32_t", data_size_out: "uint32_t",
  ctx_in: "void *", ctx_out: "void *", ctx_size_in: "uint32_t", ctx_size_out: "uint32_t",
  retval: "uint32_t", repeat: "int", duration: "uint32_t", flags: "uint32_t", cpu: "uint32_t", batch_size: "uint32_t",
}));

function bind(): Api {
  if (api) return api;
  if (loadError) throw loadError;
  try {
    const lib = koffi.load("libbpf.so.1");
    const libc = koffi.load("libc.so.6");
    api = {
      open_file: lib.func("void *bpf_object__open_file(const char *path, void *opts)"),
      open_mem: lib.func("void *bpf_object__open_mem(const void *buf, size_t sz, void *opts)"),
      load: lib.func("int bpf_object__load(void *obj)"),
      close: lib.func("void bpf_object__close(void *obj)"),
      find_prog: lib.func("void *bpf_object__find_program_by_name(void *obj, const char *name)"),
      prog_fd: lib.func("int bpf_program__fd(void *prog)"),
      find_map: lib.func("void *bpf_object__find_map_by_name(void *obj, const char *name)"),
      map_fd: lib.func("int bpf_map__fd(void *map)"),
      update: lib.func("int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)"),
      lookup: lib.func("int bpf_map_lookup_elem(int fd, const void *key, void *value)"),
      test_run: lib.func("int bpf_prog_test_run_opts(int prog_fd, _Inout_ holdfast_bpf_test_run_opts *opts)"),
      hook_create: lib.func("int bpf_tc_hook_create(holdfast_bpf_tc_hook *hook)"),
      hook_destroy: lib.func("int bpf_tc_hook_destroy(holdfast_bpf_tc_hook *hook)"),
      attach: lib.func("int bpf_tc_attach(holdfast_bpf_tc_hook *hook, _Inout_ holdfast_bpf_tc_opts *opts)"),
      detach: lib.func("int bpf_tc_detach(holdfast_bpf_tc_hook *hook, holdfast_bpf_tc_opts *opts)"),
      query: lib.func("int bpf_tc_query(holdfast_bpf_tc_hook *hook, _Inout_ holdfast_bpf_tc_opts *opts)"),
      ncpus: lib.func("int libbpf_num_possible_cpus(void)"),
      set_print: lib.func("void *libbpf_set_print(void *fn)"),
      if_nametoindex: libc.func("unsigned int if_nametoindex(const char *name)"),
      setns: libc.func("int setns(int fd, int nstype)"),
      open: libc.func("int open(const char *path, int flags)"),
      closefd: libc.func("int close(int fd)"),
    };
    return api;
  } catch (err) {
    loadError = new NotSupportedError("libbpf", `cannot load libbpf.so.1 through koffi: ${String(err)} (install the Debian package libbpf1)`, { cause: err });
    throw loadError;
  }
}

/** Throws NotSupportedError when libbpf.so.1 cannot be loaded. */
export function libbpfAvailable(): void {
  bind();
}

function check(call: string, rc: unknown, detail = ""): number {
  const n = Number(rc);
  if (n < 0) throw new BpfError(call, -n, detail);
  return n;
}

/** Number of possible CPUs: the value count of a per-CPU map. */
export function possibleCpus(): number {
  return check("libbpf_num_possible_cpus", bind().ncpus());
}

/** Silences libbpf's own stderr logging (warnings during feature probing). */
export function silenceLibbpf(): void {
  bind().set_print(null);
}

/** An opened (and later loaded) BPF object. Close it to free its programs and maps (unless attached). */
export class BpfObject {
  #obj: unknown;
  private constructor(obj: unknown) {
    this.#obj = obj;
  }

  /** Opens an object from memory (the bytes of a `.bpf.o`). Does not load it into the kernel yet. */
  static openMem(bytes: Uint8Array): BpfObject {
    const a = bind();
    const buf = Buffer.from(bytes); // libbpf keeps no reference after open, but keep it alive meanwhile
    const obj = a.open_mem(buf, buf.length, null);
    if (!obj) throw new BpfError("bpf_object__open_mem", koffi.errno() || 22);
    return new BpfObject(obj);
  }

  /** Opens an object file. */
  static openFile(path: string): BpfObject {
    const obj = bind().open_file(path, null);
    if (!obj) throw new BpfError("bpf_object__open_file", koffi.errno() || 22, path);
    return new BpfObject(obj);
  }

  #handle(): unknown {
    if (!this.#obj) throw new BpfError("bpf object", 9, "already closed");
    return this.#obj;
  }

  /** Creates the maps and loads (verifies) the programs. */
  load(): void {
    check("bpf_object__load", bind().load(this.#handle()));
  }

  /** The fd of a loaded program. */
  programFd(name: string): number {
    const p = bind().find_prog(this.#handle(), name);
    if (!p) throw new BpfError("bpf_object__find_program_by_name", 2, name);
    return check("bpf_program__fd", bind().prog_fd(p), name);
  }

  /** The fd of a map (after load). */
  mapFd(name: string): number {
    const m = bind().find_map(this.#handle(), name);
    if (!m) throw new BpfError("bpf_object__find_map_by_name", 2, name);
    return check("bpf_map__fd", bind().map_fd(m), name);
  }

  /** Frees the object: its fds close; programs stay only where attached. Idempotent. */
  close(): void {
    if (this.#obj) bind().close(this.#obj);
    this.#obj = undefined;
  }
}

/** Writes one map entry (BPF_ANY). Atomic per entry. */
export function mapUpdate(fd: number, key: Uint8Array, value: Uint8Array, flags = 0): void {
  check("bpf_map_update_elem", bind().update(fd, Buffer.from(key), Buffer.from(value), flags));
}

/** Reads one map entry into a buffer of `valueSize` bytes (for per-CPU maps: value size x CPUs, 8-aligned). */
export function mapLookup(fd: number, key: Uint8Array, valueSize: number): Buffer | undefined {
  const out = Buffer.alloc(valueSize);
  const rc = Number(bind().lookup(fd, Buffer.from(key), out));
  if (rc === -2) return undefined;
  check("bpf_map_lookup_elem", rc);
  return out;
}

/** Result of a BPF_PROG_TEST_RUN. */
export interface TestRunResult {
  /** The program's return value (for tc: TC_ACT_OK = 0, TC_ACT_SHOT = 2). */
  readonly retval: number;
  /** Average run time per repetition, in ns. */
  readonly durationNs: number;
  /** The packet as the program left it (after rewrites). */
  readonly dataOut: Uint8Array;
}

/** Runs a loaded program once (or `repeat` times) on a crafted packet, without attaching it anywhere. */
export function testRun(progFd: number, packet: Uint8Array, repeat = 1): TestRunResult {
  const data = Buffer.from(packet);
  const out = Buffer.alloc(Math.max(data.length + 256, 1500));
  const opts = {
    sz: koffi.sizeof(TestRunOpts), data_in: data, data_out: out, data_size_in: data.length, data_size_out: out.length,
    ctx_in: null, ctx_out: null, ctx_size_in: 0, ctx_size_out: 0, retval: 0, repeat, duration: 0, flags: 0, cpu: 0, batch_size: 0,
  };
  check("bpf_prog_test_run_opts", bind().test_run(progFd, opts));
  return { retval: opts.retval, durationNs: opts.duration, dataOut: Uint8Array.from(out.subarray(0, opts.data_size_out)) };
}

/** The network interface index of `name` in the calling thread's network namespace (0 when absent). */
export function ifIndex(name: string): number {
  return Number(bind().if_nametoindex(name));
}

function hook(ifindex: number, attachPoint: number): Record<string, unknown> {
  return { sz: koffi.sizeof(TcHook), ifindex, attach_point: attachPoint, parent: 0 };
}

/**
 * Runs a libbpf call whose failure is an expected answer here (the qdisc already there, no filter at that
 * handle) with libbpf's printing off: libbpf logs the kernel's extack message for every failed netlink request
 * ("Exclusivity flag on, cannot modify", "Cannot find specified filter chain") to stderr, where it reads as an
 * error at every start. A real failure still throws, with its errno, from the caller's check.
 */
function expectedFailure(call: () => unknown): number {
  const api = bind();
  const previous = api.set_print(null);
  try {
    return Number(call());
  } finally {
    api.set_print(previous);
  }
}

/** Creates the clsact qdisc on an interface (EEXIST is fine: it may already be there); one call serves both hooks. */
export function tcHookCreate(ifindex: number, attachPoint = BPF_TC_INGRESS): void {
  const rc = expectedFailure(() => bind().hook_create(hook(ifindex, attachPoint)));
  if (rc < 0 && rc !== -17) check("bpf_tc_hook_create", rc);
}

/** Removes the clsact qdisc with every filter in it (use only when this run created it). */
export function tcHookDestroy(ifindex: number): void {
  const rc = expectedFailure(() => bind().hook_destroy(hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)));
  if (rc < 0 && rc !== -2 && rc !== -22) check("bpf_tc_hook_destroy", rc);
}

/** Attaches a tc program (direct action) at (handle, priority); returns the kernel program id. */
export function tcAttach(ifindex: number, progFd: number, handle: number, priority: number, replace = true, attachPoint = BPF_TC_INGRESS): number {
  const opts = { sz: koffi.sizeof(TcOpts), prog_fd: progFd, flags: replace ? 1 : 0, prog_id: 0, handle, priority };
  check("bpf_tc_attach", bind().attach(hook(ifindex, attachPoint), opts));
  return opts.prog_id;
}

/** Detaches the tc filter at (handle, priority). Returns false when there was none. */
export function tcDetach(ifindex: number, handle: number, priority: number, attachPoint = BPF_TC_INGRESS): boolean {
  const opts = { sz: koffi.sizeof(TcOpts), prog_fd: 0, flags: 0, prog_id: 0, handle, priority };
  const rc = expectedFailure(() => bind().detach(hook(ifindex, attachPoint), opts));
  if (rc === -2 || rc === -22) return false;
  check("bpf_tc_detach", rc);
  return true;
}

/** The program id attached at (handle, priority), or undefined. */
export function tcQuery(ifindex: number, handle: number, priority: number, attachPoint = BPF_TC_INGRESS): number | undefined {
  const opts = { sz: koffi.sizeof(TcOpts), prog_fd: 0, flags: 0, prog_id: 0, handle, priority };
  const rc = expectedFailure(() => bind().query(hook(ifindex, attachPoint), opts));
  if (rc === -2 || rc === -22) return undefined;
  check("bpf_tc_query", rc);
  return opts.prog_id;
}

/**
 * Runs `fn` with the calling thread switched into the network namespace at `nsPath` (e.g.
 * `/run/netns/NAME`), then switches back. Only synchronous work belongs in `fn` (Node runs JS on this one
 * thread; libuv's pool threads are not switched). Needs CAP_SYS_ADMIN.
 */
export function withNetns<T>(nsPath: string, fn: () => T): T {
  const a = bind();
  const O_RDONLY = 0;
  const CLONE_NEWNET = 0x40000000;
  const self = Number(a.open("/proc/thread-self/ns/net", O_RDONLY));
  if (self < 0) throw new BpfError("open /proc/thread-self/ns/net", koffi.errno());
  const target = Number(a.open(nsPath, O_RDONLY));
  if (target < 0) {
    a.closefd(self);
    throw new BpfError(`open ${nsPath}`, koffi.errno());
  }
  try {
    if (Number(a.setns(target, CLONE_NEWNET)) < 0) throw new BpfError(`setns ${nsPath}`, koffi.errno());
    let result: { value: T } | { error: unknown };
    try {
      result = { value: fn() };
    } catch (error) {
      result = { error };
    }
    if (Number(a.setns(self, CLONE_NEWNET)) < 0) {
      // Staying in the wrong namespace would be worse than crashing loudly.
      throw new BpfError("setns back to the original namespace", koffi.errno());
    }
    if ("error" in result) throw result.error;
    return result.value;
  } finally {
    a.closefd(target);
    a.closefd(self);
  }
}
