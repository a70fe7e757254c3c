#!/usr/bin/env bash
# Tail throughput of the daemon: a generated auth.log is read by a [[source.file]]
# (format syslog, read_from beginning) through all shipped rules, from daemon start until
# the source has read every line, beside `wc -l` on the same file.
# Usage: benches/tail_throughput.sh [LINES]. Needs `cargo build --release`. Measures and
# prints; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
lines=${1:-1000000}
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
python3 benches/gen_authlog.py "$lines" "$tmp/auth.log"
ls -l "$tmp/auth.log" | awk '{printf "input: %d lines, %d bytes\n", '"$lines"', $5}'
# Every shipped rule, without its actions (nothing is banned or restarted here), with what the
# shipped config gives them: the retention their windows need and the two plugins they bind.
mkdir "$tmp/rules"
for f in etc/rules.d/*.toml; do
  grep -v '^actions = ' "$f" > "$tmp/rules/$(basename "$f")"
done
cat > "$tmp/incidentd.toml" <<TOML
rules_dir = "$tmp/rules"
plugins_dir = "$root/plugins"
[daemon]
log_format = "text"
retention = "8h"
[[plugin]]
name = "zscore"
[[plugin]]
name = "cert-expiry"
args = []
[[source.file]]
id = "auth"
path = "$tmp/auth.log"
format = "syslog"
read_from = "beginning"
TOML
now() { date +%s.%N; }
best_wc=999
for _ in 1 2 3; do
  s=$(now); wc -l "$tmp/auth.log" >/dev/null; e=$(now)
  best_wc=$(echo "$e - $s" | bc -l | awk -v b="$best_wc" '{print ($1<b)?$1:b}')
done
best_tail=999
for run in 1 2 3; do
  rm -rf "$tmp/state" "$tmp/run"
  # One poller process, started first (benches/wait_applied.py): spawning curl and grep for
  # every poll would take CPU from the daemon it measures.
  python3 benches/wait_applied.py "$tmp/run/control.sock" "$lines" 0 > "$tmp/times" &
  poller=$!
  sleep 0.3
  s=$(now)
  RUST_LOG=warn target/release/incidentd --config "$tmp/incidentd.toml" \
    --state-dir "$tmp/state" --runtime-dir "$tmp/run" 2>"$tmp/daemon.log" &
  pid=$!
  wait "$poller" || { cat "$tmp/daemon.log"; exit 1; }
  read -r read_at _ < "$tmp/times"
  t=$(echo "$read_at - $s" | bc -l)
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  printf "run %s: %.3f s (from start, including startup)\n" "$run" "$t"
  best_tail=$(echo "$t" | awk -v b="$best_tail" '{print ($1<b)?$1:b}')
done
rules=$(cat "$tmp"/rules/*.toml | grep -c '^\[\[rule\]\]')
awk -v n="$lines" -v w="$best_wc" -v t="$best_tail" -v r="$rules" 'BEGIN {
  printf "wc -l: %.3f s  %.1f M lines/s\n", w, n / w / 1e6
  printf "tail:  %.3f s  %.2f M lines/s (%d rules, syslog parsing, checkpoints)\n", t, n / t / 1e6, r
  printf "ratio: %.1fx the time of wc -l\n", t / w }'
