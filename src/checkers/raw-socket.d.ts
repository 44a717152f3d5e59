// Minimal typings for the parts of raw-socket 1.8 that the ping probe uses (the package ships none).
declare module "raw-socket" {
  import type { EventEmitter } from "node:events";
  export interface SocketOptions {
    addressFamily?: number;
    protocol?: number;
    bufferSize?: number;
    generateChecksums?: boolean;
    checksumOffset?: number;
  }
  export interface RawSocket extends EventEmitter {
    readonly recvPaused: boolean;
    readonly sendPaused: boolean;
    send(
      buffer: Buffer,
      offset: number,
      length: number,
      address: string,
      afterCallback: (error: Error | null, bytes: number) => void,
    ): RawSocket;
    close(): RawSocket;
    pauseRecv(): RawSocket;
    resumeRecv(): RawSocket;
    on(event: "message", listener: (buffer: Buffer, source: string) => void): this;
    on(event: "error", listener: (error: Error) => void): this;
    on(event: "close", listener: () => void): this;
  }
  export const AddressFamily: { readonly IPv4: number; readonly IPv6: number };
  export const Protocol: { readonly None: number; readonly ICMP: number; readonly TCP: number; readonly UDP: number; readonly ICMPv6: number };
  export function createSocket(options?: SocketOptions): RawSocket;
  export function createChecksum(...buffers: (Buffer | { buffer: Buffer; offset: number; length: number })[]): number;
  export function writeChecksum(buffer: Buffer, offset: number, checksum: number): void;
  const raw: {
    AddressFamily: typeof AddressFamily;
    Protocol: typeof Protocol;
    createSocket: typeof createSocket;
    createChecksum: typeof createChecksum;
    writeChecksum: typeof writeChecksum;
  };
  export default raw;
}
