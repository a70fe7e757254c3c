#!/usr/bin/env python3
"""Quick measurement: daemon start time and ingest-socket throughput.

Usage: cargo build --release && python3 benches/socket_throughput.py [LINES] [FAILED]

Two workloads, each in its own run: LINES NDJSON events of which a fraction are failed SSH
passwords from 1000 addresses (the rest ordinary log lines that no rule fires on): none
(ingest and rules only) and 10% (about 20,000 detections into 1,000 incidents, each banned by
the shipped `ban-address` action), or only the fraction FAILED when given. For each, it
times `wc -l` on the file as the baseline, starts target/release/incidentd on the
shipped config in a temporary folder, sends the file over one ingest-socket connection and
waits until /v1/status shows every event through the engine. Prints figures and the ratio to
`wc -l`, and the daemon's busiest threads by CPU time; measures, asserts nothing.
"""
import json, os, random, shutil, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "incidentd")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
FAILED = [float(sys.argv[2])] if len(sys.argv) > 2 else [0.0, 0.1]


def get(sock_path, path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return json.loads(body)


def main(failed):
    tmp = tempfile.mkdtemp(prefix="incd-bench")
    try:
        path = os.path.join(tmp, "events.ndjson")
        rnd = random.Random(42)
        with open(path, "w") as f:
            for i in range(N):
                if rnd.random() < failed:
                    ip = f"203.0.{rnd.randrange(4)}.{rnd.randrange(250)}"
                    msg = f"Failed password for root from {ip} port 22 ssh2"
                else:
                    msg = f"pam_unix(cron:session): session opened for user u{rnd.randrange(100)} by (uid=0)"
                f.write(json.dumps({"kind": "log", "message": msg,
                                    "fields": {"program": "sshd"}}) + "\n")
        size = os.path.getsize(path)

        t0 = time.perf_counter()
        subprocess.run(["wc", "-l", path], check=True, capture_output=True)
        wc = time.perf_counter() - t0

        run = os.path.join(tmp, "run")
        ctl = os.path.join(run, "control.sock")
        t0 = time.perf_counter()
        d = subprocess.Popen([BIN, "--config", os.path.join(ROOT, "etc/incidentd.toml"),
                              "--state-dir", os.path.join(tmp, "state"), "--runtime-dir", run],
                             stderr=open(os.path.join(tmp, "log"), "w"))
        while True:
            try:
                if get(ctl, "/v1/health")["status"] == "ok":
                    break
            except OSError:
                time.sleep(0.002)
        start = time.perf_counter() - t0

        t0 = time.perf_counter()
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join(run, "ingest.sock"))
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                s.sendall(chunk)
        s.close()
        while get(ctl, "/v1/status")["engine"]["events"] < N:
            time.sleep(0.01)
        ingest = time.perf_counter() - t0
        st = get(ctl, "/v1/status")
        rss_kb = int(open(f"/proc/{d.pid}/status").read().split("VmHWM:")[1].split()[0])
        threads = {}
        for t in os.listdir(f"/proc/{d.pid}/task"):
            try:
                comm = open(f"/proc/{d.pid}/task/{t}/comm").read().strip()
                f = open(f"/proc/{d.pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
                cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                continue
            if cpu >= 0.05:
                threads[f"{comm}/{t}"] = cpu
        d.terminate()
        d.wait(timeout=30)

        print(f"workload               {failed:.0%} failed passwords")
        print(f"lines                 {N} ({size / 1e6:.0f} MB)")
        print(f"daemon start to health {start * 1000:.0f} ms")
        print(f"wc -l                  {wc:.3f} s  ({N / wc / 1e6:.1f} M lines/s)")
        print(f"ingest socket → engine {ingest:.3f} s  ({N / ingest / 1e3:.0f} k events/s)")
        print(f"ratio                  {ingest / wc:.0f}x the time of wc -l")
        print(f"incidents created      {st['incidents']['created']}, detections {st['engine']['detections']}")
        print(f"peak RSS               {rss_kb / 1024:.0f} MiB")
        busiest = sorted(threads.items(), key=lambda kv: -kv[1])[:6]
        print("busiest threads (CPU s) " + ", ".join(f"{k} {v:.2f}" for k, v in busiest))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    for i, failed in enumerate(FAILED):
        if i:
            print()
        main(failed)
