/**
 * A Host run as its own process for the hook containment lab test, so that the test can SIGKILL it as a crashed
 * daemon: argv[2] is the host config (JSON), argv[3] a module to make primary (`prim --force`: a node alone). Prints one
 * JSON line per module state change.
 */
import { Host } from "holdfast";

const host = new Host(JSON.parse(process.argv[2] as string));
host.on("moduleState", (module, s) => process.stdout.write(JSON.stringify({ module, state: s.state, ready: s.ready, transient: s.transient }) + "\n"));
await host.start();
if (process.argv[3]) await host.command(process.argv[3], "prim", { force: true });
process.stdout.write(JSON.stringify({ event: "started" }) + "\n");
