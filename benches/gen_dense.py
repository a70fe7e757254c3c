#!/usr/bin/env python3
"""Writes the auth.log of a host under a brute-force campaign, with a known answer for an SSH
brute-force rule ("5 failed passwords from one address within 60 s, then start over").

Usage: gen_dense.py LINES PATH   (prints the answer as JSON on stdout)

- About 30% of the lines are failed passwords: 200 attacking addresses (5% of them IPv6),
  each trying at its own pace (a failure every 1 to 30 seconds while active, in waves), as
  `root`, as other users and as `invalid user …`.
- Scanners: `Connection closed by … [preauth]` and `Did not receive identification string`
  lines from other addresses (about 3%): not failed passwords.
- Noise: accepted logins, disconnects, sudo, logind and cron lines.
The answer is computed by running the rule's semantics over the failures in log time (a
sliding window (t - 60 s, t]; at the fifth failure the rule fires and the address starts
over), so any tool with those semantics must give exactly `firings`; `failure_lines` is what
a matcher without a threshold (fail2ban-regex) should count.
"""
import collections
import json
import random
import sys

n, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(2027)
PER_SECOND = 50


def stamp(sec):
    # Log time starts Nov 23 00:00:00 (RFC 3164 has no year).
    day, rest = divmod(sec, 86400)
    return f"Nov {23 + day:2d} {rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"


def attacker(k):
    if k % 20 == 0:
        return f"2001:db8:{k:x}::{rnd.randrange(1, 0xffff):x}"
    return f"203.0.{k // 250}.{k % 250 + 1}"


attackers = [attacker(k) for k in range(200)]
USERS = ["root", "admin", "oracle", "ubuntu", "invalid user test", "invalid user pi",
         "invalid user git", "invalid user postgres"]

window = collections.defaultdict(collections.deque)
firings = 0
failures = 0
with open(path, "w") as f:
    for i in range(n):
        sec = i // PER_SECOND
        ts = stamp(sec)
        pid = 1000 + i % 700
        r = rnd.random()
        if r < 0.30:
            # A failure from one of the attackers; the attackers come in waves, so the
            # addresses active at any time are a rotating part of the 200.
            wave = (sec // 600) % 4
            ip = attackers[(rnd.randrange(50) + wave * 50) % 200]
            user = rnd.choice(USERS)
            failures += 1
            f.write(f"{ts} web-1 sshd[{pid}]: Failed password for {user} from {ip} port {rnd.randrange(1024, 65535)} ssh2\n")
            q = window[ip]
            while q and q[0] <= sec - 60:
                q.popleft()
            q.append(sec)
            if len(q) >= 5:
                firings += 1
                q.clear()
        elif r < 0.315:
            f.write(f"{ts} web-1 sshd[{pid}]: Connection closed by 198.51.100.{rnd.randrange(1, 255)} port {rnd.randrange(1024, 65535)} [preauth]\n")
        elif r < 0.33:
            f.write(f"{ts} web-1 sshd[{pid}]: Did not receive identification string from 192.0.2.{rnd.randrange(1, 255)} port {rnd.randrange(1024, 65535)}\n")
        elif r < 0.45:
            f.write(f"{ts} web-1 sshd[{pid}]: Accepted publickey for deploy from 10.0.{rnd.randrange(4)}.{rnd.randrange(250)} port 50000 ssh2: RSA SHA256:abc\n")
        elif r < 0.55:
            f.write(f"{ts} web-1 sshd[{pid}]: Disconnected from user deploy 10.0.1.{rnd.randrange(250)} port 50000\n")
        elif r < 0.60:
            f.write(f"{ts} web-1 sudo: deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/systemctl restart app\n")
        elif r < 0.65:
            f.write(f"{ts} web-1 systemd-logind[412]: New session {i} of user deploy.\n")
        else:
            f.write(f"{ts} web-1 CRON[{2000 + i % 900}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)\n")

json.dump({"lines": n, "firings": firings, "failure_lines": failures,
           "attackers": len(attackers)}, sys.stdout)
