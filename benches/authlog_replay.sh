#!/usr/bin/env bash
# Replay throughput of `incidentctl rules test` with the shipped SSH rule on a generated
# auth.log, beside `wc -l` on the same file. Usage: benches/authlog_replay.sh [LINES]
# Measures and prints; asserts nothing. Needs a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1000000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$lines" "$tmp/auth.log" <<'PY'
import random, sys
n, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(7)
with open(path, "w") as f:
    for i in range(n):
        s = i // 50  # 50 lines per second of log time
        ts = f"Nov 23 {10 + s // 3600 % 14:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
        r = rnd.random()
        if r < 0.10:
            f.write(f"{ts} web-1 sshd[{1000+i%500}]: Failed password for root from 203.0.{rnd.randrange(8)}.{rnd.randrange(250)} port {rnd.randrange(1024,65535)} ssh2\n")
        elif r < 0.15:
            f.write(f"{ts} web-1 sshd[{1000+i%500}]: Failed password for invalid user u{rnd.randrange(99)} from 198.51.100.{rnd.randrange(250)} port 22 ssh2\n")
        elif r < 0.40:
            f.write(f"{ts} web-1 sshd[{1000+i%500}]: Accepted publickey for deploy from 10.0.{rnd.randrange(4)}.{rnd.randrange(250)} port 50000 ssh2\n")
        else:
            f.write(f"{ts} web-1 CRON[{2000+i%900}]: pam_unix(cron:session): session opened for user root by (uid=0)\n")
PY
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
