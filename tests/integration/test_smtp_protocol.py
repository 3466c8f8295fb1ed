#!/usr/bin/env python3
"""SMTP server side: the protocol as a client sees it.

EHLO extensions, HELO, every command's reply, dot-unstuffing, our Received
line, BODY=8BITMIME, pipelining (raw and with swaks --pipeline), bad
sequence (503), syntax errors (501), unknown commands (500/502), and a load
run of smtp-source (20 sessions x 500 messages) into smtp-sink.

Drives the built daemon on loopback with real peers (smtp-sink as next
hop, swaks, smtp-source, raw sockets).  Run:
    SEALGATE_BIN=build/bin python3 tests/integration/test_smtp_protocol.py [TEST...]
"""

import contextlib
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from sgtest import Client, check, queued_id, wait_delivered  # noqa: E402

HOST = "gw.test.example"  # sgtest.Instance's default --hostname


# ------------------------------------------------------------------ helpers
# gateway (smtp-sink plus a started sealgate, checked on the way out), the
# asserting Client and the reply checks live in sgtest.py.

def gateway(yaml="", edits=()):
    """sgtest.sink_gateway with our hostname; yields (gw, sink).
    edits: (old, new) replacements in sealgate.yaml; yaml: appended text."""
    return sgtest.sink_gateway(yaml=yaml, edits=edits, hostname=HOST)


def sink_entries(sink):
    """smtp-sink files as dicts: rcpts, mail (X-Mail-Args), data (bytes of
    the message as it reached the sink, after smtp-sink's own Received).
    Only call this once the messages of interest were delivered (smtp-sink
    writes its files while the data arrives)."""
    out = []
    for raw in sink.messages():
        lines = raw.split(b"\n")
        env = {"rcpts": [], "mail": None}
        i = 0
        while i < len(lines) and lines[i].startswith(b"X-"):
            k, _, v = lines[i].decode("utf-8", "replace").partition(": ")
            if k == "X-Rcpt-Args":
                env["rcpts"].append(v)
            elif k == "X-Mail-Args":
                env["mail"] = v
            i += 1
        if i + 1 >= len(lines) or not lines[i].startswith(b"Received: "):
            continue  # still being written
        i += 1
        while i < len(lines) and lines[i][:1] in (b"\t", b" "):
            i += 1
        env["data"] = b"\n".join(lines[i:])
        out.append(env)
    return out


def entry_with(gw, sink, qid, mid):
    """The sink entry of the message queued as qid with Message-ID mid."""
    wait_delivered(gw, qid)
    es = [e for e in sink_entries(sink) if sgtest.message_id(e["data"]) == mid]
    assert len(es) == 1, "message %s reached the sink %d times" % (mid, len(es))
    return es[0]


def our_received(data):
    return [v for v in sgtest.header(data, "Received") if "(sealgate)" in v]


TESTS, test = sgtest.registry()


# ------------------------------------------------------------------ tests
# Most tests share one default gateway (G, SINK); set up in main().

@test
def test_banner_and_ehlo():
    with Client(G.port) as c:
        assert c.banner[1].startswith(HOST + " "), c.banner
        code, text = c.expect("EHLO client.test", 250)
        lines = text.split("\n")
        assert lines[0].split()[0] == HOST, lines
        ext = {l.split()[0].upper(): l.split()[1:] for l in lines[1:]}
        for e in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"):
            assert e in ext, "EHLO lacks %s: %r" % (e, lines)
        assert ext["SIZE"] == [str(50 * 1024 * 1024)], ext["SIZE"]  # default 50M
        # repeated EHLO is fine, and a trailing blank is tolerated
        c.expect("EHLO client.test ", 250)
        c.expect("ehlo [127.0.0.1]", 250)


@test
def test_helo_session():
    mid = "helo.%d@test" % os.getpid()
    with Client(G.port) as c:
        code, text = c.expect("HELO client.test", 250)
        assert text == HOST, "HELO reply should be one line with our name: %r" % text
        c.expect("MAIL FROM:<a@example.com>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.net>", 250, "2.1.5")
        qid = queued_id(c.data(sgtest.make_message(mid)))
    e = entry_with(G, SINK, qid, mid)
    rec = our_received(e["data"])
    assert len(rec) == 1 and " with SMTP " in rec[0], rec


@test
def test_simple_commands():
    with Client(G.port) as c:
        c.expect("NOOP", 250, "2.0.0")
        c.expect("NOOP anything goes here", 250)
        c.expect("noop", 250)
        c.expect("HELP", 214)
        c.expect("HELP MAIL", 214)
        c.expect("EHLO client.test", 250)
        c.expect("VRFY postmaster", 252)
        c.expect("VRFY", 252)
        c.expect("RSET", 250, "2.0.0")
        c.send(b"NOOP\n")  # a command may end in a bare LF
        check(c.reply(), 250, what="LF-terminated NOOP")
        # commands pipelined after QUIT are not answered
        c.send(b"QUIT\r\nNOOP\r\nNOOP\r\n")
        check(c.reply(), 221, "2.0.0", "QUIT")
        assert c.reply_safe() == (0, ""), "connection not closed after QUIT"


@test
def test_transaction_and_received():
    mid = "txn.%d@test" % os.getpid()
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        c.expect("MAIL FROM:<Sender@Example.COM>", 250)
        c.expect("RCPT TO:<one@example.net>", 250)
        c.expect("RCPT TO:<two@example.net>", 250)
        qid = queued_id(c.data(sgtest.make_message(mid, body="line one\r\nline two\r\n")))
        c.expect("QUIT", 221)
    e = entry_with(G, SINK, qid, mid)
    assert sorted(e["rcpts"]) == ["<one@example.net>", "<two@example.net>"], e["rcpts"]
    assert e["mail"].startswith("<Sender@Example.COM>"), e["mail"]
    data = e["data"]
    assert data.startswith(b"Received: "), "our Received is not the first header:\n%r" % data[:300]
    rec = our_received(data)
    assert len(rec) == 1, "want exactly one Received of ours: %r" % rec
    r = rec[0]
    assert r.startswith("from client.test ([127.0.0.1])"), r
    assert "by %s (sealgate) with ESMTP id %s" % (HOST, qid) in r, r
    assert re.search(r"; \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$", r), r
    assert b"\nline one\nline two\n" in data, data


@test
def test_dot_unstuffing():
    mid = "dots.%d@test" % os.getpid()
    head = b"From: <a@example.com>\r\nSubject: dots\r\nMessage-ID: <" + mid.encode() + b">\r\n\r\n"
    # what the client puts on the wire, already dot-stuffed
    body = b"..leading dot\r\n...two dots\r\n..\r\nplain\r\n. \r\n"
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        c.expect("MAIL FROM:<a@example.com>", 250)
        c.expect("RCPT TO:<b@example.net>", 250)
        c.expect("DATA", 354)
        c.send(head + body + b".\r\n")
        qid = queued_id(c.reply())
    lines = entry_with(G, SINK, qid, mid)["data"].split(b"\n")
    i = lines.index(b"")  # end of the header section
    assert lines[i + 1:i + 6] == [b".leading dot", b"..two dots", b".", b"plain", b" "], lines[i:]


@test
def test_rset_clears_transaction():
    mid = "rset.%d@test" % os.getpid()
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        c.expect("MAIL FROM:<a@example.com>", 250)
        c.expect("RCPT TO:<dropped@example.net>", 250)
        c.expect("RSET", 250)
        c.expect("RCPT TO:<x@example.net>", 503, "5.5.1")
        c.expect("MAIL FROM:<b@example.com>", 250)
        c.expect("RCPT TO:<kept@example.net>", 250)
        qid = queued_id(c.data(sgtest.make_message(mid)))
    e = entry_with(G, SINK, qid, mid)
    assert e["rcpts"] == ["<kept@example.net>"] and e["mail"].startswith("<b@example.com>"), e


@test
def test_bad_sequence_503():
    mid = "seq.%d@test" % os.getpid()
    with Client(G.port) as c:
        c.expect("MAIL FROM:<a@example.com>", 503, "5.5.1")  # before HELO/EHLO
        c.expect("RCPT TO:<b@example.net>", 503, "5.5.1")
        c.expect("DATA", 503, "5.5.1")
        c.expect("EHLO client.test", 250)
        c.expect("RCPT TO:<b@example.net>", 503, "5.5.1")  # RCPT before MAIL
        c.expect("DATA", 503, "5.5.1")                      # DATA before MAIL
        c.expect("MAIL FROM:<a@example.com>", 250)
        c.expect("DATA", 503, "5.5.1")                      # DATA before RCPT
        c.expect("MAIL FROM:<a@example.com>", 503, "5.5.1")  # nested MAIL
        # the transaction survived all that
        c.expect("RCPT TO:<b@example.net>", 250)
        qid = queued_id(c.data(sgtest.make_message(mid)))
    entry_with(G, SINK, qid, mid)


@test
def test_syntax_errors_501():
    cases = [
        ("HELO", "5.5.4"), ("EHLO", "5.5.4"), ("HELO two words", "5.5.4"), ("HELO [999.1.2.3]", "5.5.4"),
        ("MAIL", None), ("MAIL FROM:", None), ("MAIL FROM:a@example.com", "5.5.4"),
        ("MAIL FROM:<a@@example.com>", "5.1.7"), ("MAIL FROM:<a@example.com> SIZE=ten", "5.5.4"),
        ("MAIL FROM:<a@example.com> BODY=9BIT", "5.5.4"),
        ("MAIL TO:<a@example.com>", "5.5.4"),
    ]
    after_mail = [("RCPT", None), ("RCPT TO:", None), ("RCPT TO:<>", "5.1.3"),
                  ("RCPT TO:<no domain@x>", "5.1.3"), ("RCPT FROM:<a@example.net>", "5.5.4"),
                  ("DATA now", "5.5.4"), ("RSET please", "5.5.4"), ("QUIT now", "5.5.4")]
    # split over sessions: a session ends at limits.max_errors (10) errors
    for chunk in (cases[:6], cases[6:]):
        with Client(G.port) as c:
            c.expect("EHLO client.test", 250)
            for line, enh in chunk:
                c.expect(line, 501, enh)
            c.expect("NOOP", 250)  # still talking
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        c.expect("MAIL FROM:<a@example.com>", 250)
        for line, enh in after_mail:
            c.expect(line, 501, enh)
        # the transaction is intact after the errors
        c.expect("RCPT TO:<b@example.net>", 250)
        c.expect("QUIT", 221)


@test
def test_unknown_and_unimplemented():
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        for line in ("FOOBAR", "XYZZY with args", "MAILFROM:<a@example.com>", "EHLO\tclient.test"):
            r = c.cmd(line)
            assert r[0] in (500, 502) and r[1].startswith("5.5."), "%s -> %r" % (line, r)
        for line in ("EXPN staff", "BDAT 10 LAST", "AUTH PLAIN", "STARTTLS"):
            c.expect(line, 502)
        c.expect("NOOP", 250)


@test
def test_body_8bitmime():
    mid = "8bit.%d@test" % os.getpid()
    body8 = "K\u00e4se kostet 5 \u20ac\r\n".encode()
    msg = sgtest.make_message(mid).replace(b"hello\r\n", body8)
    with Client(G.port) as c:
        c.expect("EHLO client.test", 250)
        c.expect("MAIL FROM:<a@example.com> BODY=7BIT", 250)
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<a@example.com> BODY=8BITMIME SIZE=%d" % len(msg), 250)
        c.expect("RCPT TO:<b@example.net>", 250)
        qid = queued_id(c.data(msg))
    e = entry_with(G, SINK, qid, mid)
    assert body8.rstrip(b"\r\n") in e["data"], e["data"]
    assert "BODY=8BITMIME" in e["mail"].upper(), "BODY=8BITMIME not passed on: %r" % e["mail"]


@test
def test_raw_pipelining():
    m1, m2 = "pipe1.%d@test" % os.getpid(), "pipe2.%d@test" % os.getpid()
    with Client(G.port) as c:
        c.send("EHLO client.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
               "RCPT TO:<c@example.net>\r\nDATA\r\n")
        for code in (250, 250, 250, 250, 354):
            check(c.reply(), code, what="pipelined group 1")
        # message 1, its end, and the whole next transaction in one write
        c.send(sgtest.make_message(m1) + b".\r\nMAIL FROM:<a@example.com>\r\n"
               b"RCPT TO:<d@example.net>\r\nDATA\r\n")
        q1 = queued_id(c.reply())
        for code in (250, 250, 354):
            check(c.reply(), code, what="pipelined group 2")
        c.send(sgtest.make_message(m2) + b".\r\nQUIT\r\n")
        q2 = queued_id(c.reply())
        check(c.reply(), 221, what="pipelined QUIT")
    assert sorted(entry_with(G, SINK, q1, m1)["rcpts"]) == ["<b@example.net>", "<c@example.net>"]
    assert entry_with(G, SINK, q2, m2)["rcpts"] == ["<d@example.net>"]


@test
def test_swaks_pipeline():
    for extra in (["--pipeline"], []):
        mid = "swaks%s.%d@test" % (extra and "-pipe" or "", os.getpid())
        r = sgtest.swaks(G.port, *extra, "--header", "Message-Id: <%s>" % mid,
                         "--body", "..dotted line via swaks\nplain")
        assert r.returncode == 0, "swaks %s failed (%d):\n%s%s" % (extra, r.returncode, r.stdout, r.stderr)
        if extra:
            assert "PIPELINING" in r.stdout, r.stdout
        qid = re.search(r"<-  250 .*queued as (\S+)", r.stdout)
        assert qid, r.stdout
        data = entry_with(G, SINK, qid.group(1), mid)["data"]
        assert b"\n..dotted line via swaks\n" in data, data


@test
def test_smtp_source_load():
    sessions, per_session = 20, 500
    total = sessions * per_session
    with gateway() as (gw, sink):
        t0 = time.monotonic()
        r = subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(total), "-d", "-N",
                            "-l", "1024", "-f", "load@example.com", "-t", "rcpt@example.net",
                            "-M", "source.test", "127.0.0.1:%d" % gw.port],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "smtp-source:" not in r.stderr, \
            "smtp-source failed (%d): %s" % (r.returncode, r.stderr[-2000:])
        assert sgtest.wait_for(lambda: gw.log().count("result=delivered") >= total, 90), \
            "only %d of %d delivered:\n%s" % (gw.log().count("result=delivered"), total, gw.log()[-2000:])
        assert sink.count() == total, "%d of %d messages reached smtp-sink" % (sink.count(), total)
        rcpts = [e["rcpts"][0] for e in sink_entries(sink)]
        assert len(set(rcpts)) == total, "duplicates: %d distinct of %d" % (len(set(rcpts)), total)
        # 250 means durable and then delivered: the spool ends up empty
        left = sgtest.wait_for(lambda: not gw.queued_files(), 10)
        assert left, "spool not empty after delivery"
        # one session per client connection: 20 sessions, 500 messages each
        accepted = gw.log().count("result=queued")
        assert accepted == total, "log shows %d accepted" % accepted
        print("  smtp-source: %d messages in %.1fs" % (total, time.monotonic() - t0))


# ------------------------------------------------------------------ runner

@contextlib.contextmanager
def shared_gateway():
    """The gateway most tests share, as the globals G and SINK."""
    global G, SINK
    with gateway() as (G, SINK):
        yield


def still_running(name):
    sgtest.assert_running(G, "during " + name)


if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS, shared=shared_gateway, after_each=still_running))
