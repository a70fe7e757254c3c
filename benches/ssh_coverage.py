#!/usr/bin/env python3
"""SSH detection coverage: incidentd's shipped SSH rules beside fail2ban's stock sshd filter.

Usage: cargo build --release && python3 benches/ssh_coverage.py [CORPUS]
(default tests/fixtures/ssh/corpus.tsv). Needs fail2ban-regex (apt-get install fail2ban).

The corpus is annotated line by line: `auth ip=… user=…` (an authentication failure),
`scan ip=…` (a connection that never authenticates), or `-` (not a failure: logins,
sessions, other programs). Each tool reads the same auth.log lines:

  incidentd   the shipped rules (etc/rules.d/ssh.toml) made `kind = "match"`, so every line
              they count is reported, through `incidentctl rules test --format syslog`
  fail2ban    fail2ban-regex with Debian's /etc/fail2ban/filter.d/sshd.conf, in its normal
              mode and in `mode=aggressive` (which adds the ddos and extra patterns)

For each: failures recognized with the right address, recognized with a wrong address,
missed, and false matches (lines annotated `-`), for `auth` and `scan` lines apart.
Prints a table; asserts nothing.
"""
import ast, json, os, re, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CTL = os.path.join(ROOT, "target", "release", "incidentctl")
CORPUS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests/fixtures/ssh/corpus.tsv")


def load():
    rows = []
    for line in open(CORPUS, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        ann, text = line.rstrip("\n").split("\t", 1)
        kind, ip = "-", None
        if ann != "-":
            kind, rest = ann.split(" ", 1)
            ip = rest.split(" user=")[0].removeprefix("ip=")
        rows.append((kind, ip, text))
    return rows


def incidentd(rows, tmp):
    """{line index: address} of the lines the shipped rules count."""
    src = open(os.path.join(ROOT, "etc/rules.d/ssh.toml"), encoding="utf-8").read()
    src = src.replace('kind = "threshold"', 'kind = "match"')
    src = re.sub(r'^(threshold|window|actions) = .*$', "", src, flags=re.M)
    rules = os.path.join(tmp, "ssh-match.toml")
    open(rules, "w", encoding="utf-8").write(src)
    log = os.path.join(tmp, "auth.log")
    out = subprocess.run([CTL, "rules", "test", log, "--rules", rules, "--format", "syslog",
                          "--year", "2026", "-o", "json"], check=True, capture_output=True)
    report = json.loads(out.stdout)
    base = stamp(rows[0][2])
    got = {}
    for d in report["detections"]:
        # Every corpus line has its own second.
        hh, mm, ss = map(int, d["ts"][11:19].split(":"))
        got[hh * 3600 + mm * 60 + ss - base] = d["labels"].get("ip")
    return got


def stamp(line):
    hh, mm, ss = map(int, line[7:15].split(":"))
    return hh * 3600 + mm * 60 + ss


def fail2ban(rows, tmp, filt):
    log = os.path.join(tmp, "auth.log")
    out = subprocess.run(["fail2ban-regex", "-o", "row", log, filt], capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"fail2ban-regex failed: {out.stderr}")
    got = {}
    first = None
    for line in out.stdout.splitlines():
        line = line.strip().rstrip(",")
        if not line.startswith("["):
            continue
        ip, ts, _ = ast.literal_eval(line)
        # fail2ban reports the failure's time; every corpus line has its own second.
        if first is None:
            first = stamp(rows[0][2])
        t = int(ts) % 86400
        got[t - first] = ip
    return got


def score(rows, got):
    out = {}
    for kind in ("auth", "scan"):
        ok = wrong = missed = 0
        for i, (k, ip, _) in enumerate(rows):
            if k != kind:
                continue
            if i not in got:
                missed += 1
            elif got[i] == ip:
                ok += 1
            else:
                wrong += 1
        out[kind] = (ok, wrong, missed)
    false = sum(1 for i, (k, _, _) in enumerate(rows) if k == "-" and i in got)
    return out, false


def main():
    if not os.path.exists(CTL):
        sys.exit("build first: cargo build --release")
    rows = load()
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "auth.log"), "w", encoding="utf-8") as f:
            for _, _, text in rows:
                f.write(text + "\n")
        tools = [("incidentd", incidentd(rows, tmp))]
        f2b = "/etc/fail2ban/filter.d/sshd.conf"
        if os.path.exists(f2b):
            tools.append(("fail2ban normal", fail2ban(rows, tmp, f2b)))
            tools.append(("fail2ban aggressive", fail2ban(rows, tmp, f2b + "[mode=aggressive]")))
        else:
            print("fail2ban is not installed (apt-get install fail2ban): its columns are left out")
    n = {k: sum(1 for r in rows if r[0] == k) for k in ("auth", "scan", "-")}
    print(f"corpus: {len(rows)} lines: {n['auth']} authentication failures, {n['scan']} scans, "
          f"{n['-']} other lines")
    print(f"{'tool':<20} {'auth ok':>8} {'wrong ip':>8} {'missed':>7} {'scan ok':>8} "
          f"{'wrong ip':>8} {'missed':>7} {'false':>6}")
    for name, got in tools:
        s, false = score(rows, got)
        a, sc = s["auth"], s["scan"]
        print(f"{name:<20} {a[0]:>8} {a[1]:>8} {a[2]:>7} {sc[0]:>8} {sc[1]:>8} {sc[2]:>7} "
              f"{false:>6}")


if __name__ == "__main__":
    main()
