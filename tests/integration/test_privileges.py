#!/usr/bin/env python3
"""`user:` drops root after binding (INTERFACE.md config keys).

Started as root with `user: nobody`, the daemon must run as that uid with
only that user's groups, own its instance files (spool, lock, control
socket, config), still relay mail and accept a reload from sealctl (root
may use the control socket).  An unknown user is refused at start with a
clear message and exit 1.  Needs root (CI runs as root).

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_privileges.py
"""

import os
import pwd
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402


def status_ids(pid):
    """(uids, gids, groups) from /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return ([int(x) for x in out["Uid"]], [int(x) for x in out["Gid"]],
            [int(x) for x in out.get("Groups", [])])


def test_drop_to_nobody():
    nobody = pwd.getpwnam("nobody")
    with sgtest.Sink() as sink:
        gw = sgtest.Instance(next_hop=sink.port)
        try:
            gw.edit_config("hostname:", "user: nobody\nhostname:")
            gw.start()
            uids, gids, groups = status_ids(gw.proc.pid)
            assert uids == [nobody.pw_uid] * 4, uids  # real, effective, saved, fs
            assert gids == [nobody.pw_gid] * 4, gids
            assert 0 not in groups, groups
            code, text = sgtest.send_message(gw.port, "a@example.com", ["b@example.net"],
                                             sgtest.make_message("priv1@test"))
            assert code == 250, (code, text)
            assert sgtest.wait_for(lambda: "priv1@test" in sink.message_ids(), 15), gw.log()[-2000:]
            for name in ("spool", "spool/q0", "lock", "control.sock", "sealgate.yaml"):
                st = os.stat(os.path.join(gw.dir, name))
                assert st.st_uid == nobody.pw_uid, "%s owned by uid %d" % (name, st.st_uid)
            r = gw.sealctl("reload")
            assert r.returncode == 0, r.stderr
            assert "running as user nobody" in gw.log(), gw.log()[-2000:]
            assert gw.stop() == 0, gw.log()[-2000:]
        finally:
            sgtest.dispose(gw)


def test_unknown_user_refused():
    with sgtest.Sink() as sink:
        gw = sgtest.Instance(next_hop=sink.port)
        try:
            gw.edit_config("hostname:", "user: no-such-user-sealgate\nhostname:")
            gw.start(wait=False)
            gw.proc.wait(30)
            assert gw.proc.returncode == 1, gw.proc.returncode
            assert "user 'no-such-user-sealgate' does not exist" in gw.log(), gw.log()[-2000:]
        finally:
            gw.stop(10)
            gw.close()


def ensure_user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True)
        return pwd.getpwnam(name)


def can_read_as(uid, gid, path):
    """Whether a process with uid/gid can open path for reading."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with open(path, "rb"):
                os._exit(0)
        except OSError:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def server_pids(gw):
    """pids of the token server (p11-kit server with our socket folder)."""
    run_dir = os.path.join(gw.dir, "hsm", "run")
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if run_dir in cmd and "-f" in cmd.split():
                out.append(int(p))
    return out


def test_token_server_has_its_own_user():
    """Root with `user:`: the token server runs as sealgate-hsm, which alone
    can read the token files; the gateway (nobody) still signs through it."""
    nobody, hsm = pwd.getpwnam("nobody"), ensure_user("sealgate-hsm")
    with sgtest.Sink() as sink:
        gw = sgtest.Instance(next_hop=sink.port)
        try:
            gw.edit_config("hostname:", "user: nobody\nhostname:")
            gw.start()
            pids = server_pids(gw)
            assert pids, gw.log()[-2000:]
            for pid in pids:
                assert status_ids(pid)[0][0] == hsm.pw_uid, (pid, status_ids(pid))
            tokens = os.path.join(gw.dir, "hsm", "tokens")
            st = os.stat(tokens)
            assert st.st_uid == hsm.pw_uid and st.st_mode & 0o077 == 0, (st.st_uid, oct(st.st_mode))
            files = [os.path.join(r, f) for r, _, fs in os.walk(tokens) for f in fs if f.endswith(".object")]
            assert files
            for f in files:
                assert not can_read_as(nobody.pw_uid, nobody.pw_gid, f), f
                assert can_read_as(hsm.pw_uid, hsm.pw_gid, f), f
            r = gw.sealctl("cert", "check", "org", "--count", "20")
            assert r.returncode == 0 and "20 verified" in r.stdout, (r.stdout, r.stderr, gw.log()[-2000:])
            assert gw.stop() == 0, gw.log()[-2000:]
            assert sgtest.wait_for(lambda: not server_pids(gw), 10), server_pids(gw)
        finally:
            sgtest.dispose(gw)


def test_root_sealctl_never_follows_planted_symlinks():
    """The token folder belongs to the token server's user; root's sealctl
    gives the files it creates there to that user, and a symlink that user
    planted must not make root chown something else."""
    hsm = ensure_user("sealgate-hsm")
    with sgtest.Sink() as sink:
        gw = sgtest.Instance(next_hop=sink.port)
        try:
            gw.edit_config("hostname:", "user: nobody\nhostname:")
            gw.start()
            assert gw.stop() == 0  # the token now belongs to sealgate-hsm
            tokens = os.path.join(gw.dir, "hsm", "tokens")
            victim = os.path.join(gw.base, "victim")
            os.mkdir(victim)
            with open(os.path.join(victim, "secret"), "w") as f:
                f.write("root's\n")
            token_dir = [os.path.join(tokens, d) for d in os.listdir(tokens)][0]
            os.symlink(victim, os.path.join(tokens, "evil"))
            os.symlink(os.path.join(victim, "secret"), os.path.join(token_dir, "evil.object"))
            r = gw.sealctl("cert", "create", "t1", "--cn", "gw.test.example")
            assert r.returncode == 0, r.stderr
            for p in (victim, os.path.join(victim, "secret")):
                assert os.stat(p).st_uid == 0, p
            objs = [f for f in os.listdir(token_dir) if f.endswith(".object") and f != "evil.object"]
            for f in objs:
                assert os.lstat(os.path.join(token_dir, f)).st_uid == hsm.pw_uid, f
            gw.start()
            r = gw.sealctl("cert", "check", "t1", "--count", "5")
            assert r.returncode == 0, (r.stdout, r.stderr, gw.log()[-2000:])
            assert gw.stop() == 0
        finally:
            sgtest.dispose(gw)


def test_inprocess_token_with_user():
    """hsm.module: inprocess as root with `user:`: the gateway itself opens
    the token, so the token files become that user's and signing works."""
    nobody = pwd.getpwnam("nobody")
    with sgtest.Sink() as sink:
        gw = sgtest.Instance(next_hop=sink.port)
        try:
            gw.edit_config("hostname:", "user: nobody\nhostname:")
            gw.edit_config("module: remote", "module: inprocess")
            gw.start()
            st = os.stat(os.path.join(gw.dir, "hsm", "tokens"))
            assert st.st_uid == nobody.pw_uid and st.st_mode & 0o077 == 0, (st.st_uid, oct(st.st_mode))
            r = gw.sealctl("cert", "check", "org", "--count", "10")
            assert r.returncode == 0 and "10 verified" in r.stdout, (r.stdout, r.stderr, gw.log()[-2000:])
            assert gw.stop() == 0, gw.log()[-2000:]
        finally:
            sgtest.dispose(gw)


def main():
    if os.geteuid() != 0:
        print("FAIL: must run as root (dropping privileges needs root)")
        return 1
    ensure_user("sealgate-hsm")  # the token server's user (docs/HSM.md)
    failed = []
    for fn in (test_drop_to_nobody, test_unknown_user_refused, test_token_server_has_its_own_user,
               test_root_sealctl_never_follows_planted_symlinks, test_inprocess_token_with_user):
        try:
            fn()
            print("PASS %s" % fn.__name__, flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            failed.append(fn.__name__)
            print("FAIL %s: %r" % (fn.__name__, e), flush=True)
    print("%d failed: %s" % (len(failed), " ".join(failed)) if failed else "all passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
