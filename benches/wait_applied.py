#!/usr/bin/env python3
"""Waits until a daemon has read LINES lines of its file sources and applied DETECTIONS
detections (incidents created plus detections joined to one), polling `/v1/status` over the
control socket every 20 ms, and prints two epoch times (as bash's $EPOCHREALTIME): when the
last line was read, and when the last detection was applied. Start it before the daemon (it
waits up to 30 s for the socket) so that its own start is not timed; it fails when the
daemon stops answering once it has.

A poller of its own: one that starts curl, grep and bc fifty times a second takes more than
half a core, which on a 2-core machine is taken from the daemon it measures (1.85 CPU-s for
75 polls, measured on 2026-12-05); this one takes a few hundredths of a second per second.

Usage: wait_applied.py SOCKET LINES DETECTIONS
"""
import json
import socket
import sys
import time


def status(path):
    """`/v1/status` on a connection of its own (a few modules only: importing http.client
    takes a tenth of a second of CPU)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(head[:80])
    return json.loads(body)


def main():
    path, lines, detections = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    give_up = time.time() + 30
    answered = False
    read_at = None
    while True:
        try:
            st = status(path)
            answered = True
        except (OSError, ValueError) as e:
            if answered or time.time() > give_up:
                print(f"the daemon does not answer: {e}", file=sys.stderr)
                return 1
            time.sleep(0.02)
            continue
        now = time.time()
        got = sum(i.get("lines", 0) for i in st.get("inputs", []) if i.get("kind") == "file")
        inc = st.get("incidents", {})
        applied = inc.get("created", 0) + inc.get("deduplicated", 0)
        if read_at is None and got >= lines:
            read_at = now
        if read_at is not None and applied >= detections:
            print(f"{read_at:.6f} {now:.6f}")
            return 0
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
