#!/usr/bin/env python3
"""A bounded HTTP load loop for the benchmarks: keep-alive clients against one address.

    load.py HOST:PORT SECONDS [THREADS] [PATH]

Runs until SECONDS have passed or the file named by $LOAD_STOP exists, then prints one JSON
line: {"ok": N, "failed": N, "rps": X, "errors": [...]}. Loopback only, by design.
"""
import http.client
import json
import os
import sys
import threading
import time

addr, seconds = sys.argv[1], float(sys.argv[2])
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4
path = sys.argv[4] if len(sys.argv) > 4 else "/version"
host, port = addr.rsplit(":", 1)
assert host in ("127.0.0.1", "localhost"), "load only goes to loopback"
stop_file = os.environ.get("LOAD_STOP")
lock = threading.Lock()
counts = {"ok": 0, "failed": 0}
errors = []
started = time.time()
MAX_PER_THREAD = 200_000


def worker():
    conn = None
    n = 0
    while time.time() - started < seconds and n < MAX_PER_THREAD:
        if stop_file and n % 50 == 0 and os.path.exists(stop_file):
            break
        n += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            ok = r.status == 200
            detail = f"status {r.status}"
        except Exception as e:  # any failure counts, connection errors included
            ok, detail, conn = False, repr(e), None
        with lock:
            if ok:
                counts["ok"] += 1
            else:
                counts["failed"] += 1
                if len(errors) < 5:
                    errors.append(f"{detail} at {time.time() - started:.2f}s")


ts = [threading.Thread(target=worker) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
elapsed = time.time() - started
total = counts["ok"] + counts["failed"]
print(json.dumps({"ok": counts["ok"], "failed": counts["failed"], "rps": round(total / elapsed, 1), "errors": errors}))
