#!/usr/bin/env bash
# LFS ingest throughput: a repository whose main holds one SIZE MiB LFS object (plus an edited
# version of it in a second commit), served by giftless (gunicorn, loopback) next to `git
# daemon`; `gitvault backup` (which downloads, SHA-256-checks, chunks, compresses, encrypts and
# stores every LFS object of every ref) against `git lfs fetch --all` in a clone of the same
# repository (docs/PERFORMANCE.md). Needs giftless and git-lfs (scripts/install-test-deps.sh).
#
#   bash benches/lfs.sh [--size MIB] [--bin PATH] [--out DIR]
#
# No timing is asserted.
set -euo pipefail

size=256
bin=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
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
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
[ -n "$out" ] || out="$work/report"
mkdir -p "$out"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME="$work/home"
mkdir -p "$HOME"
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

lfs_port=$(free_port)
mkdir -p "$work/lfs-storage" "$work/giftless"
cat >"$work/giftless/giftless.yaml" <<YAML
LEGACY_ENDPOINTS: false
AUTH_PROVIDERS:
  - giftless.auth.allow_anon:read_write
TRANSFER_ADAPTERS:
  basic:
    factory: giftless.transfer.basic_streaming:factory
    options:
      storage_class: giftless.storage.local_storage:LocalStorage
      storage_options:
        path: $work/lfs-storage
      action_lifetime: 900
YAML
(cd "$work/giftless" && HOME="$work/giftless" GIFTLESS_CONFIG_FILE="$work/giftless/giftless.yaml" \
  setsid python3 -m gunicorn -b "127.0.0.1:$lfs_port" --workers 1 --threads 8 --timeout 600 \
  giftless.wsgi_entrypoint:app >"$work/giftless.log" 2>&1) &
pids+=($!)
for _ in $(seq 200); do
  curl -s -o /dev/null "http://127.0.0.1:$lfs_port/" && break
  sleep 0.1
done
endpoint="http://127.0.0.1:$lfs_port/org/big.git/info/lfs"
bash "$here/tests/fixtures/lfs.sh" big "$work/served/org/big.git" "$endpoint" "$size" >/dev/null
bash "$here/tests/fixtures/lfs.sh" big-edit "$work/served/org/big.git" "$endpoint" >/dev/null

git_port=$(free_port)
git daemon --reuseaddr --export-all --base-path="$work/served" --listen=127.0.0.1 \
  --port="$git_port" "$work/served" 2>"$work/daemon.log" &
pids+=($!)
for _ in $(seq 100); do
  git ls-remote "git://127.0.0.1:$git_port/org/big.git" >/dev/null 2>&1 && break
  sleep 0.1
done

export GITVAULT_IDENTITY_FILE="$work/identity.txt"
recipient=$("$bin" keygen --output "$GITVAULT_IDENTITY_FILE")
"$bin" --vault "$work/vault" init --recipient "$recipient" >/dev/null
t0=$(now_ms)
/usr/bin/time -v "$bin" --vault "$work/vault" --json backup "git://127.0.0.1:$git_port/org/big.git" \
  --name big >"$out/backup.json" 2>"$work/backup.time"
gv_ms=$(( $(now_ms) - t0 ))

git clone -q --config filter.lfs.process="git-lfs filter-process" --config filter.lfs.required=true \
  --no-checkout "git://127.0.0.1:$git_port/org/big.git" "$work/clone"
t0=$(now_ms)
git -C "$work/clone" -c lfs.url="$endpoint" lfs fetch --all >/dev/null 2>"$work/fetch.log"
lfs_ms=$(( $(now_ms) - t0 ))

python3 - "$out" "$work" "$size" "$gv_ms" "$lfs_ms" <<'PY'
import json, re, sys
out, work, size, gv_ms, lfs_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
line = json.load(open(f"{out}/backup.json"))["repositories"][0]
assert line["lfs_objects_stored"] == 2, line
rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/backup.time").read())
mib = 2 * size
print(f"| LFS ingest ({mib} MiB: two {size} MiB objects) | wall time | MiB/s | peak RSS |")
print("| --- | --- | --- | --- |")
print(f"| gitvault backup (git + LFS, stored) | {gv_ms/1000:.1f} s | {mib/(gv_ms/1000):.0f} | {int(rss.group(1))/1024:.0f} MiB |")
print(f"| git lfs fetch --all | {lfs_ms/1000:.1f} s | {mib/(lfs_ms/1000):.0f} | |")
print(f"\nratio gitvault / git lfs fetch: {gv_ms/lfs_ms:.2f}")
PY
