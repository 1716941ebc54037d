#!/usr/bin/env bash
# The account benchmark: a whole GitHub-shaped organisation of N small repositories (1,000 by
# default), each with metadata (labels, a milestone, two issues and a pull request with
# comments and a review, a release with a 10 KiB asset), served locally: the API by
# tests/fixtures/github_api.py, git by `git http-backend`. Backs the organisation up twice and reports
# the wall time, peak RSS and API requests per repository of the first and of the unchanged
# run (docs/PERFORMANCE.md). GitHub's own limit (5,000 requests an hour for a personal token)
# is lifted here: a first run over 1,000 repositories needs about 14,000 requests, which on
# github.com takes three rate-limit windows (gitvault stops cleanly and resumes).
#
#   bash benches/accounts.sh [--repos N] [--jobs J] [--bin PATH] [--out DIR] [--shards 1,2,4]
#
# With --shards: the unchanged run again as N shards at once (`backup --shard I/N`), each on
# its own host directory joined to the vault's target, for each N listed (a first sharded run
# warms the joined hosts, the second is reported); and the cost of two other hosts, joined
# before the first run, catching up with its new snapshots (time; bytes read from the target
# by `strace` when it is installed).
#
# No timing is asserted: the script fails only when a run does not back everything up or the
# second run is not unchanged.
set -euo pipefail

repos=1000
jobs=""
bin=""
out=""
shards=""
while [ $# -gt 0 ]; do
  case "$1" in
    --repos) repos=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
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
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
[ -n "$out" ] || out="$work/report"
mkdir -p "$out"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# N copies of one small repository (hard links keep this quick and small).
bash "$here/tests/fixtures/rich.sh" "$work/template.git" >/dev/null
mkdir -p "$work/served/acme" "$work/served/alice"
for i in $(seq 0 $((repos - 1))); do
  cp -al "$work/template.git" "$work/served/acme/$(printf 'repo-%03d' "$i").git"
done
cp -al "$work/template.git" "$work/served/alice/dotfiles.git"
cp -al "$work/template.git" "$work/served/acme/repo-001.wiki.git"

# Smart HTTP through `git http-backend` as a CGI program of Python's threading HTTP server:
# sources refuse git:// clone URLs (a hostile API could name the backup host's own
# repositories), and nginx would make this script depend on a root setup.
git_port=$(free_port)
mkdir -p "$work/http/cgi-bin"
cat >"$work/http/cgi-bin/git" <<CGI
#!/bin/sh
GIT_PROJECT_ROOT="$work/served" GIT_HTTP_EXPORT_ALL=1 exec git http-backend
CGI
chmod +x "$work/http/cgi-bin/git"
# (Run as root, Python's CGI handler would switch to `nobody`, who cannot read $work.)
(cd "$work/http" && exec python3 -c '
import http.server, os, sys
http.server.nobody_uid = os.getuid
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.CGIHTTPRequestHandler).serve_forever()
' "$git_port") >"$work/http.log" 2>&1 &
pids+=($!)
git_base="http://127.0.0.1:$git_port/cgi-bin/git"
python3 "$here/tests/fixtures/github_api.py" --port 0 --generate-org acme --repos "$repos" \
  --git-base "$git_base" --token bench-token --core-limit 1000000 >"$work/api.port" 2>"$work/api.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q LISTENING "$work/api.port" 2>/dev/null && break
  sleep 0.1
done
api="http://127.0.0.1:$(sed -n 's/LISTENING //p' "$work/api.port")"
for _ in $(seq 100); do
  git ls-remote "$git_base/acme/repo-000.git" >/dev/null 2>&1 && break
  sleep 0.1
done

export BENCH_TOKEN=bench-token
vault="$work/vault"
# An identity file, not a passphrase: scrypt's 512 MiB would be the peak RSS of every run.
export GITVAULT_IDENTITY_FILE="$work/identity.txt"
recipient=$("$bin" keygen --output "$GITVAULT_IDENTITY_FILE")
"$bin" --vault "$vault" init --recipient "$recipient" >/dev/null
"$bin" --vault "$vault" source add acme --provider github --owner acme --api-url "$api" \
  --token-env BENCH_TOKEN >/dev/null

run() { # run NAME: one backup of every source, timed, with the fixture's request count
  local name=$1
  curl -s -X POST -d '{}' "$api/_fixture/reset-stats" >/dev/null
  local t0; t0=$(now_ms)
  /usr/bin/time -v "$bin" --vault "$vault" --json backup ${jobs:+--jobs "$jobs"} \
    >"$out/$name.json" 2>"$work/$name.time" || { tail -20 "$work/$name.time" >&2; return 1; }
  echo $(( $(now_ms) - t0 )) >"$work/$name.ms"
  curl -s "$api/_fixture/stats" >"$out/$name.api.json"
}
if [ -n "$shards" ]; then
  # Hosts B and C join the (still empty) vault now, to catch up with the first run later.
  for h in b c; do
    "$bin" --vault "$work/host-$h" init --join "file://$vault/data" >/dev/null
  done
fi
run first
run unchanged

if [ -n "$shards" ]; then
  t0=$(now_ms)
  "$bin" --vault "$work/host-b" --json catch-up >"$out/catch-up.json"
  echo $(( $(now_ms) - t0 )) >"$work/catch-up.ms"
  if command -v strace >/dev/null; then
    # Bytes returned by reads of files under the target (strace -y names each descriptor).
    strace -f -qq -y -e trace=read,pread64 -o "$work/catch-up.strace" \
      "$bin" --vault "$work/host-c" catch-up >/dev/null
    grep -F "<$vault/data/" "$work/catch-up.strace" | sed -n 's/.*) = \([0-9]*\)$/\1/p' |
      awk '{s += $1} END {print s + 0}' >"$work/catch-up.bytes"
  else
    echo null >"$work/catch-up.bytes"
  fi
  max=0
  for n in ${shards//,/ }; do [ "$n" -gt "$max" ] && max=$n; done
  for k in $(seq 1 $((max - 1))); do
    "$bin" --vault "$work/shard-$k" init --join "file://$vault/data" >/dev/null
    "$bin" --vault "$work/shard-$k" source add acme --provider github --owner acme \
      --api-url "$api" --token-env BENCH_TOKEN >/dev/null
  done
  host_of() { if [ "$1" -eq 0 ]; then echo "$vault"; else echo "$work/shard-$1"; fi; }
  for n in ${shards//,/ }; do
    for pass in warm measured; do
      curl -s -X POST -d '{}' "$api/_fixture/reset-stats" >/dev/null
      t0=$(now_ms)
      spids=()
      for i in $(seq 0 $((n - 1))); do
        "$bin" --vault "$(host_of "$i")" --json backup --shard "$i/$n" ${jobs:+--jobs "$jobs"} \
          >"$out/shards-$n-$i.json" 2>"$work/shards-$n-$i.err" &
        spids+=($!)
      done
      for p in "${spids[@]}"; do wait "$p" || { tail -20 "$work"/shards-"$n"-*.err >&2; exit 1; }; done
      echo $(( $(now_ms) - t0 )) >"$work/shards-$n.ms"
      curl -s "$api/_fixture/stats" >"$out/shards-$n.api.json"
    done
  done
fi

python3 - "$out" "$work" "$repos" "${jobs:-default}" "$shards" <<'EOF'
import json, re, sys
out, work, repos, jobs, shards = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = {}
for name in ("first", "unchanged"):
    report = json.load(open(f"{out}/{name}.json"))
    api = json.load(open(f"{out}/{name}.api.json"))
    lines = [r for s in report["sources"] for r in s["repositories"]]
    statuses = {}
    for r in lines:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/{name}.time").read())
    rows[name] = {
        "seconds": int(open(f"{work}/{name}.ms").read()) / 1000,
        "peak_rss_mib": int(rss.group(1)) / 1024 if rss else None,
        "statuses": statuses,
        "api_requests": api["requests"],
        "api_not_modified": api["by_status"].get("304", 0),
        "api_requests_per_repo": api["requests"] / repos,
    }
first, unchanged = rows["first"], rows["unchanged"]
ok = first["statuses"].get("changed", 0) >= repos and unchanged["statuses"].get("unchanged", 0) >= repos \
    and not unchanged["statuses"].get("changed") and not unchanged["statuses"].get("failed")
result = {"repos": repos, "jobs": jobs, "runs": rows}
json.dump(result, open(f"{out}/accounts.json", "w"), indent=2)
print(f"| run | wall time | peak RSS | API requests / repo | of which 304 | statuses |")
print(f"| --- | --- | --- | --- | --- | --- |")
for name, r in rows.items():
    print(f"| {name} ({repos} repos, jobs {jobs}) | {r['seconds']:.1f} s | {r['peak_rss_mib']:.0f} MiB "
          f"| {r['api_requests_per_repo']:.2f} | {r['api_not_modified']} | {r['statuses']} |")
if shards:
    print()
    print("| shards (unchanged run) | wall time | API requests / repo | of which 304 | statuses |")
    print("| --- | --- | --- | --- | --- |")
    for n in [int(x) for x in shards.split(",")]:
        statuses = {}
        for i in range(n):
            report = json.load(open(f"{out}/shards-{n}-{i}.json"))
            for s in report["sources"]:
                for r in s["repositories"]:
                    statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        api = json.load(open(f"{out}/shards-{n}.api.json"))
        seconds = int(open(f"{work}/shards-{n}.ms").read()) / 1000
        print(f"| {n} | {seconds:.1f} s | {api['requests'] / repos:.2f} | {api['by_status'].get('304', 0)} | {statuses} |")
        ok = ok and set(statuses) == {"unchanged"}
    caught = json.load(open(f"{out}/catch-up.json"))
    ms = int(open(f"{work}/catch-up.ms").read())
    read = open(f"{work}/catch-up.bytes").read().strip()
    print()
    print(f"catch-up of a host with the first run: {ms / 1000:.2f} s, {caught['packs_scanned']} packs' footers read, "
          f"{caught['snapshots_added']} snapshots added, {read} bytes read from the target")
if not ok:
    print("FAILED: not every repository was backed up, or the second run was not unchanged", file=sys.stderr)
    sys.exit(1)
EOF
