#!/usr/bin/env python3
"""Control of the daemon: instance lock, control socket, reload (sealctl
and SIGHUP) of listeners and next hops, rejected reloads, config check,
SIGTERM during DATA, and the command line contracts of sealctl and
sealgate.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_control.py
"""

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402

VERSION = re.compile(r"\d+\.\d+\.\d+")


# ------------------------------------------------------------------ helpers

def config_text(listeners, extra=""):
    """A whole sealgate.yaml: listeners is [(name, port, next_hop_port)]."""
    out = ["hostname: gw.test.example", "listeners:"]
    for name, port, hop in listeners:
        out += ["  - name: %s" % name, "    address: 127.0.0.1:%d" % port,
                "    direction: outgoing", "    next_hop: 127.0.0.1:%d" % hop]
    out += ["spool_dir: spool", "key_store: keys", "hsm:", "  module: remote",
            "  token: sealgate", "  pin_file: hsm/pin", "flow_policies:", "  - name: default"]
    return "\n".join(out) + "\n" + extra


def gateway(hop_port, start=True):
    """sgtest.gateway: an instance relaying to hop_port, started unless
    start=False; yields it.  On the way out it must exit 0 on SIGTERM if it
    still runs (tests may stop it or never start it), its log must hold no
    sanitizer report, and it is removed."""
    return sgtest.gateway(hop_port, start=start, on_exit="if_running")


def answers(port):
    """True if 127.0.0.1:port gives an SMTP banner right now."""
    return sgtest.wait_port(port, 0.5)


def refused(port):
    """True if nothing accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(2)
            try:
                return s.recv(64) == b""  # accepted then closed: a dying listener
            except OSError:
                return True
    except OSError:
        return True


def send(port, mid):
    """One message; returns the SMTP reply."""
    return sgtest.send_message(port, "ctl@example.com", ["r@example.net"], sgtest.make_message(mid))


def reloads(gw):
    return gw.log().count("configuration reloaded")


def reload_with(gw, how):
    """Reload through sealctl or SIGHUP and wait until it is applied."""
    before = reloads(gw)
    if how == "sealctl":
        r = gw.sealctl("reload")
        assert r.returncode == 0, "sealctl reload: %d %s" % (r.returncode, r.stderr)
    else:
        gw.signal(signal.SIGHUP)
    assert sgtest.wait_for(lambda: reloads(gw) > before, 10), "no reload:\n" + gw.log()[-2000:]


def one_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return len(lines) == 1


def cli_contract(name, usage_errors):
    """Check a binary's command line contract: --help exits 0 with a usage
    text, --version prints "NAME X.Y.Z", and each argument list in
    usage_errors exits 2 with a one-line message.  Returns run(*args), which
    runs the binary and returns the CompletedProcess (text)."""
    exe = sgtest.binary(name)

    def run(*a):
        return subprocess.run([exe] + list(a), capture_output=True, text=True, timeout=30)
    r = run("--help")
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r
    r = run("--version")
    assert r.returncode == 0 and re.fullmatch(r"%s %s\n" % (name, VERSION.pattern), r.stdout), r.stdout
    for bad in usage_errors:
        r = run(*bad)
        assert r.returncode == 2, "%s: exit %d" % (bad, r.returncode)
        assert one_line(r.stderr), "%s: stderr %r" % (bad, r.stderr)
    return run


# ------------------------------------------------------------------ tests

def test_second_daemon_refused():
    with sgtest.FakeHop() as hop, gateway(hop.port) as gw:
        r = subprocess.run([sgtest.binary("sealgate"), "-c", gw.config], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1, "second daemon exit %d: %s" % (r.returncode, r.stderr)
        assert "lock" in r.stderr.lower(), r.stderr
        sgtest.assert_no_sanitizer_report(r.stderr)
        assert answers(gw.port) and send(gw.port, "after2nd@test")[0] == 250
        assert gw.sealctl("queue", "list").returncode == 0, "first daemon's control socket is gone"


def test_other_instance_same_address_refused():
    """Another instance (its own folder and lock) configured with an
    address this one listens on must not start: SO_REUSEPORT would let it
    silently take a share of the connections."""
    with sgtest.FakeHop() as hop1, sgtest.FakeHop() as hop2, gateway(hop1.port) as a, \
            gateway(hop2.port, start=False) as b:
        b.write_config(config_text([("main", a.port, hop2.port)]))
        try:
            r = subprocess.run([sgtest.binary("sealgate"), "-c", b.config], capture_output=True,
                               text=True, timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("a second instance started on port %d and shares it" % a.port)
        assert r.returncode == 1, "second instance on port %d: exit %d\n%s" % (a.port, r.returncode,
                                                                               r.stderr[-1500:])
        assert re.search(r"cannot listen on 127\.0\.0\.1:%d" % a.port, r.stderr), r.stderr
        sgtest.assert_no_sanitizer_report(r.stderr)
        for i in range(10):  # every connection still reaches the first instance
            assert send(a.port, "only-a%d@test" % i)[0] == 250
        assert hop1.wait_count(10, 10) == 10 and not hop2.message_ids()


def test_control_socket_mode():
    with sgtest.FakeHop() as hop, gateway(hop.port) as gw:
        st = os.stat(os.path.join(gw.dir, "control.sock"))
        assert stat.S_ISSOCK(st.st_mode), oct(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600, oct(stat.S_IMODE(st.st_mode))


def test_reload_listeners():
    """Add a listener (sealctl), remove one (SIGHUP), move one to another
    port (sealctl), change the next hop (SIGHUP)."""
    with sgtest.FakeHop() as hop1, sgtest.FakeHop() as hop2, gateway(hop1.port) as gw:
        p1, p2, p3 = gw.port, sgtest.free_port(), sgtest.free_port()
        gw.write_config(config_text([("main", p1, hop1.port), ("second", p2, hop1.port)]))
        reload_with(gw, "sealctl")
        assert sgtest.wait_port(p2, 5), "added listener does not answer"
        assert answers(p1) and send(p2, "via-second@test")[0] == 250

        gw.write_config(config_text([("second", p2, hop1.port)]))
        reload_with(gw, "sighup")
        assert sgtest.wait_for(lambda: refused(p1), 5), "removed listener still answers"
        assert answers(p2)

        gw.write_config(config_text([("second", p3, hop1.port)]))
        reload_with(gw, "sealctl")
        assert sgtest.wait_port(p3, 5), "rebound listener does not answer on its new port"
        assert sgtest.wait_for(lambda: refused(p2), 5), "old port still answers after the move"

        assert hop1.wait_count(1, 10) == 1
        gw.write_config(config_text([("second", p3, hop2.port)]))
        reload_with(gw, "sighup")
        assert send(p3, "to-hop2@test")[0] == 250
        assert sgtest.wait_for(lambda: "to-hop2@test" in hop2.message_ids(), 10), gw.log()[-2000:]
        assert "to-hop2@test" not in hop1.message_ids()
        assert hop1.message_ids() == ["via-second@test"], hop1.message_ids()


def test_reload_with_open_session():
    """A session open on a listener that a reload removes finishes its
    transaction; its message still reaches the next hop it was accepted
    for."""
    with sgtest.FakeHop() as hop1, sgtest.FakeHop() as hop2, gateway(hop1.port) as gw:
        p2 = sgtest.free_port()
        c = sgtest.SMTPClient(gw.port)
        try:
            assert c.cmd("EHLO open.test")[0] == 250
            assert c.cmd("MAIL FROM:<o@example.com>")[0] == 250
            gw.write_config(config_text([("other", p2, hop2.port)]))
            reload_with(gw, "sealctl")
            assert sgtest.wait_for(lambda: refused(gw.port), 5), "removed listener still answers"
            assert c.cmd("RCPT TO:<r@example.net>")[0] == 250
            r = c.data(sgtest.make_message("opensession@test"))
            assert r[0] == 250, r
        finally:
            c.close()
        assert sgtest.wait_for(lambda: "opensession@test" in hop1.message_ids()
                               + hop2.message_ids(), 10), gw.log()[-2000:]
        assert hop1.message_ids() == ["opensession@test"], (hop1.message_ids(), hop2.message_ids())


def test_reload_redirects_deferred_mail():
    """Mail deferred because the next hop is down goes to the new next hop
    after a reload (and a flush)."""
    down = sgtest.free_port()
    with sgtest.FakeHop() as hop2, gateway(down) as gw:
        assert send(gw.port, "redirect@test")[0] == 250
        assert sgtest.wait_for(lambda: "result=deferred" in gw.log(), 10), gw.log()[-2000:]
        gw.write_config(config_text([("main", gw.port, hop2.port)]))
        reload_with(gw, "sighup")
        assert gw.sealctl("queue", "flush").returncode == 0
        assert sgtest.wait_for(lambda: "redirect@test" in hop2.message_ids(), 10), gw.log()[-2000:]


def test_reload_invalid_config():
    """A syntax error or an unknown key is refused with its line (sealctl
    exits 1); SIGHUP with a bad file is refused in the log; the old
    configuration keeps serving."""
    with sgtest.FakeHop() as hop, gateway(hop.port) as gw:
        good = gw.read_config()
        p2 = sgtest.free_port()
        bad_key = config_text([("main", gw.port, hop.port), ("x", p2, hop.port)]).replace(
            "    direction: outgoing\n    next_hop: 127.0.0.1:%d\nspool" % hop.port,
            "    direction: outgoing\n    next_hop: 127.0.0.1:%d\n    adress: x\nspool" % hop.port)
        line_key = bad_key.splitlines().index("    adress: x") + 1
        bad_syntax = good.replace("listeners:\n", "listeners:\n  - name: [oops\n", 1)
        for text, want in ((bad_key, r"sealgate\.yaml:%d:.*adress" % line_key),
                           (bad_syntax, r"sealgate\.yaml:\d+:.*(syntax|YAML)")):
            gw.write_config(text)
            r = gw.sealctl("reload")
            assert r.returncode == 1, "bad reload exit %d" % r.returncode
            assert re.search(want, r.stderr), "reason missing: %r" % r.stderr
            r = gw.sealctl("config", "check")
            assert r.returncode == 1 and re.search(want, r.stderr), r.stderr
            before = gw.log().count("reload rejected")
            gw.signal(signal.SIGHUP)
            assert sgtest.wait_for(lambda: gw.log().count("reload rejected") > before, 10)
            assert re.search(want, gw.log().splitlines()[-1]), gw.log().splitlines()[-1]
            assert gw.running() and answers(gw.port) and refused(p2)
        assert send(gw.port, "still-old@test")[0] == 250
        assert hop.wait_count(1, 10) == 1
        assert "configuration reloaded" not in gw.log()
        gw.write_config(good)
        r = gw.sealctl("config", "check")
        assert r.returncode == 0 and "OK" in r.stdout, (r.stdout, r.stderr)
        r = gw.sealctl("config", "check", "--json")
        assert r.returncode == 0 and '"ok":true' in r.stdout.replace(" ", ""), r.stdout


def test_reload_port_taken():
    """A reload whose new listener's port is held by another process is
    refused and changes nothing: not the next hop, not another new
    listener of the same file."""
    with sgtest.FakeHop() as hop1, sgtest.FakeHop() as hop2, gateway(hop1.port) as gw:
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        try:
            free = sgtest.free_port()
            gw.write_config(config_text([("main", gw.port, hop2.port), ("new", free, hop2.port),
                                         ("clash", taken, hop2.port)]))
            r = gw.sealctl("reload")
            assert r.returncode == 1, "reload onto a taken port: exit %d" % r.returncode
            assert "clash" in r.stderr and re.search(r"(?i)in use|cannot listen", r.stderr), r.stderr
            assert one_line(r.stderr), r.stderr
            assert refused(free), "a listener of the refused config was opened"
            assert answers(gw.port)
            assert send(gw.port, "after-clash@test")[0] == 250
            assert sgtest.wait_for(lambda: hop1.message_ids() == ["after-clash@test"], 10), \
                "next hop changed by a refused reload: hop1=%s hop2=%s" % (hop1.message_ids(),
                                                                          hop2.message_ids())
            assert not hop2.message_ids()
        finally:
            blocker.close()


def test_reload_port_shared_by_reuseport():
    """Same as above when the other process set SO_REUSEPORT itself (as a
    second sealgate would): the reload is still refused."""
    with sgtest.FakeHop() as hop, gateway(hop.port) as gw:
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        try:
            gw.write_config(config_text([("main", gw.port, hop.port), ("clash", taken, hop.port)]))
            r = gw.sealctl("reload")
            assert r.returncode == 1, "reload joined another process's SO_REUSEPORT group"
            assert "clash" in r.stderr and "in use" in r.stderr, r.stderr
            assert answers(gw.port)
        finally:
            blocker.close()


def test_reload_needs_restart():
    """shards cannot change on a reload; sealctl says so and exits 1."""
    with sgtest.FakeHop() as hop, gateway(hop.port) as gw:
        gw.append_config("shards: 3\n")
        r = gw.sealctl("reload")
        assert r.returncode == 1 and "shards" in r.stderr and "restart" in r.stderr, r.stderr
        assert answers(gw.port)


def test_sealctl_without_daemon():
    with sgtest.FakeHop() as hop, gateway(hop.port, start=False) as gw:
        r = gw.sealctl("reload")
        assert r.returncode == 1 and "no sealgate daemon" in r.stderr, (r.returncode, r.stderr)
        r = gw.sealctl("queue", "flush")
        assert r.returncode == 1, r


def test_sigterm_mid_data():
    """SIGTERM while a client is in the middle of DATA: the client still
    gets its 250, the daemon exits 0, and the message is delivered."""
    port = sgtest.free_port()  # next hop down: the message must stay spooled
    with gateway(port) as gw:
        c = sgtest.SMTPClient(gw.port)
        try:
            assert c.cmd("EHLO mid.test")[0] == 250
            assert c.cmd("MAIL FROM:<mid@example.com>")[0] == 250
            assert c.cmd("RCPT TO:<r@example.net>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            msg = sgtest.make_message("middata@test", body="line\r\n" * 200)
            c.send(msg[: len(msg) // 2])
            time.sleep(0.3)
            gw.signal(signal.SIGTERM)
            time.sleep(0.5)
            assert gw.running(), "daemon exited with a session mid-DATA"
            c.send(msg[len(msg) // 2:] + b".\r\n")
            code, text = c.reply()
            assert code == 250 and "queued as" in text, "after SIGTERM mid-DATA: %d %s" % (code, text)
            qid = text.split()[-1]
        finally:
            c.sock.close()
        gw.proc.wait(30)
        assert gw.proc.returncode == 0, "exit %s:\n%s" % (gw.proc.returncode, gw.log()[-2000:])
        assert os.path.exists(os.path.join(gw.dir, "spool")), gw.dir
        with sgtest.FakeHop(port=port) as hop:
            gw.start()
            assert sgtest.wait_for(lambda: "middata@test" in hop.message_ids(), 15), \
                "message of the interrupted session (%s) not delivered:\n%s" % (qid, gw.log()[-2000:])
            time.sleep(0.5)
            assert hop.message_ids().count("middata@test") == 1, hop.message_ids()


def test_sigterm_with_delivery_in_flight():
    """SIGTERM while the next hop is slowly taking a message: the delivery
    finishes, the file is removed, the daemon exits 0."""
    def reply(st, t):
        if st == "DATA":
            time.sleep(2)
        return None

    with sgtest.FakeHop(reply=reply) as hop, gateway(hop.port) as gw:
        assert send(gw.port, "inflight@test")[0] == 250
        time.sleep(0.5)  # the hop is now sitting on DATA
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        gw.proc.wait(40)
        took = time.monotonic() - t0
        assert gw.proc.returncode == 0, gw.log()[-2000:]
        assert took < 10, "drain took %.1fs" % took
        assert hop.message_ids() == ["inflight@test"], hop.message_ids()
        spool = gw.queued_files()
        assert not spool, "delivered message left in the spool: %s" % spool


def test_reload_storm_under_traffic():
    """Twenty reloads (listeners added and removed) while mail flows:
    every acknowledged message is delivered, nothing crashes."""
    import threading
    with sgtest.FakeHop() as hop, gateway(hop.port) as gw:
        extra = sgtest.free_port()
        acked, errors = [], []

        def traffic():
            for i in range(150):
                try:
                    r = send(gw.port, "storm%d@test" % i)
                    if r[0] == 250:
                        acked.append("storm%d@test" % i)
                    else:
                        errors.append(r)
                except OSError as e:
                    errors.append(repr(e))
        t = threading.Thread(target=traffic)
        t.start()
        for i in range(20):
            ls = [("main", gw.port, hop.port)] + ([("extra", extra, hop.port)] if i % 2 == 0 else [])
            gw.write_config(config_text(ls))
            if i % 2:
                gw.signal(signal.SIGHUP)
                time.sleep(0.05)
            else:
                r = gw.sealctl("reload")
                assert r.returncode == 0, r.stderr
        t.join(120)
        assert sgtest.wait_for(lambda: gw.log().count("configuration reloaded") >= 20, 10), \
            gw.log().count("configuration reloaded")
        assert not errors, errors[:5]
        assert len(acked) == 150
        assert sgtest.wait_for(lambda: set(acked) <= set(hop.message_ids()), 20), \
            sorted(set(acked) - set(hop.message_ids()))[:5]
        assert gw.running()


def test_sealctl_cli():
    run = cli_contract("sealctl", (["--bogus"], ["-x", "queue", "list"], ["queue", "--bogus"],
                                   ["nosuchcommand"], []))
    r = run("queue", "list")
    assert r.returncode == 2, "queue list without -c: exit %d" % r.returncode
    with gateway(sgtest.free_port(), start=False) as gw:
        r = run("init", gw.dir, "--listen", "127.0.0.1:%d" % sgtest.free_port())
        assert r.returncode == 1 and "already" in r.stderr, (r.returncode, r.stderr)
        r = run("-c", os.path.join(gw.dir, "missing.yaml"), "config", "check")
        assert r.returncode == 1 and "cannot open" in r.stderr, r


def test_sealgate_cli():
    run = cli_contract("sealgate", (["--bogus"], ["-x"], [], ["-c"], ["-c", "a.yaml", "extra"]))
    with gateway(sgtest.free_port(), start=False) as gw:
        text = gw.read_config().replace("spool_dir: spool\n", "spool_dir: spool\nspooldir: x\n")
        gw.write_config(text)
        line = text.splitlines().index("spooldir: x") + 1
        r = run("-c", gw.config)
        assert r.returncode == 1, "bad config: exit %d" % r.returncode
        assert re.search(r"sealgate\.yaml:%d:.*spooldir" % line, r.stderr), r.stderr
        r = run("-c", os.path.join(gw.dir, "missing.yaml"))
        assert r.returncode == 1 and "cannot open" in r.stderr, r.stderr


# ------------------------------------------------------------------ runner

if __name__ == "__main__":
    sys.exit(sgtest.run_tests(sgtest.collect_tests(globals())))
