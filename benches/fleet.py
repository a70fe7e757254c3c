#!/usr/bin/env python3
"""A fleet through an Alertmanager HA pair: alerts accepted per second and end-to-end latency.

Usage: cargo build --release && python3 benches/fleet.py [HOSTS] [INCIDENTS_PER_HOST]
(defaults 50 and 20). Needs Debian's prometheus-alertmanager.

Starts two Alertmanager peers clustered on loopback (group_by instance and incident_id, so
every incident is one notification; group_wait 0s) and a webhook receiver behind them.

1. Baseline: a Python client posts the same number of alerts straight to both peers (one
   alert a request, as incidentd sends them), one thread per simulated host.
2. incidentd: HOSTS daemons (target/release/incidentd, each with its own state and
   `[daemon] host`), each with an alertmanager channel on both peers; each daemon gets
   INCIDENTS_PER_HOST sev1 incidents through its control socket, all hosts at once.

Two workloads: every incident its own notification (group_by instance, incident_id;
group_wait 0s: 1,000 new groups at once by default, the hard case for the cluster's gossip),
and grouped per host (group_by instance, service; group_wait 2s), as docs/FLEET.md advises.

For each: alerts accepted per second by the pair (both peers, from the first request to the
last acceptance), the latency from the request that raised an alert to the first
notification carrying it (p50, p99, max), alerts that never arrived, and notifications
repeated (the same group with the same alerts sent twice, i.e. by both peers). Prints
figures; asserts nothing.
"""
import http.client, http.server, json, os, shutil, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "incidentd")
HOSTS = int(sys.argv[1]) if len(sys.argv) > 1 else 50
PER_HOST = int(sys.argv[2]) if len(sys.argv) > 2 else 20
# Alertmanager's default: the later peer waits this long for the first one's notification
# log to reach it by gossip before it sends itself.
PEER_TIMEOUT = int(os.environ.get("PEER_TIMEOUT", "15"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def call(sock, method, path, body=None):
    c = UnixHTTP(sock)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return json.loads(data) if data else None


class Receiver:
    """What reached people: (instance, incident) -> [receipt times] of firing alerts, and
    each notification as (group, the set of its firing alerts)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = {}
        self.notes = []
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                with rec.lock:
                    firing = frozenset(
                        (a["labels"].get("instance"), a["labels"].get("incident_id"))
                        for a in body.get("alerts", []) if a["status"] == "firing")
                    rec.notes.append((body.get("groupKey"), firing))
                    for k in firing:
                        rec.got.setdefault(k, []).append(now)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"


def start_pair(tmp, receiver):
    cfg = os.path.join(tmp, "am.yml")
    with open(cfg, "w") as f:
        f.write(f"""route:
  receiver: pager
  group_by: ['instance', 'incident_id']
  group_wait: 0s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['workload="grouped"']
      group_by: ['instance', 'service']
      group_wait: 2s
      group_interval: 10s
receivers:
  - name: pager
    webhook_configs:
      - url: {receiver}
""")
    c1, c2 = free_port(), free_port()
    peers = []
    for i, (me, other) in enumerate([(c1, c2), (c2, c1)]):
        web = free_port()
        p = subprocess.Popen(
            ["prometheus-alertmanager", f"--config.file={cfg}",
             f"--storage.path={os.path.join(tmp, f'am{i}')}",
             f"--web.listen-address=127.0.0.1:{web}",
             f"--cluster.listen-address=127.0.0.1:{me}", f"--cluster.peer=127.0.0.1:{other}",
             f"--cluster.peer-timeout={PEER_TIMEOUT}s", "--cluster.settle-timeout=5s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peers.append((p, web))
    for _, web in peers:
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", web, timeout=2)
                c.request("GET", "/api/v2/status")
                s = json.loads(c.getresponse().read())
                if s["cluster"]["status"] == "ready" and len(s["cluster"]["peers"]) == 2:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("the Alertmanager pair did not form")
            time.sleep(0.2)
    return peers


def rss_mib(pid):
    try:
        return int(open(f"/proc/{pid}/status").read().split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        return 0.0


def received_total(peers):
    n = 0
    for _, web in peers:
        c = http.client.HTTPConnection("127.0.0.1", web, timeout=5)
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith("alertmanager_alerts_received_total"):
                n += float(line.split()[-1])
    return n


def summary(name, raised, rec, accepted_s, total, start_notes):
    """Latency to the first notification that carries each alert; notifications sent twice
    (the same group with the same alerts); alerts that never arrived."""
    lat = []
    missing = 0
    with rec.lock:
        for k, t0 in raised.items():
            got = [t for t in rec.got.get(k, []) if t >= t0]
            if not got:
                missing += 1
                continue
            lat.append(min(got) - t0)
        mine = [n for n in rec.notes[start_notes:] if n[1] and n[1] <= raised.keys()]
        dup = len(mine) - len(set(mine))
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
    print(f"{name:<10} alerts {total:>5}  accepted {2 * total / accepted_s:>8.0f}/s (both peers, "
          f"{accepted_s:.2f} s)  latency p50 {q(0.5):.0f} ms  p99 {q(0.99):.0f} ms  "
          f"max {q(1.0):.0f} ms  missing {missing}  notifications {len(mine)}, "
          f"of them repeated {dup}")
    return 2 * total / accepted_s, q(0.5), q(0.99)


def baseline(peers, rec, workload):
    """The same alerts posted straight to both peers, one thread per host."""
    raised = {}
    lock = threading.Lock()
    start_count = received_total(peers)
    start_notes = len(rec.notes)

    def host(h):
        conns = [http.client.HTTPConnection("127.0.0.1", web, timeout=30) for _, web in peers]
        for i in range(PER_HOST):
            labels = {"alertname": "direct", "instance": f"direct-{h}",
                      "incident_id": f"{workload}-{i + 1}", "severity": "sev1",
                      "service": "db", "workload": workload}
            body = json.dumps([{"labels": labels, "annotations": {"summary": "direct"}}])
            t0 = time.time()
            with lock:
                raised[(labels["instance"], labels["incident_id"])] = t0
            for c in conns:
                c.request("POST", "/api/v2/alerts", body=body,
                          headers={"Content-Type": "application/json"})
                c.getresponse().read()

    t0 = time.time()
    threads = [threading.Thread(target=host, args=(h,)) for h in range(HOSTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while received_total(peers) - start_count < 2 * HOSTS * PER_HOST:
        time.sleep(0.05)
    accepted = time.time() - t0
    time.sleep(PEER_TIMEOUT + 5)  # the later peer's turn, had it any
    return summary("direct", raised, rec, accepted, HOSTS * PER_HOST, start_notes)


def start_fleet(tmp, peers):
    urls = ", ".join(f'"http://127.0.0.1:{web}"' for _, web in peers)
    rules = os.path.join(tmp, "rules.d")
    os.makedirs(rules, exist_ok=True)
    daemons = []
    for h in range(HOSTS):
        d = os.path.join(tmp, f"host{h}")
        os.makedirs(d)
        cfg = os.path.join(d, "incidentd.toml")
        with open(cfg, "w") as f:
            f.write(f"""rules_dir = "{rules}"
[daemon]
host = "fleet-{h}"

[[channel]]
id = "am"
kind = "alertmanager"
urls = [{urls}]
resend_interval = "10m"

[[route]]
channels = ["am"]
""")
        run = os.path.join(d, "run")
        p = subprocess.Popen([BIN, "--config", cfg, "--state-dir", os.path.join(d, "state"),
                              "--runtime-dir", run],
                             stderr=open(os.path.join(d, "log"), "w"))
        daemons.append((p, os.path.join(run, "control.sock")))
    for p, ctl in daemons:
        deadline = time.time() + 60
        while True:
            try:
                if call(ctl, "GET", "/v1/health")["status"] == "ok":
                    break
            except (OSError, ValueError, http.client.HTTPException):
                pass
            if time.time() > deadline:
                sys.exit(f"daemon {ctl} did not start")
            time.sleep(0.05)
    return daemons


def fleet(daemons, peers, rec, workload):
    raised = {}
    start_notes = len(rec.notes)
    lock = threading.Lock()

    def host(h):
        _, ctl = daemons[h]
        for i in range(PER_HOST):
            t0 = time.time()
            inc = call(ctl, "POST", "/v1/incidents",
                       {"title": f"database down {i}", "severity": "sev1", "service": "db",
                        "labels": {"workload": workload}})
            with lock:
                raised[(f"fleet-{h}", str(inc["id"]))] = t0

    start_count = received_total(peers)
    t0 = time.time()
    threads = [threading.Thread(target=host, args=(h,)) for h in range(HOSTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while received_total(peers) - start_count < 2 * HOSTS * PER_HOST:
        time.sleep(0.05)
    accepted = time.time() - t0
    time.sleep(PEER_TIMEOUT + 5)
    return summary("incidentd", raised, rec, accepted, HOSTS * PER_HOST, start_notes)


def main():
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    if shutil.which("prometheus-alertmanager") is None:
        sys.exit("needs Debian's Alertmanager: apt-get install prometheus-alertmanager")
    tmp = tempfile.mkdtemp(prefix="incd-fleet")
    rec = Receiver()
    peers = []
    try:
        peers = start_pair(tmp, rec.url)
        print(f"{HOSTS} hosts x {PER_HOST} sev1 incidents, Alertmanager pair on loopback "
              f"(peer timeout {PEER_TIMEOUT}s), {os.cpu_count()} cores")
        daemons = start_fleet(tmp, peers)
        for workload, what in [("apart", "one notification per incident (group_by instance, "
                                          "incident_id; group_wait 0s)"),
                               ("grouped", "grouped per host (group_by instance, service; "
                                           "group_wait 2s, group_interval 10s)")]:
            print(f"-- {what}")
            b = baseline(peers, rec, workload)
            f = fleet(daemons, peers, rec, workload)
            print(f"ratio      accepted/s {f[0] / b[0]:.2f}x direct; p50 latency "
                  f"{f[1] - b[1]:+.0f} ms, p99 {f[2] - b[2]:+.0f} ms against direct")
        rss = [rss_mib(p.pid) for p, _ in daemons]
        print(f"incidentd peak RSS per daemon: mean {sum(rss) / len(rss):.0f} MiB, "
              f"max {max(rss):.0f} MiB")
        for p, _ in daemons:
            p.terminate()
        for p, _ in daemons:
            p.wait(timeout=30)
        print(f"Alertmanager peak RSS: {', '.join(f'{rss_mib(p.pid):.0f} MiB' for p, _ in peers)}")
    finally:
        for p, _ in peers:
            p.kill()
            p.wait()
        rec.server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
