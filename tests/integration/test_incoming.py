#!/usr/bin/env python3
"""Incoming S/MIME end to end (R5, R6, R14, R31-R33; issue #5).

An incoming listener whose flow policy decrypts and verifies receives
messages that OpenSSL's `cms` command made (not our code): detached and
opaque signatures, AES-256-CBC and AES-256-GCM encryption to the
organisation certificate, sign-then-encrypt and triple wrapping.  A
FakeHop records what the gateway delivers; each test checks the
Authentication-Results header against INTERFACE.md's table, the content
that arrives, and that every message is delivered whatever the outcome
(R32): tampered, wrong key, expired or untrusted signer, From mismatch,
a GCM message with a flipped tag (no plaintext released).

The senders' PKI is made here with `openssl req`/`openssl ca`: a partner
CA imported with `sealctl ca import`, end-entity certificates for
alice@partner.example, an expired one, one from a CA we do not trust.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_incoming.py [NAME...]
"""

import base64
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from test_cert import run  # noqa: E402

ALICE = "alice@partner.example"
TEXT = "the quarterly numbers, for your eyes only\r\n"


# ---------------------------------------------------------------- a PKI

class PKI:
    """A CA made with openssl in folder d; issue() makes end-entity certs."""

    def __init__(self, d, name="Partner CA"):
        self.d = os.path.join(d, re.sub(r"\W", "_", name))
        os.makedirs(os.path.join(self.d, "new"))
        open(os.path.join(self.d, "index.txt"), "w").close()
        with open(os.path.join(self.d, "serial"), "w") as f:
            f.write("1000\n")
        self.key = os.path.join(self.d, "ca.key")
        self.cert = os.path.join(self.d, "ca.pem")
        self.conf = os.path.join(self.d, "ca.cnf")
        with open(self.conf, "w") as f:
            f.write("[ca]\ndefault_ca = c\n[c]\ndir = %s\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/new\n"
                    "serial = $dir/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
                    "copy_extensions = copy\ndefault_crl_days = 30\n[p]\ncommonName = supplied\n" % self.d)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", self.cert,
            "-days", "365", "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, tag, email, start=None, end=None, ku="digitalSignature,nonRepudiation,keyEncipherment"):
        """(cert, key) for email, valid from start to end (YYYYMMDDHHMMSSZ) or for 30 days."""
        base = os.path.join(self.d, tag)
        run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", base + ".key", "-out",
            base + ".csr", "-subj", "/CN=" + email, "-addext", "subjectAltName=email:" + email,
            "-addext", "keyUsage=critical," + ku, "-addext", "extendedKeyUsage=emailProtection")
        dates = ["-startdate", start, "-enddate", end] if start else ["-days", "30"]
        run("openssl", "ca", "-batch", "-config", self.conf, "-cert", self.cert, "-keyfile", self.key,
            "-in", base + ".csr", "-out", base + ".pem", "-notext", *dates)
        return base + ".pem", base + ".key"

    def revoke(self, cert):
        """Revoke cert and return the path of a fresh PEM CRL."""
        run("openssl", "ca", "-config", self.conf, "-cert", self.cert, "-keyfile", self.key, "-revoke", cert)
        crl = os.path.join(self.d, "crl.pem")
        run("openssl", "ca", "-config", self.conf, "-cert", self.cert, "-keyfile", self.key, "-gencrl", "-out", crl)
        return crl


# ---------------------------------------------------------------- messages

def entity(text=TEXT):
    return ("Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text).encode()


def cms(*args, data):
    """openssl cms ARGS with data on stdin; the S/MIME output (bytes)."""
    r = subprocess.run(["openssl", "cms", *args], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def sign(data, cert, key, *extra):
    return cms("-sign", "-signer", cert, "-inkey", key, "-md", "sha256", *extra, data=data)


def encrypt(data, *certs, cipher="-aes256"):
    return cms("-encrypt", cipher, *certs, data=data)


def message(smime, sender=ALICE, rcpt="bob@example.com", mid="m1@partner.example", extra=()):
    """RFC 5322 header fields in front of openssl's S/MIME output (which
    starts with MIME-Version and Content-Type); CRLF throughout."""
    h = ["From: <%s>" % sender, "To: <%s>" % rcpt, "Subject: incoming test",
         "Date: Thu, 01 Jan 2026 00:00:00 +0000", "Message-ID: <%s>" % mid, *extra]
    body = smime.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return ("\r\n".join(h) + "\r\n").encode() + body


def flip_gcm_tag(msg):
    """The message with the last byte of its AuthEnvelopedData (the GCM
    tag sits at the end of the DER) flipped."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    der = bytearray(base64.b64decode(b"".join(body.split())))
    der[-1] ^= 0x01
    b64 = base64.encodebytes(bytes(der)).replace(b"\n", b"\r\n")
    return head + sep + b64


# ---------------------------------------------------------------- the gateway

class Inbound(sgtest.HopGateway):
    """A gateway whose listener is incoming for example.com, with flow
    policy options, the partner CA imported; a FakeHop behind it."""

    def __init__(self, flow="", setup=None, ca=True):
        self.hop = sgtest.FakeHop()
        yaml_flow = ("flow_policies:\n  - name: default\n    smime_decrypt_verify: true\n%s" % flow)
        self.cm = sgtest.gateway(
            self.hop.port, start=False, setup=setup,
            limits={"retry_min": '"1s"', "retry_max": '"2s"'},
            edits=[("    direction: outgoing\n", "    direction: incoming\n    local_domains: [\"example.com\"]\n"),
                   ("flow_policies:\n  - name: default\n", yaml_flow)])
        self.gw = self.cm.__enter__()
        self.tmp = self.gw.base
        self.org = os.path.join(self.tmp, "org.pem")
        with open(self.org, "w") as f:
            f.write(self.gw.sealctl("cert", "export", "org", check=True).stdout)
        self.pki = PKI(self.tmp)
        self.alice = self.pki.issue("alice", ALICE)
        if ca:
            sgtest.sealctl_ok(self.gw, "ca", "import", "partners", self.pki.cert)
        self.gw.start()

    def deliver(self, msg, sender=ALICE, rcpt="bob@example.com"):
        """Send msg; return the bytes the next hop received."""
        n = len(self.hop.accepted)
        code, text = sgtest.send_message(self.gw.port, sender, [rcpt], msg)
        assert code == 250, (code, text)
        assert self.hop.wait_count(n + 1, 30) > n, self.gw.log()[-3000:]
        return self.hop.accepted[n]["data"]


def auth_results(data):
    """Our Authentication-Results fields (unfolded)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields = re.findall(r"(?im)^Authentication-Results:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", head)
    return [re.sub(r"\r\n[ \t]+", " ", f) for f in fields]


def smime_result(data, host="gw.test.example"):
    """(result, reason, identifier) of the one smime= result naming host."""
    ours = [f for f in auth_results(data) if re.match(r"(?i)Authentication-Results:\s*%s\s*;" % re.escape(host), f)]
    assert len(ours) == 1, ours
    m = re.search(r"smime=(\w+)(?: reason=\"([^\"]*)\")?(?: body\.smime-identifier=(\S+))?", ours[0])
    assert m, ours[0]
    return m.group(1), m.group(2), m.group(3)


def body_text(data):
    return data.split(b"\r\n\r\n", 1)[1]


def content_type(data):
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    m = re.search(r"(?im)^Content-Type:\s*([^;\r\n]+)", head)
    return m.group(1).strip().lower() if m else None


# ---------------------------------------------------------------- signatures

def test_detached_pass():
    """A detached signature from a partner-CA certificate matching From:
    smime=pass with the signer's address; delivered as it came (R31 keep)."""
    with Inbound() as s:
        msg = message(sign(entity(), *s.alice))
        got = s.deliver(msg)
        assert smime_result(got) == ("pass", None, ALICE), auth_results(got)
        assert content_type(got) == "multipart/signed"
        assert msg.split(b"\r\n\r\n", 1)[1] in got  # the signed body byte for byte
        r = run("openssl", "cms", "-verify", "-CAfile", s.pki.cert, "-purpose", "smimesign", input=got, check=False)
        assert r.returncode == 0, r.stderr


def test_opaque_pass():
    with Inbound() as s:
        got = s.deliver(message(sign(entity(), *s.alice, "-nodetach")))
        assert smime_result(got)[0] == "pass"
        assert content_type(got) == "application/pkcs7-mime"


def test_keep_signature_false_removes_it():
    """keep_signature false: a verified signature layer is removed, the
    content arrives as the signer wrote it (detached and opaque)."""
    with Inbound(flow="    keep_signature: false\n") as s:
        for extra in ((), ("-nodetach",)):
            got = s.deliver(message(sign(entity(), *s.alice, *extra)))
            assert smime_result(got)[0] == "pass"
            assert content_type(got) == "text/plain", got[:600]
            assert body_text(got) == TEXT.encode()


def test_tampered_fails_and_is_delivered():
    with Inbound(flow="    keep_signature: false\n") as s:
        msg = message(sign(entity(), *s.alice)).replace(b"quarterly", b"QUARTERLY", 1)
        got = s.deliver(msg)
        res = smime_result(got)
        assert res[0] == "fail" and res[1] == "bad-signature", res
        assert content_type(got) == "multipart/signed"  # a signature that failed is never removed
        assert b"QUARTERLY" in got


def test_from_mismatch_is_policy():
    with Inbound() as s:
        got = s.deliver(message(sign(entity(), *s.alice), sender="mallory@partner.example"),
                        sender="mallory@partner.example")
        assert smime_result(got)[:2] == ("policy", "from-mismatch")


def test_untrusted_signer_is_policy():
    """A CA nobody imported: the signature verifies, the signer does not."""
    with Inbound() as s:
        other = PKI(s.tmp, "Unknown CA")
        got = s.deliver(message(sign(entity(), *other.issue("alice2", ALICE))))
        assert smime_result(got)[:2] == ("policy", "untrusted")


def test_expired_signer_is_policy():
    with Inbound() as s:
        old = s.pki.issue("old", ALICE, start="20200101000000Z", end="20210101000000Z")
        got = s.deliver(message(sign(entity(), *old)))
        assert smime_result(got)[:2] == ("policy", "expired")


def test_revoked_signer_is_policy():
    """A CRL imported with the CA list (sealctl ca import) revokes alice."""
    with Inbound(ca=False) as s:
        crl = s.pki.revoke(s.alice[0])
        both = os.path.join(s.tmp, "ca+crl.pem")
        with open(both, "w") as f:
            f.write(open(s.pki.cert).read() + open(crl).read())
        sgtest.sealctl_ok(s.gw, "ca", "import", "partners", both)
        got = s.deliver(message(sign(entity(), *s.alice)))
        assert smime_result(got)[:2] == ("policy", "revoked"), auth_results(got)


def test_revocation_hard_and_crl_files():
    """revocation: hard (extension): no CRL for alice's issuer is a policy
    failure; a CRL given in trust.crl_files (not listing alice) passes.
    An unreadable CRL file is named by `sealctl config check`."""
    with Inbound(flow="    revocation: hard\n") as s:
        got = s.deliver(message(sign(entity(), *s.alice)))
        assert smime_result(got)[:2] == ("policy", "revocation-unknown"), auth_results(got)
        other = s.pki.issue("bob", "bob@partner.example")
        crl = s.pki.revoke(other[0])
        s.gw.append_config("trust:\n  crl_files: [\"%s\"]\n" % crl)
        sgtest.sealctl_ok(s.gw, "reload")
        got = s.deliver(message(sign(entity(), *s.alice), mid="m2@partner.example"))
        assert smime_result(got)[0] == "pass", auth_results(got)
        s.gw.edit_config(crl, crl + ".missing")
        sgtest.sealctl_fails(s.gw, "config", "check", says="crl.pem.missing")


def test_forged_results_removed():
    """An Authentication-Results field claiming to be ours is removed, one
    from another host stays (INTERFACE.md)."""
    with Inbound() as s:
        forged = ["Authentication-Results: gw.test.example; smime=pass body.smime-identifier=ceo@example.com",
                  "Authentication-Results: (comment) GW.TEST.EXAMPLE;\r\n\tsmime=pass",
                  "Authentication-Results: \"gw.test.example\"; smime=pass",
                  "Authentication-Results: (x \\) y) gw.test.example; smime=pass",
                  "Authentication-Results: mx.elsewhere.example; spf=pass"]
        got = s.deliver(message(b"Content-Type: text/plain\r\n\r\nno signature here\r\n", extra=forged))
        assert smime_result(got) == ("none", None, None)
        assert len(auth_results(got)) == 2, auth_results(got)
        assert any("mx.elsewhere.example" in f for f in auth_results(got))


# ---------------------------------------------------------------- encryption

def test_encrypted_cbc_decrypts():
    with Inbound() as s:
        got = s.deliver(message(encrypt(entity(), s.org)))
        assert smime_result(got) == ("none", None, None)  # decrypted, but nobody signed it
        assert content_type(got) == "text/plain"
        assert body_text(got) == TEXT.encode()
        assert "action=decrypt " in s.gw.log()


def test_encrypted_gcm_decrypts():
    with Inbound() as s:
        got = s.deliver(message(encrypt(entity(), s.org, cipher="-aes-256-gcm")))
        assert body_text(got) == TEXT.encode()


def test_gcm_flipped_tag_releases_nothing():
    """EFAIL: a wrong GCM tag is a failed decryption: the message goes on
    as it came (still encrypted), and no plaintext reaches the next hop."""
    with Inbound() as s:
        msg = flip_gcm_tag(message(encrypt(entity(), s.org, cipher="-aes-256-gcm")))
        got = s.deliver(msg)
        assert smime_result(got)[:2] == ("permerror", "decryption failed")
        assert b"quarterly" not in got
        assert content_type(got) == "application/pkcs7-mime"
        assert body_text(got) == body_text(msg)


def test_wrong_key_is_permerror():
    with Inbound() as s:
        other = PKI(s.tmp, "Other CA").issue("stranger", "stranger@example.com")
        msg = message(encrypt(entity(), other[0]))
        got = s.deliver(msg)
        assert smime_result(got)[:2] == ("permerror", "decryption failed")
        assert body_text(got) == body_text(msg)


def test_sign_then_encrypt():
    """Signed inside encrypted: decrypted, signature checked and kept."""
    with Inbound() as s:
        got = s.deliver(message(encrypt(sign(entity(), *s.alice), s.org)))
        assert smime_result(got) == ("pass", None, ALICE)
        assert content_type(got) == "multipart/signed"
        assert b"quarterly" in got


def test_triple_wrapped():
    """sign, encrypt, sign (RFC 2634): only the inner signature is kept
    (R31), or removed with keep_signature false."""
    with Inbound() as s:
        triple = sign(encrypt(sign(entity(), *s.alice), s.org), *s.alice)
        got = s.deliver(message(triple))
        assert smime_result(got)[0] == "pass"
        assert content_type(got) == "multipart/signed"
        assert got.count(b"application/pkcs7-signature") >= 1 and b"pkcs7-mime" not in got
    with Inbound(flow="    keep_signature: false\n") as s:
        triple = sign(encrypt(sign(entity(), *s.alice), s.org), *s.alice)
        got = s.deliver(message(triple))
        assert smime_result(got)[0] == "pass"
        assert content_type(got) == "text/plain" and body_text(got) == TEXT.encode()


def test_encrypt_then_sign():
    """Encrypted inside signed (the reverse nesting): both layers opened."""
    with Inbound() as s:
        got = s.deliver(message(sign(encrypt(entity(), s.org), *s.alice)))
        assert smime_result(got)[0] == "pass"
        assert content_type(got) == "text/plain" and body_text(got) == TEXT.encode()


def test_disabled_flow_relays_unchanged():
    """smime_decrypt_verify false: nothing is opened, no header added; a
    result claiming our host name is still removed (any incoming mail)."""
    with Inbound(flow="") as s:
        s.gw.edit_config("    smime_decrypt_verify: true\n", "    smime_decrypt_verify: false\n")
        sgtest.sealctl_ok(s.gw, "reload")
        msg = message(encrypt(entity(), s.org), extra=["Authentication-Results: gw.test.example; smime=pass"])
        got = s.deliver(msg)
        assert auth_results(got) == []
        assert body_text(got) == body_text(msg)


def test_inner_headers_not_spliced():
    """EFAIL-style splicing: a decrypted (or signed) entity's own From,
    Subject or result header never becomes the message's: only its
    Content-* fields are taken."""
    with Inbound() as s:
        inner = ("From: <ceo@example.com>\r\nSubject: wire the money\r\n"
                 "Authentication-Results: gw.test.example; smime=pass body.smime-identifier=ceo@example.com\r\n"
                 "Content-Type: text/plain\r\n\r\n" + TEXT).encode()
        got = s.deliver(message(encrypt(inner, s.org)))
        head = got.split(b"\r\n\r\n", 1)[0]
        assert b"ceo@example.com" not in head and b"wire the money" not in head, head
        assert len(re.findall(rb"(?im)^From:", head)) == 1
        assert smime_result(got) == ("none", None, None)
        assert body_text(got) == TEXT.encode()


def test_two_from_fields_never_pass():
    """A signature cannot vouch for a sender shown two ways: two From
    fields, or one From with two mailboxes, is policy no-from."""
    with Inbound() as s:
        signed = sign(entity(), *s.alice)
        got = s.deliver(message(signed, extra=["From: <ceo@example.com>"]))
        assert smime_result(got)[:2] == ("policy", "no-from"), auth_results(got)
        got = s.deliver(message(signed, sender="%s>, <ceo@example.com" % ALICE, mid="m3@partner.example"))
        assert smime_result(got)[:2] == ("policy", "no-from"), auth_results(got)


def main():
    return sgtest.run_tests([
        test_detached_pass, test_opaque_pass, test_keep_signature_false_removes_it,
        test_tampered_fails_and_is_delivered, test_from_mismatch_is_policy, test_untrusted_signer_is_policy,
        test_expired_signer_is_policy, test_revoked_signer_is_policy, test_revocation_hard_and_crl_files,
        test_forged_results_removed,
        test_encrypted_cbc_decrypts, test_encrypted_gcm_decrypts, test_gcm_flipped_tag_releases_nothing,
        test_wrong_key_is_permerror, test_sign_then_encrypt, test_triple_wrapped, test_encrypt_then_sign,
        test_disabled_flow_relays_unchanged, test_inner_headers_not_spliced, test_two_from_fields_never_pass,
    ])


if __name__ == "__main__":
    sys.exit(main())
