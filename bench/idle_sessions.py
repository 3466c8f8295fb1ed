#!/usr/bin/env python3
"""Memory of the daemon with many idle SMTP sessions (issue #7 target:
10,000 idle sessions under 200 MB RSS).

Starts a gateway (Release build recommended: SEALGATE_BIN=build/bin)
whose per-client connection limit is raised above N, measures the idle
daemon's resident memory, opens N connections from this process, each of
which reads the banner and says EHLO (a real session, waiting for MAIL),
then reads the daemon's VmRSS and VmHWM with all of them open, beside the
idle figure measured in the same run and the target.  The sessions are
then closed and the daemon must still answer and stop cleanly.

Run: SEALGATE_BIN=build/bin python3 bench/idle_sessions.py [--sessions 10000]
"""

import argparse
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import sgtest  # noqa: E402

TARGET_MB = 200


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def open_sessions(port, n):
    """n sockets, each past the banner and EHLO; returns them."""
    socks = []
    for i in range(n):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        if len(socks) % 500 == 0:  # read the banners in batches: the daemon accepts as fast as it can
            for t in socks[-500:]:
                t.recv(512)
                t.sendall(b"EHLO idle.example\r\n")
    for t in socks[len(socks) - len(socks) % 500:]:
        t.recv(512)
        t.sendall(b"EHLO idle.example\r\n")
    for t in socks:  # each EHLO answered: the session is established and idle
        buf = b""
        while not buf.endswith(b"\r\n") or b"250 " not in buf:
            chunk = t.recv(4096)
            if not chunk:
                raise RuntimeError("a session was closed by the daemon")
            buf += chunk
    return socks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10000)
    args = ap.parse_args()
    need = args.sessions + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:  # the daemon inherits it
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    limits = {"connections_per_client": args.sessions + 100, "idle_timeout": '"10m"'}
    with sgtest.Sink() as sink, sgtest.gateway(sink.port, limits=limits) as gw:
        time.sleep(1)
        idle_rss = status_kib(gw.proc.pid, "VmRSS")
        t0 = time.monotonic()
        socks = open_sessions(gw.port, args.sessions)
        opened = time.monotonic() - t0
        time.sleep(1)
        rss = status_kib(gw.proc.pid, "VmRSS")
        hwm = status_kib(gw.proc.pid, "VmHWM")
        per = (rss - idle_rss) * 1024 / args.sessions
        for s in socks:
            s.close()
        time.sleep(1)
        code, text = sgtest.send_message(gw.port, "a@example.com", ["b@example.net"],
                                         sgtest.make_message("after@idle.example"))
        ok = code == 250
    print("idle sessions: %d opened in %.1f s" % (args.sessions, opened))
    print("%-28s %10s" % ("", "MB"))
    print("%-28s %10.1f" % ("daemon idle VmRSS", idle_rss / 1024))
    print("%-28s %10.1f" % ("with the sessions VmRSS", rss / 1024))
    print("%-28s %10.1f" % ("peak VmHWM", hwm / 1024))
    print("%-28s %10.0f bytes" % ("per session", per))
    print("target: under %d MB with %d sessions: %s (ratio %.2f of the target)"
          % (TARGET_MB, args.sessions, "PASS" if hwm / 1024 < TARGET_MB else "FAIL", hwm / 1024 / TARGET_MB))
    print("a message after the sessions closed: %s" % ("accepted" if ok else "REFUSED (%d %s)" % (code, text)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
