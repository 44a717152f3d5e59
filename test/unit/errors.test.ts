import { describe, expect, it } from "vitest";
import * as t from "io-ts";
import { ConfigError } from "holdfast";
import { decodeOrThrow } from "holdfast/config";

describe("decodeOrThrow", () => {
  const codec = t.type({ heartbeat: t.type({ port: t.number, networks: t.array(t.string) }) });

  it("names the path and the value of a wrong field", () => {
    let err: unknown;
    try {
      decodeOrThrow(codec, { heartbeat: { port: "x", networks: ["a", 3] } }, "config");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const ce = err as ConfigError;
    expect(ce.code).toBe("HOLDFAST_CONFIG_INVALID");
    expect(ce.problems.map((p) => [p.path, p.value])).toEqual([
      ["heartbeat.port", "x"],
      ["heartbeat.networks.1", 3],
    ]);
    expect(ce.message).toContain('heartbeat.port: expected number, got "x"');
  });

  it("returns the decoded value when valid", () => {
    expect(decodeOrThrow(codec, { heartbeat: { port: 1, networks: [] } }, "config")).toEqual({
      heartbeat: { port: 1, networks: [] },
    });
  });
});
