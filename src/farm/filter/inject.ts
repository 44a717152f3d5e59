/**
 * Sends raw Ethernet frames on an interface (AF_PACKET), for filter tests and benchmarks: the crafted
 * vectors reach the receiving side's ingress hooks exactly as built. Needs CAP_NET_RAW.
 */
import koffi from "koffi";
import { NotSupportedError } from "../../core/errors.js";
import { ifIndex, withNetns } from "../../native/libbpf.js";

type Fn = (...args: unknown[]) => unknown;
let libc: { socket: Fn; sendto: Fn; close: Fn } | undefined;
function bind(): NonNullable<typeof libc> {
  if (!libc) {
    const l = koffi.load("libc.so.6");
    libc = {
      socket: l.func("int socket(int domain, int type, int protocol)"),
      sendto: l.func("long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)"),
      close: l.func("int close(int fd)"),
    };
  }
  return libc;
}

const AF_PACKET = 17;
const SOCK_RAW = 3;
const ETH_P_ALL_BE = 0x0300; // htons(ETH_P_ALL)

/** An AF_PACKET socket bound to one interface (created in `netns` when given). */
export class FrameSender {
  #fd: number;
  readonly #addr: Buffer;

  constructor(iface: string, netns?: string) {
    const c = bind();
    const open = (): [number, number] => {
      const fd = Number(c.socket(AF_PACKET, SOCK_RAW, 0));
      return [fd, ifIndex(iface)];
    };
    const [fd, index] = netns ? withNetns(netns, open) : open();
    if (fd < 0) throw new NotSupportedError("AF_PACKET", `socket() failed: errno ${koffi.errno()}`);
    if (index === 0) {
      c.close(fd);
      throw new NotSupportedError("AF_PACKET", `no interface named ${iface}`);
    }
    this.#fd = fd;
    // struct sockaddr_ll { u16 family; be16 protocol; int ifindex; u16 hatype; u8 pkttype; u8 halen; u8 addr[8]; }
    const a = Buffer.alloc(20);
    a.writeUInt16LE(AF_PACKET, 0);
    a.writeUInt16LE(ETH_P_ALL_BE, 2);
    a.writeInt32LE(index, 4);
    a[11] = 6;
    this.#addr = a;
  }

  /** Sends one complete frame (destination MAC first). */
  send(frame: Uint8Array): void {
    if (this.#fd < 0) throw new Error("FrameSender closed");
    this.#addr.set(frame.subarray(0, 6), 12);
    const n = Number(bind().sendto(this.#fd, Buffer.from(frame), frame.length, 0, this.#addr, this.#addr.length));
    if (n !== frame.length) throw new Error(`sendto: ${n} (errno ${koffi.errno()})`);
  }

  /**
   * Sends one frame and reports the outcome instead of throwing: `errno` 0 when the frame was handed to the
   * interface, else the errno (ENOBUFS = 105 when an egress hook dropped it).
   */
  trySend(frame: Uint8Array): { errno: number } {
    if (this.#fd < 0) throw new Error("FrameSender closed");
    this.#addr.set(frame.subarray(0, 6), 12);
    const n = Number(bind().sendto(this.#fd, Buffer.from(frame), frame.length, 0, this.#addr, this.#addr.length));
    return { errno: n === frame.length ? 0 : koffi.errno() || 5 };
  }

  close(): void {
    if (this.#fd >= 0) bind().close(this.#fd);
    this.#fd = -1;
  }
}
