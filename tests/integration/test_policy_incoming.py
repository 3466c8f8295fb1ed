#!/usr/bin/env python3
"""Message filters acting on the incoming S/MIME outcome (R32, R33; issue #6).

The vendor's example filter, verbatim from INTERFACE.md, with an else
branch: an S/MIME message that did not verify is held in the Policy
quarantine, everything else is delivered with a marker field.  Messages
are made by `openssl cms` (tests/integration/test_incoming.py's PKI and
helpers); the gateway's incoming listener decrypts and verifies.  The
held message is released with `sealctl quarantine release` while the
daemon runs and arrives as it would have: still carrying its failed
signature, with the smime=fail result.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_policy_incoming.py [NAME...]
"""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from test_incoming import ALICE, Inbound, encrypt, entity, message, sign, smime_result  # noqa: E402

TESTS, test = sgtest.registry()

MESSAGE_FILTERS = """
message_filters: |
  quarantine_smime_messages: if (smime-gateway-message and not smime-gateway-verified) { quarantine("Policy"); }
    else { insert-header("X-Smime-Checked", "yes"); }
"""


def inbound():
    return Inbound(setup=lambda gw: gw.append_config(MESSAGE_FILTERS))


def tamper(msg):
    """Change one letter of the signed text (the signature no longer verifies)."""
    i = msg.index(b"quarterly")
    return msg[:i] + b"Q" + msg[i + 1:]


def held(gw):
    return json.loads(sgtest.sealctl_ok(gw, "--json", "quarantine", "list", "Policy"))


def field(data, name):
    m = re.search(rb"(?im)^" + name.encode() + rb":[ \t]*(.*?)\r?$", data.split(b"\r\n\r\n", 1)[0])
    return m.group(1).decode() if m else None


@test
def test_verified_message_is_delivered_with_else_branch():
    with inbound() as s:
        got = s.deliver(message(sign(entity(), *s.alice)))
        assert smime_result(got)[0] == "pass"
        assert field(got, "X-Smime-Checked") == "yes"
        assert held(s.gw) == []


@test
def test_plain_message_is_not_smime():
    with inbound() as s:
        msg = (b"From: <carol@partner.example>\r\nTo: <bob@example.com>\r\nSubject: plain\r\n"
               b"Message-ID: <plain@partner.example>\r\n\r\nno S/MIME here\r\n")
        got = s.deliver(msg, sender="carol@partner.example")
        assert field(got, "X-Smime-Checked") == "yes"


@test
def test_failed_signature_is_quarantined_then_released():
    """R33: smime-gateway-message and not smime-gateway-verified holds the
    tampered message in Policy (nothing delivered); the quarantine record
    names the filter and the S/MIME result; the held copy is the message as
    it arrived.  Released while the daemon runs, it is delivered with its
    smime=fail result (R32: delivered whatever the outcome, once let go)."""
    with inbound() as s:
        msg = tamper(message(sign(entity(), *s.alice), mid="bad@partner.example"))
        code, text = sgtest.send_message(s.gw.port, ALICE, ["bob@example.com"], msg)
        assert code == 250, (code, text)
        assert sgtest.wait_for(lambda: "result=quarantined quarantine=Policy" in s.gw.log(), 30), s.gw.log()[-3000:]
        time.sleep(0.5)
        assert s.hop.accepted == []
        rows = held(s.gw)
        assert len(rows) == 1, rows
        assert rows[0]["filter"] == "quarantine_smime_messages", rows
        assert "smime=fail" in rows[0]["reason"], rows
        shown = json.loads(sgtest.sealctl_ok(s.gw, "--json", "quarantine", "show", rows[0]["id"], "--body"))
        assert "the Quarterly numbers" in shown["body"], shown  # held as it arrived (tampered)
        sgtest.sealctl_ok(s.gw, "quarantine", "release", rows[0]["id"])
        assert s.hop.wait_count(1, 30) == 1, s.gw.log()[-3000:]
        got = s.hop.accepted[0]["data"]
        assert smime_result(got)[0] == "fail"
        assert field(got, "X-Smime-Checked") is None  # the else branch did not run
        assert held(s.gw) == []


@test
def test_undecryptable_message_is_quarantined():
    """Encrypted to a key we do not have: permerror, not verified: held."""
    with inbound() as s:
        other = s.pki.issue("other", "other@example.com")
        msg = message(encrypt(entity(), other[0]), mid="enc@partner.example")
        code, text = sgtest.send_message(s.gw.port, ALICE, ["bob@example.com"], msg)
        assert code == 250, (code, text)
        assert sgtest.wait_for(lambda: len(held(s.gw)) == 1, 30), s.gw.log()[-3000:]
        assert "smime=permerror" in held(s.gw)[0]["reason"]
        assert s.hop.accepted == []


if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS))
