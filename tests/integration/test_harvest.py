#!/usr/bin/env python3
"""Harvesting end to end (R17-R21; issue #5).

One gateway with three listeners: "in" (incoming for example.com, flow
policy "in" that decrypts, verifies and harvests), "main" (outgoing,
profile "enc": encrypt, encryption auto) and "signer" (outgoing, profile
"sig": sign).  Signed mail arriving on "in" leaves its signer's
certificate in the key store; mail then sent on "main" to that signer goes
out encrypted to the harvested key, which openssl decrypts with the
signer's private key.  A substituted certificate for a known sender is
held, never used, until `sealctl harvested promote`; a second update
within 48 hours raises an alert (R19); a certificate announcing
AES-256-GCM (our own signatures do) makes `encryption: auto` choose GCM.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_harvest.py [NAME...]
"""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from test_cert import run  # noqa: E402
from test_incoming import ALICE, PKI, auth_results, entity, message, sign, smime_result  # noqa: E402

LISTENERS = """  - name: in
    address: 127.0.0.1:{inport}
    direction: incoming
    flow_policy: in
    local_domains: ["example.com"]
    next_hop: 127.0.0.1:{hop}
  - name: signer
    address: 127.0.0.1:{sigport}
    direction: outgoing
    sending_profile: sig
    next_hop: 127.0.0.1:{hop}
"""

FLOW = """  - name: in
    smime_decrypt_verify: true
    harvest: {{ enabled: true, updated_keys: {updated}, self_signed: {self_signed} }}
"""

PROFILES = """sending_profiles:
  - name: enc
    mode: encrypt
    encryption: auto
  - name: sig
    mode: sign
    signing_certificate: org
"""


class Harvest(sgtest.HopGateway):
    def __init__(self, updated="false", self_signed="false"):
        self.hop = sgtest.FakeHop()
        self.inport, self.sigport = sgtest.free_port(), sgtest.free_port()

        def setup(gw):
            text = gw.read_config()
            text = text.replace("    flow_policy: default\n", "    flow_policy: default\n    sending_profile: enc\n")
            text = text.replace("flow_policies:\n", "flow_policies:\n" + FLOW.format(updated=updated,
                                                                                     self_signed=self_signed))
            text = text.replace("listeners:\n", "listeners:\n" + LISTENERS.format(
                inport=self.inport, sigport=self.sigport, hop=self.hop.port))
            gw.write_config(text + PROFILES)

        self.cm = sgtest.gateway(self.hop.port, start=False, setup=setup,
                                 limits={"retry_min": '"1s"', "retry_max": '"2s"'})
        self.gw = self.cm.__enter__()
        self.tmp = self.gw.base
        self.pki = PKI(self.tmp)
        sgtest.sealctl_ok(self.gw, "ca", "import", "partners", self.pki.cert)
        self.gw.start()

    def send(self, port, sender, rcpt, msg):
        n = len(self.hop.accepted)
        code, text = sgtest.send_message(port, sender, [rcpt], msg)
        assert code == 250, (code, text)
        assert self.hop.wait_count(n + 1, 30) > n, self.gw.log()[-3000:]
        return self.hop.accepted[n]["data"]

    def inbound(self, cert_key, sender=ALICE, mid="in@partner.example"):
        return self.send(self.inport, sender, "bob@example.com", message(sign(entity(), *cert_key), sender=sender,
                                                                          mid=mid))

    def outbound(self, rcpt=ALICE, mid="out@example.com"):
        """Mail from bob to rcpt on the encrypting listener; what left."""
        msg = sgtest.make_message(mid, body="reply with the numbers\r\n", sender="bob@example.com", rcpt=rcpt)
        return self.send(self.gw.port, "bob@example.com", rcpt, msg)

    def decrypts_with(self, data, cert_key):
        path = os.path.join(self.tmp, "out.eml")
        with open(path, "wb") as f:
            f.write(data)
        r = run("openssl", "cms", "-decrypt", "-in", path, "-recip", cert_key[0], "-inkey", cert_key[1], check=False)
        return r.returncode == 0 and "reply with the numbers" in r.stdout

    def harvested(self):
        return json.loads(sgtest.sealctl_ok(self.gw, "--json", "harvested", "list"))


def test_harvest_then_encrypt():
    """R17: a verified signer's certificate is harvested and used to
    encrypt mail to its owner."""
    with Harvest() as h:
        alice = h.pki.issue("alice", ALICE)
        got = h.inbound(alice)
        assert smime_result(got)[0] == "pass", auth_results(got)
        assert sgtest.wait_for(lambda: "harvest=added key=<%s>" % ALICE in h.gw.log(), 10), h.gw.log()[-2000:]
        rows = h.harvested()
        assert [x["name"] for x in rows] == [ALICE], rows
        out = h.outbound()
        assert b"application/pkcs7-mime" in out
        assert h.decrypts_with(out, alice)


def test_substituted_key_is_held():
    """A different certificate for a known sender (updated_keys off) is
    held and not used; `harvested promote` makes it the one used (R21)."""
    with Harvest() as h:
        alice = h.pki.issue("alice", ALICE)
        h.inbound(alice)
        assert sgtest.wait_for(lambda: "harvest=added" in h.gw.log(), 10)
        time.sleep(1.1)  # a later notBefore for the substitute
        mallory = h.pki.issue("alice-sub", ALICE)
        h.inbound(mallory, mid="sub@partner.example")
        assert sgtest.wait_for(lambda: "harvest=held key=<%s>" % ALICE in h.gw.log(), 10), h.gw.log()[-2000:]
        rows = h.harvested()
        assert sorted(x.get("held", False) for x in rows) == [False, True], rows
        out = h.outbound()
        assert h.decrypts_with(out, alice) and not h.decrypts_with(out, mallory)
        sgtest.sealctl_ok(h.gw, "harvested", "promote", ALICE, "alice-promoted")
        out = h.outbound(mid="after-promote@example.com")
        assert h.decrypts_with(out, mallory), h.gw.log()[-2000:]


def test_second_update_within_48h_alerts():
    """R19: with updated_keys, a newer key replaces the known one; a second
    update within 48 hours is held and raises an alert."""
    with Harvest(updated="true") as h:
        now = time.time()

        def stamp(t):
            return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))
        k1 = h.pki.issue("k1", ALICE, start=stamp(now - 86400), end=stamp(now + 30 * 86400))
        k2 = h.pki.issue("k2", ALICE, start=stamp(now - 3600), end=stamp(now + 30 * 86400))
        k3 = h.pki.issue("k3", ALICE, start=stamp(now - 60), end=stamp(now + 30 * 86400))
        h.inbound(k1, mid="k1@partner.example")
        assert sgtest.wait_for(lambda: "harvest=added" in h.gw.log(), 10)
        h.inbound(k2, mid="k2@partner.example")
        assert sgtest.wait_for(lambda: "harvest=replaced key=<%s>" % ALICE in h.gw.log(), 10), h.gw.log()[-2000:]
        assert h.decrypts_with(h.outbound(mid="o2@example.com"), k2)
        h.inbound(k3, mid="k3@partner.example")
        assert sgtest.wait_for(lambda: "ALERT: more than one updated key for <%s>" % ALICE in h.gw.log(), 10)
        assert h.decrypts_with(h.outbound(mid="o3@example.com"), k2)  # k3 held, not used
        out = sgtest.sealctl_ok(h.gw, "alerts", "list")
        assert ALICE in out, out


def test_untrusted_and_self_signed_not_harvested():
    """R18: no harvest from an untrusted chain or a self-signed certificate
    by default; mail to that sender then has no key (bounce)."""
    with Harvest() as h:
        stranger = PKI(h.tmp, "Unknown CA").issue("x", ALICE)
        got = h.inbound(stranger)
        assert smime_result(got)[:2] == ("policy", "untrusted")
        assert sgtest.wait_for(lambda: "harvest=skipped" in h.gw.log(), 10)
        assert h.harvested() == []


def test_gcm_capability_chooses_gcm():
    """Our own signatures announce AES-256-GCM: harvested (a self-signed
    domain certificate, allowed by harvest.self_signed), `encryption:
    auto` then encrypts to that domain with AES-256-GCM."""
    with Harvest(self_signed="true") as h:
        signed = h.send(h.sigport, "carol@example.com", "dave@example.com",
                        sgtest.make_message("s@example.com", sender="carol@example.com", rcpt="dave@example.com"))
        assert b"multipart/signed" in signed
        got = h.send(h.inport, "carol@example.com", "bob@example.com", signed)
        assert smime_result(got)[:2] == ("policy", "untrusted"), auth_results(got)
        assert sgtest.wait_for(lambda: "harvest=added key=<example.com>" in h.gw.log(), 10), h.gw.log()[-2000:]
        out = h.outbound(rcpt="erin@example.com")
        assert re.search(rb"smime-type=\"?authEnveloped-data", out), out[:800]


def main():
    return sgtest.run_tests([
        test_harvest_then_encrypt, test_substituted_key_is_held, test_second_update_within_48h_alerts,
        test_untrusted_and_self_signed_not_harvested, test_gcm_capability_chooses_gcm,
    ])


if __name__ == "__main__":
    sys.exit(main())
