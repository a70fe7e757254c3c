#!/usr/bin/env bash
# incidentd's rule engine beside fail2ban, SEC, awk and `wc -l`, in one run, on the same
# generated auth.log with a known answer. Two workloads:
#   sparse   benches/gen_bruteforce.py: about 5% of the lines are failed passwords
#   dense    benches/gen_dense.py: about 30% are (200 attackers, 5% IPv6, invalid users,
#            scanners): a host under a brute-force campaign
#   rules100 the dense log with 100 rules: the shipped SSH rules plus 98 fail2ban-style
#            rules (an address after a program's own failure text) that this log never
#            matches, given to every tool (awk: 98 more pattern-actions; SEC: 98 more rules);
#            every rule is still tried on every line by the peers. fail2ban-regex takes one
#            filter and is left out.
# Tools:
#   fail2ban-regex   the stock sshd filter (matching only: it has no threshold; its answer is
#                    the number of failed-password lines)
#   sec              SingleWithThreshold, 5 within 60 s per address
#   awk              the same rule with log-time windows, as a one-liner, run by mawk (Debian's
#                    default awk) and by GNU awk
#   incidentctl      `rules test` with the shipped ssh-brute-force rule (5 within 1m per ip),
#                    on every core (its default) and on one (`--threads 0`)
#   wc -l            the physical floor
# Five rounds, each running every tool (the fast ones three times); each tool's median and
# fastest time are reported. Every run's firings are checked against the answer.
# Usage: benches/side_by_side.sh [LINES] [sparse|dense|rules100] (default 500000 sparse). Installs fail2ban, sec, mawk and
# gawk from Debian's packages when missing (needs root). Needs `cargo build --release`.
# The input is written under /dev/shm (RAM) when it can be, or $BENCH_DIR: on the shared
# development machine the page cache lets go of a 100 MB file on disk within seconds, and every
# tool would then be timed partly on disk reads.
# Measures and prints; asserts nothing but the firings.
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-500000}
workload=${2:-sparse}
case $workload in
  sparse) gen=benches/gen_bruteforce.py; field=bursts ;;
  dense|rules100) gen=benches/gen_dense.py; field=firings ;;
  *) echo "unknown workload $workload (sparse, dense or rules100)" >&2; exit 2 ;;
esac
if ! command -v fail2ban-regex >/dev/null || ! command -v sec >/dev/null \
  || ! command -v mawk >/dev/null || ! command -v gawk >/dev/null; then
  apt-get update -q && apt-get install -y -q --no-install-recommends fail2ban sec mawk gawk
fi
[ -x target/release/incidentctl ] || cargo build --release --bin incidentctl
tmp=$(mktemp -d -p "${BENCH_DIR:-/dev/shm}" 2>/dev/null || mktemp -d)
trap '[ -n "${KEEP_BENCH:-}" ] || rm -rf "$tmp"' EXIT
answer=$(python3 "$gen" "$lines" "$tmp/auth.log")
bursts=$(echo "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$field")
failures=$(echo "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["failure_lines"])')
echo "workload $workload: $lines lines, $(stat -c %s "$tmp/auth.log") bytes; answer: $bursts firings, $failures failed-password lines"
mkdir "$tmp/rules"
cp etc/rules.d/ssh.toml "$tmp/rules/"
cat > "$tmp/ssh.sec" <<'SEC'
type=SingleWithThreshold
ptype=RegExp
pattern=sshd\[\d+\]: Failed password for (?:invalid user )?\S+ from ([\da-fA-F.:]+) port
desc=ssh brute force from $1
action=write - FIRE $1
window=60
thresh=5
SEC
# Sliding 60 s window per address on log time (day and clock of the syslog stamp); fires at
# the fifth failure and starts over, like the incidentd rule.
cat > "$tmp/rule.awk" <<'AWK'
/sshd\[[0-9]+\]: Failed password for/ {
  for (i = 6; i <= NF; i++) if ($i == "from") { ip = $(i + 1); break }
  split($3, c, ":"); t = $2 * 86400 + c[1] * 3600 + c[2] * 60 + c[3]
  m = split(w[ip], ts, " "); keep = ""; k = 0
  for (j = 1; j <= m; j++) if (ts[j] > t - 60) { keep = keep " " ts[j]; k++ }
  if (k + 1 >= 5) { n++; w[ip] = "" } else w[ip] = keep " " t
}
END { print n + 0 }
AWK
if [ "$workload" = rules100 ]; then
  # 98 more rules, the same for every tool; none matches this log.
  echo >> "$tmp/ssh.sec"
  for i in $(seq 1 98); do
    cat >> "$tmp/rules/extra.toml" <<TOML
[[rule]]
id = "app$i-auth"
kind = "threshold"
where = { kind = "log" }
regex = '^app$i\[\d+\]: authentication failed for \S+ from (?P<ip>[0-9A-Fa-f.:]+)'
group_by = ["ip"]
threshold = 5
window = "1m"
TOML
    printf 'type=SingleWithThreshold\nptype=RegExp\npattern=app%s\[\d+\]: authentication failed for \S+ from ([\da-fA-F.:]+)\ndesc=app%s from $1\naction=write - APP$1\nwindow=60\nthresh=5\n\n' "$i" "$i" >> "$tmp/ssh.sec"
    printf '/app%s\[[0-9]+\]: authentication failed for [^ ]+ from / { a%s++ }\n' "$i" "$i" >> "$tmp/rule.awk"
  done
fi

one() { # times, name, command...: an untimed warm-up run (not for the 20-second
  # fail2ban-regex), so that no tool pays for the caches the previous one left cold, then
  # `times` timed runs; keeps each run's time and output (firings or line count)
  local times=$1 name=$2; shift 2
  local out s e
  [ "$1" = f2b ] || "$@" > /dev/null
  for _ in $(seq "$times"); do
    s=$EPOCHREALTIME; out=$("$@"); e=$EPOCHREALTIME
    case $1 in inc|inc1) out=$(count_inc) ;; esac
    printf '%s\t%s\t%s\n' "$name" "$(echo "$e - $s" | bc -l)" "$out" >> "$tmp/times"
  done
}
f2b() { fail2ban-regex "$tmp/auth.log" /etc/fail2ban/filter.d/sshd.conf 2>/dev/null \
  | awk '/^\|[ ]+[0-9]+\) \[[0-9]+\] \^Failed / { gsub(/[\[\]]/, "", $3); n += $3 } END { print n + 0 }'; }
secr() { sec --conf="$tmp/ssh.sec" --input="$tmp/auth.log" --notail --fromstart --log=/dev/null 2>/dev/null | grep -c FIRE || true; }
mawkr() { mawk -f "$tmp/rule.awk" "$tmp/auth.log"; }
gawkr() { gawk -f "$tmp/rule.awk" "$tmp/auth.log"; }
inc() { # the JSON report is counted after the timer, by `count_inc`
  target/release/incidentctl rules test "$tmp/auth.log" --rules "$tmp/rules" --format syslog --year 2026 -o json > "$tmp/inc.json"; }
inc1() { # the same on one thread
  target/release/incidentctl rules test --threads 0 "$tmp/auth.log" --rules "$tmp/rules" --format syslog --year 2026 -o json > "$tmp/inc.json"; }
# The brute-force rule's firings (the shipped file also has the scan rule).
count_inc() { python3 -c 'import json,sys; print(sum(d["rule"] == "ssh-brute-force" for d in json.load(open(sys.argv[1]))["detections"]))' "$tmp/inc.json"; }
# Peak resident memory of one run of each tool, in MB (GNU time's %M), and the CPU time it
# used (user and system, seconds: more than its wall time when it ran on both cores).
peak() { /usr/bin/time -f '%M %U %S' "$@" 2>&1 >/dev/null | tail -1 | awk '{printf "%.1f\t%.2f", $1 / 1024, $2 + $3}'; }
wcl() { wc -l < "$tmp/auth.log"; }

: > "$tmp/times"
# Round robin: each round runs every tool, so a drift in the machine's speed (it is shared)
# falls on all of them alike rather than on whichever tool ran during it. Five rounds; the
# tools that take under a second run three times a round (15 times in all), the others once.
for _ in 1 2 3 4 5; do
  one 3 "wc -l" wcl
  one 3 "incidentctl rules test" inc
  one 3 "incidentctl, one thread" inc1
  one 3 "mawk (same rule)" mawkr
  one 3 "gawk (same rule)" gawkr
  one 1 "sec (SingleWithThreshold)" secr
  [ "$workload" = rules100 ] || one 1 "fail2ban-regex (sshd filter)" f2b
done
# Peak RSS, one run each.
{
  echo "wc -l	$(peak wc -l "$tmp/auth.log")"
  echo "incidentctl rules test	$(peak target/release/incidentctl rules test "$tmp/auth.log" --rules "$tmp/rules" --format syslog --year 2026 -o json)"
  echo "incidentctl, one thread	$(peak target/release/incidentctl rules test --threads 0 "$tmp/auth.log" --rules "$tmp/rules" --format syslog --year 2026 -o json)"
  echo "mawk (same rule)	$(peak mawk -f "$tmp/rule.awk" "$tmp/auth.log")"
  echo "gawk (same rule)	$(peak gawk -f "$tmp/rule.awk" "$tmp/auth.log")"
  echo "sec (SingleWithThreshold)	$(peak sec --conf="$tmp/ssh.sec" --input="$tmp/auth.log" --notail --fromstart --log=/dev/null)"
  [ "$workload" = rules100 ] || echo "fail2ban-regex (sshd filter)	$(peak fail2ban-regex "$tmp/auth.log" /etc/fail2ban/filter.d/sshd.conf)"
} > "$tmp/rss"
# Each tool's median and fastest time, and its output (all its runs must agree).
python3 - "$tmp/times" > "$tmp/results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, t, out = line.rstrip("\n").split("\t")
    runs.setdefault(name, ([], []))
    runs[name][0].append(float(t))
    runs[name][1].append(out)
for name, (times, outs) in runs.items():
    out = outs[0] if len(set(outs)) == 1 else "varied: " + ",".join(outs)
    print(f"{name}\t{statistics.median(times)}\t{min(times)}\t{len(times)}\t{out}")
PY
python3 - "$tmp/results" "$lines" "$bursts" "$failures" "$tmp/rss" "$workload" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
n, bursts, failures = int(sys.argv[2]), sys.argv[3], sys.argv[4]
rss = {}
cpu = {}
for l in open(sys.argv[5]):
    name, mb, secs = l.rstrip("\n").split("\t")
    rss[name], cpu[name] = mb, secs
med = {r[0]: float(r[1]) for r in rows}
low = {r[0]: float(r[2]) for r in rows}
inc = "incidentctl rules test"
print(f"{'tool':30} {'runs':>4} {'median s':>8} {'fastest':>8} {'lines/s':>12} "
      f"{'time vs incidentctl':>19} {'peak MB':>8} {'CPU s':>6}  firings (expected)")
for name, _, _, runs, out in rows:
    if name == "wc -l":
        check = "lines" if out.strip() == str(n) else f"WRONG: {out}"
    else:
        want = failures if name.startswith("fail2ban") else bursts
        check = f"{out} ({want}) {'ok' if out.strip() == want else 'WRONG'}"
        if name.startswith("sec") and sys.argv[6] != "sparse":
            # SEC's windows run on its own clock: reading a file, the whole file is one
            # 60 s window, so each address fires once. Not comparable on this workload.
            check = f"{out} (n/a: SEC's windows run on its own clock)"
    # Ratios of medians, and of fastest runs.
    rel = (f"{med[name] / med[inc]:.1f}x / {low[name] / low[inc]:.1f}x"
           if name != inc else "-")
    print(f"{name:30} {runs:>4} {med[name]:8.3f} {low[name]:8.3f} {n / med[name]:12,.0f} "
          f"{rel:>19} {rss.get(name, '?'):>8} {cpu.get(name, '?'):>6}  {check}")
PY
