#!/usr/bin/env bash
# Replay throughput of `incidentctl rules test` with the shipped SSH rule on a generated
# auth.log, beside `wc -l` on the same file. Usage: benches/authlog_replay.sh [LINES]
# Measures and prints; asserts nothing. Needs a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1000000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 benches/gen_authlog.py "$lines" "$tmp/auth.log"
ls -l "$tmp/auth.log" | awk '{printf "input: %d bytes\n", $5}'
best() { local b=999; for _ in 1 2 3; do local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); b=$(echo "$e - $s" | bc -l | awk -v b="$b" '{print ($1<b)?$1:b}'); done; echo "$b"; }
wc_s=$(best wc -l "$tmp/auth.log")
rt_s=$(best target/release/incidentctl rules test "$tmp/auth.log" --rules etc/rules.d --format syslog --year 2026 -o json)
target/release/incidentctl rules test "$tmp/auth.log" --rules etc/rules.d --format syslog --year 2026 -o json \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print("events", r["events"], "rejected", r["rejected"], "detections", len(r["detections"]), "rules", r["rules"])'
awk -v n="$lines" -v w="$wc_s" -v r="$rt_s" 'BEGIN {
  printf "wc -l:      %.3f s  %.1f M lines/s\n", w, n / w / 1e6
  printf "rules test: %.3f s  %.2f M lines/s\n", r, n / r / 1e6
  printf "ratio:      %.1fx the time of wc -l\n", r / w }'
