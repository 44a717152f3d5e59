// A membership Transport on the fake network: each heartbeat address maps to a node id (`addresses`).
import type { Transport } from "../../../src/runtime/transport.js";
import type { FakeNetwork } from "../../../src/testing/index.js";

export class SimTransport implements Transport {
  sendErrors = 0;
  private readonly handlers = new Map<number, (bytes: Uint8Array, from: string) => void>();
  constructor(
    private readonly net: FakeNetwork,
    private readonly id: string,
    private readonly addresses: Readonly<Record<string, string>>,
  ) {}
  async bind(network: number, _address: string, _port: number, onDatagram: (bytes: Uint8Array, from: string) => void): Promise<void> {
    this.handlers.set(network, onDatagram);
    this.net.attach(this.id, (nw, from, bytes) => this.handlers.get(nw)?.(bytes, from));
  }
  send(network: number, address: string, _port: number, bytes: Uint8Array): void {
    const to = this.addresses[address];
    if (to) this.net.send(this.id, to, network, bytes);
  }
  async close(): Promise<void> {
    this.net.detach(this.id);
  }
}
