#!/usr/bin/env bash
# Manual escape hatch for the namespace lab (src/testing/lab.ts): deletes the namespaces, processes,
# markers and scratch directories of abandoned labs, the same rule as cleanStaleLabs():
#   - a lab whose marker /run/holdfast-lab/<prefix>.pid names a dead creator process, and
#   - default-named lab namespaces (hf + 6 characters + sw|n<i>|c<i>) and hook-unit cgroups (holdfast.*.lab-<prefix>)
#     that have no marker at all.
# Labs of running processes are left alone, unless --all is given (then every lab namespace goes).
# With a lab go its empty hook-unit cgroups (rmdir only): `holdfast.*.lab-<prefix>` under the cgroup2 mount, and
# those recorded in a `*.hooks-unit.json` under the lab's scratch directory.
# Usage: scripts/lab-clean.sh [--all] [--dry-run]        (needs root)
set -euo pipefail

all=0 dry=0
for arg in "$@"; do
  case "$arg" in
    --all) all=1 ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "lab-clean: unknown argument: $arg" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then echo "lab-clean: needs root" >&2; exit 1; fi

MARKERS=/run/holdfast-lab
SCRATCH="${TMPDIR:-/tmp}/holdfast-lab"
mapfile -t NS < <(ip netns list 2>/dev/null | awk '{print $1}')
# The first cgroup2 mount (field 5 of mountinfo; the fstype follows " - ").
CGROOT=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo)

lab_cgroups() { # $1 = prefix: the lab's hook-unit cgroup directories
  [ -n "$CGROOT" ] || return 0
  find "$CGROOT" -maxdepth 9 -type d -name "holdfast.*.lab-$1" -prune -print 2>/dev/null
  local cg
  while IFS= read -r cg; do
    case "$cg" in "$CGROOT"/*/holdfast.*|"$CGROOT"/holdfast.*) [ -d "$cg" ] && echo "$cg" ;; esac
  done < <(find "$SCRATCH/$1" -name '*.hooks-unit.json' -exec sed -n 's/.*"cgroup":"\([^"]*\)".*/\1/p' {} + 2>/dev/null)
}

# Field 22 of /proc/PID/stat (start time), read after the command name, which may contain spaces.
start_time() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "${20}"; }

owner_alive() { # $1 = prefix
  local pid start now
  read -r pid start < "$MARKERS/$1.pid" 2>/dev/null || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  now=$(start_time "$pid") || return 1
  [ "$start" = "?" ] || [ -z "$start" ] || [ "$start" = "$now" ]
}

declare -A stale=()
declare -A marked=()
for f in "$MARKERS"/*.pid; do
  [ -e "$f" ] || continue
  p=$(basename "$f" .pid)
  marked[$p]=1
  if [ "$all" -eq 1 ] || ! owner_alive "$p"; then stale[$p]=1; fi
done
for ns in "${NS[@]}"; do
  if [[ "$ns" =~ ^(hf[a-z0-9]{6})(sw|n[0-9]+|c[0-9]+)$ ]]; then
    p=${BASH_REMATCH[1]}
    if [ "$all" -eq 1 ] || [ -z "${marked[$p]:-}" ]; then stale[$p]=1; fi
  fi
done
# Hook-unit cgroups named for a lab that has no marker (cleanStaleLabs() does the same).
if [ -n "$CGROOT" ]; then
  while IFS= read -r cg; do
    if [[ "$(basename "$cg")" =~ \.lab-([a-z][a-z0-9]{1,7})$ ]]; then
      p=${BASH_REMATCH[1]}
      if [ "$all" -eq 1 ] || [ -z "${marked[$p]:-}" ]; then stale[$p]=1; fi
    fi
  done < <(find "$CGROOT" -maxdepth 9 -type d -name 'holdfast.*.lab-*' -prune -print 2>/dev/null)
fi

count=0
for p in "${!stale[@]}"; do
  mine=()
  for ns in "${NS[@]}"; do
    [[ "$ns" =~ ^${p}(sw|n[0-9]+|c[0-9]+)$ ]] && mine+=("$ns")
  done
  if [ "$dry" -eq 1 ]; then
    echo "would delete lab $p: ${mine[*]:-(no namespaces)}"
    for cg in $(lab_cgroups "$p" | sort -u); do echo "would rmdir $cg (if empty)"; done
    continue
  fi
  # Processes left in a namespace keep it alive after `ip netns del`: kill them first.
  for ns in "${mine[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  # The switch first: that removes every veth pair at once.
  for ns in "${mine[@]}"; do [[ "$ns" == *sw ]] && ip netns del "$ns" 2>/dev/null && echo "deleted $ns" && count=$((count + 1)); done
  for ns in "${mine[@]}"; do [[ "$ns" != *sw ]] && ip netns del "$ns" 2>/dev/null && echo "deleted $ns" && count=$((count + 1)); done
  # Empty ones only: rmdir of a cgroup that still has processes or children fails, and nothing is killed here.
  while IFS= read -r cg; do rmdir "$cg" 2>/dev/null && echo "removed cgroup $cg"; done < <(lab_cgroups "$p" | sort -u)
  rm -f "$MARKERS/$p.pid"
  rm -rf "${SCRATCH:?}/$p"
done
[ "$dry" -eq 1 ] || echo "lab-clean: deleted $count namespace(s) of ${#stale[@]} abandoned lab(s)"
