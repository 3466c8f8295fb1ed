#!/usr/bin/env python3
"""Others' public keys, harvested keys and CA lists: `sealctl pubkey ...`,
`sealctl harvested ...`, `sealctl ca ...` and the key store's alerts in
`sealctl alerts list` (R13, R15-R22; issues #4, #5).

Certificates are made by the openssl command line.  The 10,000-key
import uses a file this test writes itself: one template certificate made
by openssl, then 10,000 copies with a different SAN e-mail each, re-signed
here in pure Python (RSA PKCS#1 v1.5 with the issuer's key numbers, which
openssl prints), so the test needs nothing beyond Debian's python3 and
every certificate in the file is real (a sample is checked with
`openssl verify`).  Bad input must fail with exit 1 and a message naming
the file, and must leave the store as it was.

Harvesting happens in the daemon from signed mail; here the store is
seeded by `harvest_put` (tests/crypto/harvest_put.c, built beside the unit
tests), which files a certificate exactly as the daemon does.  Certificates
with chosen notBefore dates and real CRLs come from a small `openssl ca`.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_pubkey.py [NAME...]
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402


def run(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError("%s failed (%d): %s %s" % (args, r.returncode, r.stdout, r.stderr))
    return r


def instance():
    return sgtest.Instance(next_hop=sgtest.free_port())


ok, fails = sgtest.sealctl_ok, sgtest.sealctl_fails


def pubkeys(gw):
    keys = json.loads(ok(gw, "--json", "pubkey", "list"))
    assert all("name" in k for k in keys), keys
    return {k["name"]: k for k in keys}


def make_cert(tmp, name, san, key="rsa", ku="digitalSignature,keyEncipherment", ca=False, days=30):
    """A self-signed certificate NAME.crt made by openssl."""
    key_path, crt = os.path.join(tmp, name + ".key"), os.path.join(tmp, name + ".crt")
    alg = ["-newkey", "rsa:2048"] if key == "rsa" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"] \
        if ca else ["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "keyUsage=critical," + ku]
    if san:
        ext += ["-addext", "subjectAltName=" + san]
    run("openssl", "req", "-x509", *alg, "-nodes", "-keyout", key_path, "-out", crt, "-subj", "/CN=" + name,
        "-days", str(days), "-config", "/dev/null", *ext)
    return crt


# ---------------------------------------------------------------- pubkey

def test_add_list_show_delete():
    with instance() as gw:
        rsa = make_cert(gw.base, "alice", "email:alice@partner.example")
        ec = make_cert(gw.base, "partner", "DNS:partner.example", key="ec", ku="digitalSignature,keyAgreement")
        out = ok(gw, "pubkey", "add", "alice", rsa)
        assert "no chain check" in out, out
        ok(gw, "pubkey", "add", "partner", ec)
        fails(gw, "pubkey", "add", "alice", ec, says="exists")
        keys = pubkeys(gw)
        assert sorted(keys) == ["alice", "partner"], keys
        assert keys["alice"]["emails"] == ["alice@partner.example"] and keys["alice"]["uses"] == "encrypt", keys
        assert keys["partner"]["domains"] == ["partner.example"] and keys["partner"]["uses"] == "encrypt", keys
        fp = run("openssl", "x509", "-in", rsa, "-noout", "-fingerprint", "-sha256").stdout.split("=", 1)[1].strip()
        assert keys["alice"]["fingerprint"] == fp, (keys["alice"], fp)
        table = ok(gw, "pubkey", "list")
        assert re.search(r"(?m)^alice\s+alice@partner\.example\s+\S+Z\s+encrypt$", table), table
        show = ok(gw, "pubkey", "show", "partner")
        assert "DNS" not in show and "partner.example" in show and "EC 256 P-256" in show, show
        js = json.loads(ok(gw, "--json", "pubkey", "show", "alice"))
        assert js["name"] == "alice" and js["san_emails"] == ["alice@partner.example"] and js["fingerprint"] == fp, js
        ok(gw, "pubkey", "delete", "alice")
        assert list(pubkeys(gw)) == ["partner"]
        fails(gw, "pubkey", "delete", "alice", says="no public key named 'alice'")
        fails(gw, "pubkey", "show", "alice", says="no public key named 'alice'")


def test_add_refusals_and_usage():
    with instance() as gw:
        crt = make_cert(gw.base, "bob", "email:bob@partner.example")
        fails(gw, "pubkey", "add", "bob", code=2, says="usage")
        fails(gw, "pubkey", "add", "-bob", crt, code=2)
        fails(gw, "pubkey", "add", "b o b", crt, code=2, says="only letters")
        fails(gw, "pubkey", "frobnicate", code=2, says="unknown subcommand")
        fails(gw, "pubkey", "list", "extra", code=2)
        key = os.path.join(gw.base, "bob.key")
        fails(gw, "pubkey", "add", "bob", key, says=key)
        fails(gw, "pubkey", "add", "bob", os.path.join(gw.base, "missing.pem"), says="missing.pem")
        nosan = make_cert(gw.base, "nosan", None)
        fails(gw, "pubkey", "add", "nosan", nosan, says="nothing to find it by")
        # Added, but the administrator hears that it cannot encrypt (R13).
        sign = make_cert(gw.base, "signer", "email:s@partner.example", ku="digitalSignature,nonRepudiation")
        r = gw.sealctl("pubkey", "add", "signer", sign)
        assert r.returncode == 0 and "not fit for encryption" in r.stderr, (r.stdout, r.stderr)
        assert pubkeys(gw)["signer"]["uses"] == "sign", pubkeys(gw)
        assert pubkeys(gw).keys() == {"signer"}


def test_export_import_between_instances():
    with instance() as a, instance() as b:
        for n, san in (("alice", "email:alice@x.example"), ("x.example", "DNS:*.x.example")):
            ok(a, "pubkey", "add", n, make_cert(a.base, n, san))
        path = os.path.join(a.base, "export.txt")
        assert "exported 2 public keys" in ok(a, "pubkey", "export", path)
        text = open(path).read()
        assert text.count("# sealgate-pubkey: ") == 2 and text.count("BEGIN CERTIFICATE") == 2, text
        r = a.sealctl("pubkey", "export", "-")
        assert r.returncode == 0 and r.stdout == text, (r.stdout, r.stderr)
        assert "imported 2 public keys from " + path in ok(b, "pubkey", "import", path)
        strip = lambda keys: {n: (k["fingerprint"], k["emails"], k["domains"]) for n, k in keys.items()}  # noqa: E731
        assert strip(pubkeys(a)) == strip(pubkeys(b)), (pubkeys(a), pubkeys(b))
        # Importing again replaces by name: still two keys.
        ok(b, "pubkey", "import", path)
        assert len(pubkeys(b)) == 2


def test_import_bad_file_changes_nothing():
    with instance() as gw:
        ok(gw, "pubkey", "add", "keep", make_cert(gw.base, "keep", "email:keep@x.example"))
        good = open(make_cert(gw.base, "new", "email:new@x.example")).read()
        bad = os.path.join(gw.base, "bad.pem")
        with open(bad, "w") as f:
            f.write(good + "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n")
        err = fails(gw, "pubkey", "import", bad, says=bad)
        assert "block 2" in err and "nothing was imported" in err, err
        assert list(pubkeys(gw)) == ["keep"]
        with open(bad, "wb") as f:
            f.write(os.urandom(4096))
        fails(gw, "pubkey", "import", bad, says=bad)
        fails(gw, "pubkey", "import", os.path.join(gw.base, "nope.pem"), says="nope.pem")
        assert list(pubkeys(gw)) == ["keep"]


# ---------------------------------------------------------------- 10,000 keys

def der_len(der, i):
    """(content start, content length) of the DER element at i."""
    n = der[i + 1]
    if n < 0x80:
        return i + 2, n
    k = n & 0x7F
    return i + 2 + k, int.from_bytes(der[i + 2:i + 2 + k], "big")


def rsa_numbers(key_path):
    """The issuer's private key numbers, from `openssl rsa -text` (a name
    line such as "prime1:", then indented hex lines)."""
    text = run("openssl", "rsa", "-in", key_path, "-noout", "-text").stdout
    nums, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^(\w+):", line)
        if m:
            cur = m.group(1)
            nums[cur] = ""
        elif cur and line.startswith(" "):
            nums[cur] += line.strip().replace(":", "")
    return {k: int(v, 16) for k, v in nums.items() if v}


def bulk_file(tmp, count):
    """count certificates (SAN user%05d@bulk.example) in one plain PEM file."""
    ikey, icrt = os.path.join(tmp, "issuer.key"), os.path.join(tmp, "issuer.crt")
    # RSA-1024 only so that Python signs 10,000 times in seconds; the
    # store never verifies signatures (explicit trust), openssl does below.
    run("openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", ikey, "-out", icrt,
        "-subj", "/CN=Bulk Issuer", "-days", "30", "-config", "/dev/null",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    lkey, csr, tpl, ext = (os.path.join(tmp, n) for n in ("leaf.key", "leaf.csr", "leaf.der", "leaf.ext"))
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", lkey)
    run("openssl", "req", "-new", "-key", lkey, "-out", csr, "-subj", "/CN=bulk", "-config", "/dev/null")
    with open(ext, "w") as f:
        f.write("keyUsage=critical,digitalSignature,keyAgreement\nsubjectAltName=email:user00000@bulk.example\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", icrt, "-CAkey", ikey, "-set_serial", "1", "-days", "30",
        "-extfile", ext, "-sha256", "-outform", "DER", "-out", tpl)
    der = open(tpl, "rb").read()
    tbs_start, _ = der_len(der, 0)
    body, blen = der_len(der, tbs_start)
    tbs_end = body + blen
    k = rsa_numbers(ikey)
    n, p, q = k["modulus"], k["prime1"], k["prime2"]
    dp, dq, qinv = k["exponent1"], k["exponent2"], k["coefficient"]
    size = (n.bit_length() + 7) // 8
    prefix = bytes.fromhex("3031300d060960864801650304020105000420")  # DigestInfo, SHA-256
    out = []
    for i in range(count):
        tbs = der[tbs_start:tbs_end].replace(b"user00000", b"user%05d" % i)
        t = prefix + hashlib.sha256(tbs).digest()
        m = int.from_bytes(b"\x00\x01" + b"\xff" * (size - len(t) - 3) + b"\x00" + t, "big")
        s1, s2 = pow(m, dp, p), pow(m, dq, q)
        sig = (s2 + q * ((qinv * (s1 - s2)) % p)).to_bytes(size, "big")
        cert = der[:tbs_start] + tbs + der[tbs_end:-size] + sig
        b64 = base64.b64encode(cert).decode()
        out.append("-----BEGIN CERTIFICATE-----\n" + "\n".join(b64[j:j + 64] for j in range(0, len(b64), 64))
                   + "\n-----END CERTIFICATE-----\n")
    path = os.path.join(tmp, "bulk.pem")
    with open(path, "w") as f:
        f.write("".join(out))
    for i in (0, count - 1):  # the generator makes real certificates
        one = os.path.join(tmp, "one.pem")
        with open(one, "w") as f:
            f.write(out[i])
        run("openssl", "verify", "-CAfile", icrt, one)
    return path


def test_import_10000_keys():
    with instance() as gw:
        t0 = time.monotonic()
        path = bulk_file(gw.base, 10000)
        made = time.monotonic() - t0
        t0 = time.monotonic()
        out = ok(gw, "pubkey", "import", path, timeout=120)
        took = time.monotonic() - t0
        print("  10,000 certificates written in %.1f s, imported in %.2f s" % (made, took))
        assert "imported 10000 public keys from " + path in out, out
        assert took < 60, took
        keys = pubkeys(gw)
        assert len(keys) == 10000 and "user09999@bulk.example" in keys, len(keys)
        assert keys["user04242@bulk.example"]["emails"] == ["user04242@bulk.example"]


# ---------------------------------------------------------------- ca

def test_ca_import_list_delete():
    with instance() as gw:
        bundle = os.path.join(gw.base, "partners.pem")
        with open(bundle, "w") as f:
            for n in ("Root A", "Root B"):
                f.write(open(make_cert(gw.base, n.replace(" ", ""), None, ca=True)).read())
        assert "2 certificate(s)" in ok(gw, "ca", "import", "partners", bundle)
        fails(gw, "ca", "import", "partners", bundle, says="exists")
        lists = json.loads(ok(gw, "--json", "ca", "list"))
        assert [l["name"] for l in lists] == ["partners"] and lists[0]["count"] == 2, lists
        assert any("RootB" in s for s in lists[0]["subjects"]), lists
        assert re.search(r"(?m)^partners\s+2\s+", ok(gw, "ca", "list"))
        leaf = make_cert(gw.base, "leaf", "email:leaf@x.example")
        with open(bundle, "a") as f:
            f.write(open(leaf).read())
        err = fails(gw, "ca", "import", "more", bundle, says="not a CA certificate")
        assert "certificate 3" in err and "leaf" in err, err
        empty = os.path.join(gw.base, "empty.pem")
        open(empty, "w").close()
        fails(gw, "ca", "import", "none", empty, says=empty)
        ok(gw, "ca", "delete", "partners")
        assert json.loads(ok(gw, "--json", "ca", "list")) == []
        fails(gw, "ca", "delete", "partners", says="no CA list named")
        fails(gw, "ca", code=2)


# ---------------------------------------------------------------- harvested

class MiniCA:
    """A CA made with `openssl ca`: issues leaves with a chosen notBefore
    and writes real CRLs.  subject defaults to /CN=name."""

    def __init__(self, tmp, name, subject=None):
        self.dir = os.path.join(tmp, "ca-" + name)
        os.makedirs(os.path.join(self.dir, "certs"))
        open(os.path.join(self.dir, "index.txt"), "w").close()
        for f in ("serial", "crlnumber"):
            with open(os.path.join(self.dir, f), "w") as fh:
                fh.write("01\n")
        self.cnf, self.crt = os.path.join(self.dir, "ca.cnf"), os.path.join(self.dir, "ca.crt")
        with open(self.cnf, "w") as f:
            f.write("[ca]\ndefault_ca = CA\n[CA]\ndir = %s\ndatabase = $dir/index.txt\n"
                    "new_certs_dir = $dir/certs\nserial = $dir/serial\ncrlnumber = $dir/crlnumber\n"
                    "certificate = $dir/ca.crt\nprivate_key = $dir/ca.key\ndefault_md = sha256\n"
                    "default_days = 30\ndefault_crl_days = 30\npolicy = pol\nunique_subject = no\n"
                    "[pol]\ncommonName = supplied\n" % self.dir)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", os.path.join(self.dir, "ca.key"),
            "-out", self.crt, "-subj", subject or "/CN=" + name, "-days", "30", "-config", "/dev/null",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, cn, san, not_before):
        """A leaf for san (encryption key usage) valid from not_before
        (YYYYMMDDHHMMSSZ) to 30 days from now."""
        key, csr, ext = (os.path.join(self.dir, cn + s) for s in (".key", ".csr", ".ext"))
        crt = os.path.join(self.dir, cn + ".crt")
        run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn,
            "-config", "/dev/null")
        with open(ext, "w") as f:
            f.write("keyUsage=critical,digitalSignature,keyEncipherment\nsubjectAltName=%s\n" % san)
        end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() + 30 * 86400))
        run("openssl", "ca", "-batch", "-config", self.cnf, "-in", csr, "-out", crt, "-startdate", not_before,
            "-enddate", end, "-extfile", ext, "-notext")
        return crt

    def crl(self):
        path = os.path.join(self.dir, "crl%d.pem" % time.monotonic_ns())
        run("openssl", "ca", "-batch", "-config", self.cnf, "-gencrl", "-out", path)
        return path


def fingerprint(crt):
    return run("openssl", "x509", "-in", crt, "-noout", "-fingerprint", "-sha256").stdout.split("=", 1)[1].strip()


def harvest_put(gw, key, crt, *opts):
    """File crt as the harvested key `key` of gw's store; the outcome word."""
    exe = os.environ.get("SEALGATE_HARVEST_PUT") or os.path.join(os.path.dirname(sgtest.BIN_DIR), "tests",
                                                                  "harvest_put")
    r = run(exe, os.path.join(gw.dir, "keys"), key, crt, *opts)
    sgtest.assert_no_sanitizer_report(r.stderr)
    return r.stdout.split()[0]


def harvested(gw):
    recs = json.loads(ok(gw, "--json", "harvested", "list"))
    assert all("name" in r for r in recs), recs
    return [(r["name"], r["status"], r["fingerprint"]) for r in recs]


def test_harvested_list_show_promote():
    with instance() as gw:
        ca = MiniCA(gw.base, "Partner CA")
        old = ca.issue("bob-old", "email:bob@partner.example", "20240101000000Z")
        new = ca.issue("bob-new", "email:bob@partner.example", "20240102000000Z")
        dom = ca.issue("partner", "DNS:partner.example", "20240101000000Z")
        assert harvest_put(gw, "Bob@Partner.example", old, "--caps", "1") == "added"
        assert harvest_put(gw, "bob@partner.example", new) == "held"  # updated_keys off
        assert harvest_put(gw, "partner.example", dom) == "added"
        assert harvested(gw) == [("bob@partner.example", "active", fingerprint(old)),
                                 ("bob@partner.example", "held", fingerprint(new)),
                                 ("partner.example", "active", fingerprint(dom))], harvested(gw)
        recs = json.loads(ok(gw, "--json", "harvested", "list"))
        assert recs[0]["caps"] == ["aes256-gcm"] and recs[0]["emails"] == ["bob@partner.example"], recs[0]
        assert recs[1]["last_used"] is None and recs[0]["last_used"].endswith("Z"), recs
        assert [r["held"] for r in recs] == [False, True, False], recs
        assert recs[0]["issuer"] == "CN=Partner CA" and recs[2]["domains"] == ["partner.example"], recs
        table = ok(gw, "harvested", "list")
        assert re.search(r"(?m)^bob@partner\.example\s+active\s+\S+Z\s+aes256-gcm\s+\S+Z\s+\S+Z\s+CN=bob-old\s+"
                         r"CN=Partner CA$", table), table
        assert re.search(r"(?m)^bob@partner\.example\s+held\s+\S+Z\s+-\s+\S+Z\s+-\s+CN=bob-new\s", table), table
        show = ok(gw, "harvested", "show", "BOB@partner.example")
        assert "SHA256 " + fingerprint(old) in show and "SHA256 " + fingerprint(new) in show, show
        assert "status:       active" in show and "status:       held" in show, show
        js = json.loads(ok(gw, "--json", "harvested", "show", "bob@partner.example"))
        assert [(r["status"], r["fingerprint"]) for r in js] == [("active", fingerprint(old)),
                                                                ("held", fingerprint(new))], js
        out = ok(gw, "harvested", "promote", "bob@partner.example", "bob")
        assert "promoted the held key of bob@partner.example to public key 'bob'" in out, out
        assert pubkeys(gw)["bob"]["fingerprint"] == fingerprint(new)
        assert harvested(gw)[0] == ("bob@partner.example", "active", fingerprint(new)), harvested(gw)
        assert len(harvested(gw)) == 2  # the hold is cleared
        fails(gw, "harvested", "promote", "partner.example", "bob", says="a public key named 'bob' exists")
        assert "copied the harvested key of partner.example" in ok(gw, "harvested", "promote", "partner.example",
                                                                   "partner")
        assert pubkeys(gw)["partner"]["fingerprint"] == fingerprint(dom)


def test_harvested_refusals_and_usage():
    with instance() as gw:
        assert json.loads(ok(gw, "--json", "harvested", "list")) == []
        fails(gw, "harvested", "show", "nobody@x.example", says="no harvested key for 'nobody@x.example'")
        r = gw.sealctl("--json", "harvested", "show", "nobody@x.example")
        assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
        fails(gw, "harvested", "promote", "nobody@x.example", "n", says="no harvested key")
        fails(gw, "harvested", code=2, says="subcommand")
        fails(gw, "harvested", "frob", code=2, says="unknown subcommand")
        fails(gw, "harvested", "show", code=2, says="usage")
        fails(gw, "harvested", "list", "extra", code=2)
        fails(gw, "harvested", "promote", "a@x.example", code=2, says="usage")
        fails(gw, "harvested", "promote", "a@x.example", "bad name", code=2, says="only letters")
        assert pubkeys(gw) == {}


def test_alerts_list_shows_harvest_alerts():
    with instance() as gw:
        ca = MiniCA(gw.base, "Alert CA")
        certs = [ca.issue("eve%d" % i, "email:eve@partner.example", "2024010%d000000Z" % i) for i in (1, 2, 3)]
        now = int(time.time())
        outcomes = [harvest_put(gw, "eve@partner.example", c, "--updated-keys", "--now", str(now - 3600 + 60 * i))
                    for i, c in enumerate(certs)]
        assert outcomes == ["added", "replaced", "alert"], outcomes
        text = ok(gw, "alerts", "list")
        assert re.search(r"(?m)^warning\s+\S+Z harvested key eve@partner\.example: .*48 hours.*SHA256 "
                         + re.escape(fingerprint(certs[2])), text), text
        # A certificate alert too, then a key store that cannot be opened:
        # the certificate half still prints, and the exit code says 1.
        ok(gw, "cert", "create", "soon", "--cn", "soon.example", "--days", "10")
        rows = json.loads(ok(gw, "--json", "alerts", "list"))
        kinds = sorted((r["kind"], r["name"], r["level"]) for r in rows)
        assert kinds == [("certificate-expiry", "soon", "warning"),
                         ("harvest-update", "eve@partner.example", "warning")], rows
        harvest = [r for r in rows if r["kind"] == "harvest-update"][0]
        assert harvest["time"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600 + 120)), harvest
        with open(os.path.join(gw.dir, "keys", "data.mdb"), "wb") as f:
            f.write(b"not an LMDB file" * 1024)
        r = gw.sealctl("--json", "alerts", "list")
        assert r.returncode == 1 and "key store" in r.stderr, (r.returncode, r.stdout, r.stderr)
        assert [x["kind"] for x in json.loads(r.stdout)] == ["certificate-expiry"], r.stdout
        sgtest.assert_no_sanitizer_report(r.stderr)


def test_ca_import_with_crls():
    with instance() as gw:
        a, b = MiniCA(gw.base, "CA A"), MiniCA(gw.base, "CA B")
        forger = MiniCA(gw.base, "forger", subject="/CN=CA A")  # A's name, another key
        good = os.path.join(gw.base, "good.pem")
        with open(good, "w") as f:
            f.write(open(a.crt).read() + open(a.crl()).read() + open(b.crt).read() + open(b.crl()).read())
        assert "(2 certificate(s), 2 CRL(s))" in ok(gw, "ca", "import", "partners", good)
        lists = json.loads(ok(gw, "--json", "ca", "list"))
        assert [(l["name"], l["count"], l["crls"]) for l in lists] == [("partners", 2, 2)], lists
        assert re.search(r"(?m)^partners\s+2\s+2\s+/CN=CA A; /CN=CA B$", ok(gw, "ca", "list"))
        foreign = os.path.join(gw.base, "foreign.pem")
        with open(foreign, "w") as f:
            f.write(open(a.crt).read() + open(b.crl()).read())
        err = fails(gw, "ca", "import", "foreign", foreign, says=foreign)
        assert "block 2" in err and "CA B" in err and "no certificate of the list" in err, err
        forged = os.path.join(gw.base, "forged.pem")
        with open(forged, "w") as f:
            f.write(open(forger.crl()).read() + open(a.crt).read())
        err = fails(gw, "ca", "import", "forged", forged, says=forged)
        assert "block 1" in err and "does not verify" in err, err
        key = os.path.join(a.dir, "ca.key")
        with open(forged, "w") as f:
            f.write(open(a.crt).read() + open(key).read())
        fails(gw, "ca", "import", "withkey", forged, says="block 2: not a PEM certificate or CRL (PRIVATE KEY)")
        assert [l["name"] for l in json.loads(ok(gw, "--json", "ca", "list"))] == ["partners"]


# ---------------------------------------------------------------- the daemon

def test_changes_tell_the_running_daemon():
    with sgtest.gateway(sgtest.free_port()) as gw:
        crt = make_cert(gw.base, "carol", "email:carol@x.example")
        assert "the running daemon reloaded its keys" in ok(gw, "pubkey", "add", "carol", crt)
        assert "the running daemon reloaded its keys" in ok(gw, "pubkey", "delete", "carol")
        ca = make_cert(gw.base, "RootC", None, ca=True)
        assert "the running daemon reloaded its keys" in ok(gw, "ca", "import", "c", ca)
        harvest_put(gw, "dan@x.example", make_cert(gw.base, "dan", "email:dan@x.example"))
        assert "the running daemon reloaded its keys" in ok(gw, "harvested", "promote", "dan@x.example", "dan")
        assert "reloaded" not in ok(gw, "pubkey", "list")  # reading changes nothing
        sgtest.assert_running(gw)
    with instance() as gw:  # no daemon: quiet
        r = gw.sealctl("pubkey", "add", "carol", make_cert(gw.base, "carol", "email:carol@x.example"))
        assert r.returncode == 0 and "daemon" not in r.stdout + r.stderr, (r.stdout, r.stderr)


def main():
    return sgtest.run_tests([
        test_add_list_show_delete, test_add_refusals_and_usage, test_export_import_between_instances,
        test_import_bad_file_changes_nothing, test_import_10000_keys, test_ca_import_list_delete,
        test_harvested_list_show_promote, test_harvested_refusals_and_usage, test_alerts_list_shows_harvest_alerts,
        test_ca_import_with_crls, test_changes_tell_the_running_daemon,
    ])


if __name__ == "__main__":
    sys.exit(main())
