#!/usr/bin/env python3
"""sealload, the load generator and sink (issue #7), against real peers.

The client is run against Postfix's smtp-sink (sgtest.Sink), against
`sealload sink`, and against FakeHop where replies must be scripted
(451 to some messages, refused recipients, no PIPELINING, slow DATA).
The sink's checks are fed S/MIME made by `openssl cms` and, end to end,
by a signing sealgate instance; what the client generates is parsed with
Python's email package.  Every run's stderr must be free of sanitizer
reports (the ASan build runs this file too).

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_sealload.py [NAME...]
"""

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from test_incoming import cms, message  # noqa: E402
from test_outgoing import profile_yaml, recipient  # noqa: E402

TESTS, test = sgtest.registry()


def sealload(*args, timeout=60, code=None):
    """Run the client with --json; returns (exit code, report dict, stderr)."""
    r = subprocess.run([sgtest.binary("sealload"), "--json", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout)
    sgtest.assert_no_sanitizer_report(r.stderr)
    if code is not None:
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
    report = json.loads(r.stdout) if r.stdout.strip() else None
    return r.returncode, report, r.stderr


def target(port):
    return "127.0.0.1:%d" % port


class SealSink:
    """`sealload sink --json ARGS` on a free port; report() stops it
    (SIGTERM unless it ended by itself) and returns its JSON report."""

    def __init__(self, *args):
        self.port = sgtest.free_port()
        self.proc = subprocess.Popen([sgtest.binary("sealload"), "sink", "--json", *map(str, args),
                                      target(self.port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stderr.readline()   # "listening on ..." once bound, not a connection
        assert "listening on" in line, line + self.proc.stderr.read()

    def report(self, timeout=30, code=0):
        if self.proc.poll() is None and timeout == 0:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout or 30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            out, err = self.proc.communicate(timeout=30)
        sgtest.assert_no_sanitizer_report(err)
        assert self.proc.returncode == code, (self.proc.returncode, out, err)
        return json.loads(out)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_lines(path):
    with open(path) as f:
        return f.read().split()


# ---------------------------------------------------------------- command line

@test
def test_help_version_usage():
    r = subprocess.run([sgtest.binary("sealload"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "sealload sink" in r.stdout and "--acked" in r.stdout, r
    r = subprocess.run([sgtest.binary("sealload"), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and re.fullmatch(r"sealload \d+\.\d+\.\d+\n", r.stdout), r
    for args in (["--bogus", "x:1"], ["-c", "0", "x:1"], ["sink", "--rcpts", "2", "x:1"], ["x:1", "y"]):
        r = subprocess.run([sgtest.binary("sealload"), *args], capture_output=True, text=True)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, (args, r)
        sgtest.assert_no_sanitizer_report(r.stderr)


# ---------------------------------------------------------------- count, duration, acked

@test
def test_count_to_postfix_sink_with_acked_file():
    """-n against smtp-sink: every message stored once, the --acked file
    names exactly the stored Message-IDs."""
    with sgtest.Sink() as sink:
        acked = os.path.join(sink.dir, "acked")
        _, rep, _ = sealload("-n", 120, "-c", 4, "--acked", acked, target(sink.port), code=0)
        assert rep["sent"] == rep["acked"] == 120 and rep["replies"] == {"250": 120}, rep
        assert sink.wait_count(120, 30) == 120
        ids = sink.message_ids()
        assert len(set(ids)) == 120, ids[:5]
        lines = read_lines(acked)
        assert sorted(lines) == sorted(ids), (lines[:3], ids[:3])
        assert rep["latency_ms"]["count"] == 120 and 0 < rep["latency_ms"]["p50"] <= rep["latency_ms"]["max"]


@test
def test_duration_to_sealload_sink():
    """-t 2: the run lasts about two seconds and the sink counts what the
    client says was acked, no more, no less."""
    with SealSink() as sk:
        t0 = time.monotonic()
        _, rep, _ = sealload("-t", 2, "-c", 4, "--threads", 2, target(sk.port), code=0)
        took = time.monotonic() - t0
        srep = sk.report(timeout=0)
    assert 2.0 <= rep["elapsed_s"] < 3.0 and took < 5, (rep, took)
    assert rep["acked"] > 100 and rep["unsent"] == 0 and rep["failed"] == 0, rep
    assert srep["messages"] == rep["acked"] and srep["bytes"] == rep["bytes_acked"], (srep, rep)
    assert srep["connections"] == 4, srep


@test
def test_no_reuse_one_connection_per_message():
    with SealSink("-n", 30) as sk:
        _, rep, _ = sealload("-n", 30, "-c", 3, "--no-reuse", target(sk.port), code=0)
        srep = sk.report()          # ends by itself after 30 messages
    assert rep["acked"] == 30 and rep["connections"] == 30, rep
    assert srep["messages"] == 30 and srep["connections"] == 30, srep


@test
def test_interrupt_reports():
    """SIGINT ends a long run at once with a report of what was done."""
    with SealSink() as sk:
        p = subprocess.Popen([sgtest.binary("sealload"), "--json", "-t", "60", "-c", "2", target(sk.port)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        sk.report(timeout=0)
    sgtest.assert_no_sanitizer_report(err)
    rep = json.loads(out)
    assert p.returncode == 0 and rep["acked"] > 0 and rep["elapsed_s"] < 5, (p.returncode, rep)


# ---------------------------------------------------------------- open loop

@test
def test_open_loop_rate():
    """-r 150 for 3 s: 450 messages, arriving at the sink (two threads
    sharing the port) at 150/s (+-10 %)."""
    with SealSink("--threads", 2) as sk:
        _, rep, _ = sealload("-r", 150, "-t", 3, "-c", 4, "--threads", 2, target(sk.port), code=0)
        srep = sk.report(timeout=0)
    assert abs(rep["sent"] - 450) <= 45 and rep["acked"] == rep["sent"], rep
    assert abs(rep["msgs_per_s"] - 150) <= 15, rep
    # the sink's own clock, first MAIL to last message: 449 intervals
    assert abs((srep["messages"] - 1) / srep["active_s"] - 150) <= 15, srep


@test
def test_open_loop_latency_includes_queueing():
    """One session, DATA answered after 100 ms (10 msgs/s at most), 20
    messages due at 20/s: each waits behind the previous ones, and the
    latency counted from the due time shows it (about 1 s for the last);
    the same server in closed loop shows only the service time."""
    def slow(stage, txn):
        if stage == "DATA":
            time.sleep(0.1)
    with sgtest.FakeHop(reply=slow) as hop:
        _, rep, _ = sealload("-r", 20, "-n", 20, "-c", 1, target(hop.port), code=0)
        assert rep["acked"] == 20, rep
        assert rep["latency_ms"]["max"] >= 800 and rep["latency_ms"]["p50"] >= 300, rep["latency_ms"]
        _, closed, _ = sealload("-n", 5, "-c", 1, target(hop.port), code=0)
        assert 100 <= closed["latency_ms"]["max"] < 400, closed["latency_ms"]


# ---------------------------------------------------------------- replies and failures

def refuse_some(stage, txn):
    """451 to every fourth message (by arrival), from FakeHop."""
    if stage == "DATA" and txn["seq"] % 4 == 1:
        return "451 4.3.0 try again later"


@test
def test_451_counts_and_acked_exactly():
    """Some messages get 451: the reply counts say how many, the acked
    file lists exactly the accepted ones; with and without PIPELINING."""
    for pipelining in (True, False):
        def reply(stage, txn):
            if stage == "EHLO" and not pipelining:
                return "250 fakehop"
            return refuse_some(stage, txn)
        with sgtest.FakeHop(reply=reply) as hop:
            acked = os.path.join(sgtest.tmpdir("acked"), "acked")
            try:
                _, rep, _ = sealload("-n", 40, "-c", 2, "--acked", acked, target(hop.port), code=1)
                assert rep["replies"] == {"250": 30, "451": 10}, (pipelining, rep)
                assert rep["acked"] == 30 and rep["failed"] == 10 and rep["sent"] == 40, rep
                assert sorted(read_lines(acked)) == sorted(hop.message_ids()), pipelining
                refused = [t["message_id"] for t in hop.transactions if t["reply"].startswith("451")]
                assert len(refused) == 10 and not set(refused) & set(read_lines(acked))
            finally:
                sgtest.cleanup(os.path.dirname(acked))


@test
def test_refused_recipients():
    """--rcpts 3 with the second refused: messages still go to the other
    two; with every recipient refused, the message's outcome is the RCPT
    reply and no data is sent."""
    def no_rcpt2(stage, txn):
        if stage == "RCPT" and "rcpt2@" in txn["rcpt"]:
            return "550 5.1.1 no such user"
    with sgtest.FakeHop(reply=no_rcpt2) as hop:
        _, rep, _ = sealload("-n", 10, "-c", 2, "--rcpts", 3, target(hop.port), code=0)
        assert rep["replies"] == {"250": 10}, rep
        assert all(len(t["rcpts"]) == 2 and "rcpt2@" not in " ".join(t["rcpts"]) for t in hop.accepted)
    for pipelining in (True, False):
        def none(stage, txn):
            if stage == "EHLO" and not pipelining:
                return "250 fakehop"
            if stage == "RCPT":
                return "550 5.1.1 no such user"
        with sgtest.FakeHop(reply=none) as hop:
            _, rep, _ = sealload("-n", 6, "-c", 2, "--rcpts", 2, target(hop.port), code=1)
            assert rep["replies"] == {"550": 6} and rep["acked"] == 0 and rep["failed"] == 6, rep
            assert hop.transactions == [], hop.transactions


@test
def test_connection_refused():
    """Nothing listens: each session tries 1 + --retries times with
    backoff, every attempt is counted, nothing is sent, exit status 3."""
    port = sgtest.free_port()
    t0 = time.monotonic()
    _, rep, _ = sealload("-n", 5, "-c", 2, "--retries", 2, target(port), code=3)
    assert rep["connect_failed"] == 6 and rep["sent"] == 0 and rep["unsent"] == 5, rep
    assert 0.25 <= time.monotonic() - t0 < 5  # backoff 100 ms + 200 ms


@test
def test_server_drops_connections():
    """FakeHop drops the connection instead of answering some messages:
    counted as conn-lost, the session reconnects, the rest get through."""
    def drop(stage, txn):
        if stage == "DATA" and txn["seq"] % 5 == 2:
            return "DROP"
    with sgtest.FakeHop(reply=drop) as hop:
        _, rep, _ = sealload("-n", 20, "-c", 2, target(hop.port), code=1)
    assert rep["conn_lost"] == rep["failed"] > 0 and rep["acked"] + rep["failed"] == 20, rep
    # each loss costs a new connection, unless no message was left for it
    assert rep["conn_lost"] <= rep["connections"] <= 2 + rep["conn_lost"], rep


@test
def test_reply_timeout():
    """A server that takes 2 s to answer the data, with --timeout 0.4:
    each message is counted as a timeout, not waited for, not fatal."""
    def stall(stage, txn):
        if stage == "DATA":
            time.sleep(2)
    with sgtest.FakeHop(reply=stall) as hop:
        t0 = time.monotonic()
        _, rep, _ = sealload("-n", 2, "-c", 1, "--timeout", 0.4, target(hop.port), code=1)
        took = time.monotonic() - t0
    assert rep["timeout"] == 2 and rep["failed"] == 2 and rep["acked"] == 0 and rep["replies"] == {}, rep
    assert took < 1.8, took


# ---------------------------------------------------------------- messages

@test
def test_generated_mime_parses():
    """--mime text/attach/8bit: Python's email package parses each without
    defects, the parts are what was asked for, the size is exact, and
    8bit goes with BODY=8BITMIME."""
    with sgtest.FakeHop() as hop:
        for kind in ("text", "attach", "8bit"):
            sealload("-n", 2, "-c", 1, "--mime", kind, "-s", 7000, target(hop.port), code=0)
        assert len(hop.accepted) == 6
        for i, kind in enumerate(("text", "text", "attach", "attach", "8bit", "8bit")):
            t = hop.accepted[i]
            assert len(t["data"]) == 7000, (kind, len(t["data"]))
            msg = email.message_from_bytes(t["data"], policy=email.policy.default)
            assert not msg.defects, (kind, msg.defects)
            assert ("BODY=8BITMIME" in t["mail_from"]) == (kind == "8bit"), t["mail_from"]
            if kind == "attach":
                assert msg.get_content_type() == "multipart/mixed"
                parts = list(msg.iter_parts())
                assert [p.get_content_type() for p in parts] == ["text/plain", "application/octet-stream"]
                blob = parts[1].get_content()
                assert len(blob) > 4000 and not parts[1].defects, len(blob)
                assert parts[1].get_filename() == "sealload.bin"
            else:
                assert msg.get_content_type() == "text/plain"
                text = msg.get_content()
                assert len(text.encode()) > 6000, len(text.encode())
                assert (any(ord(c) > 127 for c in text)) == (kind == "8bit")
        assert len(set(hop.message_ids())) == 6


@test
def test_file_message():
    """--file: sent as it is with its lines starting with "." intact, a
    fresh Message-ID each time instead of the file's."""
    d = sgtest.tmpdir("slfile")
    try:
        path = os.path.join(d, "m.eml")
        with open(path, "wb") as f:
            f.write(b"From: <a@example.com>\nMessage-ID: <old@example.com>\nSubject: dots\n\n"
                    b".leading dot\n.\n..two\nend\n")
        with sgtest.FakeHop() as hop:
            sealload("-n", 3, "-c", 1, "-f", path, target(hop.port), code=0)
            ids = hop.message_ids()
            assert len(set(ids)) == 3 and "old@example.com" not in ids, ids
            for t in hop.accepted:
                assert t["data"].endswith(b"Subject: dots\r\n\r\n.leading dot\r\n.\r\n..two\r\nend\r\n"), t["data"]
                assert b"old@example.com" not in t["data"]
    finally:
        sgtest.cleanup(d)


# ---------------------------------------------------------------- sink checks

ENTITY = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nsigned by openssl for sealload sink\r\n"


def write(d, name, data):
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def send_file(port, path):
    sealload("-n", 1, "-c", 1, "-f", path, target(port), code=0)


@test
def test_sink_verify():
    """--verify: a message `openssl cms -sign` made verifies; one whose
    signed text was changed, one signed by someone else and a plain one
    fail."""
    d = sgtest.tmpdir("slverify")
    try:
        cert, key = recipient(d, "signer@example.com")
        other, okey = recipient(d, "other@example.com")
        good = message(cms("-sign", "-signer", cert, "-inkey", key, data=ENTITY))
        assert b"openssl for sealload" in good
        tampered = good.replace(b"openssl for sealload", b"openssl for sea1load")
        opaque = message(cms("-sign", "-nodetach", "-signer", cert, "-inkey", key, data=ENTITY))
        foreign = message(cms("-sign", "-signer", other, "-inkey", okey, data=ENTITY))
        with SealSink("--verify", cert) as sk:
            for name, data in (("good", good), ("opaque", opaque), ("tampered", tampered),
                               ("foreign", foreign), ("plain", sgtest.make_message("p@x"))):
                send_file(sk.port, write(d, name, data))
            rep = sk.report(timeout=0, code=1)
        assert rep["messages"] == 5 and rep["verified"] == 2 and rep["verify_failed"] == 3, rep
    finally:
        sgtest.cleanup(d)


@test
def test_sink_decrypt():
    """--decrypt/--key: a message `openssl cms -encrypt` made for the
    certificate opens, one for another certificate does not; with
    --verify too, a signed-then-encrypted one is decrypted and verified."""
    d = sgtest.tmpdir("sldecrypt")
    try:
        cert, key = recipient(d, "bob@example.com")
        other, _ = recipient(d, "eve@example.com")
        mine = message(cms("-encrypt", "-aes256", cert, data=ENTITY))
        theirs = message(cms("-encrypt", "-aes256", other, data=ENTITY))
        with SealSink("--decrypt", cert, "--key", key) as sk:
            send_file(sk.port, write(d, "mine", mine))
            send_file(sk.port, write(d, "theirs", theirs))
            rep = sk.report(timeout=0, code=1)
        assert rep["decrypted"] == 1 and rep["decrypt_failed"] == 1, rep
        signed = cms("-sign", "-signer", cert, "-inkey", key, data=ENTITY)
        both = message(cms("-encrypt", "-aes256", cert, data=signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")))
        keep = os.path.join(d, "kept")
        with SealSink("--decrypt", cert, "--key", key, "--verify", cert, "--keep", keep, "-n", 1) as sk:
            send_file(sk.port, write(d, "both", both))
            rep = sk.report()
        assert rep["decrypted"] == 1 and rep["verified"] == 1 and rep["kept"] == 1, rep
        kept = [os.path.join(keep, n) for n in os.listdir(keep)]
        assert len(kept) == 1 and b"enveloped-data" in open(kept[0], "rb").read()
    finally:
        sgtest.cleanup(d)


@test
def test_gateway_signs_sink_verifies():
    """sealload -> sealgate (sending profile that signs with the org
    certificate) -> sealload sink --verify with that certificate, exported
    by `sealctl cert export org`: every message verifies."""
    n = 40
    edits = [("    flow_policy: default\n", "    flow_policy: default\n    sending_profile: p\n")]
    port = sgtest.free_port()
    with sgtest.gateway(port, yaml=profile_yaml("sign"), edits=edits, start=False) as gw:
        org = write(gw.base, "org.pem", gw.sealctl("cert", "export", "org", check=True).stdout.encode())
        sink = subprocess.Popen([sgtest.binary("sealload"), "sink", "--json", "-n", str(n), "--verify", org,
                                 target(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "listening" in sink.stderr.readline()
            gw.start()
            _, rep, _ = sealload("-n", n, "-c", 4, "-s", 3000, target(gw.port), code=0)
            assert rep["acked"] == n, rep
            out, err = sink.communicate(timeout=60)
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.communicate()
        sgtest.assert_no_sanitizer_report(err)
        srep = json.loads(out)
        assert sink.returncode == 0 and srep["messages"] == n, (srep, err)
        assert srep["verified"] == n and srep["verify_failed"] == 0, srep


if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS))
