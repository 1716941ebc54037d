#!/usr/bin/env bash
# The replay benchmark: replays K days of a repository's history and backs each day up with
# gitvault and with the baselines, in one run, reporting ratios (docs/PERFORMANCE.md).
#
#   bash benches/replay.sh [--repo BARE_REPO] [--days K] [--bin PATH] [--out DIR] [--no-restic]
#
# Without --repo, a small repository is generated (a smoke test; CI runs it that way). For real
# runs, point --repo at a bare clone kept outside the project tree and use a release binary:
#   cargo build --release && bash benches/replay.sh --repo /data/ripgrep.git --bin target/release/gitvault
#
# For each of K points in time spread over the history, the server state is rebuilt (each branch
# rewound to its newest commit at or before that time, tags of commits at or before it) in a bare
# repository served over file://, then backed up in order by:
#   - gitvault (GITVAULT_NOW set to the day, so snapshots carry the replayed dates);
#   - a chain of incremental git bundles (each day's excludes what earlier days' tips reach);
#   - restic on a persistent mirror updated with `git fetch --prune` (when restic is installed);
# and at the end: the final day's `git clone --mirror` pack and its `git gc --aggressive` pack,
# `git clone --mirror` time against gitvault's first backup, and a restore of day K/2 against a
# local `git clone --mirror` of the same state (checked with git fsck and exact refs). Then
# `gitvault prune` regroups the daily increments (compaction; nothing is forgotten) and the
# vault is measured again, and the same restore is checked once more from the compacted vault.
# No timing is asserted: the script fails only when something is wrong (fsck, refs).
set -euo pipefail

days=40
repo=""
bin=""
out=""
use_restic=1
while [ $# -gt 0 ]; do
  case "$1" in
    --repo) repo=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-restic) use_restic=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "$bin" ]; then
  (cd "$here" && cargo build --quiet --bin gitvault)
  bin="$here/target/debug/gitvault"
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -n "$out" ] || out="$work/report"
mkdir -p "$out"

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
now_ms() { date +%s%3N; }
size_of() { du -sb "$1" | cut -f1; }
peak_rss_kb() { grep -o 'Maximum resident set size (kbytes): [0-9]*' "$1" | grep -o '[0-9]*$' || echo 0; }
timed() { # timed LOGFILE CMD... : runs CMD under /usr/bin/time -v, prints milliseconds
  local log=$1; shift
  local t0; t0=$(now_ms)
  /usr/bin/time -v "$@" >"$log.out" 2>"$log" || { cat "$log.out" "$log" >&2; return 1; }
  echo $(( $(now_ms) - t0 ))
}

# --- the source history -------------------------------------------------------------------
if [ -z "$repo" ]; then
  repo="$work/generated.git"
  gen="$work/gen"
  git init -q -b main "$gen"
  (
    cd "$gen"
    git config user.name Bench; git config user.email bench@example.com
    start=1700000000
    for i in $(seq 1 120); do
      ts=$((start + i * 36000))
      export GIT_AUTHOR_DATE="@$ts +0000" GIT_COMMITTER_DATE="@$ts +0000"
      mkdir -p src/mod$((i % 7))
      # Files that evolve a little each commit, as source code does.
      for f in $(seq 0 $((i % 5))); do
        seq $((i * 13 + f)) $((i * 13 + f + 400)) | sed "s/^/line $f of $i: /" > "src/mod$((i % 7))/file$f.txt"
      done
      head -c 2000 /dev/zero | tr '\0' "$(printf "\\$(printf '%03o' $((65 + i % 26)))")" > "src/blob$((i % 3)).bin"
      git add -A; git commit -q -m "commit $i"
      [ $((i % 30)) -eq 0 ] && git tag -a "v$((i / 30))" -m "release $((i / 30))"
      [ $((i % 40)) -eq 0 ] && git branch "topic$((i / 40))"
    done
  )
  git clone -q --bare "$gen" "$repo"
fi
repo=$(cd "$repo" && pwd)

# K points in time across the committer dates of everything reachable.
mapfile -t stamps < <(git -C "$repo" log --all --format=%ct | sort -n)
first=${stamps[0]}; last=${stamps[${#stamps[@]}-1]}
step=$(( (last - first) / (days > 1 ? days - 1 : 1) ))
[ "$step" -gt 0 ] || step=1

state="$work/state.git"
git init -q --bare "$state"
echo "$repo/objects" > "$state/objects/info/alternates"
symref=$(git -C "$repo" symbolic-ref -q HEAD || echo refs/heads/main)
git -C "$state" symbolic-ref HEAD "$symref"

# Rewinds the state repository to time T: every branch at its newest commit <= T, every tag
# whose commit is <= T; everything else deleted.
set_state() {
  local t=$1
  {
    git -C "$repo" for-each-ref --format='%(refname)' refs/heads | while read -r ref; do
      c=$(git -C "$repo" rev-list -1 --before="$t" "$ref" 2>/dev/null || true)
      if [ -n "$c" ]; then echo "$ref $c"; fi
    done
    # Tab-separated: lightweight tags have empty peeled fields.
    git -C "$repo" for-each-ref --format=$'%(refname)\t%(objectname)\t%(committerdate:unix)\t%(*committerdate:unix)' refs/tags |
      while IFS=$'\t' read -r ref obj cdate pdate; do
        when=${pdate:-$cdate}
        if [ -n "$when" ] && [ "$when" -le "$t" ]; then echo "$ref $obj"; fi
      done
  } | sort > "$work/wanted.refs"
  {
    git -C "$state" for-each-ref --format='%(refname)' | sort | join -v1 - <(cut -d' ' -f1 "$work/wanted.refs") |
      sed 's/^/delete /'
    sed 's/^/update /' "$work/wanted.refs"
  } | git -C "$state" update-ref --stdin
}

vault="$work/vault"
# An identity file, not a passphrase: scrypt's deliberate second per command would swamp the
# timings of small repositories.
export GITVAULT_IDENTITY_FILE="$work/identity.txt"
recipient=$("$bin" keygen --output "$GITVAULT_IDENTITY_FILE")
"$bin" --vault "$vault" init --recipient "$recipient" >/dev/null
export GITVAULT_VAULT="$vault"

bundles="$work/bundles"; mkdir -p "$bundles"
mirror="$work/mirror.git"
restic_repo="$work/restic"
if [ "$use_restic" = 1 ] && command -v restic >/dev/null 2>&1; then
  export RESTIC_PASSWORD=replay RESTIC_REPOSITORY="$restic_repo"
  restic init -q >/dev/null
else
  use_restic=0
fi

first_backup_ms=0; first_clone_ms=0; unchanged_ms=0; peak_kb=0
prev_tips=""
mid=$(( (days + 1) / 2 ))
mid_time=""
for d in $(seq 1 "$days"); do
  t=$(( first + (d - 1) * step ))
  [ "$d" -eq "$days" ] && t=$last
  set_state "$t"
  day_iso=$(date -u -d "@$t" +%Y-%m-%dT%H:%M:%SZ)
  ms=$(GITVAULT_NOW=$day_iso timed "$work/backup.log" "$bin" -q backup "file://$state" --name bench)
  rss=$(peak_rss_kb "$work/backup.log"); [ "$rss" -gt "$peak_kb" ] && peak_kb=$rss
  if [ "$d" -eq 1 ]; then
    first_backup_ms=$ms
    first_clone_ms=$(timed "$work/clone.log" git clone -q --mirror --no-local "file://$state" "$work/clone1.git")
    rm -rf "$work/clone1.git"
    # The same state again: an unchanged run.
    unchanged_ms=$(GITVAULT_NOW=$day_iso timed "$work/unchanged.log" "$bin" -q backup "file://$state" --name bench)
  fi
  [ "$d" -eq "$mid" ] && mid_time=$day_iso && git -C "$state" for-each-ref --format='%(objectname) %(refname)' > "$work/mid.refs" && git clone -q --mirror --no-local "file://$state" "$work/mid-source.git"

  tips=$(git -C "$state" for-each-ref --format='%(objectname)' | sort -u)
  if [ -n "$tips" ]; then
    not=""; for p in $prev_tips; do not="$not ^$p"; done
    # shellcheck disable=SC2086
    git -C "$state" bundle create -q "$bundles/day$d.bundle" --all $not 2>/dev/null || true
  fi
  prev_tips="$prev_tips $tips"

  if [ "$use_restic" = 1 ]; then
    if [ ! -d "$mirror" ]; then git clone -q --mirror "file://$state" "$mirror"; else git -C "$mirror" fetch -q --prune origin '+refs/*:refs/*'; fi
    restic backup -q "$mirror" >/dev/null
  fi
done

# The final day's plain pack and its aggressive repack.
git clone -q --mirror --no-local "file://$state" "$work/final.git"
final_pack=$(size_of "$work/final.git/objects/pack")
git -C "$work/final.git" gc -q --aggressive --prune=now
aggressive_pack=$(size_of "$work/final.git/objects/pack")
vault_size=$(size_of "$vault/data")
bundle_size=$(size_of "$bundles")
restic_size=0; [ "$use_restic" = 1 ] && restic_size=$(size_of "$restic_repo")

# Restore of day K/2 against a local clone of the same state.
restore_ms=$(timed "$work/restore.log" "$bin" -q restore bench --at "$mid_time" --to "$work/restored.git")
local_clone_ms=$(timed "$work/lclone.log" git clone -q --mirror --no-local "$work/mid-source.git" "$work/lclone.git")
git -C "$work/restored.git" fsck --full --no-dangling >/dev/null
git -C "$work/restored.git" for-each-ref --format='%(objectname) %(refname)' > "$work/restored.refs"
cmp -s "$work/mid.refs" "$work/restored.refs" || { echo "restored refs differ from day $mid's" >&2; exit 1; }

# Compaction: prune regroups the small daily packs; nothing was forgotten, so it frees only
# what regrouping saves. The restore must still come out exact.
prune_ms=$(timed "$work/prune.log" "$bin" -q prune)
prune_rss=$(peak_rss_kb "$work/prune.log")
compacted_size=$(size_of "$vault/data")
compacted_packs=$(size_of "$vault/data/packs")
index_backup=$(size_of "$vault/data/index")
rm -rf "$work/restored.git"
"$bin" -q restore bench --at "$mid_time" --to "$work/restored.git" >/dev/null
git -C "$work/restored.git" fsck --full --no-dangling >/dev/null
git -C "$work/restored.git" for-each-ref --format='%(objectname) %(refname)' > "$work/restored.refs"
cmp -s "$work/mid.refs" "$work/restored.refs" || { echo "refs restored after prune differ from day $mid's" >&2; exit 1; }

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }
objects=$(git -C "$work/final.git" count-objects -v | awk '/^in-pack/ {print $2}')
cat > "$out/replay.json" <<EOF
{"date": "$(date -u +%Y-%m-%d)", "repo": "$(basename "$repo")", "days": $days, "objects_final": $objects,
 "vault_bytes": $vault_size, "bundle_chain_bytes": $bundle_size, "final_pack_bytes": $final_pack,
 "aggressive_pack_bytes": $aggressive_pack, "restic_bytes": $restic_size,
 "vault_after_prune_bytes": $compacted_size, "packs_after_prune_bytes": $compacted_packs, "index_backup_bytes": $index_backup, "prune_ms": $prune_ms, "prune_peak_rss_kb": $prune_rss,
 "first_backup_ms": $first_backup_ms, "clone_mirror_ms": $first_clone_ms, "unchanged_backup_ms": $unchanged_ms,
 "restore_ms": $restore_ms, "local_clone_ms": $local_clone_ms, "peak_rss_kb": $peak_kb}
EOF
cat > "$out/replay.md" <<EOF
| measure | value | ratio | target |
| --- | --- | --- | --- |
| vault / bundle chain | $vault_size B / $bundle_size B | $(ratio "$vault_size" "$bundle_size") | ≤ 1 before compaction |
| vault / final \`gc --aggressive\` pack, before compaction | $vault_size B / $aggressive_pack B | $(ratio "$vault_size" "$aggressive_pack") | |
| vault after \`prune\` (regrouped) / final \`gc --aggressive\` pack | $compacted_size B / $aggressive_pack B | $(ratio "$compacted_size" "$aggressive_pack") | ≤ 1 after compaction |
| of which packs / final \`gc --aggressive\` pack | $compacted_packs B / $aggressive_pack B | $(ratio "$compacted_packs" "$aggressive_pack") | |
| of which the index backup | $index_backup B | | |
| vault after \`prune\` / bundle chain | $compacted_size B / $bundle_size B | $(ratio "$compacted_size" "$bundle_size") | |
| \`prune\` (compaction) | $prune_ms ms, $prune_rss KiB peak | | |
| vault / final plain pack | $vault_size B / $final_pack B | $(ratio "$vault_size" "$final_pack") | |
| vault / restic | $vault_size B / $restic_size B | $( [ "$use_restic" = 1 ] && ratio "$vault_size" "$restic_size" || echo "restic not run") | well below 1 |
| first backup / \`git clone --mirror\` | $first_backup_ms ms / $first_clone_ms ms | $(ratio "$first_backup_ms" "$first_clone_ms") | ≤ 1.5 |
| unchanged run | $unchanged_ms ms | | small |
| restore day $mid / local \`git clone --mirror\` | $restore_ms ms / $local_clone_ms ms | $(ratio "$restore_ms" "$local_clone_ms") | ≤ 1.5 |
| peak RSS of a backup | $peak_kb KiB for $objects objects | $(ratio "$((peak_kb * 1024))" "$objects") B/object | ≤ 64 B/object (aim) |
EOF
echo "replay of $(basename "$repo"): $days days, $objects objects at the end"
cat "$out/replay.md"
