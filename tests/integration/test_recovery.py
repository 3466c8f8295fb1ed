#!/usr/bin/env python3
"""Recovery from the spool: restarts, crashes, damaged and leftover files,
spooldump.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_recovery.py
"""

import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402

FAST_RETRY = 'limits:\n  retry_min: "500ms"\n  retry_max: "1s"\n'


# ------------------------------------------------------------------ helpers

def instance(hop_port, extra=FAST_RETRY):
    """sgtest.gateway, not started: an instance relaying to hop_port with
    extra YAML appended; yields it.  The tests check their own stops
    (stop_ok); on the way out it is stopped, checked for sanitizer reports
    and removed."""
    return sgtest.gateway(hop_port, yaml=extra, start=False, on_exit=None)


def stop_ok(gw):
    sgtest.assert_clean_stop(gw, tail=2000)


def spool_files(gw):
    """{queue id: path} of the queued message files."""
    return {os.path.basename(p): p for p in gw.queued_files()}


def send(gw, mid):
    """One message with Message-ID mid; returns its queue id."""
    return sgtest.queued_id(sgtest.send_message(gw.port, "keeper@example.com", ["far@example.net"],
                                                sgtest.make_message(mid, body="body of %s\r\n" % mid)))


def wait_deferred(gw, qids):
    """Wait until every qid has had a failed attempt logged."""
    def done():
        log = gw.log()
        return all(re.search(r"queue_id=%s .*result=deferred" % q, log) for q in qids)
    assert sgtest.wait_for(done, 15), "no deferral logged:\n" + gw.log()[-2000:]


def delivered(hop, mid):
    with hop.lock:
        return sum(1 for t in hop.accepted if t["message_id"] == mid)


def spooldump(*args):
    return subprocess.run([sgtest.binary("spooldump")] + list(args), capture_output=True,
                          text=True, timeout=30)


# ------------------------------------------------------------------ tests

def test_survives_sigterm_and_sigkill():
    """Messages queued while the hop is down survive a SIGTERM restart and
    a SIGKILL restart, and go out once the hop is back."""
    port = sgtest.free_port()
    with instance(port) as gw:
        gw.start()
        first = {send(gw, "term%d@test" % i): "term%d@test" % i for i in range(3)}
        wait_deferred(gw, first)
        t0 = time.monotonic()
        stop_ok(gw)
        assert time.monotonic() - t0 < 5, "SIGTERM with a deferred queue took %.1fs" % (
            time.monotonic() - t0)
        assert set(first) <= set(spool_files(gw)), "lost from the spool on SIGTERM"
        gw.start()
        assert sgtest.wait_for(lambda: "recovered 3 message" in gw.log(), 10), gw.log()[-2000:]
        second = {send(gw, "kill%d@test" % i): "kill%d@test" % i for i in range(3)}
        wait_deferred(gw, second)
        gw.kill9()
        assert set(first) | set(second) <= set(spool_files(gw)), "lost from the spool on SIGKILL"
        gw.start()
        with sgtest.FakeHop(port=port) as hop:
            mids = list(first.values()) + list(second.values())
            assert sgtest.wait_for(lambda: all(delivered(hop, m) for m in mids), 20), \
                "not delivered after restarts: %s\n%s" % (hop.message_ids(), gw.log()[-2000:])
            time.sleep(1.5)
            assert all(delivered(hop, m) == 1 for m in mids), hop.message_ids()
            assert sgtest.wait_for(lambda: not spool_files(gw), 10), spool_files(gw)
            stop_ok(gw)


def test_corrupt_and_leftover_files():
    """A flipped byte and a truncated file go to spool/corrupt/ with a log
    line naming them and are not delivered; a copy under a foreign name is
    refused too; a leftover .tmp is removed; the good message goes out
    once.  spooldump agrees: ok (exit 0) or corrupt (exit 1)."""
    port = sgtest.free_port()
    with instance(port) as gw:
        gw.start()
        names = ["good", "flipped", "truncated", "renamed"]
        qids = {n: send(gw, "%s@test" % n) for n in names}
        wait_deferred(gw, qids.values())
        stop_ok(gw)
        files = spool_files(gw)
        path = {n: files[qids[n]] for n in names}

        r = spooldump(*[path[n] for n in names])
        assert r.returncode == 0, "spooldump on valid files: %d %s" % (r.returncode, r.stderr)
        assert qids["good"] in r.stdout and "keeper@example.com" in r.stdout, r.stdout
        r = spooldump("-q", path["good"])
        assert r.returncode == 0 and "ok" in r.stdout, (r.stdout, r.stderr)

        with open(path["flipped"], "r+b") as f:  # one byte inside the message data
            size = os.path.getsize(path["flipped"])
            f.seek(size - 40)
            b = f.read(1)
            f.seek(size - 40)
            f.write(bytes([b[0] ^ 0x20]))
        with open(path["truncated"], "r+b") as f:
            f.truncate(os.path.getsize(path["truncated"]) - 7)
        # The same bytes under another queue id: recovery must refuse it.
        other = os.path.join(os.path.dirname(path["renamed"]), "Z" + qids["renamed"][1:])
        os.rename(path["renamed"], other)
        # An unfinished file of a crashed commit: never acknowledged.
        leftover = os.path.join(os.path.dirname(path["good"]), qids["good"] + "X.tmp")
        shutil.copyfile(path["good"], leftover)
        junk = os.path.join(os.path.dirname(path["good"]), "1ABCDEF.tmp")
        with open(junk, "wb") as f:
            f.write(b"SGSPOOL\n\x01\x00")

        for n in ("flipped", "truncated"):
            r = spooldump(path[n])
            assert r.returncode == 1 and "corrupt" in r.stderr, (n, r.returncode, r.stdout, r.stderr)
        r = spooldump("-q", path["good"], path["flipped"])
        assert r.returncode == 1, "one bad file must make the exit status 1"
        assert re.search(r"checksum", r.stderr), r.stderr
        r = spooldump(path["truncated"])
        assert re.search(r"truncated|end record|end marker", r.stderr), r.stderr

        with sgtest.FakeHop(port=port) as hop:
            gw.start()
            assert sgtest.wait_for(lambda: delivered(hop, "good@test"), 15), gw.log()[-2000:]
            time.sleep(1.5)
            log = gw.log()
            assert delivered(hop, "good@test") == 1, hop.message_ids()
            for n in ("flipped", "truncated", "renamed"):
                assert delivered(hop, "%s@test" % n) == 0, "%s delivered" % n
            for p in (path["flipped"], path["truncated"], other):
                assert re.search(r"spool: %s is corrupt \(.+\); moved to " % re.escape(p), log), \
                    "no log line for %s:\n%s" % (p, log[-3000:])
            assert "queue id does not match file name" in log, log[-3000:]
            moved = gw.corrupt_files()
            for q in (qids["flipped"], qids["truncated"], os.path.basename(other)):
                assert any(m.startswith(q + ".") for m in moved), "%s not in corrupt/: %s" % (q, moved)
            assert len(moved) == 3, moved
            assert not os.path.exists(leftover) and not os.path.exists(junk), ".tmp left in the spool"
            assert "removing unfinished %s" % leftover in log, log[-3000:]
            assert sgtest.wait_for(lambda: not spool_files(gw), 10), spool_files(gw)
            cdir = os.path.join(gw.dir, "spool", "corrupt")
            r = spooldump("-q", *[os.path.join(cdir, m) for m in moved])
            assert r.returncode == 1, (r.stdout, r.stderr)
            assert r.stderr.count("corrupt") >= 2, r.stderr  # the renamed copy itself parses
            stop_ok(gw)


def test_partial_delivery_rewrite_survives_kill():
    """One recipient delivered, one deferred: the spool file is rewritten
    with only the pending one, so after a SIGKILL and restart only that
    one is retried.  While stopped, `sealctl queue list` reads the spool."""
    state = {"open": False}

    def reply(st, t):
        if st == "RCPT" and "slow@" in t["rcpt"] and not state["open"]:
            return "451 4.2.0 later"
        return None

    with sgtest.FakeHop(reply=reply) as hop, instance(hop.port) as gw:
        gw.start()
        r = sgtest.send_message(gw.port, "keeper@example.com", ["fast@example.net", "slow@example.net"],
                                sgtest.make_message("partial@test"))
        qid = re.search(r"queued as (\S+)", r[1]).group(1)
        assert sgtest.wait_for(lambda: delivered(hop, "partial@test") == 1, 10), gw.log()[-2000:]
        wait_deferred(gw, [qid])
        time.sleep(0.3)  # the rewrite follows the attempt
        gw.kill9()
        files = spool_files(gw)
        assert qid in files, files
        r = spooldump(files[qid])
        assert r.returncode == 0 and "slow@example.net" in r.stdout, r.stdout
        assert "fast@example.net" not in r.stdout, "delivered recipient still in the file:\n" + r.stdout
        r = gw.sealctl("queue", "list")
        assert r.returncode == 0 and qid in r.stdout and "slow@example.net" in r.stdout, \
            (r.stdout, r.stderr)
        r = gw.sealctl("--json", "queue", "list")
        assert r.returncode == 0 and '"%s"' % qid in r.stdout, (r.stdout, r.stderr)
        state["open"] = True
        gw.start()
        assert sgtest.wait_for(lambda: delivered(hop, "partial@test") == 2, 10), gw.log()[-2000:]
        time.sleep(1.0)
        with hop.lock:
            got = [[r for r in t["rcpts"]] for t in hop.accepted]
        assert got == [["TO:<fast@example.net>"], ["TO:<slow@example.net>"]], got
        stop_ok(gw)


def test_corrupted_while_deferred():
    """A deferred message's file is damaged while the daemon runs: at the
    next try it is moved to corrupt/ with a log line, not delivered."""
    port = sgtest.free_port()
    with instance(port, 'limits:\n  retry_min: "1s"\n  retry_max: "1s"\n') as gw:
        gw.start()
        qid = send(gw, "rotting@test")
        ok = send(gw, "fine@test")
        wait_deferred(gw, [qid, ok])
        path = spool_files(gw)[qid]
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) - 30)
            f.write(b"!")
        with sgtest.FakeHop(port=port) as hop:
            assert sgtest.wait_for(lambda: delivered(hop, "fine@test"), 10), gw.log()[-2000:]
            assert sgtest.wait_for(lambda: re.search(r"%s is corrupt" % re.escape(path), gw.log()), 10), \
                gw.log()[-2000:]
            time.sleep(1.5)
            assert delivered(hop, "rotting@test") == 0, "damaged message delivered"
            assert any(m.startswith(qid + ".") for m in gw.corrupt_files()), gw.corrupt_files()
            assert not spool_files(gw), spool_files(gw)
            r = gw.sealctl("--json", "queue", "list")
            assert r.returncode == 0 and qid not in r.stdout, r.stdout
            stop_ok(gw)


def test_spooldump_cli():
    """spooldump's own contract: --help 0, --version, usage errors 2,
    unreadable files 1."""
    r = spooldump("--help")
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r
    r = spooldump("--version")
    assert r.returncode == 0 and re.fullmatch(r"spooldump \d+\.\d+\.\d+\n", r.stdout), r.stdout
    r = spooldump("--bogus")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r
    r = spooldump()
    assert r.returncode == 2, r
    r = spooldump("/nonexistent/spool/file")
    assert r.returncode == 1 and "unreadable" in r.stderr, r


# ------------------------------------------------------------------ runner

if __name__ == "__main__":
    sys.exit(sgtest.run_tests(sgtest.collect_tests(globals())))
