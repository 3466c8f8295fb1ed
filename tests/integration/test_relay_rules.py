#!/usr/bin/env python3
"""Relay control on the SMTP server side.

Outgoing listeners relay only for clients in relay_from (550 5.7.1 at RCPT
otherwise); incoming listeners accept only recipients in local_domains
(550 5.7.1 otherwise) plus postmaster.  Checked with clients bound to
different loopback addresses and, where the host has it, IPv6 ::1; what
reaches the next hop (smtp-sink) is checked recipient by recipient.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_relay_rules.py [TEST...]
"""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from sgtest import Client, queued_id, wait_delivered  # noqa: E402


# ------------------------------------------------------------------ helpers
# The asserting Client (with a source address) and the reply checks live
# in sgtest.py.

def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def gateway(relay_from=None, extra_listeners=""):
    """sgtest.sink_gateway (smtp-sink plus a started sealgate, checked on
    the way out); yields (gw, sink).

    relay_from: YAML flow list replacing the main listener's relay_from;
    extra_listeners: YAML list items added after the main listener (HOP in
    them stands for the sink's port)."""
    edits = []
    if relay_from is not None:
        edits.append(('relay_from: ["127.0.0.1/32", "::1/128"]', "relay_from: " + relay_from))

    def add_listeners(gw):
        if extra_listeners:
            hop = "    next_hop: 127.0.0.1:%d\n" % gw.next_hop
            gw.edit_config(hop, hop + extra_listeners.replace("HOP", str(gw.next_hop)))
    return sgtest.sink_gateway(edits=edits, setup=add_listeners)


def sink_rcpts(sink, mid):
    """Envelope recipients smtp-sink got with the message mid (once)."""
    ms = [m for m in sink.messages() if sgtest.message_id(m) == mid]
    assert len(ms) == 1, "%s reached the sink %d times" % (mid, len(ms))
    return sorted(x.decode() for x in re.findall(rb"(?m)^X-Rcpt-Args: <([^>]*)>", ms[0]))


def refused_everything(c, rcpts):
    """MAIL, each RCPT refused with 550 5.7.1, DATA refused: nothing queued."""
    c.expect("MAIL FROM:<sender@example.com>", 250)
    for r in rcpts:
        c.expect("RCPT TO:<%s>" % r, 550, "5.7.1")
    c.expect("DATA", 554)
    c.expect("RSET", 250)


TESTS, test = sgtest.registry()


# ------------------------------------------------------------------ tests

INCOMING = """  - name: in
    address: 127.0.0.1:%d
    direction: incoming
    local_domains: [example.org]
    next_hop: 127.0.0.1:HOP
"""


@test
def test_outgoing_client_outside_relay_from():
    with gateway(relay_from='["10.0.0.0/8"]') as (gw, sink):
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            refused_everything(c, ["bob@example.net", "bob@example.org", "postmaster@example.net"])
            c.expect("NOOP", 250)  # the session goes on
        time.sleep(0.3)
        assert sink.count() == 0, "something was relayed"
        assert not [l for l in gw.log().splitlines() if "result=queued" in l], gw.log()[-2000:]


@test
def test_outgoing_relay_from_networks():
    nets = '["127.0.0.2/32", "127.0.1.0/24"]'
    with gateway(relay_from=nets) as (gw, sink):
        for src in ("127.0.0.1", "127.0.0.3", "127.0.2.1"):
            with Client(gw.port, source=src) as c:
                c.expect("EHLO client.test", 250)
                refused_everything(c, ["bob@example.net"])
        qids = {}
        for src in ("127.0.0.2", "127.0.1.7"):
            mid = "from-%s@test" % src
            with Client(gw.port, source=src) as c:
                c.expect("EHLO client.test", 250)
                c.expect("MAIL FROM:<sender@example.com>", 250)
                c.expect("RCPT TO:<bob@example.net>", 250)
                qids[mid] = queued_id(c.data(sgtest.make_message(mid)))
        for mid, q in qids.items():
            wait_delivered(gw, q)
            assert sink_rcpts(sink, mid) == ["bob@example.net"]
        assert sink.count() == 2


@test
def test_outgoing_empty_relay_from():
    with gateway(relay_from="[]") as (gw, sink):
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            refused_everything(c, ["bob@example.net"])
        time.sleep(0.3)
        assert sink.count() == 0


@test
def test_incoming_local_domains():
    in_port = sgtest.free_port()
    with gateway(relay_from='["10.0.0.0/8"]', extra_listeners=INCOMING % in_port) as (gw, sink):
        assert sgtest.wait_port(in_port, 10), "incoming listener not up"
        mid = "incoming.%d@test" % os.getpid()
        accepted = ["bob@example.org", "Carol@EXAMPLE.ORG", "postmaster", "Postmaster",
                    "postmaster@example.org", '"dave smith"@example.org']
        refused = ["bob@example.net", "bob@sub.example.org", "bob@example.org.evil.net",
                   "bob@exampleXorg", "postmaster@example.net", "bob@[127.0.0.1]",
                   "@example.org:bob@evil.net"]
        with Client(in_port) as c:  # 127.0.0.1 is outside relay_from: no matter here
            c.expect("EHLO client.test", 250)
            c.expect("MAIL FROM:<sender@example.net>", 250)
            for r in refused:
                c.expect("RCPT TO:<%s>" % r, 550, "5.7.1")
            for r in accepted:
                c.expect("RCPT TO:<%s>" % r, 250)
            c.expect("RCPT TO:<@evil.net:eve@example.org>", 250)  # source route dropped
            qid = queued_id(c.data(sgtest.make_message(mid)))
        wait_delivered(gw, qid)
        want = sorted(["bob@example.org", "Carol@EXAMPLE.ORG", "postmaster", "postmaster",
                       "postmaster@example.org", '"dave smith"@example.org', "eve@example.org"])
        assert sink_rcpts(sink, mid) == want, sink_rcpts(sink, mid)
        # the outgoing listener of the same daemon still refuses this client
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            refused_everything(c, ["bob@example.org"])


@test
def test_incoming_only_foreign_recipients():
    in_port = sgtest.free_port()
    with gateway(extra_listeners=INCOMING % in_port) as (gw, sink):
        assert sgtest.wait_port(in_port, 10), "incoming listener not up"
        with Client(in_port) as c:
            c.expect("EHLO client.test", 250)
            refused_everything(c, ["a@example.com", "b@example.net"])
        time.sleep(0.3)
        assert sink.count() == 0


@test
def test_ipv6_loopback_default_relay_from():
    if not have_ipv6_loopback():
        print("  (skipped: no ::1 on this host)")
        return
    v6_port = sgtest.free_port()
    v6 = """  - name: v6
    address: "[::1]:%d"
    direction: outgoing
    next_hop: 127.0.0.1:HOP
""" % v6_port
    with gateway(extra_listeners=v6) as (gw, sink):
        assert sgtest.wait_port(v6_port, 10, host="::1"), "::1 listener not up"
        mid = "v6.%d@test" % os.getpid()
        with Client(v6_port, source="::1", host="::1") as c:
            c.expect("EHLO client.test", 250)
            c.expect("MAIL FROM:<sender@example.com>", 250)
            c.expect("RCPT TO:<bob@example.net>", 250)  # ::1/128 is in the default relay_from
            qid = queued_id(c.data(sgtest.make_message(mid)))
        wait_delivered(gw, qid)
        assert sink_rcpts(sink, mid) == ["bob@example.net"]
        msg = [m for m in sink.messages() if sgtest.message_id(m) == mid][0]
        ours = [v for v in sgtest.header(msg, "Received") if "(sealgate)" in v]
        assert len(ours) == 1 and "([::1])" in ours[0], ours


@test
def test_tls_required_means_no_mail_in_clear():
    """Until STARTTLS exists (issue #8), `tls: required` on a listener
    refuses every MAIL with 530 5.7.0 (RFC 3207), and a next hop that
    requires TLS gets nothing in clear: the message waits in the queue."""
    edits = [("    next_hop: 127.0.0.1:", "    tls: required\n    tls_certificate: org\n"
              "    next_hop: 127.0.0.1:")]
    with sgtest.sink_gateway(edits=edits) as (gw, sink):
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            c.expect("MAIL FROM:<sender@example.com>", 530, "5.7.0")
        assert "has no STARTTLS" in gw.log(), gw.log()[-2000:]

    def hop_needs_tls(gw):
        gw.edit_config("    next_hop: 127.0.0.1:%d" % gw.next_hop,
                       "    next_hop: {address: \"127.0.0.1:%d\", tls: required}" % gw.next_hop)
    with sgtest.sink_gateway(setup=hop_needs_tls) as (gw, sink):
        with Client(gw.port) as c:
            c.expect("EHLO client.test", 250)
            c.expect("MAIL FROM:<sender@example.com>", 250)
            c.expect("RCPT TO:<bob@example.net>", 250)
            qid = queued_id(c.data(sgtest.make_message("tlshop@test")))
        assert sgtest.wait_for(lambda: "queue_id=%s" % qid in gw.log() and
                               "result=deferred" in gw.log(), 10), gw.log()[-2000:]
        time.sleep(0.5)
        assert sink.count() == 0, "sent in clear to a next hop that requires TLS"
        listing = gw.sealctl("queue", "list").stdout
        assert qid in listing and "requires TLS" in listing, listing


# ------------------------------------------------------------------ runner

if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS))
