#!/usr/bin/env python3
"""Key isolation: the gateway process never holds an organisation key in
remote mode (docs/HSM.md "Process layout", DESIGN.md "Keys"), and a test
that can fail shows it.

- A known RSA key (made here by openssl, so its primes are known) is
  imported with `sealctl cert import`.  While the daemon signs with it
  (`sealctl cert check known --count N` runs the crypto workers through
  the token), /proc/PID/mem of the sealgate process is scanned again and
  again for 32-byte slices of p and q, big-endian (SoftHSM2's ByteStrings)
  and little-endian (OpenSSL BIGNUM limbs on x86-64):
    remote mode: never found in sealgate; found in the token server's
                 processes (proof that the needles and the scanner work);
    inprocess:   found in sealgate (the positive control: the same scan
                 does see a key the gateway holds).
- From the gateway's uid, tests/p11probe (build/tests) tries to read
  CKA_PRIVATE_EXPONENT and the primes, to wrap the key under an AES key
  of its own, and to set CKA_EXTRACTABLE / clear CKA_SENSITIVE: all must
  be refused, through the remote token and through SoftHSM2 in process.
- The token server is SIGKILLed (its process group) under signing load:
  the load may see failures, then signing resumes within 15 s (the keeper
  restarts the server, the workers reconnect), and the daemon still runs
  and exits 0 on SIGTERM.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_hsm_isolation.py [NAME...]
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from test_cert import make_p12, password_file  # noqa: E402

TESTS, test = sgtest.registry()

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
P11KIT_CLIENT = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
TOKEN = "sealgate"   # what `sealctl init` writes (hsm.token)
CHUNK = 8 << 20      # bytes read from /proc/PID/mem at a time
SCAN_SECONDS = 15
HUGE = 64 << 30      # larger mappings are sanitizer shadow (see regions())


def p11probe():
    """build/tests/p11probe (SEALGATE_BIN is build/bin)."""
    p = os.path.normpath(os.path.join(sgtest.BIN_DIR, "..", "tests", "p11probe"))
    if not os.access(p, os.X_OK):
        raise FileNotFoundError("p11probe not built: expected %s (target p11probe, tests/hsm/p11probe.cmake)" % p)
    return p


# ---------------------------------------------------------------- the known key

def primes(key_path):
    """(p, q) of an RSA private key file, as ints."""
    try:
        from cryptography.hazmat.primitives import serialization
        with open(key_path, "rb") as f:
            n = serialization.load_pem_private_key(f.read(), password=None).private_numbers()
        return n.p, n.q
    except ImportError:
        # Without the cryptography module: openssl's hex dump, "prime1:" then
        # indented "xx:xx:..." lines.
        text = subprocess.run(["openssl", "rsa", "-in", key_path, "-noout", "-text"], capture_output=True,
                              text=True, check=True).stdout
        out = []
        for name in ("prime1", "prime2"):
            m = re.search(r"^%s:\n((?:\s+[0-9a-f:]+\n)+)" % name, text, re.M)
            out.append(int(re.sub(r"[\s:]", "", m.group(1)), 16))
        return tuple(out)


def needles(p, q):
    """[(name, bytes)]: a 32-byte slice from the middle of p and of q, in
    both byte orders.  32 random-looking bytes cannot occur by chance, and
    a slice is cheaper to search for than the whole prime."""
    out = []
    for name, v in (("p", p), ("q", q)):
        be = v.to_bytes((v.bit_length() + 7) // 8, "big")
        mid = len(be) // 2 - 16
        out.append((name + " big-endian", be[mid:mid + 32]))
        le = be[::-1]
        out.append((name + " little-endian", le[mid:mid + 32]))
    return out


# ---------------------------------------------------------------- the memory scanner

def regions(pid):
    """[(start, end, name)] of the readable mappings of pid that hold any
    page (resident or swapped), from /proc/PID/smaps.  A mapping with no
    page cannot hold a key, and skipping them keeps the scan short: a
    sanitizer build reserves terabytes of shadow that is never touched.
    Mappings over HUGE bytes are left out too (and counted): only ASan's
    shadow is that large here, and it holds shadow bytes, not data."""
    out, skipped, cur = [], 0, None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split(None, 5)
                start, end = (int(x, 16) for x in parts[0].split("-"))
                name = parts[5].strip() if len(parts) > 5 else ""
                cur = [start, end, name, parts[1][0] == "r" and name not in ("[vvar]", "[vsyscall]"), 0]
                out.append(cur)
            elif cur is not None and (line.startswith("Rss:") or line.startswith("Swap:")):
                cur[4] += int(line.split()[1])
    keep = []
    for start, end, name, readable, kib in out:
        if readable and kib > 0:
            if end - start > HUGE:
                skipped += 1
            else:
                keep.append((start, end, name))
    return keep, skipped


def scan(pid, ndl):
    """Search every readable mapping of process pid that holds pages for
    the needles.  Returns a list of (needle name, address, mapping name),
    or None if the process is gone.  Regions that cannot be read (e.g.
    device mappings) are skipped."""
    try:
        maps, _ = regions(pid)
        fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError):
        return None
    overlap = max(len(n) for _, n in ndl) - 1
    found = []
    try:
        for start, end, where in maps:
            pos = start
            while pos < end:
                try:
                    data = os.pread(fd, min(CHUNK, end - pos), pos)
                except OSError:
                    break
                if not data:
                    break
                for name, n in ndl:
                    i = data.find(n)
                    if i >= 0:
                        found.append((name, pos + i, where))
                # Step back by a needle's length so none is cut in two; a
                # short read (a file mapping past its file's end, such as
                # LMDB's) ends the region, or the step could go backwards.
                if len(data) < min(CHUNK, end - pos) or pos + len(data) >= end:
                    break
                pos += len(data) - overlap
    finally:
        os.close(fd)
    return found


def descendants(pid):
    """Pids of every process below pid (the keeper, the token server and
    its per-connection p11-kit-remote processes)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def parse_check(out):
    """(verified, failed, rate) from `cert check` output."""
    m = re.search(r"(\d+) verified, (\d+) failed \((\d+)/s", out)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)


def scan_while_signing(gw, ndl, count, also_servers=False, stop_when_found=False, seconds=SCAN_SECONDS):
    """Run `cert check known --count count` in the background and scan the
    gateway (and, with also_servers, the token server's processes) until it
    ends, seconds pass, or (stop_when_found) a needle turns up in the
    gateway.  Returns a dict: gw_hits, server_hits ({pid: hits}), scans,
    signatures (estimated to have run while we scanned), check (output)."""
    check = subprocess.Popen([sgtest.binary("sealctl"), "-c", gw.config, "cert", "check", "known",
                              "--count", str(count)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t_check = time.monotonic()
    time.sleep(0.2)  # the control request reaches the daemon; the workers start
    gw_hits, server_hits, scans = [], {}, 0
    t_scan = time.monotonic()
    t_end = None
    while time.monotonic() - t_scan < seconds:
        running = check.poll() is None
        if not running and t_end is None:
            t_end = time.monotonic()
        hits = scan(gw.proc.pid, ndl)
        assert hits is not None, "sealgate died during the scan:\n" + gw.log()[-3000:]
        scans += 1
        gw_hits.extend(hits)
        if also_servers:
            for pid in descendants(gw.proc.pid):
                h = scan(pid, ndl)
                if h:
                    server_hits.setdefault(pid, []).extend(h)
        if not running or (stop_when_found and gw_hits):
            break
    t_scan_end = time.monotonic()
    try:
        out = check.communicate(timeout=600)[0]
    except subprocess.TimeoutExpired:
        check.kill()
        out = check.communicate()[0]
    if t_end is None:
        t_end = time.monotonic()
    verified, failed, rate = parse_check(out)
    overlap = max(0.0, min(t_end, t_scan_end) - max(t_check, t_scan))
    return {"gw_hits": gw_hits, "server_hits": server_hits, "scans": scans,
            "signatures": min(verified, int(rate * overlap)), "check": out.strip(),
            "check_rc": check.returncode}


# ---------------------------------------------------------------- instances

@contextlib.contextmanager
def known_key_gateway(on_exit="running", inprocess=False):
    """A started gateway with the known key imported as certificate
    'known'; yields (gw, key_path)."""
    def setup(gw):
        p12, _, key = make_p12(gw.base, "known")
        r = gw.sealctl("cert", "import", "known", p12, "--password-file", password_file(gw.base))
        assert r.returncode == 0, ("cert import", r.stdout, r.stderr)
        gw.known_key = key
    edits = [("module: remote", "module: inprocess")] if inprocess else []
    with sgtest.gateway(sgtest.free_port(), setup=setup, edits=edits, on_exit=on_exit) as gw:
        yield gw, gw.known_key


def gateway_ids(gw):
    """(uid, gid) the daemon runs as, from /proc."""
    uid = gid = None
    with open("/proc/%d/status" % gw.proc.pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("Gid:"):
                gid = int(line.split()[1])
    return uid, gid


def run_probe(gw, module, env, ids):
    """p11probe as the gateway's uid; returns CompletedProcess."""
    uid, gid = ids

    def drop():
        if os.getuid() == 0 and uid != 0:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
    e = {k: v for k, v in os.environ.items() if k not in ("SOFTHSM2_CONF", "P11_KIT_SERVER_ADDRESS")}
    e.update(env)
    return subprocess.run([p11probe(), module, TOKEN, os.path.join(gw.dir, "hsm", "pin"), "known"],
                          capture_output=True, text=True, env=e, timeout=120, preexec_fn=drop)


# ---------------------------------------------------------------- tests

@test
def test_remote_gateway_never_holds_the_key():
    with known_key_gateway() as (gw, key):
        ndl = needles(*primes(key))
        maps, skipped = regions(gw.proc.pid)
        print("sealgate: %d mappings with pages, %.0f MiB to scan; %d huge mapping(s) skipped"
              % (len(maps), sum(e - s for s, e, _ in maps) / 2**20, skipped))
        r = scan_while_signing(gw, ndl, 20000, also_servers=True)
        print("remote: %d scans of sealgate (pid %d), ~%d signatures during them; %s"
              % (r["scans"], gw.proc.pid, r["signatures"], r["check"]))
        for pid, hits in sorted(r["server_hits"].items()):
            print("  token server side: pid %d (%s): %s"
                  % (pid, cmdline(pid)[:60], sorted({h[0] for h in hits})))
        assert r["check_rc"] == 0 and parse_check(r["check"])[1] == 0, r["check"]
        assert not r["gw_hits"], "key material in the gateway's memory: %r" % r["gw_hits"][:5]
        assert r["signatures"] >= 2000, "too few signatures while scanning: %r" % r
        # The control: the same needles and scanner find the key where it lives.
        assert r["server_hits"], ("the scanner found the key in no token server process either "
                                  "(SoftHSM2 may wipe keys between operations): the in-process "
                                  "control must carry the proof")


@test
def test_inprocess_gateway_holds_the_key():
    """The positive control: with SoftHSM2 loaded into the gateway, the
    same scan finds the primes in the gateway's memory."""
    with known_key_gateway(inprocess=True) as (gw, key):
        assert "token server started" not in gw.log(), gw.log()[-2000:]
        ndl = needles(*primes(key))
        hits, rounds = [], 0
        # SoftHSM2 decrypts the key for each operation and OpenSSL frees it
        # after: look while signing, a few rounds if need be.
        while not hits and rounds < 3:
            rounds += 1
            r = scan_while_signing(gw, ndl, 20000, stop_when_found=True)
            hits = r["gw_hits"]
            print("inprocess round %d: %d scans, ~%d signatures, found: %s; %s"
                  % (rounds, r["scans"], r["signatures"], sorted({h[0] for h in hits}), r["check"]))
        assert hits, "the scan never found the key in the in-process gateway: the scanner proves nothing"


@test
def test_probe_cannot_extract_the_key():
    with known_key_gateway(on_exit=None) as (gw, _):
        ids = gateway_ids(gw)
        address = "unix:path=" + os.path.join(gw.dir, "hsm", "run", "current")
        r = run_probe(gw, P11KIT_CLIENT, {"P11_KIT_SERVER_ADDRESS": address}, ids)
        print("remote probe (uid %d), exit %d:\n%s%s" % (ids[0], r.returncode, r.stdout, r.stderr))
        assert r.returncode == 0 and "all extraction attempts refused" in r.stdout, (r.returncode, r.stdout, r.stderr)
        sgtest.assert_running(gw, "after the remote probe")
        sgtest.assert_clean_stop(gw)
        conf = os.path.join(gw.dir, "hsm", "softhsm2.conf")
        r = run_probe(gw, SOFTHSM, {"SOFTHSM2_CONF": conf}, ids)
        print("in-process probe, exit %d:\n%s%s" % (r.returncode, r.stdout, r.stderr))
        assert r.returncode == 0 and "all extraction attempts refused" in r.stdout, (r.returncode, r.stdout, r.stderr)


@test
def test_token_server_killed_under_load():
    with known_key_gateway() as (gw, _):
        pid_file = os.path.join(gw.dir, "hsm", "run", "server.pid")
        with open(pid_file) as f:
            old = int(f.read().strip())
        load = subprocess.Popen([sgtest.binary("sealctl"), "-c", gw.config, "cert", "check", "org",
                                 "--count", "4000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
        assert load.poll() is None, "the load ended before the kill: %s" % load.communicate()[0]
        os.killpg(os.getpgid(old), signal.SIGKILL)
        t_kill = time.monotonic()
        out = load.communicate(timeout=300)[0]
        print("load across the kill (expected to see failures): exit %d: %s" % (load.returncode, out.strip()))
        last = None

        def resumed():
            nonlocal last
            last = gw.sealctl("cert", "check", "org", "--count", "200", timeout=120)
            return "200 verified, 0 failed" in last.stdout
        ok = sgtest.wait_for(resumed, timeout=15, interval=0.5)
        print("signing resumed %.1f s after the kill: %s" % (time.monotonic() - t_kill, last.stdout.strip()))
        assert ok, "signing did not resume within 15 s: %r %r\n%s" % (last.stdout, last.stderr, gw.log()[-3000:])
        with open(pid_file) as f:
            new = int(f.read().strip())
        assert new != old, "server.pid still names the killed server %d" % old
        sgtest.assert_running(gw, "after the token server was killed")


if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS))
