#!/usr/bin/env bash
# Mirror cache kept versus dropped (docs/PERFORMANCE.md, "Mirror cache kept or dropped"): one
# full backup of a bare mirror served over file://, then twice: one new commit and a backup
# with the cache kept; one new commit, `cache drop --all` and a backup (the cache is rebuilt
# from the vault); then a restore checked with `git fsck --full` and exact refs.
#
#   bash benches/cache.sh MIRROR IDENTITY_FILE WORKDIR [BINARY]
#
# MIRROR is a bare repository (copied, never changed); IDENTITY_FILE an age identity (its
# public key comment is used for init). No timing is asserted.
set -euo pipefail
mirror=${1:?usage: cache.sh MIRROR IDENTITY_FILE WORKDIR [BINARY]}
ID=${2:?identity file}
W=${3:?work directory}
B=${4:-$(cd "$(dirname "$0")/.." && pwd)/target/release/gitvault}
PUB=$(grep -o "age1[a-z0-9]*" "$ID" | head -1)
mkdir -p "$W"
rm -rf "$W/vault" "$W/srv.git"
git clone -q --mirror --no-local "$mirror" "$W/srv.git"
export GITVAULT_IDENTITY_FILE=$ID GITVAULT_LOG=gitvault=info
gv() { "$B" --vault "$W/vault" "$@"; }
gv init --recipient "$PUB" >/dev/null
URL=file://$W/srv.git
g() { git --git-dir="$W/srv.git" "$@"; }
commit() {
  local blob tree c
  blob=$(head -c 200000 /dev/urandom | g hash-object -w --stdin)
  rm -f "$W/idx"
  GIT_INDEX_FILE=$W/idx g read-tree HEAD
  GIT_INDEX_FILE=$W/idx g update-index --add --cacheinfo "100644,$blob,bench-$1.bin"
  tree=$(GIT_INDEX_FILE=$W/idx g write-tree)
  c=$(GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@example.com GIT_COMMITTER_NAME=b \
    GIT_COMMITTER_EMAIL=b@example.com g commit-tree "$tree" -p HEAD -m "bench $1")
  g update-ref HEAD "$c"
}
timed() {
  local label=$1
  /usr/bin/time -f "$label wall %e s, max RSS %M KB" "$B" --vault "$W/vault" --json backup "$URL" \
    --name bench 2>"$W/$label.log" >"$W/$label.json" || { cat "$W/$label.log"; exit 1; }
  tail -1 "$W/$label.log"
  python3 -c "import json; d=json.load(open('$W/$label.json'))['repositories'][0]; print('  received', d['objects_received'], 'added', d['objects_added'])"
  grep -o 'rebuilt the mirror cache.*' "$W/$label.log" || true
}
echo "$(g count-objects -v | grep in-pack), $(g for-each-ref | wc -l) refs; load $(cut -d' ' -f1-3 /proc/loadavg)"
timed first
echo "vault data $(du -sb "$W/vault/data" | cut -f1) B; cache $(du -sb "$W/vault/cache" | cut -f1) B"
for i in 1 2; do
  commit "k$i"; timed "kept$i"
  commit "d$i"; gv cache drop --all >/dev/null; timed "dropped$i"
  echo "rebuilt cache $(du -sb "$W/vault/cache" | cut -f1) B; load $(cut -d' ' -f1-3 /proc/loadavg)"
done
rm -rf "$W/restored"
gv restore bench --to "$W/restored" >/dev/null
git -C "$W/restored" fsck --full >/dev/null 2>&1 && echo "restore: fsck ok"
diff <(g for-each-ref --format='%(objectname) %(refname)') \
  <(git -C "$W/restored" for-each-ref --format='%(objectname) %(refname)') >/dev/null && echo "restore: refs equal"
