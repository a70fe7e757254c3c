#!/usr/bin/env python3
"""Writes a realistic auth.log with a known answer for an SSH brute-force rule
("5 failed passwords from one address within 60 s").

Usage: gen_bruteforce.py LINES PATH   (prints the answer as JSON on stdout)

- Attack bursts: each uses a fresh address and has exactly 5 failures, spread over 4 to 40
  seconds of log time and interleaved with everything else; every correct tool fires once per
  burst, whatever its window semantics (sliding, reset after firing, wall or log time).
- Background failures: addresses that fail at most 4 times in the whole file (never fire).
- Noise: accepted logins, cron sessions, sshd disconnects, sudo, systemd lines.
The answer: bursts (firings expected), failure lines (what fail2ban-regex should match).
"""
import json
import random
import sys

n, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(2026)
PER_SECOND = 50
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def stamp(sec):
    # Log time starts Nov 23 00:00:00 (RFC 3164 has no year).
    day, rest = divmod(sec, 86400)
    return f"Nov {23 + day:2d} {rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"


# Decide which lines carry a burst failure: a burst every ~400 lines.
events = {}  # line index -> (ip, user)
bursts = 0
next_ip = 0
i = rnd.randrange(100)
while i < n - 2200:
    next_ip += 1
    ip = f"203.{next_ip // 65536 % 256}.{next_ip // 256 % 256}.{next_ip % 256}"
    spread = rnd.randrange(4, 40) * PER_SECOND  # lines over which the 5 failures spread
    idx = sorted(rnd.sample(range(i, i + spread), 5))
    if any(j in events for j in idx):
        i += 7
        continue
    for j in idx:
        events[j] = (ip, rnd.choice(["root", "admin", "oracle", "invalid user test"]))
    bursts += 1
    i += rnd.randrange(300, 500)

background_used = {}
failures = 0
with open(path, "w") as f:
    for i in range(n):
        ts = stamp(i // PER_SECOND)
        pid = 1000 + i % 700
        if i in events:
            ip, user = events[i]
            failures += 1
            f.write(f"{ts} web-1 sshd[{pid}]: Failed password for {user} from {ip} port {rnd.randrange(1024, 65535)} ssh2\n")
            continue
        r = rnd.random()
        if r < 0.04:
            # A background failure from an address used at most 4 times.
            ip = f"198.51.{rnd.randrange(256)}.{rnd.randrange(256)}"
            if background_used.get(ip, 0) >= 4:
                f.write(f"{ts} web-1 sshd[{pid}]: Accepted publickey for deploy from 10.0.2.{rnd.randrange(250)} port 50000 ssh2: RSA SHA256:abc\n")
                continue
            background_used[ip] = background_used.get(ip, 0) + 1
            failures += 1
            f.write(f"{ts} web-1 sshd[{pid}]: Failed password for root from {ip} port {rnd.randrange(1024, 65535)} ssh2\n")
        elif r < 0.25:
            f.write(f"{ts} web-1 sshd[{pid}]: Accepted publickey for deploy from 10.0.{rnd.randrange(4)}.{rnd.randrange(250)} port 50000 ssh2: RSA SHA256:abc\n")
        elif r < 0.35:
            f.write(f"{ts} web-1 sshd[{pid}]: Disconnected from user deploy 10.0.1.{rnd.randrange(250)} port 50000\n")
        elif r < 0.40:
            f.write(f"{ts} web-1 sudo: deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/systemctl restart app\n")
        elif r < 0.45:
            f.write(f"{ts} web-1 systemd-logind[412]: New session {i} of user deploy.\n")
        else:
            f.write(f"{ts} web-1 CRON[{2000 + i % 900}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)\n")

json.dump({"lines": n, "bursts": bursts, "failure_lines": failures}, sys.stdout)
print()
