#!/usr/bin/env python3
"""Crash test: 250 means durable.

ackclient.py pushes MESSAGES messages over several connections while the
daemon is killed with SIGKILL at least KILLS times mid-stream and
restarted (the client retries refused connections).  At the end, every
Message-ID that got a 250 must have reached smtp-sink at least once;
duplicates are allowed and reported.  No spool file may be found corrupt.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_crash.py
Environment: CRASH_MESSAGES (2000), CRASH_KILLS (5; at least 3).
"""

import collections
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MESSAGES = int(os.environ.get("CRASH_MESSAGES", "2000"))
KILLS = int(os.environ.get("CRASH_KILLS", "5"))
CONCURRENCY = 8
CLIENT_DEADLINE = 150      # s, for the whole push
DELIVERY_WAIT = 60         # s, after the push, for the sink to get everything


def acked_ids(path):
    """Message-IDs the client recorded as acknowledged (complete lines)."""
    try:
        with open(path) as f:
            return [l.strip() for l in f.read().split("\n")[:-1] if l.strip()]
    except FileNotFoundError:
        return []


def kill_points(n_kills, total):
    """Ack counts at which to kill: spread over the first 80 % of the run."""
    return [int(total * 0.8 * (i + 1) / (n_kills + 1)) for i in range(n_kills)]


def spool_files(gw):
    """Queued message files, and the files in spool/corrupt/."""
    return gw.queued_files(), gw.corrupt_files()


def run():
    sink = sgtest.Sink()
    gw = sgtest.Instance(next_hop=sink.port)
    client = None
    failures = []
    try:
        gw.append_config('limits:\n  retry_min: "500ms"\n  retry_max: "2s"\n')
        gw.start()
        acked = os.path.join(gw.base, "acked.txt")
        cmd = [sys.executable, os.path.join(HERE, "ackclient.py"), "--port", str(gw.port),
               "--count", str(MESSAGES), "--concurrency", str(CONCURRENCY),
               "--acked", acked, "--prefix", "crash%d" % os.getpid(), "--size", "2048",
               "--deadline", str(CLIENT_DEADLINE), "--timeout", "10"]
        t0 = time.monotonic()
        client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        kills = 0
        for point in kill_points(KILLS, MESSAGES):
            sgtest.wait_for(lambda: len(acked_ids(acked)) >= point or client.poll() is not None,
                            CLIENT_DEADLINE, 0.01)
            if client.poll() is not None:
                break
            gw.kill9()
            kills += 1
            print("SIGKILL #%d after %d acks (%.1fs)" % (kills, len(acked_ids(acked)),
                                                         time.monotonic() - t0), flush=True)
            time.sleep(0.3)  # refused connections for a moment
            gw.start()
        out, _ = client.communicate(timeout=CLIENT_DEADLINE + 30)
        print(out.strip(), flush=True)
        if kills < KILLS:
            failures.append("only %d kills happened before the client finished" % kills)
        want = set(acked_ids(acked))
        if client.returncode != 0:
            failures.append("ackclient exit %d: not every message was acknowledged" % client.returncode)
        if len(want) < MESSAGES:
            failures.append("only %d of %d messages acknowledged" % (len(want), MESSAGES))

        def missing():
            return want - set(sink.message_ids())
        left = sgtest.wait_for(lambda: not missing(), DELIVERY_WAIT, 1.0)
        ids = sink.message_ids()
        counts = collections.Counter(ids)
        lost = want - set(ids)
        dups = sum(c - 1 for c in counts.values() if c > 1)
        print("acked=%d delivered=%d unique=%d duplicates=%d lost=%d kills=%d elapsed=%.1fs"
              % (len(want), len(ids), len(counts), dups, len(lost), kills, time.monotonic() - t0))
        if left is None and lost:
            failures.append("%d acknowledged messages never delivered, e.g. %s"
                            % (len(lost), sorted(lost)[:5]))
        # Nothing left to deliver, and a SIGKILL never tears a spool file.
        sgtest.wait_for(lambda: not spool_files(gw)[0], 15, 0.2)
        rest, corrupt = spool_files(gw)
        if corrupt:
            failures.append("spool files found corrupt after SIGKILL: %s" % corrupt[:5])
        if rest:
            failures.append("spool not empty after delivery: %s" % rest[:5])
        code = gw.stop()
        if code != 0:
            failures.append("sealgate exited %s on SIGTERM" % code)
    finally:
        if client and client.poll() is None:
            client.kill()
            client.wait()
        log = sgtest.shut_down(gw)
        sink.close()
    try:
        sgtest.assert_no_sanitizer_report(log)
    except AssertionError as e:
        failures.append(str(e))
    return sgtest.report("test_crash", failures)


if __name__ == "__main__":
    sys.exit(run())
