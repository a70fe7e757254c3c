#!/usr/bin/env python3
"""incidentd detector plugin: rolling z-score anomalies on metric events (protocol 1).

Keeps, per series, the last ZSCORE_WINDOW values. A new value whose distance from the window's
mean exceeds ZSCORE_THRESHOLD standard deviations (with at least ZSCORE_MIN_SAMPLES values
seen) is a detection; the value then joins the window like any other. Standard library only.
"""
import json
import math
import os
import sys
from collections import deque

WINDOW = int(os.environ.get("ZSCORE_WINDOW", "60"))
THRESHOLD = float(os.environ.get("ZSCORE_THRESHOLD", "4.0"))
MIN_SAMPLES = int(os.environ.get("ZSCORE_MIN_SAMPLES", "20"))
NAME = os.environ.get("INCIDENTD_PLUGIN", "zscore")


def send(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def series_of(event):
    labels = event.get("labels") or {}
    metric = labels.get("metric", "value")
    rest = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "metric")
    host = event.get("host", "")
    service = event.get("service") or ""
    key = "/".join(p for p in (host, service, metric, rest) if p)
    return key, metric


def main():
    send({"type": "hello", "name": NAME, "protocol": 1})
    windows = {}
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            send({"type": "log", "level": "warn", "message": "unreadable line from incidentd"})
            continue
        kind = msg.get("type")
        if kind == "shutdown":
            break
        if kind != "event":
            continue
        event = msg.get("event") or {}
        value = event.get("value")
        if not isinstance(value, (int, float)):
            continue
        key, metric = series_of(event)
        win = windows.setdefault(key, deque(maxlen=WINDOW))
        if len(win) >= MIN_SAMPLES:
            mean = sum(win) / len(win)
            var = sum((x - mean) ** 2 for x in win) / len(win)
            std = math.sqrt(var)
            # A flat series has no spread: any change is an anomaly only if it is large
            # against the level itself.
            z = (value - mean) / std if std > 0 else (math.inf if abs(value - mean) > 1e-9 * max(1.0, abs(mean)) else 0.0)
            if abs(z) > THRESHOLD:
                zt = "inf" if math.isinf(z) else f"{z:.1f}"
                send({
                    "type": "detection",
                    "key": key,
                    "summary": f"{metric} is anomalous on {event.get('host', '?')}: "
                               f"{value:g} against a mean of {mean:g} (z={zt})",
                    "labels": {"metric": metric, "z": zt, "mean": f"{mean:g}", "value": f"{value:g}"},
                    "ts": event.get("ts"),
                    "evidence": event,
                })
        win.append(float(value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
