#!/usr/bin/env python3
"""SMTP smuggling: only CR LF . CR LF ends DATA.

For every fake end-of-data sequence ("\\n.\\n", "\\r.\\r", "\\n.\\r\\n",
"\\r\\n.\\n", "\\r.\\r\\n", and a few more), a message that carries it
followed by a smuggled "MAIL FROM / RCPT TO / DATA / message" must not
create a second message: the whole thing is read to the real end and
refused with 554 5.6.0, the next hop (smtp-sink) receives nothing from it,
and a clean message after it on the same connection is accepted.  The
byte stream is also sent one octet per write, so the parser meets the fake
end split over reads.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_smuggling.py [TEST...]
"""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from sgtest import check, queued_id, sink_gateway as gateway, wait_delivered  # noqa: E402

# the five, then other bare CR / bare LF shapes of a fake end
VARIANTS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n",
            b"\r\n.\r", b"\n.\r", b"\r\n.\r\r\n", b"\r\n\n.\r\n"]
EVIL_SENDER = "smuggler@evil.example"
EVIL_RCPT = "victim@example.net"


# ------------------------------------------------------------------ helpers
# gateway (smtp-sink plus a started sealgate, checked on the way out) and
# the reply checks live in sgtest.py.

def smuggling_payload(tag, fake_end):
    """A message whose body holds fake_end and then a whole smuggled
    transaction, as it goes on the wire up to (not including) the real end."""
    real = ("From: <sender@example.com>\r\nTo: <rcpt@example.net>\r\nSubject: carrier\r\n"
            "Message-ID: <carrier.%s@test>\r\n\r\nInnocent text.\r\nmore" % tag).encode()
    smuggled = ("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\nFrom: <%s>\r\nTo: <%s>\r\n"
                "Subject: smuggled\r\nMessage-ID: <smuggled.%s@test>\r\n\r\nSpoofed!\r\n"
                % (EVIL_SENDER, EVIL_RCPT, EVIL_SENDER, EVIL_RCPT, tag)).encode()
    return real + fake_end + smuggled


def run_variant(port, tag, fake_end, bytewise=False):
    """One session: carrier with the fake end, the real end, then a clean
    message.  Returns the clean message's queue id.  Asserts the reply
    sequence exactly, so a smuggled command's reply would show up."""
    c = sgtest.SMTPClient(port, timeout=20)
    try:
        check(c.banner, 220, what="banner")
        check(c.cmd("EHLO client.test"), 250, what="EHLO")
        check(c.cmd("MAIL FROM:<sender@example.com>"), 250, what="MAIL")
        check(c.cmd("RCPT TO:<rcpt@example.net>"), 250, what="RCPT")
        check(c.cmd("DATA"), 354, what="DATA")
        wire = smuggling_payload(tag, fake_end) + b"\r\n.\r\n"
        if bytewise:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(wire)):
                c.send(wire[i:i + 1])
        else:
            c.send(wire)
        r = c.reply()
        check(r, 554, "5.6.0", "carrier with %r" % fake_end)
        # nothing else is pending: the next reply must be our NOOP's
        check(c.cmd("NOOP"), 250, what="NOOP after the refused carrier (%r)" % fake_end)
        # the same connection still takes a clean message
        check(c.cmd("MAIL FROM:<sender@example.com>"), 250, what="MAIL after")
        check(c.cmd("RCPT TO:<rcpt@example.net>"), 250, what="RCPT after")
        qid = queued_id(c.data(sgtest.make_message("clean.%s@test" % tag)))
        check(c.cmd("QUIT"), 221, what="QUIT")
        return qid
    finally:
        c.sock.close()


def no_smuggled(gw, sink):
    """Nothing of the smuggled transactions reached the sink or the log."""
    for m in sink.messages():
        assert b"smuggled" not in m and EVIL_SENDER.encode() not in m, \
            "smuggled content reached the next hop:\n%r" % m[:600]
    assert EVIL_SENDER not in gw.log(), "the daemon logged the smuggled sender:\n" + gw.log()[-2000:]


TESTS, test = sgtest.registry()


# ------------------------------------------------------------------ tests

@test
def test_variants_rejected():
    with gateway() as (gw, sink):
        qids = []
        for i, v in enumerate(VARIANTS):
            qids.append(run_variant(gw.port, "v%d" % i, v))
        for q in qids:
            wait_delivered(gw, q)
        time.sleep(0.3)  # a smuggled message would have been queued alongside
        ids = sorted(sgtest.message_id(m) for m in sink.messages())
        assert ids == sorted("clean.v%d@test" % i for i in range(len(VARIANTS))), ids
        no_smuggled(gw, sink)


@test
def test_variants_split_bytewise():
    with gateway() as (gw, sink):
        qids = [run_variant(gw.port, "b%d" % i, v, bytewise=True) for i, v in enumerate(VARIANTS)]
        for q in qids:
            wait_delivered(gw, q)
        time.sleep(0.3)
        ids = sorted(sgtest.message_id(m) for m in sink.messages())
        assert ids == sorted("clean.b%d@test" % i for i in range(len(VARIANTS))), ids
        no_smuggled(gw, sink)


@test
def test_pipelined_after_refusal():
    """Carrier, real end and a clean transaction in one write (PIPELINING):
    the commands after the real end are commands again, the ones inside
    the carrier never were."""
    with gateway() as (gw, sink):
        with sgtest.SMTPClient(gw.port, timeout=20) as c:
            check(c.cmd("EHLO client.test"), 250)
            c.send(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n")
            for code in (250, 250, 354):
                check(c.reply(), code, what="pipelined")
            c.send(smuggling_payload("p", b"\n.\n") + b"\r\n.\r\n"
                   + b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n")
            check(c.reply(), 554, "5.6.0", "carrier")
            for code in (250, 250, 354):
                check(c.reply(), code, what="after the carrier")
            c.send(sgtest.make_message("clean.p@test") + b".\r\n")
            qid = queued_id(c.reply())
        wait_delivered(gw, qid)
        time.sleep(0.3)
        assert [sgtest.message_id(m) for m in sink.messages()] == ["clean.p@test"]
        no_smuggled(gw, sink)


@test
def test_bare_newlines_without_fake_end():
    """A lone bare LF or CR anywhere in the data is refused the same way
    (the message might be read differently downstream)."""
    with gateway() as (gw, sink):
        with sgtest.SMTPClient(gw.port, timeout=20) as c:
            check(c.cmd("EHLO client.test"), 250)
            for i, body in enumerate((b"line\nline\r\n", b"line\rline\r\n", b"end\r\n\r")):
                check(c.cmd("MAIL FROM:<sender@example.com>"), 250)
                check(c.cmd("RCPT TO:<rcpt@example.net>"), 250)
                check(c.cmd("DATA"), 354)
                c.send(b"Subject: bare %d\r\nMessage-ID: <bare%d@test>\r\n\r\n" % (i, i)
                       + body + b"\r\n.\r\n")
                check(c.reply(), 554, "5.6.0", "bare newline %r" % body)
            check(c.cmd("MAIL FROM:<sender@example.com>"), 250)
            check(c.cmd("RCPT TO:<rcpt@example.net>"), 250)
            qid = queued_id(c.data(sgtest.make_message("clean.bare@test")))
        wait_delivered(gw, qid)
        assert [sgtest.message_id(m) for m in sink.messages()] == ["clean.bare@test"]


@test
def test_swaks_smuggling_attempt():
    """The same attack from a real client: with --no-data-fixup swaks sends
    the data file as is (fake end inside, real end at the end of the file)."""
    with gateway() as (gw, sink):
        tmp = sgtest.tmpdir("smuggle")
        try:
            path = os.path.join(tmp, "data.eml")
            with open(path, "wb") as f:
                f.write(smuggling_payload("s", b"\n.\r\n") + b"\r\n.\r\n")
            r = sgtest.swaks(gw.port, "--no-data-fixup", "--data", "@" + path, timeout=30)
            assert r.returncode != 0, "swaks reported success:\n" + r.stdout
            assert re.search(r"<\*\* +554 5\.6\.0", r.stdout), r.stdout[-2000:]
        finally:
            sgtest.cleanup(tmp)
        assert sgtest.send_message(gw.port, "a@example.com", ["b@example.net"],
                                   sgtest.make_message("clean.s@test"))[0] == 250
        assert sink.wait_count(1, timeout=15) == 1
        time.sleep(0.3)
        assert sink.count() == 1
        no_smuggled(gw, sink)


# ------------------------------------------------------------------ runner

if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS))
