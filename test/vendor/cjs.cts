// A CommonJS consumer: `require("holdfast")` resolves to dist/index.cjs and its index.d.cts. Typechecked only.
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the CommonJS form under test
import holdfast = require("holdfast");

const host = new holdfast.Host({
  cluster: { id: "c", key: holdfast.generateKey(), nodes: [{ id: "a", addresses: ["198.18.0.10"] }, { id: "b", addresses: ["198.18.0.11"] }] },
  node: "a",
  modules: [{ name: "web", kind: "farm", vips: ["198.18.0.100/32"], hooks: { start_both: () => undefined } }],
  farm: { web: { iface: "eth0" } },
  stateDir: "/tmp/holdfast-cjs/state",
  logDir: "/tmp/holdfast-cjs/log",
});
host.on("moduleState", (name, s) => console.log(name, s.state));
void host.start();
