/**
 * Hook containment without privileges: finding the cgroup2 mount in a mountinfo text (hybrid layout, systemd's
 * unified layout, a mount showing part of the tree, escapes), the own cgroup from /proc/self/cgroup, the unit's
 * directory and its stable name, and the fallback to process groups when no cgroup2 is usable.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CGROUP_ENV, HookUnit, PGROUP_ENV, cgroupDirOf, findCgroup2Mount, ownCgroupPath, unitName } from "../../src/runtime/containment.js";

const HYBRID = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const UNIFIED = `22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
25 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

describe("cgroup2 discovery", () => {
  const tmp = mkdtempSync(join(tmpdir(), "hf-containment-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it("finds the cgroup2 mount by file system type, wherever it is mounted", () => {
    expect(findCgroup2Mount(HYBRID)).toEqual({ mountPoint: "/sys/fs/cgroup/unified", root: "/" });
    expect(findCgroup2Mount(UNIFIED)).toEqual({ mountPoint: "/sys/fs/cgroup", root: "/" });
    // Optional fields before the separator, and an escaped space in the mount point.
    expect(findCgroup2Mount("50 1 0:40 /lxc/c1 /mnt/my\\040cg rw shared:9 master:3 - cgroup2 none rw\n")).toEqual({ mountPoint: "/mnt/my cg", root: "/lxc/c1" });
    expect(findCgroup2Mount(HYBRID.replace("cgroup2 cgroup2", "cgroup cgroup"))).toBeUndefined();
    expect(findCgroup2Mount("")).toBeUndefined();
  });

  it("reads the own cgroup from the 0:: line and places it under the mount", () => {
    expect(ownCgroupPath("9:name=systemd:/\n4:memory:/x\n0::/\n")).toBe("/");
    expect(ownCgroupPath("0::/system.slice/holdfast.service\n")).toBe("/system.slice/holdfast.service");
    expect(ownCgroupPath("4:memory:/x\n")).toBeUndefined();
    expect(cgroupDirOf({ mountPoint: "/sys/fs/cgroup", root: "/" }, "/system.slice/holdfast.service")).toBe("/sys/fs/cgroup/system.slice/holdfast.service");
    expect(cgroupDirOf({ mountPoint: "/sys/fs/cgroup/unified", root: "/" }, "/")).toBe("/sys/fs/cgroup/unified");
    expect(cgroupDirOf({ mountPoint: "/mnt/cg", root: "/lxc/c1" }, "/lxc/c1/holdfast")).toBe("/mnt/cg/holdfast");
    expect(cgroupDirOf({ mountPoint: "/mnt/cg", root: "/lxc/c1" }, "/lxc/c10")).toBeUndefined();
  });

  it("names the unit stably per cluster, node, module and state directory", () => {
    const a = unitName("shop", "n1", "db", "/var/lib/holdfast");
    expect(a).toMatch(/^holdfast\.shop\.n1\.db\.[0-9a-f]{8}$/);
    expect(unitName("shop", "n1", "db", "/var/lib/holdfast")).toBe(a);
    expect(unitName("shop", "n1", "db", "/var/lib/other")).not.toBe(a);
    expect(unitName("shop", "n2", "db", "/var/lib/holdfast")).not.toBe(a);
    expect(unitName("a/b", "n 1", "x.y", "/s")).toMatch(/^holdfast\.a_b\.n_1\.x_y\.[0-9a-f]{8}$/);
  });

  it("falls back to process groups when no cgroup2 is usable, and says why", () => {
    const noMount = HookUnit.open({ cluster: "c", node: "n1", module: "db", stateDir: join(tmp, "a"), mountinfo: UNIFIED.replace(/cgroup2 cgroup2/, "tmpfs tmpfs"), procCgroup: "0::/\n" });
    expect(noMount.mode).toBe("pgroup");
    expect(noMount.describe()).toMatch(/process group .*no cgroup2 mount/);
    expect(noMount.env()).toEqual({ [PGROUP_ENV]: join(tmp, "a", "db.hooks-unit.pgroups") });
    expect(JSON.parse(readFileSync(join(tmp, "a", "db.hooks-unit.json"), "utf8"))).toEqual({ mode: "pgroup" });
    // A mount point that is not a cgroup file system (nothing to write cgroup.procs into).
    const notCg = HookUnit.open({ cluster: "c", node: "n1", module: "db", stateDir: join(tmp, "b"), mountinfo: `41 31 0:38 / ${tmp} rw - cgroup2 cgroup2 rw\n`, procCgroup: "0::/\n" });
    expect(notCg.mode).toBe("pgroup");
    expect(notCg.describe()).toMatch(/cannot use cgroup2: .* is not a cgroup/);
    expect(notCg.leftovers()).toEqual([]);
    const forced = HookUnit.open({ cluster: "c", node: "n1", module: "db", stateDir: join(tmp, "c"), noCgroup: true });
    expect(forced.mode).toBe("pgroup");
    expect(Object.keys(forced.env())).not.toContain(CGROUP_ENV);
  });
});
