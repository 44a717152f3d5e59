/**
 * A minimal binding to the system's libnetfilter_queue (Debian package libnetfilter-queue1) through koffi:
 * receive packets queued by the iptables `NFQUEUE` target and give each a verdict. The queue's socket is
 * watched with koffi's libuv poll, so packets are handled on the event loop without a thread.
 */
import koffi from "koffi";
import { NotSupportedError } from "../../core/errors.js";
import { koffiType, withNetns } from "../../native/libbpf.js";

type Fn = (...args: unknown[]) => unknown;
interface Api {
  open: Fn; close: Fn; bind_pf: Fn; create_queue: Fn; destroy_queue: Fn; set_mode: Fn; set_maxlen: Fn; fd: Fn;
  handle_packet: Fn; get_hdr: Fn; get_payload: Fn; set_verdict: Fn; recv: Fn; setsockopt: Fn;
}
let api: Api | undefined;
const CallbackProto = koffiType("holdfast_nfq_cb", () => koffi.proto("int holdfast_nfq_cb(void *qh, void *nfmsg, void *nfad, void *data)"));

function bind(): Api {
  if (api) return api;
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load("libnetfilter_queue.so.1");
  } catch (err) {
    throw new NotSupportedError("userspace filter", `cannot load libnetfilter_queue.so.1 (install libnetfilter-queue1): ${String(err)}`, { cause: err });
  }
  const libc = koffi.load("libc.so.6");
  api = {
    open: lib.func("void *nfq_open(void)"),
    close: lib.func("int nfq_close(void *h)"),
    bind_pf: lib.func("int nfq_bind_pf(void *h, uint16_t pf)"),
    create_queue: lib.func("void *nfq_create_queue(void *h, uint16_t num, holdfast_nfq_cb *cb, void *data)"),
    destroy_queue: lib.func("int nfq_destroy_queue(void *qh)"),
    set_mode: lib.func("int nfq_set_mode(void *qh, uint8_t mode, uint32_t range)"),
    set_maxlen: lib.func("int nfq_set_queue_maxlen(void *qh, uint32_t len)"),
    fd: lib.func("int nfq_fd(void *h)"),
    handle_packet: lib.func("int nfq_handle_packet(void *h, void *buf, int len)"),
    get_hdr: lib.func("void *nfq_get_msg_packet_hdr(void *nfad)"),
    get_payload: lib.func("int nfq_get_payload(void *nfad, _Out_ void **data)"),
    set_verdict: lib.func("int nfq_set_verdict(void *qh, uint32_t id, uint32_t verdict, uint32_t len, void *buf)"),
    recv: libc.func("long recv(int fd, void *buf, size_t len, int flags)"),
    setsockopt: libc.func("int setsockopt(int fd, int level, int name, const void *value, uint32_t len)"),
  };
  return api;
}

export const NF_DROP = 0;
export const NF_ACCEPT = 1;
const NFQNL_COPY_PACKET = 2;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
const SOL_SOCKET = 1;
const SO_RCVBUFFORCE = 33;
/**
 * Bytes of each packet copied to userspace: enough for the IPv6 header and the TCP/UDP ports and flags.
 * Small copies keep a full kernel queue (QUEUE_MAXLEN messages) inside the socket buffer, so no queue
 * message is ever lost (a lost message would leave its packet without a verdict until the queue closes).
 */
const COPY_RANGE = 128;
const QUEUE_MAXLEN = 4096;
const RCVBUF = 8 * 1024 * 1024;

/** Decides one queued packet (an IP packet, no link-layer header): true = accept. */
export type QueueHandler = (packet: Uint8Array, hwProtocol: number) => boolean;

/** One NFQUEUE queue bound in the calling (or given) network namespace. */
export class NfQueue {
  #h: unknown;
  #qh: unknown;
  #cb: unknown;
  #poll: ReturnType<typeof koffi.node.poll> | undefined;
  readonly #buf = Buffer.alloc(256 * 1024);

  constructor(queueNum: number, handler: QueueHandler, netns?: string) {
    const a = bind();
    const open = (): unknown => a.open();
    const h = netns ? withNetns(netns, open) : open();
    if (!h) throw new NotSupportedError("userspace filter", `nfq_open failed (errno ${koffi.errno()}): NFQUEUE needs CAP_NET_ADMIN`);
    this.#h = h;
    for (const pf of [2, 10]) a.bind_pf(h, pf); // AF_INET, AF_INET6 (no-op on recent kernels)
    this.#cb = koffi.register((qh: unknown, _msg: unknown, nfad: unknown): number => {
      const hdr = a.get_hdr(nfad);
      const hb = Buffer.from(koffi.view(hdr, 7));
      const id = hb.readUInt32BE(0);
      const hw = hb.readUInt16BE(4);
      const out: unknown[] = [null];
      const len = Number(a.get_payload(nfad, out));
      let accept = false;
      if (len > 0 && out[0]) {
        const pkt = new Uint8Array(koffi.view(out[0], len).slice(0));
        try {
          accept = handler(pkt, hw);
        } catch {
          accept = false;
        }
      }
      a.set_verdict(qh, id, accept ? NF_ACCEPT : NF_DROP, 0, null);
      return 0;
    }, koffi.pointer(CallbackProto));
    const qh = a.create_queue(h, queueNum, this.#cb, null);
    if (!qh) {
      this.close();
      throw new NotSupportedError("userspace filter", `nfq_create_queue(${queueNum}) failed (errno ${koffi.errno()}): queue taken by another process?`);
    }
    this.#qh = qh;
    a.set_mode(qh, NFQNL_COPY_PACKET, COPY_RANGE);
    a.set_maxlen(qh, QUEUE_MAXLEN);
    const fd = Number(a.fd(h));
    const size = Buffer.alloc(4);
    size.writeInt32LE(RCVBUF, 0);
    a.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, size, 4);
    this.#poll = koffi.node.poll(fd, { readable: true }, () => void this.#drain(fd));
  }

  /**
   * Handles every message waiting in the queue's socket now (bounded: at most 64k messages), without
   * waiting for the event loop's poll phase.
   */
  drain(): void {
    if (!this.#h) return;
    const fd = Number(bind().fd(this.#h));
    for (let i = 0; i < 64 && this.#drain(fd) === "more"; i++);
  }

  #drain(fd: number): "empty" | "more" {
    const a = bind();
    for (let i = 0; i < 1024; i++) {
      const n = Number(a.recv(fd, this.#buf, this.#buf.length, MSG_DONTWAIT));
      if (n > 0) {
        a.handle_packet(this.#h, this.#buf, n);
        continue;
      }
      // ENOBUFS (messages lost) is reported once and the data behind it is still there: keep reading.
      if (n === 0 || koffi.errno() === EAGAIN) return "empty";
    }
    return "more";
  }

  /** Stops receiving; packets still queued are dropped by the kernel when the queue goes away. */
  close(): void {
    const a = api;
    this.#poll?.stop();
    this.#poll?.close();
    this.#poll = undefined;
    if (a && this.#qh) a.destroy_queue(this.#qh);
    this.#qh = undefined;
    if (a && this.#h) a.close(this.#h);
    this.#h = undefined;
    if (this.#cb) koffi.unregister(this.#cb as bigint);
    this.#cb = undefined;
  }
}
