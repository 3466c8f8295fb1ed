#!/usr/bin/env python3
"""Delivery to the next hop: retries, bounces (DSNs), queue lifetime,
connection reuse, a next hop that comes up late, `sealctl queue`.

Drives the built daemon against FakeHop (sgtest.py) with programmable
replies.  Run: SEALGATE_BIN=build/bin python3 tests/integration/test_delivery.py
"""

import collections
import json
import os
import re
import sys
import socket
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from sgtest import queued_id  # noqa: E402

FAST_RETRY = {"retry_min": '"1s"', "retry_max": '"2s"'}


# ------------------------------------------------------------------ helpers

def gateway(hop_port, limits=None, top=""):
    """sgtest.gateway: a started instance relaying to 127.0.0.1:hop_port,
    with a limits dict and top-level YAML appended; yields it.  On the way
    out it must still run and exit 0 on SIGTERM, and its log must hold no
    sanitizer report."""
    return sgtest.gateway(hop_port, limits=limits, yaml=top)


def addr(arg):
    """The address inside <...> of a FakeHop MAIL/RCPT argument."""
    m = re.search(r"<([^>]*)>", arg or "")
    return m.group(1) if m else None


def send(gw, mid, rcpts, sender="sender@example.com"):
    """Send one message with Message-ID mid; returns its queue id."""
    msg = sgtest.make_message(mid, sender=sender or "mailer-daemon@example.com", rcpt=rcpts[0])
    return queued_id(sgtest.send_message(gw.port, sender, rcpts, msg))


def accepted_with(hop, mid):
    """Accepted transactions carrying Message-ID mid."""
    with hop.lock:
        return [t for t in hop.accepted if t["message_id"] == mid]


def dsns(hop):
    """Accepted transactions that are bounces (null reverse path)."""
    with hop.lock:
        return [t for t in hop.accepted if addr(t["mail_from"]) == ""]


def check_dsn(t, sender, failed, status_re, not_listed=()):
    """t is an RFC 3464 report to sender listing exactly `failed` as failed
    with a Status matching status_re."""
    assert addr(t["mail_from"]) == "", "bounce not from <>: %r" % t["mail_from"]
    assert [addr(r) for r in t["rcpts"]] == [sender], "bounce to %r" % t["rcpts"]
    data = t["data"].decode("utf-8", "replace")
    head = data.split("\r\n\r\n", 1)[0]
    assert re.search(r"(?im)^From:.*MAILER-DAEMON", head), "From is not MAILER-DAEMON:\n" + head
    assert re.search(r"(?im)^Content-Type:\s*multipart/report;[^\r\n]*(?:\r\n[ \t][^\r\n]*)*"
                     r"report-type=\"?delivery-status", head), \
        "not a multipart/report delivery-status:\n" + head
    assert re.search(r"(?im)^Content-Type:\s*message/delivery-status", data), "no status part"
    finals = re.findall(r"(?im)^Final-Recipient:\s*rfc822;\s*(\S+)", data)
    assert sorted(finals) == sorted(failed), "Final-Recipient %r, want %r" % (finals, failed)
    actions = re.findall(r"(?im)^Action:\s*(\S+)", data)
    assert actions and all(a.lower() == "failed" for a in actions), "Action %r" % actions
    statuses = re.findall(r"(?im)^Status:\s*(\S+)", data)
    assert len(statuses) == len(failed) and all(re.match(status_re, s) for s in statuses), \
        "Status %r, want %s" % (statuses, status_re)
    for r in not_listed:
        assert not re.search(r"(?im)^(Final|Original)-Recipient:.*" + re.escape(r), data), \
            "%s must not be in the bounce" % r
    return data


def stays(pred, seconds):
    """pred() stays true for the whole period (checked every 0.1 s)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not pred():
            return False
        time.sleep(0.1)
    return pred()


# ------------------------------------------------------------------ tests

def tempfail_then_recover(stage):
    """The hop answers 451 at `stage` for the first two attempts: the
    message is retried and arrives exactly once."""
    tries = collections.Counter()

    def reply(st, t):
        if st == stage and (st != "RCPT" or "later@" in t["rcpt"]):
            key = t.get("message_id") or "rcpt"
            tries[key] += 1
            if tries[key] <= 2:
                return "451 4.3.0 try again later"
        return None

    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port, FAST_RETRY) as gw:
        mid = "tempfail-%s@test" % stage.lower()
        send(gw, mid, ["later@example.net"])
        assert sgtest.wait_for(lambda: accepted_with(hop, mid), 20), \
            "not delivered after 4xx at %s:\n%s" % (stage, gw.log()[-2000:])
        assert sum(tries.values()) == 3, "attempts %r (want 2 refused + 1 accepted)" % tries
        assert stays(lambda: len(accepted_with(hop, mid)) == 1, 3), "delivered more than once"
        assert "result=deferred" in gw.log()


def test_4xx_rcpt_then_ok():
    tempfail_then_recover("RCPT")


def test_4xx_data_then_ok():
    tempfail_then_recover("DATA")


def test_5xx_bounces():
    """550 at RCPT and 554 at DATA: nothing delivered, a DSN reaches the
    original sender through the next hop."""
    def reply(st, t):
        if st == "RCPT" and "nouser@" in t["rcpt"]:
            return "550 5.1.1 <nouser@example.net>: no such user"
        if st == "DATA" and t["message_id"] == "data5xx@test":
            return "554 5.7.1 content refused"
        return None

    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port, FAST_RETRY) as gw:
        send(gw, "rcpt5xx@test", ["nouser@example.net"], sender="alice@example.com")
        send(gw, "data5xx@test", ["bob@example.net"], sender="carol@example.com")
        assert sgtest.wait_for(lambda: len(dsns(hop)) >= 2, 20), \
            "bounces missing:\n" + gw.log()[-2000:]
        assert not accepted_with(hop, "rcpt5xx@test") and not accepted_with(hop, "data5xx@test")
        by_rcpt = {addr(t["rcpts"][0]): t for t in dsns(hop)}
        assert set(by_rcpt) == {"alice@example.com", "carol@example.com"}, by_rcpt.keys()
        d1 = check_dsn(by_rcpt["alice@example.com"], "alice@example.com",
                       ["nouser@example.net"], r"^5\.1\.1$")
        assert "no such user" in d1, "diagnostic missing from the bounce"
        check_dsn(by_rcpt["carol@example.com"], "carol@example.com",
                  ["bob@example.net"], r"^5\.7\.1$")
        assert stays(lambda: len(dsns(hop)) == 2, 2), "more bounces than failures"


def test_mixed_recipients():
    """250 / 550 / 451 in one transaction: the first gets it once, the
    second is bounced, the third is retried alone and delivered later."""
    tries = collections.Counter()

    def reply(st, t):
        if st != "RCPT":
            return None
        if "bad@" in t["rcpt"]:
            return "550 5.1.1 no such user"
        if "slow@" in t["rcpt"]:
            tries["slow"] += 1
            if tries["slow"] <= 1:
                return "451 4.2.0 mailbox busy"
        return None

    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port, FAST_RETRY) as gw:
        mid = "mixed@test"
        send(gw, mid, ["good@example.net", "bad@example.net", "slow@example.net"],
             sender="mixer@example.com")
        assert sgtest.wait_for(lambda: len(accepted_with(hop, mid)) >= 2 and dsns(hop), 20), \
            "not all done:\n" + gw.log()[-2000:]
        assert stays(lambda: len(accepted_with(hop, mid)) == 2 and len(dsns(hop)) == 1, 3), \
            "extra deliveries or bounces"
        got = [[addr(r) for r in t["rcpts"]] for t in accepted_with(hop, mid)]
        assert got == [["good@example.net"], ["slow@example.net"]], \
            "transactions %r (want good first, then slow alone)" % got
        check_dsn(dsns(hop)[0], "mixer@example.com", ["bad@example.net"], r"^5\.1\.1$",
                  not_listed=("good@example.net", "slow@example.net"))


def test_no_bounce_for_null_sender():
    """A message from <> that fails for good is dropped, never bounced."""
    def reply(st, t):
        return "550 5.1.1 no such user" if st == "RCPT" else None

    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port, FAST_RETRY) as gw:
        qid = send(gw, "nullsender@test", ["nouser@example.net"], sender="")
        assert sgtest.wait_for(lambda: "queue_id=%s" % qid in gw.log()
                               and "result=bounced" in gw.log(), 20), gw.log()[-2000:]
        assert stays(lambda: not hop.accepted, 3), "a bounce of a bounce was sent"
        r = gw.sealctl("queue", "list", "--json")
        assert r.returncode == 0 and json.loads(r.stdout) == [], (r.stdout, r.stderr)


def test_queue_lifetime_4xx():
    """A hop that always answers 4xx: after queue_lifetime, a 4.4.7 DSN."""
    def reply(st, t):
        if st == "RCPT" and "stuck@" in t["rcpt"]:
            return "451 4.3.0 always later"
        return None

    limits = dict(FAST_RETRY, queue_lifetime='"3s"')
    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port, limits) as gw:
        t0 = time.monotonic()
        send(gw, "expire4xx@test", ["stuck@example.net"], sender="patient@example.com")
        assert sgtest.wait_for(lambda: dsns(hop), 20), "no expiry bounce:\n" + gw.log()[-2000:]
        assert time.monotonic() - t0 >= 2.9, "bounced before the queue lifetime"
        data = check_dsn(dsns(hop)[0], "patient@example.com", ["stuck@example.net"], r"^4\.4\.7$")
        assert "always later" in data, "the last error is missing from the bounce"
        assert stays(lambda: len(dsns(hop)) == 1 and not accepted_with(hop, "expire4xx@test"), 2)
        r = gw.sealctl("queue", "list", "--json")
        assert r.returncode == 0 and json.loads(r.stdout) == [], (r.stdout, r.stderr)


def test_queue_lifetime_hop_down():
    """The hop is down for longer than queue_lifetime: a 4.4.7 DSN is
    queued, and delivered once the hop comes back."""
    port = sgtest.free_port()
    limits = {"retry_min": '"500ms"', "retry_max": '"1s"', "queue_lifetime": '"3s"'}
    with gateway(port, limits) as gw:
        qid = send(gw, "expiredown@test", ["far@example.net"], sender="waiter@example.com")
        assert sgtest.wait_for(lambda: re.search(r"queue_id=%s: bounce queued" % qid, gw.log()), 20), \
            "no bounce queued:\n" + gw.log()[-2000:]
        with sgtest.FakeHop(port=port) as hop:
            assert sgtest.wait_for(lambda: dsns(hop), 20), "bounce not delivered:\n" + gw.log()[-2000:]
            check_dsn(dsns(hop)[0], "waiter@example.com", ["far@example.net"], r"^4\.4\.7$")
            assert stays(lambda: not accepted_with(hop, "expiredown@test"), 1.5), \
                "the expired message was delivered too"


def test_connection_reuse():
    """Several messages travel over one next-hop connection."""
    conns = []

    def reply(st, t):
        if st == "CONNECT":
            conns.append(time.monotonic())
        return None

    with sgtest.FakeHop(reply=reply) as hop, \
            gateway(hop.port, {"delivery_connections": 1}, top="shards: 1\n") as gw:
        n = 10
        for i in range(n):
            send(gw, "reuse%d@test" % i, ["r@example.net"])
        assert hop.wait_count(n, 20) == n, gw.log()[-2000:]
        assert len(conns) == 1, "%d connections for %d messages" % (len(conns), n)

    # Default pool size, two shards: a burst may open several connections
    # in parallel, but messages that come one after the other (each
    # delivered before the next arrives) reuse them: one pool per shard.
    conns.clear()
    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port, top="shards: 2\n") as gw:
        n = 10
        for i in range(n):
            send(gw, "reuse-def%d@test" % i, ["r@example.net"])
            assert hop.wait_count(i + 1, 10) == i + 1, gw.log()[-2000:]
        assert len(conns) <= 2, "%d connections for %d messages (2 shards)" % (len(conns), n)


def test_long_queue_is_read_back_from_disk():
    """A slow next hop builds a long queue: only its head is kept in memory
    (core/delivery.c DL_QUEUE_BYTES, 16 MiB); the rest is read back from
    the spool in time.  75 MB of queued mail all arrives, once each, intact."""
    def slow(st, t):
        if st == "DATA":
            time.sleep(0.02)
        return None

    body = ("y" * 998 + "\r\n") * 300  # about 300 KB
    n = 250
    with sgtest.FakeHop(reply=slow) as hop, \
            gateway(hop.port, {"delivery_connections": 1}, top="shards: 1\n") as gw:
        for i in range(n):
            msg = sgtest.make_message("long%d@test" % i, body=body)
            queued_id(sgtest.send_message(gw.port, "sender@example.com", ["r@example.net"], msg))
        assert hop.wait_count(n, 120) == n, gw.log()[-2000:]
        ids = hop.message_ids()
        assert sorted(ids) == sorted("long%d@test" % i for i in range(n)), "lost or duplicated"
        with hop.lock:
            intact = sum(1 for t in hop.accepted if body.encode() in t["data"])
        assert intact == n, "%d of %d arrived intact" % (intact, n)
        rss_mib = gw.peak_rss_kib() / 1024
        asan = "libasan" in open("/proc/%d/maps" % gw.proc.pid).read()
        # 75 MB went through; without the bound (measured: 53 MiB at 50 MB) the
        # whole queue sat in memory.
        print("peak RSS %.0f MiB%s" % (rss_mib, " (ASan)" if asan else ""))
        assert asan or rss_mib < 50, "peak RSS %.0f MiB" % rss_mib


def test_long_queue_survives_hop_down():
    """A long queue (part of it only on disk: the cold queue of
    core/delivery.c) whose next hop goes away after 5 messages and comes
    back: it answers 421 from then on (the gateway must close that
    session), the cold messages are deferred with the rest, and every
    message arrives, none lost, at most the one in flight twice."""
    down = threading.Event()

    def slow(st, t):
        if len(hop.accepted) >= 5:  # goes down by itself, whatever the timing
            down.set()
        if down.is_set():  # its open session refuses too
            return "421 4.3.2 going down"
        if st == "DATA":
            time.sleep(0.02)
        return None

    body = ("z" * 998 + "\r\n") * 300  # about 300 KB: 80 of them pass the 16 MiB bound
    n = 80
    port = sgtest.free_port()
    limits = dict(FAST_RETRY, delivery_connections=1)
    hop = sgtest.FakeHop(port=port, reply=slow)
    with gateway(port, limits, top="shards: 1\n") as gw:
        try:
            for i in range(n):
                msg = sgtest.make_message("cold%d@test" % i, body=body)
                queued_id(sgtest.send_message(gw.port, "sender@example.com", ["r@example.net"], msg))
            assert sgtest.wait_for(down.is_set, 60), gw.log()[-2000:]
        finally:
            down.set()
            hop.close()
            first = hop.message_ids()
        assert len(first) < n, "the hop took everything before it went down"
        assert sgtest.wait_for(lambda: "result=deferred" in gw.log(), 20), gw.log()[-2000:]
        with sgtest.FakeHop(port=port) as hop2:
            want = sorted("cold%d@test" % i for i in range(n))
            assert sgtest.wait_for(lambda: set(first + hop2.message_ids()) == set(want), 90), \
                "missing: %s\n%s" % (sorted(set(want) - set(first + hop2.message_ids()))[:10], gw.log()[-2000:])
            both = first + hop2.message_ids()
            assert len(both) - n <= 1, "delivered twice: %d extra" % (len(both) - n)


def test_message_over_the_memory_bound_with_an_idle_connection():
    """A message larger than the queue's memory bound (16 MiB) goes
    straight to the cold queue; the one connection allowed is open and
    idle from the message before.  It must still be read back and sent,
    not wait for another message to come along."""
    big = ("b" * 998 + "\r\n") * (17 * 1024)  # 17 MiB
    with sgtest.FakeHop() as hop, gateway(hop.port, {"delivery_connections": 1}, top="shards: 1\n") as gw:
        send(gw, "small-first@test", ["r@example.net"])
        assert hop.wait_count(1, 15) == 1, gw.log()[-2000:]
        msg = sgtest.make_message("big-cold@test", body=big)
        queued_id(sgtest.send_message(gw.port, "sender@example.com", ["r@example.net"], msg))
        assert sgtest.wait_for(lambda: accepted_with(hop, "big-cold@test"), 30), \
            "the cold message was never read back:\n" + gw.log()[-2000:]


class EarlyReplyHop:
    """A next hop whose first session answers the DATA transfer before
    reading the body (451 after the first 64 KiB) and then stops reading;
    later sessions behave.  Stores what the good sessions receive."""

    def __init__(self):
        self.port = sgtest.free_port()
        self.sessions, self.received = 0, []
        self.srv = socket.create_server(("127.0.0.1", self.port), backlog=64)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.sessions += 1
            threading.Thread(target=self._session, args=(conn, self.sessions == 1),
                             daemon=True).start()

    def _session(self, conn, early):
        f = conn.makefile("rwb")
        def say(line):
            f.write(line.encode() + b"\r\n")
            f.flush()
        try:
            say("220 early ESMTP")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    say("250-early\r\n250 PIPELINING")
                elif verb == b"DATA":
                    say("354 go")
                    if early:
                        f.read(65536)
                        say("451 4.3.0 early reply, not reading the rest")
                        time.sleep(30)  # keep the socket open, read nothing more
                        return
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = f.readline()
                        if not chunk:
                            return
                        data += chunk
                    self.received.append(data)
                    say("250 2.0.0 ok")
                elif verb == b"QUIT":
                    say("221 bye")
                    return
                else:
                    say("250 ok")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.srv.close()


def test_reply_before_end_of_data():
    """A next hop that replies while our body write is still pending gets
    the connection closed (the data must not be freed under the write, and
    the rest must never be read as commands on a reused connection); the
    message is retried and arrives once, intact."""
    hop = EarlyReplyHop()
    body = ("z" * 998 + "\r\n") * 5000  # 5 MB: more than the socket buffers hold
    try:
        limits = {"delivery_connections": 1, "retry_min": '"1s"', "retry_max": '"2s"'}
        with gateway(hop.port, limits, top="shards: 1\n") as gw:
            msg = sgtest.make_message("early@test", body=body)
            queued_id(sgtest.send_message(gw.port, "sender@example.com", ["r@example.net"], msg))
            assert sgtest.wait_for(lambda: hop.received, 30), gw.log()[-2000:]
            assert "replied before the end of the data" in gw.log(), gw.log()[-2000:]
            time.sleep(0.5)
            assert len(hop.received) == 1, "%d copies" % len(hop.received)
            assert body.encode() in hop.received[0], "body damaged"
    finally:
        hop.close()


def test_hop_down_then_up():
    """Next hop not listening at first: delivered after it comes up."""
    port = sgtest.free_port()
    with gateway(port, FAST_RETRY) as gw:
        qid = send(gw, "lateup@test", ["r@example.net"])
        assert sgtest.wait_for(lambda: "queue_id=%s" % qid in gw.log()
                               and "result=deferred" in gw.log(), 10), gw.log()[-2000:]
        time.sleep(1.5)  # at least one more failed try
        with sgtest.FakeHop(port=port) as hop:
            assert sgtest.wait_for(lambda: accepted_with(hop, "lateup@test"), 15), \
                "not delivered after the hop came up:\n" + gw.log()[-2000:]
            assert stays(lambda: len(accepted_with(hop, "lateup@test")) == 1, 2)


def test_queue_list_and_flush():
    """`sealctl queue list` (table and JSON) shows a deferred message and
    its last error; `sealctl queue flush` retries it at once."""
    tries = collections.Counter()

    def reply(st, t):
        if st == "DATA":
            tries["data"] += 1
            if tries["data"] == 1:
                return "452 4.3.1 hop storage full, later"
        return None

    limits = {"retry_min": '"10m"', "retry_max": '"1h"'}
    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port, limits) as gw:
        qid = send(gw, "flushme@test", ["flush@example.net"], sender="lister@example.com")
        assert sgtest.wait_for(lambda: tries["data"] >= 1 and "result=deferred" in gw.log(), 10)
        time.sleep(0.2)
        r = gw.sealctl("queue", "list")
        assert r.returncode == 0, r.stderr
        rows = [l for l in r.stdout.splitlines() if l.startswith(qid)]
        assert len(rows) == 1, "queue list:\n" + r.stdout
        assert "hop storage full" in rows[0] and "flush@example.net" in rows[0], rows[0]
        assert "lister@example.com" in rows[0], rows[0]
        r = gw.sealctl("--json", "queue", "list")
        assert r.returncode == 0, r.stderr
        items = json.loads(r.stdout)
        assert [i["id"] for i in items] == [qid], items
        it = items[0]
        assert "hop storage full" in it["last_error"] and it["recipients"] == ["flush@example.net"], it
        assert it["sender"] == "lister@example.com" and it["attempts"] >= 1, it
        r = gw.sealctl("queue", "list", "--json")  # --json after the words works too
        assert r.returncode == 0 and json.loads(r.stdout) == items, r.stdout
        time.sleep(1.0)
        assert not accepted_with(hop, "flushme@test"), "retried before retry_min"
        t0 = time.monotonic()
        r = gw.sealctl("queue", "flush")
        assert r.returncode == 0, r.stderr
        assert sgtest.wait_for(lambda: accepted_with(hop, "flushme@test"), 10), \
            "flush did not deliver:\n" + gw.log()[-2000:]
        assert time.monotonic() - t0 < 5
        assert sgtest.wait_for(lambda: json.loads(gw.sealctl("--json", "queue", "list").stdout) == [], 5)


def test_data_transparency():
    """Lines starting with a dot, a lone-dot line and a large 8-bit body
    reach the next hop byte for byte (the client side dot-stuffs)."""
    with sgtest.FakeHop() as hop, gateway(hop.port) as gw:
        body = ".leading dot\r\n..two dots\r\n.\r\n. dot space\r\nend\r\n"
        big = "".join("%06d caf\u00e9 \u00fcber line of a big message %s\r\n" % (i, "x" * 60)
                      for i in range(40000))  # ~4.5 MB, 8-bit
        for mid, text in (("dots@test", body), ("big8bit@test", big)):
            msg = sgtest.make_message(mid, body=text)
            with sgtest.SMTPClient(gw.port) as c:
                assert c.cmd("EHLO t.test")[0] == 250
                assert c.cmd("MAIL FROM:<s@example.com>%s"
                             % (" BODY=8BITMIME" if "8bit" in mid else ""))[0] == 250
                assert c.cmd("RCPT TO:<r@example.net>")[0] == 250
                r = c.data(msg)
                assert r[0] == 250, r
            assert sgtest.wait_for(lambda: accepted_with(hop, mid), 30), gw.log()[-2000:]
            got = accepted_with(hop, mid)[0]["data"]
            # FakeHop keeps lines as sent (CRLF), minus the stuffed dot.
            got_body = got.split(b"\r\n\r\n", 1)[1]
            assert got_body == msg.split(b"\r\n\r\n", 1)[1], \
                "%s body changed in transit (%d vs %d bytes)" % (mid, len(got_body), len(msg))
        with hop.lock:
            mails = {t["message_id"]: t["mail_from"].upper() for t in hop.accepted}
        assert "BODY=8BITMIME" in mails["big8bit@test"], "BODY=8BITMIME lost: %r" % mails
        assert "BODY=" not in mails["dots@test"], mails


def test_connection_lost_mid_transaction():
    """The hop closes the connection without answering (after the dot, and
    at MAIL on a reused connection): the message is retried and delivered
    exactly once."""
    import threading
    dropped = collections.Counter()
    per_conn = collections.Counter()

    def reply(st, t):
        me = threading.get_ident()
        if st == "MAIL":
            per_conn[me] += 1
            if per_conn[me] == 2 and not dropped["mail"]:
                dropped["mail"] += 1
                return "DROP"  # a reused connection that died
        if st == "DATA" and t["message_id"] == "dropdot@test" and not dropped["dot"]:
            dropped["dot"] += 1
            return "DROP"
        return None

    with sgtest.FakeHop(reply=reply) as hop, \
            gateway(hop.port, FAST_RETRY, top="shards: 1\n") as gw:
        send(gw, "dropdot@test", ["r@example.net"])
        assert sgtest.wait_for(lambda: accepted_with(hop, "dropdot@test"), 15), gw.log()[-2000:]
        send(gw, "first@test", ["r@example.net"])
        assert sgtest.wait_for(lambda: accepted_with(hop, "first@test"), 15), gw.log()[-2000:]
        send(gw, "second@test", ["r@example.net"])
        assert sgtest.wait_for(lambda: accepted_with(hop, "second@test"), 15), gw.log()[-2000:]
        assert dropped["dot"] == 1 and dropped["mail"] == 1, dropped
        assert stays(lambda: all(len(accepted_with(hop, m)) == 1
                                 for m in ("dropdot@test", "first@test", "second@test")), 2.5), \
            hop.message_ids()


def test_bounce_of_bounce_does_not_loop():
    """A hop that refuses everything: the message is bounced once, the
    bounce itself fails and is dropped; nothing more is attempted."""
    def reply(st, t):
        return "550 5.7.1 nothing accepted here" if st == "RCPT" else None

    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port, FAST_RETRY) as gw:
        send(gw, "refused@test", ["r@example.net"], sender="orig@example.com")
        assert sgtest.wait_for(lambda: gw.log().count("result=bounced") >= 2, 15), gw.log()[-2000:]
        time.sleep(2.5)
        log = gw.log()
        assert log.count("result=bounced") == 2, log[-3000:]
        assert log.count("bounce queued as") == 1, log[-3000:]
        assert json.loads(gw.sealctl("--json", "queue", "list").stdout) == []


def test_many_recipients_pipelined():
    """200 recipients in one message, every 7th refused for good, every
    5th deferred once: each good recipient gets exactly one copy."""
    tries = collections.Counter()

    def reply(st, t):
        if st != "RCPT":
            return None
        m = re.search(r"<u(\d+)@", t["rcpt"])
        if not m:  # the bounce to boss@
            return None
        n = int(m.group(1))
        if n % 7 == 0:
            return "550 5.1.1 no such user"
        if n % 5 == 0:
            tries[n] += 1
            if tries[n] == 1:
                return "450 4.2.1 busy"
        return None

    rcpts = ["u%d@example.net" % i for i in range(1, 201)]
    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port, FAST_RETRY) as gw:
        send(gw, "many@test", rcpts, sender="boss@example.com")
        good = [r for r in rcpts if int(r[1:].split("@")[0]) % 7]

        def got():
            return collections.Counter(addr(r) for t in accepted_with(hop, "many@test")
                                       for r in t["rcpts"])
        assert sgtest.wait_for(lambda: set(got()) == set(good) and dsns(hop), 20), \
            "missing %s\n%s" % (sorted(set(good) - set(got()))[:10], gw.log()[-2000:])
        assert stays(lambda: max(got().values()) == 1 and len(dsns(hop)) == 1, 2.5), \
            [k for k, v in got().items() if v > 1][:10]
        check_dsn(dsns(hop)[0], "boss@example.com", [r for r in rcpts if r not in good],
                  r"^5\.1\.1$")


def test_queue_list_many():
    """`sealctl queue list` with hundreds of deferred messages: every one
    is listed (the control answer is larger than one socket buffer)."""
    port = sgtest.free_port()
    with gateway(port, {"retry_min": '"10m"', "retry_max": '"1h"'}) as gw:
        qids = set()
        for i in range(300):
            qids.add(send(gw, "many%d@test" % i, ["someone.with.a.long.address.%d@example.net" % i]))
        assert sgtest.wait_for(lambda: gw.log().count("result=deferred") >= 300, 20)
        r = gw.sealctl("--json", "queue", "list")
        assert r.returncode == 0, r.stderr
        items = json.loads(r.stdout)
        assert set(i["id"] for i in items) == qids and len(items) == 300, len(items)
        r = gw.sealctl("queue", "list")
        assert r.returncode == 0 and sum(1 for l in r.stdout.splitlines() if l.split()[0] in qids) == 300


# ------------------------------------------------------------------ runner

if __name__ == "__main__":
    sys.exit(sgtest.run_tests(sgtest.collect_tests(globals())))
