#!/usr/bin/env bash
# The daemon tailing a dense auth.log from its start (benches/gen_dense.py: about 30% failed
# passwords), with the shipped SSH rules, beside `rules test` and `wc -l` on the same file:
# the time until the source has read the last line and every detection is in an incident,
# and whether the daemon's detections are exactly those of `rules test` (per rule and key),
# with the peak RSS of each. The daemon runs on a fresh state directory each round.
# Usage: benches/dense_tail.sh [LINES] (default 1000000). Needs `cargo build --release`.
# Measures and prints; asserts nothing but the detections.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
lines=${1:-1000000}
tmp=$(mktemp -d -p "${BENCH_DIR:-/dev/shm}" 2>/dev/null || mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
python3 benches/gen_dense.py "$lines" "$tmp/auth.log" > "$tmp/answer.json"
echo "input: $lines lines, $(stat -c %s "$tmp/auth.log") bytes; answer $(cat "$tmp/answer.json")"
mkdir "$tmp/rules"
# The shipped SSH rules without their ban action (no nft here).
grep -v '^actions = \["ban-address"\]' etc/rules.d/ssh.toml > "$tmp/rules/ssh.toml"
cat > "$tmp/incidentd.toml" <<TOML
rules_dir = "$tmp/rules"
[daemon]
log_format = "text"
[[source.file]]
id = "auth"
path = "$tmp/auth.log"
format = "syslog"
read_from = "beginning"
TOML
year=$(date -r "$tmp/auth.log" +%Y)
ctl=target/release/incidentctl
/usr/bin/time -f "%e %M" -o "$tmp/replay.time" \
  $ctl rules test "$tmp/auth.log" --rules "$tmp/rules" --format syslog --year "$year" -o json > "$tmp/replay.json"
expected=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["detections"]))' "$tmp/replay.json")
s=$EPOCHREALTIME; wc -l < "$tmp/auth.log" > /dev/null; e=$EPOCHREALTIME
wc_s=$(echo "$e - $s" | bc -l)
for round in 1 2 3; do
  rm -rf "$tmp/state" "$tmp/run"
  # One poller process, started first (benches/wait_applied.py): spawning curl and grep for
  # every poll would take CPU from the daemon it measures.
  python3 benches/wait_applied.py "$tmp/run/control.sock" "$lines" "$expected" > "$tmp/times" &
  poller=$!
  sleep 0.3
  s=$EPOCHREALTIME
  RUST_LOG=warn target/release/incidentd --config "$tmp/incidentd.toml" \
    --state-dir "$tmp/state" --runtime-dir "$tmp/run" 2>"$tmp/daemon.log" &
  pid=$!
  wait "$poller" || { cat "$tmp/daemon.log"; exit 1; }
  read -r read_at e < "$tmp/times"
  read_s=$(echo "$read_at - $s" | bc -l | cut -c1-5)
  applied_s=$(echo "$e - $s" | bc -l)
  rss=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
  # Every incident's detections, per rule and key, against the replay's.
  # Every incident's detections, per rule and key, against the replay's: those in its
  # timeline (a folded entry stands for `detections` of them) and those folded since.
  $ctl --socket "$tmp/run/control.sock" export --to "$tmp/export.ndjson" >/dev/null
  curl -s --unix-socket "$tmp/run/control.sock" 'http://localhost/v1/incidents?limit=1000' > "$tmp/incidents.json"
  check=$(python3 - "$tmp/replay.json" "$tmp/export.ndjson" "$tmp/incidents.json" <<'PY'
import collections, json, sys
want = collections.Counter((d["rule"], d["key"]) for d in json.load(open(sys.argv[1]))["detections"])
got = collections.Counter()
for line in open(sys.argv[2]):
    e = json.loads(line)
    if e.get("type") == "detection":
        d = e["data"]
        for rule, n in (d.get("by_rule") or {d["rule"]: d.get("detections", 1)}).items():
            got[(rule, d["labels"].get("ip", ""))] += n
listing = json.load(open(sys.argv[3]))
incidents = listing["incidents"] if isinstance(listing, dict) else listing
for i in incidents:
    f = i.get("folded")
    if f:
        for rule, n in (f["facts"].get("by_rule") or {f["facts"]["rule"]: f["detections"]}).items():
            got[(rule, f["last"]["labels"].get("ip", ""))] += n
want = collections.Counter({(r, k.split("/", 1)[-1]): n for (r, k), n in want.items()})
print("exact" if got == want else f"DIFFERENT: {sum(got.values())} vs {sum(want.values())}")
PY
)
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  echo "round $round: last line read at $read_s s, every detection applied at $(echo "$applied_s" | cut -c1-5) s; peak RSS ${rss} MB; detections: $check"
  echo "$applied_s" >> "$tmp/rounds"
done
best=$(sort -n "$tmp/rounds" | head -1)
read -r replay_s replay_kb < "$tmp/replay.time"
awk -v n="$lines" -v w="$wc_s" -v t="$best" -v r="$replay_s" -v rk="$replay_kb" -v d="$expected" 'BEGIN {
  printf "wc -l:             %6.3f s  %6.2f M lines/s\n", w, n / w / 1e6
  printf "rules test:        %6.3f s  %6.2f M lines/s  peak %.0f MB  %d detections\n", r, n / r / 1e6, rk / 1024, d
  printf "daemon (best of 3): %5.3f s  %6.2f M lines/s  (from start to the last detection applied)\n", t, n / t / 1e6
  printf "daemon / rules test: %.1fx the time\n", t / r }'
