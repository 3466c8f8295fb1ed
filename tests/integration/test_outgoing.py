#!/usr/bin/env python3
"""Outgoing S/MIME end to end (R1-R4, R22-R25; issue #4).

A listener names a sending profile; mail sent to it with a real SMTP
client reaches a scripted next hop (FakeHop, which records each
transaction's recipients and bytes), and what arrived is checked by
OpenSSL's command line, not by our code: signatures verify against the
organisation certificate, encrypted mail decrypts with the recipient's
key, and the recovered content holds what was sent.  Missing keys bounce,
drop or split as configured; a token that cannot be reached makes mail
wait, never bounce.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_outgoing.py [NAME...]
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from test_cert import run  # noqa: E402

BODY = "Grüße aus Köln: the quarterly numbers.\r\n" + "x" * 1200 + "\r\n"


def profile_yaml(mode, **keys):
    extra = "".join("    %s: %s\n" % (k, v) for k, v in keys.items())
    cert = "    signing_certificate: org\n" if mode != "encrypt" else ""
    return "sending_profiles:\n  - name: p\n    mode: %s\n%s%s" % (mode, cert, extra)


def recipient(tmp, address, key="rsa"):
    """A key and self-signed certificate for address (SAN email), by openssl."""
    base = os.path.join(tmp, address.replace("@", "_at_"))
    if key == "ec":
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", base + ".key")
        ku = "digitalSignature,keyAgreement"
    else:
        run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", base + ".key")
        ku = "digitalSignature,keyEncipherment"
    run("openssl", "req", "-new", "-x509", "-key", base + ".key", "-out", base + ".pem", "-days", "30",
        "-subj", "/CN=" + address, "-addext", "subjectAltName=email:" + address,
        "-addext", "keyUsage=critical," + ku, "-addext", "extendedKeyUsage=emailProtection")
    return base + ".pem", base + ".key"


class Setup(sgtest.HopGateway):
    """A FakeHop and a gateway whose listener uses profile p."""

    def __init__(self, mode, keys=(), reply=None, setup=None, init_args=(), **profile):
        self.hop = sgtest.FakeHop(reply=reply)
        self.cm = sgtest.gateway(self.hop.port, yaml=profile_yaml(mode, **profile),
                                 limits={"retry_min": '"1s"', "retry_max": '"2s"'},
                                 edits=[("    flow_policy: default\n",
                                         "    flow_policy: default\n    sending_profile: p\n")],
                                 start=False, setup=setup, init_args=init_args)
        self.gw = self.cm.__enter__()
        self.tmp = self.gw.base
        self.org = os.path.join(self.tmp, "org.pem")
        with open(self.org, "w") as f:
            f.write(self.gw.sealctl("cert", "export", "org", check=True).stdout)
        self.keys = {}
        for addr in keys:
            self.add_key(addr)
        self.gw.start()

    def add_key(self, addr, key="rsa"):
        pem, k = recipient(self.tmp, addr, key)
        r = self.gw.sealctl("pubkey", "add", addr.replace("@", "-at-"), pem)
        assert r.returncode == 0, r.stderr
        self.keys[addr] = (pem, k)

    def send(self, rcpts, mid, body=BODY, headers=()):
        msg = sgtest.make_message(mid, body=body, rcpt=rcpts[0], headers=headers)
        code, text = sgtest.send_message(self.gw.port, "sender@example.com", rcpts, msg)
        assert code == 250, (code, text)
        return msg


def write(tmp, name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def verify(s, path, out_name="content"):
    out = os.path.join(s.tmp, out_name)
    r = run("openssl", "cms", "-verify", "-in", path, "-CAfile", s.org, "-purpose", "smimesign", "-out", out,
            check=False)
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        return f.read()


def decrypt(s, path, addr, out_name="plain"):
    pem, key = s.keys[addr]
    out = os.path.join(s.tmp, out_name)
    run("openssl", "cms", "-decrypt", "-in", path, "-recip", pem, "-inkey", key, "-out", out)
    with open(out, "rb") as f:
        return f.read()


def body_of(entity):
    """The decoded text of a single text/plain entity (QP or 7bit)."""
    import quopri
    head, _, body = entity.partition(b"\r\n\r\n")
    if re.search(rb"(?i)content-transfer-encoding:\s*quoted-printable", head):
        body = quopri.decodestring(body)
    return body.decode("utf-8", "replace")


def rcpts(t):
    """A FakeHop transaction's recipients as bare addresses."""
    return [re.sub(r"(?i)^to:\s*<(.*?)>.*$", r"\1", r) for r in t["rcpts"]]


def one_txn(s, timeout=30):
    assert s.hop.wait_count(1, timeout) >= 1, s.gw.log()[-3000:]
    return s.hop.accepted[0]


# ---------------------------------------------------------------- modes

def test_sign_detached():
    with Setup("sign") as s:
        s.send(["bob@example.net"], "sign1@test")
        t = one_txn(s)
        data = t["data"]
        assert re.search(rb'(?i)content-type: multipart/signed;.*protocol="application/pkcs7-signature"',
                         data.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")), data[:600]
        assert b"micalg=sha-256" in data.lower() or b'micalg="sha-256"' in data.lower(), data[:600]
        assert sgtest.header(data, "Subject") == ["test"] and sgtest.message_id(data) == "sign1@test"
        assert max(len(l) for l in data.split(b"\r\n")) <= 998 and all(b < 128 for b in data)
        content = verify(s, write(s.tmp, "m.eml", data))
        assert "quarterly numbers" in body_of(content) and "Grüße" in body_of(content)
        assert "action=sign result=delivered" in s.gw.log()


def test_sign_opaque():
    with Setup("sign", sign_mode="opaque") as s:
        s.send(["bob@example.net"], "sign2@test")
        data = one_txn(s)["data"]
        assert b"smime-type=signed-data" in data, data[:600]
        assert "quarterly numbers" in body_of(verify(s, write(s.tmp, "m.eml", data)))


def test_encrypt_cbc_and_gcm():
    for enc, ctype in (("aes256-cbc", b"enveloped-data"), ("aes256-gcm", b"authEnveloped-data")):
        with Setup("encrypt", keys=["bob@example.net"], encryption=enc) as s:
            s.send(["bob@example.net"], "enc-%s@test" % enc)
            data = one_txn(s)["data"]
            assert ctype in data, data[:600]
            assert b"quarterly" not in data
            assert "quarterly numbers" in body_of(decrypt(s, write(s.tmp, "m.eml", data), "bob@example.net"))


def test_encrypt_ec_recipient_and_oaep():
    with Setup("encrypt", key_transport="rsa-oaep") as s:
        s.gw.stop()
        s.add_key("bob@example.net")
        s.add_key("eve@example.org", key="ec")
        s.gw.start()
        s.send(["bob@example.net", "eve@example.org"], "enc-mixed@test")
        data = one_txn(s)["data"]
        path = write(s.tmp, "m.eml", data)
        for addr in ("bob@example.net", "eve@example.org"):
            assert "quarterly numbers" in body_of(decrypt(s, path, addr, "p-" + addr))


def test_sign_encrypt():
    with Setup("sign-encrypt", keys=["bob@example.net"]) as s:
        s.send(["bob@example.net"], "se@test")
        path = write(s.tmp, "m.eml", one_txn(s)["data"])
        inner = decrypt(s, path, "bob@example.net")
        content = verify(s, write(s.tmp, "inner.eml", inner))
        assert "quarterly numbers" in body_of(content)


def test_triple_wrap():
    with Setup("triple", keys=["bob@example.net"]) as s:
        s.send(["bob@example.net"], "triple@test")
        path = write(s.tmp, "m.eml", one_txn(s)["data"])
        enveloped = verify(s, path, "outer")
        assert b"enveloped-data" in enveloped, enveloped[:400]
        signed = decrypt(s, write(s.tmp, "env.eml", enveloped), "bob@example.net")
        assert "quarterly numbers" in body_of(verify(s, write(s.tmp, "signed.eml", signed), "inner"))


def test_multipart_attachment_roundtrip():
    """A multipart message with an 8bit text part and a binary attachment:
    after verification the attachment decodes to the same bytes."""
    import base64
    blob = bytes(range(256)) * 40
    boundary = "b-1234"
    body = ("--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Grüße\r\n--%s\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=x.bin\r\n\r\n%s\r\n--%s--\r\n"
            % (boundary, boundary, base64.encodebytes(blob).decode().replace("\n", "\r\n"), boundary))
    with Setup("sign") as s:
        s.send(["bob@example.net"], "mp@test", body=body,
               headers=["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="%s"' % boundary])
        content = verify(s, write(s.tmp, "m.eml", one_txn(s)["data"]))
        b64 = content.split(b"filename=x.bin\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
        assert base64.b64decode(b64) == blob


# ---------------------------------------------------------------- missing keys (R24)

def test_missing_key_bounce():
    with Setup("encrypt", keys=["bob@example.net"]) as s:
        s.send(["bob@example.net", "nokey@example.org"], "bounce@test")
        assert sgtest.wait_for(lambda: s.hop.accepted, 30), s.gw.log()[-3000:]
        dsn = s.hop.accepted[0]
        assert rcpts(dsn) == ["sender@example.com"], dsn["rcpts"]  # the DSN, nothing else
        text = dsn["data"].decode("utf-8", "replace")
        assert "nokey@example.org" in text and "no encryption key" in text, text[:2000]
        time.sleep(1)
        assert len(s.hop.accepted) == 1, [rcpts(t) for t in s.hop.accepted]


def test_missing_key_drop():
    with Setup("encrypt", keys=["bob@example.net"], missing_key_action="drop") as s:
        s.send(["bob@example.net", "nokey@example.org"], "drop@test")
        assert sgtest.wait_for(lambda: "result=dropped" in s.gw.log(), 30), s.gw.log()[-3000:]
        time.sleep(1)
        assert s.hop.accepted == [] and s.gw.queued_files() == []


def test_missing_key_split():
    with Setup("sign-encrypt", keys=["bob@example.net"], missing_key_action="split") as s:
        s.send(["bob@example.net", "nokey@example.org", "nokey2@example.org"], "split@test")
        assert s.hop.wait_count(2, 30) == 2, s.gw.log()[-3000:]
        by = {tuple(sorted(rcpts(t))): t["data"] for t in s.hop.accepted}
        assert set(by) == {("bob@example.net",), ("nokey2@example.org", "nokey@example.org")}, list(by)
        enc = by[("bob@example.net",)]
        assert b"enveloped-data" in enc
        inner = decrypt(s, write(s.tmp, "enc.eml", enc), "bob@example.net")
        assert "quarterly" in body_of(verify(s, write(s.tmp, "inner.eml", inner)))
        plain = by[("nokey2@example.org", "nokey@example.org")]
        assert b"enveloped-data" not in plain and b"multipart/signed" in plain  # signed, not encrypted
        assert "quarterly" in body_of(verify(s, write(s.tmp, "plain.eml", plain), "c2"))


# ---------------------------------------------------------------- the token (R25)

def test_token_unreachable_waits_then_delivers():
    """With the token server gone (keeper and server killed), signed mail
    waits in the spool with a 4xx reason; after a restart it goes out
    signed.  Nothing bounces."""
    with Setup("sign") as s:
        keeper = [int(p) for p in os.listdir("/proc") if p.isdigit() and
                  os.path.exists("/proc/%s/status" % p) and
                  "PPid:\t%d\n" % s.gw.proc.pid in open("/proc/%s/status" % p).read()]
        for pid in keeper:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        s.send(["bob@example.net"], "wait@test")
        assert sgtest.wait_for(lambda: "token unreachable" in s.gw.log(), 30), s.gw.log()[-3000:]
        time.sleep(1)
        assert s.hop.accepted == []
        listing = s.gw.sealctl("queue", "list").stdout
        assert "token unreachable" in listing, listing
        s.gw.restart()
        data = one_txn(s, 90)["data"]
        assert "quarterly numbers" in body_of(verify(s, write(s.tmp, "m.eml", data)))
        assert all(rcpts(t) != ["sender@example.com"] for t in s.hop.accepted)  # no DSN


def test_token_server_killed_under_load_loses_nothing():
    """smtp-source pushes signed mail while the token server is killed
    twice: every message arrives, signed, and nothing bounces."""
    n = 1000
    with Setup("sign") as s:
        src = subprocess.Popen(["smtp-source", "-m", str(n), "-s", "8", "-l", "2048", "-f", "a@example.com",
                                "-t", "b@example.net", "127.0.0.1:%d" % s.gw.port],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        pidfile = os.path.join(s.gw.dir, "hsm", "run", "server.pid")
        for _ in range(2):
            time.sleep(0.4)
            with open(pidfile) as f:
                pid = int(f.read())
            try:
                os.killpg(os.getpgid(pid), 9)
            except ProcessLookupError:
                pass
        assert src.wait(120) == 0, src.stderr.read()
        assert s.hop.wait_count(n, 120) >= n, (len(s.hop.accepted), s.gw.log()[-3000:])
        log = s.gw.log()
        assert log.count("restarting in") >= 2, log[-3000:]  # the kills hit a running gateway
        print("  %d deferred for the token, %d delivered" % (log.count("token unreachable"), len(s.hop.accepted)))
        assert all(rcpts(t) == ["b@example.net"] for t in s.hop.accepted), \
            [rcpts(t) for t in s.hop.accepted if rcpts(t) != ["b@example.net"]][:3]  # no DSN
        for t in s.hop.accepted[:5] + s.hop.accepted[-5:]:
            verify(s, write(s.tmp, "m.eml", t["data"]))


# ---------------------------------------------------------------- review fixes

def test_partial_delivery_is_not_repeated():
    """A processed message frees its original; when one recipient is done
    and another deferred, the spool file must still be rewritten (read back
    first), so a restart does not send the first one a second copy."""
    def reply(stage, t):
        if stage == "RCPT" and "later@" in t["rcpt"]:
            return "451 4.2.0 later"
    with Setup("sign", reply=reply) as s:
        s.send(["bob@example.net", "later@example.net"], "partial@test")
        assert s.hop.wait_count(1, 30) >= 1, s.gw.log()[-3000:]
        assert sgtest.wait_for(lambda: "cannot rewrite" not in s.gw.log() and
                               "later@" in s.gw.sealctl("queue", "list").stdout and
                               "bob@" not in s.gw.sealctl("queue", "list").stdout, 15), \
            (s.gw.sealctl("queue", "list").stdout, s.gw.log()[-3000:])
        s.gw.restart()
        time.sleep(3)
        bobs = [t for t in s.hop.accepted if "bob@example.net" in rcpts(t)]
        assert len(bobs) == 1, (len(bobs), s.gw.log()[-3000:])


def test_key_store_created_at_start_sees_later_keys():
    """Started without a key store folder, the daemon creates it, and a key
    added afterwards is used: nothing goes out unencrypted."""
    import shutil
    with Setup("encrypt", missing_key_action="split",
               setup=lambda gw: shutil.rmtree(os.path.join(gw.dir, "keys"))) as s:
        s.add_key("bob@example.net")
        s.send(["bob@example.net"], "late-key@test")
        data = one_txn(s)["data"]
        assert b"enveloped-data" in data and b"quarterly" not in data, data[:600]


def test_renamed_listener_never_sends_plaintext():
    """Mail accepted under a profile waits when a reload renames its
    listener: it is never relayed unprocessed."""
    first = {"n": 0}

    def reply(stage, t):
        if stage == "MAIL" and first["n"] == 0:
            first["n"] += 1
            return "451 4.3.0 not yet"
    with Setup("encrypt", keys=["bob@example.net"], reply=reply) as s:
        s.send(["bob@example.net"], "renamed@test")
        assert sgtest.wait_for(lambda: first["n"] == 1, 15)
        s.gw.edit_config("  - name: main\n", "  - name: renamed\n")
        assert s.gw.sealctl("reload").returncode == 0, s.gw.log()[-2000:]
        s.gw.sealctl("queue", "flush")
        assert sgtest.wait_for(lambda: "no longer configured" in s.gw.log(), 20), s.gw.log()[-3000:]
        assert all(b"quarterly" not in t["data"] for t in s.hop.accepted)


def main():
    return sgtest.run_tests([
        test_sign_detached, test_sign_opaque, test_encrypt_cbc_and_gcm, test_encrypt_ec_recipient_and_oaep,
        test_sign_encrypt, test_triple_wrap, test_multipart_attachment_roundtrip, test_missing_key_bounce,
        test_missing_key_drop, test_missing_key_split, test_token_unreachable_waits_then_delivers,
        test_token_server_killed_under_load_loses_nothing, test_partial_delivery_is_not_repeated,
        test_key_store_created_at_start_sees_later_keys, test_renamed_listener_never_sends_plaintext,
    ])


if __name__ == "__main__":
    sys.exit(main())
