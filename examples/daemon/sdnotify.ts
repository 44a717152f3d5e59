/**
 * systemd readiness notification (sd_notify(3)): one datagram such as `READY=1` written to the unix
 * datagram socket named by `NOTIFY_SOCKET`. Node's `dgram` has no AF_UNIX, so the four libc calls are
 * made through koffi (already a dependency for the BPF loader): no extra package.
 * An `@` at the start of the path names an abstract socket (a leading NUL byte).
 */
import koffi from "koffi";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

let libc: { socket: (d: number, t: number, p: number) => number; sendto: (...a: unknown[]) => number; close: (fd: number) => number } | undefined;

function lib() {
  if (libc) return libc;
  const l = koffi.load("libc.so.6");
  libc = {
    socket: l.func("int socket(int domain, int type, int protocol)") as never,
    sendto: l.func("long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)") as never,
    close: l.func("int close(int fd)") as never,
  };
  return libc;
}

/** The `sockaddr_un` bytes for a path (or `@abstract` name). */
export function sockaddrUn(path: string): Buffer {
  const name = Buffer.from(path.startsWith("@") ? `\0${path.slice(1)}` : path, "utf8");
  if (name.length > 107) throw new RangeError(`NOTIFY_SOCKET path too long (${name.length} bytes)`);
  const addr = Buffer.alloc(2 + name.length + (path.startsWith("@") ? 0 : 1));
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  return addr;
}

/**
 * Sends `state` (e.g. `READY=1`, `STOPPING=1`, `STATUS=...`) to systemd. Returns false (and does
 * nothing) when `NOTIFY_SOCKET` is not set; throws when the write fails.
 */
export function sdNotify(state: string, socketPath = process.env.NOTIFY_SOCKET): boolean {
  if (!socketPath) return false;
  const c = lib();
  const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error("sd_notify: socket() failed");
  try {
    const msg = Buffer.from(state, "utf8");
    const addr = sockaddrUn(socketPath);
    const n = c.sendto(fd, msg, msg.length, 0, addr, addr.length);
    if (Number(n) !== msg.length) throw new Error(`sd_notify: sendto(${socketPath}) failed`);
  } finally {
    c.close(fd);
  }
  return true;
}
