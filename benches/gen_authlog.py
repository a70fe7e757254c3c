#!/usr/bin/env python3
"""Writes a synthetic auth.log: LINES lines, 50 per second of log time, with SSH failures
from a few addresses, logins, and cron noise. Usage: gen_authlog.py LINES PATH"""
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
