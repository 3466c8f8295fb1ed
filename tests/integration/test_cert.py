#!/usr/bin/env python3
"""Organisation certificates in the token: `sealctl init` and `sealctl cert ...`
(R8-R13, R34; issue #3).

Every certificate and CSR we make is checked by OpenSSL's command line,
not by our own code; PKCS#12 files are made by `openssl pkcs12`.  Bad
input must fail with exit 1 and a message naming what was wrong, and
must leave the token as it was.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_cert.py [NAME...]
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def run(*args, input=None, env=None, check=True):
    r = subprocess.run(list(args), capture_output=True, input=input, env=env, timeout=120)
    r.stdout, r.stderr = (x.decode(errors="replace") for x in (r.stdout, r.stderr))
    if check and r.returncode != 0:
        raise AssertionError("%s failed (%d): %s %s" % (args, r.returncode, r.stdout, r.stderr))
    return r


def instance(*init_args):
    return sgtest.Instance(next_hop=sgtest.free_port(), init_args=init_args)


ok, fails = sgtest.sealctl_ok, sgtest.sealctl_fails


def certs(gw):
    return {c["name"]: c for c in json.loads(ok(gw, "--json", "cert", "list"))}


def x509_text(pem, tmp):
    path = os.path.join(tmp, "c.pem")
    with open(path, "w") as f:
        f.write(pem)
    return run("openssl", "x509", "-in", path, "-noout", "-text", "-nameopt", "RFC2253").stdout


def password_file(tmp, pw="correct horse battery"):
    path = os.path.join(tmp, "pw-%d" % abs(hash(pw)))
    with open(path, "w") as f:
        f.write(pw + "\n")
    os.chmod(path, 0o600)
    return path


def make_p12(tmp, name, days=365, ku="digitalSignature,nonRepudiation,keyEncipherment", pw="correct horse battery",
             key="rsa:2048", legacy=False, not_before=None):
    """A key and certificate made by openssl, packed into NAME.p12."""
    key_path, crt, p12 = (os.path.join(tmp, name + s) for s in (".key", ".crt", ".p12"))
    ext = os.path.join(tmp, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,%s\nextendedKeyUsage=emailProtection\n"
                "subjectAltName=email:%s@example.org\n" % (ku, name))
    if key.startswith("ec"):
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key_path)
    else:
        run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + key.split(":")[1],
            "-out", key_path)
    csr = os.path.join(tmp, name + ".csr")
    run("openssl", "req", "-new", "-key", key_path, "-out", csr, "-subj", "/CN=%s.example.org" % name)
    if not_before:  # a validity in the past needs `openssl ca` (x509 -req cannot set the start)
        cnf = os.path.join(tmp, name + ".ca.cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = %s/%s.idx\nnew_certs_dir = %s\nserial = %s/%s.srl\n"
                    "default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n" % (tmp, name, tmp, tmp, name))
        open(os.path.join(tmp, name + ".idx"), "w").close()
        with open(os.path.join(tmp, name + ".srl"), "w") as f:
            f.write("01\n")
        run("openssl", "ca", "-batch", "-config", cnf, "-selfsign", "-keyfile", key_path, "-in", csr, "-out", crt,
            "-startdate", not_before, "-enddate", "20200201000000Z", "-extfile", ext, "-notext")
    else:
        run("openssl", "x509", "-req", "-in", csr, "-signkey", key_path, "-out", crt, "-extfile", ext,
            "-days", str(days))
    run("openssl", "pkcs12", "-export", "-inkey", key_path, "-in", crt, "-out", p12, "-passout", "pass:" + pw,
        *(["-legacy"] if legacy else []))
    return p12, crt, key_path


# ---------------------------------------------------------------- init

def test_init_makes_token_and_org_cert():
    with instance("--domain", "acme.example") as gw:
        c = certs(gw)
        assert list(c) == ["org"], c
        assert c["org"]["key_type"] == "RSA" and c["org"]["key_bits"] == 2048, c
        assert c["org"]["uses"] == "sign,encrypt" and c["org"]["private_key"] is True, c
        text = x509_text(ok(gw, "cert", "export", "org"), gw.base)
        assert "DNS:acme.example" in text, text
        for f in ("hsm/pin", "hsm/so-pin", "hsm/softhsm2.conf", "sealgate.yaml"):
            st = os.stat(os.path.join(gw.dir, f))
            assert st.st_mode & 0o077 == 0, (f, oct(st.st_mode))
        assert os.listdir(os.path.join(gw.dir, "hsm", "tokens")), "no token folder"
        ok(gw, "config", "check")


def test_init_refuses_existing_instance():
    with instance() as gw:
        r = run(sgtest.binary("sealctl"), "init", gw.dir, check=False)
        assert r.returncode == 1 and "already holds" in r.stderr, (r.returncode, r.stderr)
        assert list(certs(gw)) == ["org"]


def test_init_ec_needs_inprocess():
    d = sgtest.tmpdir("ecinit")
    try:
        r = run(sgtest.binary("sealctl"), "init", os.path.join(d, "i"), "--key-type", "ec", check=False)
        assert r.returncode == 2 and "ECDH" in r.stderr, (r.returncode, r.stderr)
        assert not os.path.exists(os.path.join(d, "i", "sealgate.yaml"))
    finally:
        sgtest.cleanup(d)
    with instance("--key-type", "ec", "--hsm", "inprocess") as gw:
        c = certs(gw)["org"]
        assert c["key_type"] == "EC" and c["key_bits"] == 256, c
        text = x509_text(ok(gw, "cert", "export", "org"), gw.base)
        assert "Key Agreement" in text and "Key Encipherment" not in text, text
        ok(gw, "config", "check")


# ---------------------------------------------------------------- create, csr

def test_create_all_fields_openssl_agrees():
    with instance() as gw:
        ok(gw, "cert", "create", "sales", "--cn", "gw.acme.example", "--org", "Acme Ltd", "--ou", "Sales",
           "--city", "Springfield", "--state", "Oregon", "--country", "us", "--days", "90",
           "--san-domains", "acme.example,*.acme.net", "--san-emails", "boss@acme.example",
           "--key-type", "rsa", "--key-size", "3072")
        pem = ok(gw, "cert", "export", "sales")
        text = x509_text(pem, gw.base)
        for want in ("CN=gw.acme.example", "OU=Sales", "O=Acme Ltd", "L=Springfield", "ST=Oregon", "C=US",
                     "Digital Signature, Non Repudiation, Key Encipherment", "E-mail Protection",
                     "CA:FALSE", "Subject Key Identifier", "DNS:acme.example", "DNS:*.acme.net",
                     "email:boss@acme.example", "Public-Key: (3072 bit)"):
            assert want in text, (want, text)
        with open(os.path.join(gw.base, "s.pem"), "w") as f:
            f.write(pem)
        s = os.path.join(gw.base, "s.pem")
        for purpose in ("smimesign", "smimeencrypt"):
            run("openssl", "verify", "-partial_chain", "-trusted", s, "-purpose", purpose, s)
        end = run("openssl", "x509", "-in", s, "-noout", "-checkend", str(89 * 86400)).returncode
        assert end == 0
        assert run("openssl", "x509", "-in", s, "-noout", "-checkend", str(91 * 86400), check=False).returncode == 1
        show = json.loads(ok(gw, "--json", "cert", "show", "sales"))
        assert show["san_domains"] == ["acme.example", "*.acme.net"], show
        assert show["token_uri"].startswith("pkcs11:") and "token=sealgate" in show["token_uri"], show
        assert "pin" not in show["token_uri"], show
        human = ok(gw, "cert", "show", "sales")
        for want in ("fingerprint:", "SHA256", "RSA 3072", "token uri:", "valid:"):
            assert want in human, (want, human)


def test_create_ec_p384():
    with instance("--hsm", "inprocess") as gw:
        ok(gw, "cert", "create", "ec", "--cn", "ec.acme.example", "--key-type", "ec", "--key-size", "384")
        text = x509_text(ok(gw, "cert", "export", "ec"), gw.base)
        assert "secp384r1" in text or "P-384" in text, text
        assert "Key Agreement" in text, text


def test_fqdn_validate():
    with instance() as gw:
        fails(gw, "cert", "create", "x", "--cn", "gateway", "--fqdn-validate", says="gateway")
        fails(gw, "cert", "create", "x", "--cn", "gw.acme.example", "--san-domains", "ok.example,bad_name",
              "--fqdn-validate", says="bad_name")
        fails(gw, "cert", "create", "x", "--cn", "gw.acme.example", "--san-domains", "exa mple.com", says="exa mple.com")
        assert list(certs(gw)) == ["org"]
        ok(gw, "cert", "create", "x", "--cn", "gateway")  # without the flag a plain CN is allowed
        ok(gw, "cert", "create", "y", "--cn", "gw.acme.example", "--san-domains", "*.acme.example",
           "--fqdn-validate")


def test_create_bad_arguments():
    with instance() as gw:
        fails(gw, "cert", "create", "z", code=2, says="--cn")
        fails(gw, "cert", "create", "z", "--cn", "a.example", "--key-size", "1024", code=2, says="2048")
        fails(gw, "cert", "create", "z", "--cn", "a.example", "--key-type", "dsa", code=2, says="rsa or ec")
        fails(gw, "cert", "create", "z", "--cn", "a.example", "--country", "USA", says="country")
        fails(gw, "cert", "create", "z", "--cn", "a.example", "--days", "0", code=2, says="--days")
        fails(gw, "cert", "create", "../x", "--cn", "a.example", says="not a certificate name")
        fails(gw, "cert", "create", "org", "--cn", "a.example", says="already exists")
        fails(gw, "cert", "frobnicate", code=2, says="unknown subcommand")
        assert list(certs(gw)) == ["org"]


def test_csr_verifies_with_same_subject():
    with instance() as gw:
        ok(gw, "cert", "create", "c", "--cn", "gw.acme.example", "--org", "Acme", "--san-domains", "acme.example",
           "--san-emails", "a@acme.example")
        csr = ok(gw, "cert", "csr", "c")
        path = os.path.join(gw.base, "c.csr")
        with open(path, "w") as f:
            f.write(csr)
        r = run("openssl", "req", "-in", path, "-verify", "-noout", "-text", "-nameopt", "RFC2253")
        assert "verify OK" in r.stdout + r.stderr, r.stdout + r.stderr
        assert "CN=gw.acme.example" in r.stdout and "O=Acme" in r.stdout, r.stdout
        assert "DNS:acme.example" in r.stdout and "email:a@acme.example" in r.stdout, r.stdout
        fails(gw, "cert", "csr", "nope", says="no certificate named")


# ---------------------------------------------------------------- import

def test_import_p12_round_trip():
    with instance() as gw:
        p12, crt, _ = make_p12(gw.base, "imp")
        ok(gw, "cert", "import", "imp", p12, "--password-file", password_file(gw.base))
        c = certs(gw)["imp"]
        assert c["private_key"] is True and c["uses"] == "sign,encrypt", c
        exported = ok(gw, "cert", "export", "imp")
        with open(crt) as f:
            assert f.read().strip() in exported
        out = ok(gw, "cert", "check", "imp", "--count", "5")
        assert "5 signatures" in out, out


def test_import_legacy_p12():
    with instance() as gw:
        p12, _, _ = make_p12(gw.base, "leg", legacy=True)
        ok(gw, "cert", "import", "leg", p12, "--password-file", password_file(gw.base))


def test_import_bad_files_leave_nothing():
    with instance() as gw:
        pw = password_file(gw.base)
        good, _, _ = make_p12(gw.base, "good")
        fails(gw, "cert", "import", "a", good, "--password-file", password_file(gw.base, "wrong"),
              says="password")
        with open(good, "rb") as f:
            data = f.read()
        trunc = os.path.join(gw.base, "trunc.p12")
        with open(trunc, "wb") as f:
            f.write(data[:len(data) // 2])
        fails(gw, "cert", "import", "a", trunc, "--password-file", pw)
        junk = os.path.join(gw.base, "junk.p12")
        with open(junk, "wb") as f:
            f.write(os.urandom(3000))
        fails(gw, "cert", "import", "a", junk, "--password-file", pw, says="corrupt")
        fails(gw, "cert", "import", "a", os.path.join(gw.base, "missing.p12"), "--password-file", pw,
              says="missing.p12")
        old, _, _ = make_p12(gw.base, "old", not_before=None, days=1)
        expired, _, _ = make_p12(gw.base, "exp", not_before="20200101000000Z")
        fails(gw, "cert", "import", "a", expired, "--password-file", pw, says="expired")
        badku, _, _ = make_p12(gw.base, "ku", ku="keyCertSign")
        fails(gw, "cert", "import", "a", badku, "--password-file", pw, says="R12")
        small, _, _ = make_p12(gw.base, "small", key="rsa:1024")
        fails(gw, "cert", "import", "a", small, "--password-file", pw, says="1024")
        fails(gw, "cert", "import", "a", good, code=2, says="--password-file")
        assert list(certs(gw)) == ["org"], certs(gw)
        ok(gw, "cert", "import", "a", old, "--password-file", pw)


# ---------------------------------------------------------------- delete, renew, alerts

def test_delete_refuses_while_used():
    with instance() as gw:
        ok(gw, "cert", "create", "used", "--cn", "gw.acme.example")
        gw.append_config("sending_profiles:\n  - name: p\n    mode: sign\n    signing_certificate: used\n")
        ok(gw, "config", "check")
        fails(gw, "cert", "delete", "used", says="sending profile 'p'")
        assert "used" in certs(gw)
        ok(gw, "cert", "create", "spare", "--cn", "gw.acme.example")
        ok(gw, "cert", "delete", "spare")
        assert "spare" not in certs(gw)
        fails(gw, "cert", "delete", "spare", says="no certificate named")


def test_config_check_names_missing_certificate():
    with instance() as gw:
        gw.append_config("sending_profiles:\n  - name: p\n    mode: sign\n    signing_certificate: ghost\n")
        fails(gw, "config", "check", says="ghost")


def test_config_check_rejects_ec_encryption_cert_remote():
    with instance() as gw:
        ok(gw, "cert", "create", "ecc", "--cn", "gw.acme.example", "--key-type", "ec")
        fails(gw, "config", "check", says="ECDH")


def test_renew_keeps_old_key():
    with instance() as gw:
        before = certs(gw)["org"]
        ok(gw, "cert", "create", "org", "--cn", "acme.example", "--renew")
        after = certs(gw)["org"]
        assert after["keys"] == 2 and after["fingerprint"] != before["fingerprint"], (before, after)
        show = json.loads(ok(gw, "--json", "cert", "show", "org"))
        assert show["previous_keys"] == 1, show
        fails(gw, "cert", "create", "nothere", "--cn", "a.example", "--renew", says="nothing to renew")


def test_alerts_warn_before_expiry():
    with instance() as gw:
        assert "no alerts" in ok(gw, "alerts", "list")
        ok(gw, "cert", "create", "soon", "--cn", "gw.acme.example", "--days", "20")
        ok(gw, "cert", "create", "sooner", "--cn", "gw.acme.example", "--days", "5")
        alerts = json.loads(ok(gw, "--json", "alerts", "list"))
        levels = {a["name"]: a["level"] for a in alerts}
        assert levels == {"soon": "warning", "sooner": "critical"}, alerts
        assert "expires in" in ok(gw, "alerts", "list")


# ---------------------------------------------------------------- backup, restore

def openssl_engine_conf(tmp):
    path = os.path.join(tmp, "openssl-p11.cnf")
    with open(path, "w") as f:
        f.write("openssl_conf = init\n[init]\nengines = eng\n[eng]\npkcs11 = p11\n[p11]\n"
                "engine_id = pkcs11\nMODULE_PATH = %s\ninit = 0\n" % SOFTHSM)
    return path


def decrypt_with_token(gw, msg, recip):
    """openssl cms -decrypt with the instance's token (libp11 engine, SoftHSM2 in-process)."""
    with open(os.path.join(gw.dir, "hsm", "pin")) as f:
        pin = f.read().strip()
    env = dict(os.environ, OPENSSL_CONF=openssl_engine_conf(gw.base),
               SOFTHSM2_CONF=os.path.join(gw.dir, "hsm", "softhsm2.conf"))
    r = run("openssl", "cms", "-decrypt", "-in", msg, "-recip", recip, "-engine", "pkcs11", "-keyform", "engine",
            "-inkey", "pkcs11:token=sealgate;object=org;type=private;pin-value=" + pin, env=env, check=False)
    return r


def test_backup_restore_decrypts_old_mail():
    with instance() as a, instance() as b:
        org = os.path.join(a.base, "org.pem")
        with open(org, "w") as f:
            f.write(ok(a, "cert", "export", "org"))
        plain = os.path.join(a.base, "plain.txt")
        with open(plain, "w") as f:
            f.write("Content-Type: text/plain\r\n\r\nthe quarterly numbers\r\n")
        msg = os.path.join(a.base, "msg.p7m")
        run("openssl", "cms", "-encrypt", "-aes256", "-in", plain, "-out", msg, org)
        r = decrypt_with_token(a, msg, org)
        assert r.returncode == 0 and "quarterly numbers" in r.stdout, r.stderr
        pw = password_file(a.base, "backup password 1")
        backup = os.path.join(a.base, "token.backup")
        ok(a, "cert", "backup", backup, "--password-file", pw)
        assert os.stat(backup).st_mode & 0o077 == 0
        with open(backup) as f:
            assert "BEGIN CMS" in f.read()
        # b is a fresh instance with its own org key: it cannot decrypt a's mail
        assert decrypt_with_token(b, msg, org).returncode != 0
        fails(b, "cert", "restore", backup, "--password-file", pw, says="--replace")
        fails(b, "cert", "restore", backup, "--password-file", password_file(b.base, "not the password"),
              says="wrong password")
        ok(b, "cert", "restore", backup, "--password-file", pw, "--replace")
        assert any(n.startswith("replaced-") for n in os.listdir(os.path.join(b.dir, "hsm")))
        r = decrypt_with_token(b, msg, org)
        assert r.returncode == 0 and "quarterly numbers" in r.stdout, r.stderr
        assert certs(b)["org"]["fingerprint"] == certs(a)["org"]["fingerprint"]
        # anyone with the password can open the backup with plain OpenSSL
        r = run("openssl", "cms", "-decrypt", "-inform", "PEM", "-in", backup, "-pwri_password",
                "backup password 1", check=False)
        assert r.returncode == 0, r.stderr


def sealed_archive(tmp, records, password, name="crafted.backup"):
    """A backup-shaped file with the given (path, bytes) records, sealed the
    way `cert backup` seals (PWRI), made by OpenSSL: restore must judge the
    content, not trust it because the password was right."""
    import hashlib
    body = b"SGBACKUP 1\n" + b"".join(b"F %s %d\n" % (p.encode(), len(d)) + d for p, d in records)
    body += b"END " + hashlib.sha256(body).hexdigest().encode() + b"\n"
    plain, out = os.path.join(tmp, name + ".plain"), os.path.join(tmp, name)
    with open(plain, "wb") as f:
        f.write(body)
    run("openssl", "cms", "-encrypt", "-binary", "-aes256", "-pwri_password", password, "-outform", "PEM",
        "-in", plain, "-out", out)
    return out


def test_restore_rejects_bad_archives_and_leaves_nothing():
    with instance() as gw:
        pw_text = "backup password 3"
        pw = password_file(gw.base, pw_text)
        before = certs(gw)
        cases = [
            ([("tokens/x/y.object", b"1")], "no token"),
            ([("tokens/x/token.object", b"1")], "no PIN"),
            ([("pin", b"1234\n"), ("pin", b"5678\n"), ("tokens/x/token.object", b"1")], "write"),
            ([("../evil", b"1"), ("pin", b"1\n")], "damaged"),
            ([("tokens/x/../../evil", b"1")], "damaged"),
        ]
        for i, (records, says) in enumerate(cases):
            f = sealed_archive(gw.base, records, pw_text, "c%d" % i)
            fails(gw, "cert", "restore", f, "--password-file", pw, "--replace", says=says)
            left = [n for n in os.listdir(os.path.join(gw.dir, "hsm")) if n.startswith(("restore-", "replaced-"))]
            assert not left, (says, left)
        assert certs(gw) == before
        fails(gw, "cert", "restore", os.path.join(gw.base, "nothing"), "--password-file", pw, says="nothing")
        fails(gw, "cert", "backup", os.path.join(gw.base, "b"), code=2, says="--password-file")


def test_backup_never_follows_a_planted_symlink():
    with instance() as gw:
        victim = os.path.join(gw.base, "victim")
        with open(victim, "w") as f:
            f.write("keep me\n")
        out = os.path.join(gw.base, "b.pem")
        os.symlink(victim, out + ".tmp")
        ok(gw, "cert", "backup", out, "--password-file", password_file(gw.base, "backup password 4"))
        with open(victim) as f:
            assert f.read() == "keep me\n"
        assert not os.path.islink(out) and os.stat(out).st_mode & 0o077 == 0


def test_restore_refuses_while_daemon_runs():
    with sgtest.Sink() as sink, sgtest.gateway(sink.port) as gw:
        pw = password_file(gw.base, "backup password 2")
        backup = os.path.join(gw.base, "b")
        ok(gw, "cert", "backup", backup, "--password-file", pw)  # allowed while running
        fails(gw, "cert", "restore", backup, "--password-file", pw, "--replace", says="running")


# ---------------------------------------------------------------- the daemon

def test_daemon_uses_remote_token():
    with sgtest.Sink() as sink, sgtest.gateway(sink.port) as gw:
        log = gw.log()
        assert "token server started" in log, log[-3000:]
        out = ok(gw, "cert", "check", "org", "--count", "50")
        assert "50 verified, 0 failed" in out, out
        ok(gw, "cert", "create", "late", "--cn", "gw.acme.example")  # the daemon reloads its keys
        assert "50 verified" in ok(gw, "cert", "check", "late", "--count", "50")
        code, text = sgtest.send_message(gw.port, "a@example.com", ["b@example.net"],
                                         sgtest.make_message("cert1@test"))
        assert code == 250, (code, text)
        # The token server dies; a key the workers never used must still be
        # found once it is back (a dead connection is not a missing key).
        with open(os.path.join(gw.dir, "hsm", "run", "server.pid")) as f:
            pid = int(f.read())
        os.killpg(os.getpgid(pid), 9)
        ok(gw, "cert", "create", "fresh", "--cn", "gw.acme.example")
        assert sgtest.wait_for(lambda: gw.sealctl("cert", "check", "fresh", "--count", "20").returncode == 0, 20), \
            gw.log()[-3000:]


def main():
    return sgtest.run_tests([
        test_init_makes_token_and_org_cert, test_init_refuses_existing_instance, test_init_ec_needs_inprocess,
        test_create_all_fields_openssl_agrees, test_create_ec_p384, test_fqdn_validate, test_create_bad_arguments,
        test_csr_verifies_with_same_subject, test_import_p12_round_trip, test_import_legacy_p12,
        test_import_bad_files_leave_nothing, test_delete_refuses_while_used,
        test_config_check_names_missing_certificate, test_config_check_rejects_ec_encryption_cert_remote,
        test_renew_keeps_old_key, test_alerts_warn_before_expiry, test_backup_restore_decrypts_old_mail,
        test_restore_rejects_bad_archives_and_leaves_nothing, test_backup_never_follows_a_planted_symlink,
        test_restore_refuses_while_daemon_runs, test_daemon_uses_remote_token,
    ])


if __name__ == "__main__":
    sys.exit(main())
