#!/usr/bin/env bash
# Memory is bounded by configuration, not by input: a rate rule with a 1h window and
# `max_groups = 20000` sees N events spread over 100,000 source addresses (one hour of log time),
# replayed by `incidentctl rules test`; peak RSS is printed for several N, which should stay
# flat. Usage: benches/memory_groups.sh [N...] (default 1000000 5000000 10000000).
# Needs `cargo build --release`. Measures and prints; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 5000000 10000000)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/rules.toml" <<'TOML'
# Share of failed logins per address over an hour; min_events keeps it from firing, so the
# report stays small and what is measured is the rule's state.
[[rule]]
id = "failure-share"
kind = "rate"
regex = 'Failed password for \S+ from (?P<ip>[0-9.]+)'
group_by = ["ip"]
total_where = { kind = "log" }
ratio = 0.5
min_events = 1000000
window = "1h"
max_groups = 20000
TOML
for n in "${sizes[@]}"; do
  # One hour of log time; addresses cycle through 100,000 in a scattered order (a stride
  # coprime with 100,000), so every address is seen N / 100,000 times across the hour.
  awk -v n="$n" 'BEGIN {
    for (i = 0; i < n; i++) {
      a = (i * 48271) % 100000
      s = int(i * 3600 / n)
      printf "Nov 23 %02d:%02d:%02d web-1 sshd[%d]: Failed password for root from 10.%d.%d.%d port 22 ssh2\n",
        10 + int(s / 3600), int(s / 60) % 60, s % 60, 1000 + i % 500, int(a / 65536), int(a / 256) % 256, a % 256
    }
  }' > "$tmp/scan.log"
  out=$( { /usr/bin/time -f "%M %e" target/release/incidentctl rules test "$tmp/scan.log" \
      --rules "$tmp/rules.toml" --format syslog --year 2026 -o json > "$tmp/report.json"; } 2>&1 )
  read -r rss secs <<<"$out"
  fired=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["rules"][0]["fired"])' "$tmp/report.json")
  printf '%9d events: peak RSS %6.1f MB, %.2f s (%.2f M events/s), fired %s\n' \
    "$n" "$(echo "$rss / 1024" | bc -l)" "$secs" "$(echo "$n / $secs / 1000000" | bc -l)" "$fired"
done
