import { createSocket, type Socket } from "node:dgram";
import { isIPv6 } from "node:net";

/**
 * The datagram port of the membership driver: one endpoint per heartbeat network. A fake in-memory
 * implementation for tests is `FakeNetwork` in `holdfast/testing`.
 */
export interface Transport {
  /** Starts receiving on `network` at `address:port`. */
  bind(network: number, address: string, port: number, onDatagram: (bytes: Uint8Array, from: string) => void): Promise<void>;
  /** Best-effort send (errors are counted, never thrown: a heartbeat network may be down). */
  send(network: number, address: string, port: number, bytes: Uint8Array): void;
  close(): Promise<void>;
  /** Send errors so far (e.g. ENETUNREACH while a link is down). */
  readonly sendErrors: number;
}

/** UDP transport: one socket per heartbeat network, bound to this node's address on that network. */
export class UdpTransport implements Transport {
  private readonly sockets = new Map<number, Socket>();
  private pending = 0;
  private drained: (() => void) | null = null;
  sendErrors = 0;

  async bind(network: number, address: string, port: number, onDatagram: (bytes: Uint8Array, from: string) => void): Promise<void> {
    const sock = createSocket({ type: isIPv6(address) ? "udp6" : "udp4", reuseAddr: false });
    sock.on("message", (msg, rinfo) => onDatagram(msg, rinfo.address));
    sock.on("error", () => {
      this.sendErrors++;
    });
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind(port, address, () => {
        sock.off("error", reject);
        resolve();
      });
    });
    this.sockets.set(network, sock);
  }

  send(network: number, address: string, port: number, bytes: Uint8Array): void {
    const sock = this.sockets.get(network);
    if (!sock) return;
    this.pending++;
    sock.send(bytes, port, address, (err) => {
      if (err) this.sendErrors++;
      if (--this.pending === 0) this.drained?.();
    });
  }

  /** Closes the sockets once the datagrams already handed over are sent (at most 200 ms). */
  async close(): Promise<void> {
    if (this.pending > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 200);
        this.drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.drained = null;
    }
    await Promise.all([...this.sockets.values()].map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.sockets.clear();
  }
}
