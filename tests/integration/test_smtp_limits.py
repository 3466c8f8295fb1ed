#!/usr/bin/env python3
"""SMTP server side: limits and abuse.

Message size (MAIL SIZE= and the data itself), recipients, command line
length, DATA line length, command and idle timeouts, too many errors,
garbage and binary input, HTTP requests, connections per client,
connection rate per client, loop protection (max_hops), disk reserve.
Each answer is checked against the RFC 5321 / 3463 codes the README
promises, and after each abuse the connection (or the daemon) is checked
to still serve.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_smtp_limits.py [TEST...]
"""

import contextlib
import os
import random
import re
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from sgtest import check, queued_id, sink_gateway as gateway, sink_ids, wait_delivered  # noqa: E402

# The shared gateway's limits (tests that need other limits start their own).
SIZE_LIMIT = 10 * 1024
RCPT_LIMIT = 5
LINE_LIMIT = 1000
MAX_HOPS = 3
MAX_ERRORS = 5
SHARED_LIMITS = {"message_size": '"10K"', "recipients": str(RCPT_LIMIT),
                 "data_line_length": str(LINE_LIMIT), "max_hops": str(MAX_HOPS),
                 "max_errors": str(MAX_ERRORS)}


# ------------------------------------------------------------------ helpers
# gateway (smtp-sink plus a started sealgate, checked on the way out), the
# asserting Client and the reply checks live in sgtest.py.

class Client(sgtest.Client):
    """sgtest.Client (source address, banner check, expect, expect_closed)
    with a whole transaction in one call."""

    def transaction(self, msg, rcpts=("rcpt@example.net",), sender="sender@example.com"):
        """MAIL, RCPT..., DATA, message (raw, dot-stuffed here); final reply."""
        self.expect("MAIL FROM:<%s>" % sender, 250)
        for r in rcpts:
            self.expect("RCPT TO:<%s>" % r, 250)
        self.expect("DATA", 354)
        if not msg.endswith(b"\r\n"):
            msg += b"\r\n"
        self.send(re.sub(rb"(?m)^\.", b"..", msg) + b".\r\n")
        return self.reply()


def sized_message(mid, size, line_len=70):
    """A message of exactly `size` octets (CRLF line ends, final CRLF
    included, no line starting with a dot)."""
    head = sgtest.make_message(mid, body="")
    assert head.endswith(b"\r\n\r\n")
    body = b""
    left = size - len(head)
    assert left >= 2
    while left > 0:
        n = min(line_len, left - 2)
        if left - (n + 2) in (1,):  # never leave a 1-octet remainder
            n -= 1
        body += b"x" * n + b"\r\n"
        left -= n + 2
    msg = head + body
    assert len(msg) == size, (len(msg), size)
    return msg


def message_with_line(mid, line_len):
    return sgtest.make_message(mid, body="short\r\n" + "y" * line_len + "\r\nend\r\n")


def log_mark(gw):
    return len(gw.log())


def assert_alive(gw, label):
    """The daemon still runs and takes a whole transaction from a new client."""
    assert gw.running(), "daemon died after %s:\n%s" % (label, gw.log()[-3000:])
    mid = "alive.%s.%d@test" % (label, time.monotonic_ns())
    with Client(gw.port) as c:
        c.expect("EHLO client.test", 250)
        wait_delivered(gw, queued_id(c.transaction(sgtest.make_message(mid))))


def avoid_minute_boundary(margin=12):
    """The rate limit counts per calendar minute (clientlimit.c): keep a
    short test inside one minute."""
    s = time.time() % 60
    if s > 60 - margin:
        time.sleep(60 - s + 0.2)


TESTS, test = sgtest.registry()


# ------------------------------------------------------------------ tests on
# the shared gateway G (SHARED_LIMITS) with smtp-sink SINK

@test
def test_size_advertised_and_mail_size():
    with Client(G.port) as c:
        code, text = c.expect("EHLO client.test", 250)
        assert "SIZE %d" % SIZE_LIMIT in text.split("\n"), text
        c.expect("MAIL FROM:<a@example.com> SIZE=%d" % SIZE_LIMIT, 250)
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<a@example.com> SIZE=%d" % (SIZE_LIMIT + 1), 552, "5.3.4")
        c.expect("MAIL FROM:<a@example.com> SIZE=99999999999999999999999", 552, "5.3.4")
        c.expect("NOOP", 250)
        mid = "declared.%d@test" % os.getpid()
        wait_delivered(G, queued_id(c.transaction(sgtest.make_message(mid))))


@test
def test_data_over_size():
    exact, over = "exact.%d@test" % os.getpid(), "over.%d@test" % os.getpid()
    huge, after = "huge.%d@test" % os.getpid(), "after.%d@test" % os.getpid()
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        q_exact = queued_id(c.transaction(sized_message(exact, SIZE_LIMIT)))
        # the size is the unstuffed message: leading dots do not count twice
        dotted = "dotted.%d@test" % os.getpid()
        m = bytearray(sized_message(dotted, SIZE_LIMIT))
        i = m.index(b"\r\n\r\n") + 4
        m[i] = m[m.index(b"\r\n", i) + 2] = ord(".")  # two body lines now start with a dot
        m = bytes(m)
        q_dotted = queued_id(c.transaction(m))  # transaction() stuffs them
        check(c.transaction(sized_message(over, SIZE_LIMIT + 1)), 552, "5.3.4", "one octet over")
        # far over (1 MiB): read to its end, the connection stays in step
        check(c.transaction(sized_message(huge, 1 << 20, line_len=998)), 552, "5.3.4", "1 MiB")
        q_after = queued_id(c.transaction(sgtest.make_message(after)))
        c.expect("QUIT", 221)
    wait_delivered(G, q_exact)
    wait_delivered(G, q_dotted)
    wait_delivered(G, q_after)
    ids = sink_ids(SINK)
    assert exact in ids and dotted in ids and after in ids and over not in ids and huge not in ids, ids


@test
def test_recipients_limit():
    mid = "rcpts.%d@test" % os.getpid()
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        c.expect("MAIL FROM:<a@example.com>", 250)
        for i in range(RCPT_LIMIT):
            c.expect("RCPT TO:<r%d@example.net>" % i, 250)
        c.expect("RCPT TO:<extra1@example.net>", 452, "4.5.3")
        c.expect("RCPT TO:<extra2@example.net>", 452, "4.5.3")
        c.expect("DATA", 354)
        c.send(sgtest.make_message(mid) + b".\r\n")
        qid = queued_id(c.reply())
    wait_delivered(G, qid)
    m = [m for m in SINK.messages() if sgtest.message_id(m) == mid]
    assert len(m) == 1, "message not delivered once"
    rcpts = re.findall(rb"(?m)^X-Rcpt-Args: <([^>]*)>", m[0])
    assert sorted(rcpts) == [b"r%d@example.net" % i for i in range(RCPT_LIMIT)], rcpts


@test
def test_command_line_length():
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        c.expect("NOOP " + "x" * (512 - 7), 250)           # 512 octets with CRLF
        c.expect("NOOP " + "x" * (512 - 6), 500, "5.5.2")  # 513
        # one long line (100 KB, sent in pieces) gets one reply, then we go on
        c.send(b"NOOP ")
        for _ in range(10):
            c.send(b"z" * 10000)
        c.send(b"\r\nNOOP\r\n")
        check(c.reply(), 500, "5.5.2", "100 KB line")
        check(c.reply(), 250, what="NOOP after the long line")
        c.expect("MAIL FROM:<%s@example.com>" % ("l" * 300), 501)  # path over 256
        mid = "afterlong.%d@test" % os.getpid()
        wait_delivered(G, queued_id(c.transaction(sgtest.make_message(mid))))


@test
def test_data_line_length():
    ok, bad = "line-ok.%d@test" % os.getpid(), "line-bad.%d@test" % os.getpid()
    after = "line-after.%d@test" % os.getpid()
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        q_ok = queued_id(c.transaction(message_with_line(ok, LINE_LIMIT)))
        # the limit counts the line after unstuffing: ".yyy" (1000) is 1001 on the wire
        stuffed = "line-stuffed.%d@test" % os.getpid()
        msg = sgtest.make_message(stuffed, body="." + "y" * (LINE_LIMIT - 1) + "\r\n")
        q_stuffed = queued_id(c.transaction(msg))
        check(c.transaction(message_with_line(bad, LINE_LIMIT + 1)), 552, "5.3.4", "long DATA line")
        q_after = queued_id(c.transaction(sgtest.make_message(after)))
    wait_delivered(G, q_ok)
    wait_delivered(G, q_stuffed)
    wait_delivered(G, q_after)
    ids = sink_ids(SINK)
    assert ok in ids and stuffed in ids and after in ids and bad not in ids, ids
    m = [m for m in SINK.messages() if sgtest.message_id(m) == ok][0]
    assert b"\n" + b"y" * LINE_LIMIT + b"\n" in m, "the 1000-octet line was changed"


@test
def test_max_hops():
    def msg(mid, n, body=""):
        hdrs = ["Received: from hop%d.example by relay%d.example; Thu, 1 Jan 2026 00:00:00 +0000"
                % (i, i) for i in range(n)]
        return sgtest.make_message(mid, headers=hdrs, body=body or "hello\r\n")
    at, over = "hops-at.%d@test" % os.getpid(), "hops-over.%d@test" % os.getpid()
    body = "hops-body.%d@test" % os.getpid()
    upper = "hops-upper.%d@test" % os.getpid()
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        q_at = queued_id(c.transaction(msg(at, MAX_HOPS)))
        check(c.transaction(msg(over, MAX_HOPS + 1)), 554, "5.4.6", "one hop too many")
        # case-insensitive field name
        up = msg(upper, MAX_HOPS).replace(b"Subject:", b"RECEIVED: from x by y; Thu, 1 Jan 2026\r\nSubject:")
        check(c.transaction(up), 554, "5.4.6", "RECEIVED: in capitals")
        # Received lines in the body are not header fields
        q_body = queued_id(c.transaction(msg(body, MAX_HOPS, "text\r\n" + "Received: not a header\r\n" * 10)))
    wait_delivered(G, q_at)
    wait_delivered(G, q_body)
    ids = sink_ids(SINK)
    assert at in ids and body in ids and over not in ids and upper not in ids, ids


@test
def test_max_errors():
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        # one of each class counts: 503, 501, 502, 500, then 555
        c.expect("RCPT TO:<a@example.net>", 503)
        c.expect("MAIL FROM:junk", 501)
        c.expect("EXPN list", 502)
        c.expect("FROBNICATE", 500)
        assert MAX_ERRORS == 5
        c.expect("MAIL FROM:<a@example.com> NOSUCHPARAM=1", 555)
        check(c.reply_safe(), 421, "4.7.0", "after max_errors errors")
        c.expect_closed("after 421")
    # errors are per session: a new one starts from zero
    with Client(G.port) as c:
        for _ in range(MAX_ERRORS - 1):
            c.expect("FROBNICATE", 500)
        c.expect("EHLO client.test", 250)
        c.expect("NOOP", 250)


@test
def test_bad_bytes_in_commands():
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        for raw in (b"NOOP\x00\r\n", b"MAIL FROM:<a\x00@example.com>\r\n", b"NO\x00OP\r\n",
                    b"NOOP\rRSET\r\n"):
            c.send(raw)
            check(c.reply(), 500, "5.5.2", repr(raw))
        c.expect("NOOP", 250)  # 4 errors: one below max_errors
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        c.expect("MAIL FROM:<a@example.com>", 250)
        for raw in (b"RCPT TO:<b\xc3\xa4@example.net>\r\n", b"RCPT TO:<b@example.net>\x7f\r\n"):
            c.send(raw)
            check(c.reply(), 500, "5.5.2", repr(raw))
        c.expect("RCPT TO:<b@example.net>", 250)


@test
def test_garbage_input():
    rnd = random.Random(4711)
    # a good client connected before, during and after the abuse
    with Client(G.port) as good:
        good.expect("EHLO good.test", 250)
        with Client(G.port) as c:
            blob = bytes(rnd.getrandbits(8) for _ in range(65536))
            blob = blob.replace(b"\n", b"\x00\n")  # lines never start a valid verb by chance
            try:
                c.send(blob)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may close while we still send
            replies = []
            while True:
                r = c.reply_safe()
                if r[0] == 0:
                    break
                replies.append(r)
            assert replies, "no reply to garbage"
            assert replies[-1][0] == 421, replies[-3:]
            errs = replies[:-1]
            assert all(r[0] in (500, 501, 502) for r in errs), errs
            assert len(errs) == MAX_ERRORS, "%d errors before 421: %r" % (len(errs), errs)
        # a megabyte without a line end, then a hang-up
        with Client(G.port) as c:
            try:
                c.send(bytes(rnd.getrandbits(8) for _ in range(1 << 20)).replace(b"\n", b"\x00"))
            except (BrokenPipeError, ConnectionResetError):
                pass
        mid = "good-conn.%d@test" % os.getpid()
        wait_delivered(G, queued_id(good.transaction(sgtest.make_message(mid))))
    assert_alive(G, "garbage")


@test
def test_http_request():
    with Client(G.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n")
        check(c.reply_safe(), 421, what="GET")
        c.expect_closed("after GET")  # one reply, not one per header line
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        c.send(b"POST /submit HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        check(c.reply_safe(), 421, what="POST")
        c.expect_closed("after POST")
    with Client(G.port) as c:
        c.send(b"CONNECT mail.example.com:443 HTTP/1.1\r\n\r\n")
        check(c.reply_safe(), 421, what="CONNECT")
        c.expect_closed("after CONNECT")
    assert_alive(G, "http")


# ------------------------------------------------------------------ tests
# with their own gateway

@test
def test_timeouts():
    with gateway({"command_timeout": '"1s"', "idle_timeout": '"2s"'}) as (gw, sink):
        # idle after EHLO
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            t0 = time.monotonic()
            check(c.reply_safe(), 421, "4.4.2", "idle")
            dt = time.monotonic() - t0
            assert 1.7 <= dt <= 4.0, "idle timeout after %.2fs (want ~2s)" % dt
            c.expect_closed("after idle 421")
        # a command dripping in: command_timeout (1s) counts from its first byte
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            t0 = time.monotonic()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            got = None
            for ch in b"NOOP " + b"x" * 40:
                try:
                    c.send(bytes([ch]))
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if select.select([c.sock], [], [], 0.25)[0]:
                    got = c.reply_safe()
                    break
            dt = time.monotonic() - t0
            check(got or (None, ""), 421, "4.4.2", "slow command")
            assert 0.8 <= dt <= 1.9, "command timeout after %.2fs (want ~1s)" % dt
        # the same for a line that is already over 512 octets (and being
        # discarded): the drip must not outlive command_timeout either
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.send(b"NOOP " + b"x" * 600)
            t0 = time.monotonic()
            got = None
            for _ in range(20):
                try:
                    c.send(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if select.select([c.sock], [], [], 0.25)[0]:
                    got = c.reply_safe()
                    break
            dt = time.monotonic() - t0
            check(got or (None, ""), 421, "4.4.2", "slow over-long command")
            assert dt <= 1.9, "over-long command timed out after %.2fs (want ~1s)" % dt
        # but a client whose reads end in the middle of the next command
        # is not slow: each line here takes 0.6s < command_timeout
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.send(b"NOOP\r\nNO")
            check(c.reply(), 250, what="NOOP 1")
            for i in range(3):
                time.sleep(0.6)
                c.send(b"OP\r\nNO")
                check(c.reply(), 250, what="NOOP %d with the next one begun 0.6s ago" % (i + 2))
            c.send(b"OP\r\n")
            check(c.reply(), 250, what="last NOOP")
        # idle in the middle of DATA: the message is not accepted
        mid = "stalled.%d@test" % os.getpid()
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            c.expect("MAIL FROM:<a@example.com>", 250)
            c.expect("RCPT TO:<b@example.net>", 250)
            c.expect("DATA", 354)
            c.send(sgtest.make_message(mid))
            t0 = time.monotonic()
            check(c.reply_safe(), 421, "4.4.2", "idle in DATA")
            dt = time.monotonic() - t0
            assert 1.7 <= dt <= 4.0, "DATA idle timeout after %.2fs" % dt
            c.expect_closed("after DATA 421")
        # a busy session is never cut off: the limits are per command
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            for _ in range(7):
                time.sleep(0.5)
                c.expect("NOOP", 250)
            ok = "active.%d@test" % os.getpid()
            wait_delivered(gw, queued_id(c.transaction(sgtest.make_message(ok))))
        time.sleep(0.3)
        assert mid not in sink_ids(sink), "a message cut off by the timeout was delivered"
        assert_alive(gw, "timeouts")


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@test
def test_client_not_reading():
    """A client that sends commands and never reads the replies: the daemon
    stops reading it (its replies are not queued without bound), and the
    session still ends after the timeouts although no 421 can reach it."""
    with gateway({"command_timeout": '"1s"', "idle_timeout": '"2s"'}) as (gw, sink):
        pid = gw.proc.pid
        time.sleep(0.3)  # the readiness probe's session has gone
        fds0, rss0 = open_fds(pid), vm_rss_kib(pid)
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        chunk = b"RSET\r\n" * 10000  # every 6-octet command earns a 14-octet reply
        sent, cap = 0, 200 << 20
        t0 = time.monotonic()
        try:
            while sent < cap:
                s.sendall(chunk)
                sent += len(chunk)
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            pass
        grown = vm_rss_kib(pid) - rss0
        try:
            assert sent < 64 << 20, "the daemon took %d MB from a client that reads nothing" % (sent >> 20)
            assert grown < 64 * 1024, "daemon RSS grew by %d MiB" % (grown >> 10)
            closed = sgtest.wait_for(lambda: open_fds(pid) <= fds0, 15, 0.1)
            assert closed, "session of a non-reading client still open %.1fs later (%d fds, was %d)" \
                % (time.monotonic() - t0, open_fds(pid), fds0)
        finally:
            s.close()
        assert_alive(gw, "not-reading")


@test
def test_connections_per_client():
    with gateway({"connections_per_client": "3"}) as (gw, sink):
        held = []
        try:
            # the readiness probe's connection may not be released yet: retry
            for _ in range(20):
                held = [Client(gw.port, want_banner=None) for _ in range(3)]
                if all(c.banner[0] == 220 for c in held):
                    break
                for c in held:
                    c.close()
                held = []
                time.sleep(0.1)
            assert held, "three connections were never all admitted"
            fourth = Client(gw.port, want_banner=None)
            check(fourth.banner, 421, "4.7.0", "4th connection")
            fourth.expect_closed("4th connection")
            fourth.sock.close()
            # another client address is not affected
            with Client(gw.port, source="127.0.0.2") as other:
                other.expect("EHLO other.test", 250)
            # the held ones still work
            for c in held:
                c.expect("EHLO client.test", 250)
            # a slot frees when a connection ends
            held.pop().close()

            def admitted():
                c = Client(gw.port, want_banner=None)
                if c.banner[0] == 220:
                    return c
                c.sock.close()
                return None
            c = sgtest.wait_for(admitted, 5, 0.1)
            assert c, "no slot after a connection closed"
            held.append(c)
        finally:
            for c in held:
                c.close()
        assert_alive(gw, "connections")


@test
def test_connection_rate_per_client():
    rate = 5
    with gateway({"connection_rate_per_client": str(rate)}) as (gw, sink):
        avoid_minute_boundary()
        src = "127.0.0.3"  # not the address of the readiness probe
        for i in range(rate):
            with Client(gw.port, source=src, want_banner=None) as c:
                check(c.banner, 220, what="connection %d of %d" % (i + 1, rate))
        c = Client(gw.port, source=src, want_banner=None)
        check(c.banner, 421, "4.7.0", "connection %d" % (rate + 1))
        c.expect_closed("rate refused")
        c.sock.close()
        # still refused while the minute lasts, also when nothing is open
        c = Client(gw.port, source=src, want_banner=None)
        check(c.banner, 421, "4.7.0", "connection %d" % (rate + 2))
        c.sock.close()
        # other addresses are not affected
        with Client(gw.port, source="127.0.0.4") as c:
            c.expect("EHLO other.test", 250)


@test
def test_disk_reserve():
    with gateway({"disk_reserve": '"100000G"'}) as (gw, sink):
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            c.expect("MAIL FROM:<a@example.com>", 452, "4.3.1")
            c.expect("MAIL FROM:<>", 452, "4.3.1")
            c.expect("RCPT TO:<b@example.net>", 503)  # no transaction was started
            c.expect("NOOP", 250)
            c.expect("QUIT", 221)
        files = gw.queued_files()
        assert not files, "spool holds %r" % files


@test
def test_data_memory_budget():
    """limits.data_memory bounds the message bytes all sessions hold while
    receiving: a client over it gets 452 4.3.1 after its data (read to the
    end, nothing kept), others get 452 4.3.1 at DATA while the budget is
    spent, and everything works again once it is free."""
    with gateway({"data_memory": '"1M"', "message_size": '"50M"'}) as (gw, sink):
        line = b"x" * 998 + b"\r\n"
        with Client(gw.port) as a, Client(gw.port) as b:
            for c in (a, b):
                c.expect("EHLO client.test", 250)
                c.expect("MAIL FROM:<a@example.com>", 250)
                c.expect("RCPT TO:<b@example.net>", 250)
            check(a.cmd("DATA"), 354)
            a.send(b"Subject: big\r\n\r\n" + line * 1200)  # 1.2 MB, not finished
            assert sgtest.wait_for(lambda: check_data_refused(b), 10), "DATA not refused"
            a.send(line * 800 + b".\r\n")  # 2 MB in all
            check(a.reply(), 452, "4.3.1", "over the budget")
            a.expect("NOOP", 250)  # the session goes on
            a.expect("MAIL FROM:<a@example.com>", 250)
            a.expect("RCPT TO:<b@example.net>", 250)
            queued_id(a.data(sgtest.make_message("afterbudget@test", body="small\r\n")))
        assert sgtest.wait_for(lambda: "afterbudget@test" in sink_ids(sink), 15), sink_ids(sink)


def check_data_refused(c):
    """DATA on c gets 452 4.3.1 (the budget is spent), or False."""
    r = c.cmd("DATA")
    if r[0] == 354:  # not spent yet: end this message and ask again
        c.send(b"\r\n.\r\n")
        c.reply()
        c.cmd("MAIL FROM:<a@example.com>")
        c.cmd("RCPT TO:<b@example.net>")
        return False
    check(r, 452, "4.3.1", "DATA while the budget is spent")
    return True


# ------------------------------------------------------------------ runner

@contextlib.contextmanager
def shared_gateway():
    """The gateway most tests share, as the globals G and SINK."""
    global G, SINK
    with gateway(SHARED_LIMITS) as (G, SINK):
        yield


def still_running(name):
    sgtest.assert_running(G, "during " + name)


if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS, shared=shared_gateway, after_each=still_running))
