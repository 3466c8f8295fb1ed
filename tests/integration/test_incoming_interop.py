#!/usr/bin/env python3
"""Incoming S/MIME made by another implementation: gpgsm (issue #5).

test_incoming.py feeds the gateway messages made by `openssl cms`; here
GnuPG's gpgsm makes them: a detached and an opaque signature from alice's
key (issued by the test PKI, imported into gpgsm from a legacy PKCS#12
file), encryption to the organisation certificate (`sealctl cert export
org`; gpgsm picks its default CBC cipher and RSA PKCS#1 v1.5),
sign-then-encrypt, triple wrapping (sign, encrypt, sign) and a signature
over text changed afterwards.  A FakeHop records what the gateway
delivers; each test checks the Authentication-Results result
(INTERFACE.md's table) and the content that arrives.

gpgsm writes bare CMS (DER, BER with indefinite lengths where it streams),
never MIME: the S/MIME entities are put together here, CRLF throughout,
and the signed or encrypted input is the exact CRLF entity.  gpgsm has no
AES-GCM, RSA-OAEP or RSA-PSS; test_incoming.py covers those with openssl.
The gpgsm harness (private GNUPGHOME, trustlist, agent retry) is
test_outgoing_interop.Gpgsm.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_incoming_interop.py [NAME...]
"""

import base64
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from test_cert import run  # noqa: E402
from test_incoming import (ALICE, TEXT, Inbound, auth_results, body_text, content_type, entity,  # noqa: E402
                           message, smime_result)
from test_outgoing import write  # noqa: E402
from test_outgoing_interop import P12_PASS, Gpgsm  # noqa: E402

BOUNDARY = "gpgsm-b0undary-%d"
KEEP = "    keep_signature: true\n"
UNWRAP = "    keep_signature: false\n"


# ---------------------------------------------------------------- the gateway, for Gpgsm

class Peer(Inbound):
    """Inbound as test_outgoing_interop.Gpgsm expects its gateway: the
    keys it may import by address (alice's) and why() for assertions."""

    def __init__(self, flow=""):
        super().__init__(flow=flow)
        self.keys = {ALICE: self.alice}

    def why(self, what):
        return "%s\n---- gateway log tail ----\n%s" % (what, self.gw.log()[-3000:])


class Sender(Gpgsm):
    """gpgsm as alice: the partner CA and the organisation certificate are
    trust anchors, alice's key is imported.  sign() and encrypt() return
    the DER gpgsm wrote for the exact input bytes."""

    def __init__(self, s):
        super().__init__(s)
        self.n = 0
        self.trust(s.pki.cert)
        self.org_fpr = self.trust(s.org)
        self.import_key(ALICE)

    def _out(self, data, *args, passphrase=None):
        self.n += 1
        src = write(self.s.tmp, "gpgsm-in-%d" % self.n, data)
        out = os.path.join(self.s.tmp, "gpgsm-out-%d.der" % self.n)
        r = self.ok("--output", out, *args, src, passphrase=passphrase)
        with open(out, "rb") as f:
            return r, f.read()

    def sign(self, data, detached=True):
        r, der = self._out(data, "-u", ALICE, "--detach-sign" if detached else "--sign", passphrase=P12_PASS)
        assert "SIG_CREATED" in r.stdout, self.s.why("gpgsm sign status:\n%s\n%s" % (r.stdout, r.stderr))
        return der

    def encrypt(self, data):
        # gpgsm 2.2 prints no status line for encryption: its exit code
        # (checked by ok()) and a DER SEQUENCE are what we have.
        _, der = self._out(data, "--encrypt", "-r", self.org_fpr)
        assert der[:1] == b"\x30", self.s.why("gpgsm wrote no CMS: %r" % der[:40])
        return der


# ---------------------------------------------------------------- S/MIME entities around gpgsm's DER

def b64(der):
    return base64.encodebytes(der).replace(b"\n", b"\r\n")


def signed_entity(g, content):
    """multipart/signed around content (a CRLF MIME entity, signed byte
    for byte) with gpgsm's detached signature."""
    b = (BOUNDARY % g.n).encode()
    sig = g.sign(content)
    return (b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\";"
            b" micalg=sha-256; boundary=\"" + b + b"\"\r\n\r\nThis is an S/MIME signed message\r\n\r\n--" + b +
            b"\r\n" + content + b"\r\n--" + b + b"\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
            b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7s\r\n\r\n" +
            b64(sig) + b"\r\n--" + b + b"--\r\n")


def p7m_entity(der, smime_type):
    return (b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=" + smime_type +
            b"; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=smime.p7m\r\n\r\n" + b64(der))


def enveloped_entity(g, content):
    return p7m_entity(g.encrypt(content), b"enveloped-data")


def cms_print(s, der, name):
    """openssl's dump of a CMS structure gpgsm wrote (for assertions on
    what gpgsm chose)."""
    return run("openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", write(s.tmp, name, der)).stdout


# ---------------------------------------------------------------- tests

def test_gpgsm_detached_signature_passes():
    """gpgsm --detach-sign over the CRLF entity, wrapped as multipart/signed:
    pass for alice; delivered as it came (keep_signature true)."""
    with Peer(flow=KEEP) as s, Sender(s) as g:
        msg = message(signed_entity(g, entity()))
        got = s.deliver(msg)
        assert smime_result(got) == ("pass", None, ALICE), s.why(auth_results(got))
        assert content_type(got) == "multipart/signed"
        assert body_text(msg) in got  # the signed body byte for byte


def test_gpgsm_opaque_signature_passes_and_is_removed():
    """gpgsm --sign (SignedData with the content inside, BER): pass; with
    keep_signature false the reader gets the text/plain content."""
    with Peer(flow=UNWRAP) as s, Sender(s) as g:
        der = g.sign(entity(), detached=False)
        assert "eContent:" in cms_print(s, der, "opaque.der"), "gpgsm made no opaque SignedData"
        got = s.deliver(message(p7m_entity(der, b"signed-data")))
        assert smime_result(got) == ("pass", None, ALICE), s.why(auth_results(got))
        assert content_type(got) == "text/plain", s.why(got[:600])
        assert body_text(got) == TEXT.encode()


def test_gpgsm_encrypted_to_org_decrypts():
    """gpgsm --encrypt to the organisation certificate (its default CBC
    cipher, RSA PKCS#1 v1.5): decrypted, smime=none, the content arrives."""
    with Peer() as s, Sender(s) as g:
        der = g.encrypt(entity())
        dump = cms_print(s, der, "enc.der")
        assert "rsaEncryption" in dump and "-cbc" in dump.lower(), dump[:3000]
        msg = message(p7m_entity(der, b"enveloped-data"))
        assert b"quarterly" not in msg
        got = s.deliver(msg)
        assert smime_result(got) == ("none", None, None), s.why(auth_results(got))
        assert content_type(got) == "text/plain", s.why(got[:600])
        assert body_text(got) == TEXT.encode()
        assert "action=decrypt " in s.gw.log()


def test_gpgsm_sign_then_encrypt():
    """multipart/signed (gpgsm) encrypted by gpgsm: decrypted, the
    signature passes and is kept (keep_signature true)."""
    with Peer(flow=KEEP) as s, Sender(s) as g:
        inner = signed_entity(g, entity())
        got = s.deliver(message(enveloped_entity(g, inner)))
        assert smime_result(got) == ("pass", None, ALICE), s.why(auth_results(got))
        assert content_type(got) == "multipart/signed", s.why(got[:600])
        assert b"pkcs7-mime" not in got
        assert body_text(message(inner)) == body_text(got)  # the decrypted signed entity, byte for byte


def test_gpgsm_triple_wrapped():
    """sign, encrypt, sign (RFC 2634), each layer by gpgsm: pass, and only
    the inner signature is delivered (keep_signature true)."""
    with Peer(flow=KEEP) as s, Sender(s) as g:
        inner = signed_entity(g, entity())
        triple = signed_entity(g, enveloped_entity(g, inner))
        got = s.deliver(message(triple))
        assert smime_result(got) == ("pass", None, ALICE), s.why(auth_results(got))
        assert content_type(got) == "multipart/signed", s.why(got[:600])
        assert b"pkcs7-mime" not in got and got.count(b"application/pkcs7-signature;") == 1, s.why(got[:2000])
        assert body_text(message(inner)) == body_text(got)


def test_gpgsm_tampered_signature_fails_and_is_delivered():
    """One byte of the signed text changed after gpgsm signed it: fail
    (bad-signature), the message still arrives, signature and all."""
    with Peer(flow=UNWRAP) as s, Sender(s) as g:
        msg = message(signed_entity(g, entity()))
        bad = msg.replace(b"quarterly", b"quarterlY", 1)
        assert bad != msg
        got = s.deliver(bad)
        assert smime_result(got)[:2] == ("fail", "bad-signature"), s.why(auth_results(got))
        assert content_type(got) == "multipart/signed"  # a failed signature is never removed
        assert body_text(bad) in got


def main():
    return sgtest.run_tests([
        test_gpgsm_detached_signature_passes, test_gpgsm_opaque_signature_passes_and_is_removed,
        test_gpgsm_encrypted_to_org_decrypts, test_gpgsm_sign_then_encrypt, test_gpgsm_triple_wrapped,
        test_gpgsm_tampered_signature_fails_and_is_delivered,
    ])


if __name__ == "__main__":
    sys.exit(main())
