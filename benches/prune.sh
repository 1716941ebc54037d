#!/usr/bin/env bash
# The prune benchmark: a vault holding N git objects (default 1,000,000) in two snapshots,
# the second without half of them; forget the first, prune, and report the time and peak
# memory of the prune (docs/PERFORMANCE.md). The repository is generated with
# `git fast-import`: two unrelated branches of N/10 commits each, every commit adding a tree
# pair and two small blobs.
#
#   bash benches/prune.sh [--objects N] [--bin PATH] [--out DIR]
#
# No timing is asserted; the script fails only when the kept snapshot does not restore.
set -euo pipefail

objects=1000000
bin=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --objects) objects=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "$bin" ]; then
  (cd "$here" && cargo build --quiet --release --bin gitvault)
  bin="$here/target/release/gitvault"
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -n "$out" ] || out="$work/report"
mkdir -p "$out"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
now_ms() { date +%s%3N; }

# Each commit: 1 commit + 2 trees (root, dir/) + 2 blobs = 5 objects; two branches.
commits=$(( objects / 10 ))
git init -q --bare "$work/repo.git"
python3 - "$commits" <<'PY' | git -C "$work/repo.git" fast-import --quiet
import sys
n = int(sys.argv[1])
out = sys.stdout
mark = 0
for branch in ("a", "b"):
    for i in range(n):
        t = 1600000000 + i * 60
        blob1 = f"{branch} {i} one\n".encode()
        blob2 = f"{branch} {i} two {i * 7919}\n".encode()
        out.write(f"commit refs/heads/{branch}\n")
        out.write(f"committer B <b@example.com> {t} +0000\n")
        msg = f"{branch} {i}\n"
        out.write(f"data {len(msg)}\n{msg}")
        out.write(f"M 100644 inline f{i % 50}.txt\ndata {len(blob1)}\n")
        out.write(blob1.decode())
        out.write(f"M 100644 inline dir/g{i % 50}.txt\ndata {len(blob2)}\n")
        out.write(blob2.decode())
        out.write("\n")
PY
total=$(git -C "$work/repo.git" count-objects -v | awk '/^count|^in-pack/ {s+=$2} END {print s}')
git -C "$work/repo.git" symbolic-ref HEAD refs/heads/a

export GITVAULT_IDENTITY_FILE="$work/identity.txt"
recipient=$("$bin" keygen --output "$GITVAULT_IDENTITY_FILE")
vault="$work/vault"
"$bin" --vault "$vault" init --recipient "$recipient" >/dev/null
timed() { # timed NAME CMD...: runs CMD under /usr/bin/time -v; records ms and peak RSS
  local name=$1; shift
  local t0; t0=$(now_ms)
  /usr/bin/time -v "$@" >"$out/$name.out" 2>"$work/$name.time" || { tail -30 "$work/$name.time" >&2; exit 1; }
  echo $(( $(now_ms) - t0 )) >"$work/$name.ms"
}
GITVAULT_NOW=2026-01-01T00:00:00Z timed backup1 "$bin" --vault "$vault" backup "file://$work/repo.git" --name bench
git -C "$work/repo.git" update-ref -d refs/heads/b
GITVAULT_NOW=2026-01-02T00:00:00Z timed backup2 "$bin" --vault "$vault" backup "file://$work/repo.git" --name bench
"$bin" --vault "$vault" forget --keep-last 1 >/dev/null
timed prune "$bin" --vault "$vault" --json prune
"$bin" --vault "$vault" restore bench --to "$work/restored.git" >/dev/null
git -C "$work/restored.git" fsck --full --no-progress
[ "$(git -C "$work/restored.git" rev-parse refs/heads/a)" = "$(git -C "$work/repo.git" rev-parse refs/heads/a)" ]

python3 - "$out" "$work" "$total" <<'PY'
import json, re, sys
out, work, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
def run(name):
    ms = int(open(f"{work}/{name}.ms").read())
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/{name}.time").read())
    return ms / 1000, int(rss.group(1)) / 1024
prune = json.load(open(f"{out}/prune.out"))
rows = {n: run(n) for n in ("backup1", "backup2", "prune")}
json.dump({"objects": total, "runs": rows, "prune": prune}, open(f"{out}/prune.json", "w"), indent=2)
print(f"| step ({total:,} objects) | wall time | peak RSS |")
print("| --- | --- | --- |")
for n, (s, m) in rows.items():
    print(f"| {n} | {s:.1f} s | {m:.0f} MiB |")
print(f"\nprune: {prune['dead_objects']:,} dead objects, {prune['live_chunks']:,} live chunks, "
      f"{prune['packs_deleted']} packs deleted, {prune['packs_compacted']} compacted, "
      f"{prune['bytes_freed']:,} bytes freed")
PY
