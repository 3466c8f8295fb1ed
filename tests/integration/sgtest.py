"""sgtest: shared helpers for sealgate integration tests (stdlib only).

Typical use::

    import sgtest
    with sgtest.Sink() as sink, sgtest.Instance(next_hop=sink.port) as gw:
        gw.start()
        code, text = sgtest.send_message(gw.port, "a@example.com",
                                         ["b@example.net"],
                                         sgtest.make_message("t1@test"))
        assert code == 250
        sink.wait_count(1)
        assert "t1@test" in sink.message_ids()

or, with the checks every test wants on the way out (the daemon still
runs, exits 0 on SIGTERM, and logged no sanitizer report)::

    with sgtest.sink_gateway(limits={"recipients": "5"}) as (gw, sink):
        with sgtest.Client(gw.port) as c:
            c.expect("EHLO client.test", 250)

Binaries come from $SEALGATE_BIN (default <repo>/build/bin).  Temporary
folders go under $SEALGATE_TMP (default <build>/it-tmp, on the repo's disk,
so fsync costs are real); set KEEP=1 to keep them.  smtp-sink needs root
(it drops to user postfix).

Contents, by purpose:
  processes and files   binary, tmpdir, free_port, wait_port, wait_for
  messages              make_message, message_id, header
  next hops             Sink (smtp-sink), FakeHop (programmable replies)
  sealgate              Instance, limits_yaml
  daemon checks         SANITIZER_MARKS, assert_no_sanitizer_report,
                        assert_clean_stop, assert_running, shut_down,
                        dispose
  managed gateways      gateway (an Instance), sink_gateway (Sink + Instance)
  clients               SMTPClient, Client (asserting), send_message, swaks
  reply and delivery    check, queued_id, wait_delivered, sink_ids
  test runner           registry, collect_tests, run_tests, report
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback

SRC_DIR = os.environ.get("SEALGATE_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_DIR = os.environ.get("SEALGATE_BIN") or os.path.join(SRC_DIR, "build", "bin")
KEEP = os.environ.get("KEEP") == "1"


def binary(name):
    """Path of a sealgate binary (sealgate, sealctl); raises if missing."""
    p = os.path.join(BIN_DIR, name)
    if not os.access(p, os.X_OK):
        raise FileNotFoundError("%s not built (SEALGATE_BIN=%s)" % (name, BIN_DIR))
    return p


def _reachable_by_others(path):
    """True if every folder from / down to path lets other users through
    (smtp-sink runs as user postfix, a test daemon may run as nobody)."""
    path = os.path.abspath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except FileNotFoundError:
            pass  # made below, with mode 0755
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def tmpdir(tag="it"):
    """A fresh folder for one test (mode 0755, so user postfix can traverse).

    Lives under $SEALGATE_TMP, else <build>/it-tmp (on the repo's disk, so
    fsync costs are real) when other users can reach it, else under
    /var/tmp/sealgate-it (a checkout in /root, mode 0700, is not reachable
    by the postfix user)."""
    base = os.environ.get("SEALGATE_TMP") or os.path.join(os.path.dirname(BIN_DIR), "it-tmp")
    if "SEALGATE_TMP" not in os.environ and not _reachable_by_others(base):
        base = "/var/tmp/sealgate-it"
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)
    d = tempfile.mkdtemp(prefix=tag + ".", dir=base)
    os.chmod(d, 0o755)
    return d


def cleanup(path):
    """Remove a folder made by tmpdir() unless KEEP=1."""
    if path and not KEEP:
        shutil.rmtree(path, ignore_errors=True)


_ports_given = set()


def free_port():
    """A loopback TCP port that is free right now and that this process has
    not handed out before: two calls before anything binds (an instance's
    port, then a second listener's) must not get the same port, which the
    kernel may well return twice."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no fresh loopback port after 100 tries")


def wait_port(port, timeout=30.0, proc=None, host="127.0.0.1"):
    """Wait until host:port sends a 220 banner; False on timeout or when
    the subprocess proc (if given) has exited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(10)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def wait_for(pred, timeout=30.0, interval=0.05):
    """Poll pred() until it returns a true value (returned) or timeout (None)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v or None
        time.sleep(interval)


# ---------------------------------------------------------------- messages

def make_message(message_id, subject="test", body="hello\r\n",
                 sender="sender@example.com", rcpt="rcpt@example.net", headers=()):
    """A simple RFC 5322 message as bytes with CRLF line ends.
    message_id is given without angle brackets; headers: extra "Name: value"."""
    h = ["From: <%s>" % sender, "To: <%s>" % rcpt, "Subject: %s" % subject,
         "Date: Thu, 01 Jan 2026 00:00:00 +0000", "Message-ID: <%s>" % message_id]
    h.extend(headers)
    text = "\r\n".join(h) + "\r\n\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")
    return text.encode()


def read_message(path):
    """The bytes of one stored message file."""
    with open(path, "rb") as f:
        return f.read()


def message_id(data):
    """The Message-ID (without <>) of a message's header section, or None."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    m = re.search(rb"(?im)^message-id:[ \t]*(?:\r?\n[ \t]+)?<?([^>\s]+)>?", head)
    return m.group(1).decode("utf-8", "replace") if m else None


def header(data, name):
    """All values of header `name` in a message (unfolded), as str."""
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    head = re.sub(r"\n[ \t]+", " ", head)
    return [l.split(":", 1)[1].strip() for l in head.split("\n")
            if l.lower().startswith(name.lower() + ":")]


# ---------------------------------------------------------------- next hops

class Sink:
    """smtp-sink on a free port, storing every message as a file in dir.

    extra: more smtp-sink flags, e.g. ["-r", "RCPT"] (4xx every RCPT),
    ["-f", "DATA"] (5xx), ["-Q", "."] (421 and close after the dot),
    ["-q", "."] (close without reply), ["-w", "5"] (slow DATA).
    smtp-sink cannot answer "4xx, then OK": use FakeHop for that."""

    def __init__(self, dir=None, port=None, extra=(), start=True):
        self.own_dir = dir is None
        self.dir = dir or tmpdir("sink")
        self.store = os.path.join(self.dir, "msgs")
        os.makedirs(self.store, exist_ok=True)
        shutil.chown(self.store, "postfix")
        self.port = port or free_port()
        self.extra = list(extra)
        self.proc = None
        self.log = os.path.join(self.dir, "smtp-sink.out")
        if start:
            self.start()

    def start(self):
        """Start smtp-sink and wait for its banner."""
        cmd = ["smtp-sink", "-u", "postfix", "-c", "-d", self.store + "/%Y%m%d/msg."] \
            + self.extra + ["127.0.0.1:%d" % self.port, "256"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        if not wait_port(self.port, 10, self.proc):
            raise RuntimeError("smtp-sink did not start: " + open(self.log).read()[-300:])

    def stop(self):
        """Stop smtp-sink (files stay)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def files(self):
        """Paths of all stored messages, sorted by name."""
        out = []
        for root, _, names in os.walk(self.store):
            out.extend(os.path.join(root, n) for n in names)
        return sorted(out)

    def messages(self):
        """All stored messages as bytes (smtp-sink's X-* lines included)."""
        return [read_message(p) for p in self.files()]

    def message_ids(self):
        """Message-IDs of all stored messages (a list: duplicates show)."""
        return [message_id(m) for m in self.messages()]

    def count(self):
        """How many messages have been stored."""
        return len(self.files())

    def wait_count(self, n, timeout=60):
        """Wait until at least n messages are stored; returns the count."""
        wait_for(lambda: self.count() >= n, timeout)
        return self.count()

    def close(self):
        self.stop()
        if self.own_dir:
            cleanup(self.dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FakeHop:
    """A small threaded SMTP server with programmable replies.

    reply(stage, txn) decides each answer: stage is "CONNECT", "EHLO",
    "MAIL", "RCPT" or "DATA" (after the final dot); txn is a dict with
    "seq" (transaction number from 0), "mail_from", "rcpts", "data" (bytes,
    at DATA) and "message_id".  Return None for the default ("250 ..."),
    a reply line such as "451 4.3.0 later", or "DROP" to close without
    replying.  `replies` is a shortcut: reply lines used in order for
    successive DATA transactions, then 250.  Accepted messages are kept in
    .accepted (and written to dir, if given); every finished transaction,
    accepted or not, is in .transactions with its "reply".

    Example, refuse each message once, then take it::

        seen = set()
        def once(stage, t):
            if stage == "DATA" and t["message_id"] not in seen:
                seen.add(t["message_id"]); return "451 4.3.0 try again"
        hop = FakeHop(reply=once)
    """

    def __init__(self, port=None, reply=None, replies=(), dir=None, banner="fakehop"):
        self.port = port or free_port()
        self.reply_fn = reply
        self.replies = list(replies)
        self.dir = dir
        self.banner = banner
        self.lock = threading.Lock()
        self.accepted, self.transactions, self.seq = [], [], 0
        hop = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                hop._session(self.rfile, self.wfile)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 256     # the default 5 drops SYNs under load

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _decide(self, stage, txn, default):
        r = self.reply_fn(stage, txn) if self.reply_fn else None
        if r is None and stage == "DATA":
            with self.lock:
                if self.replies:
                    r = self.replies.pop(0)
        return r or default

    def _session(self, rfile, wfile):
        def send(line):
            if line == "DROP":
                raise ConnectionAbortedError
            wfile.write(line.encode() + b"\r\n")
            wfile.flush()
        txn = {"mail_from": None, "rcpts": []}
        try:
            send(self._decide("CONNECT", txn, "220 %s ESMTP fakehop" % self.banner))
            while True:
                line = rfile.readline(65536)
                if not line:
                    return
                verb = line[:4].upper()
                arg = line[5:].strip().decode("utf-8", "replace")
                if verb in (b"EHLO", b"HELO"):
                    send(self._decide("EHLO", txn, "250-%s\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600" % self.banner
                                      if verb == b"EHLO" else "250 %s" % self.banner))
                elif verb == b"MAIL":
                    txn = {"mail_from": arg, "rcpts": []}
                    send(self._decide("MAIL", txn, "250 2.1.0 Ok"))
                elif verb == b"RCPT":
                    r = self._decide("RCPT", dict(txn, rcpt=arg), "250 2.1.5 Ok")
                    if r.startswith("2"):
                        txn["rcpts"].append(arg)
                    send(r)
                elif verb == b"DATA":
                    if not txn["rcpts"]:
                        send("503 5.5.1 No valid recipients")
                        continue
                    send("354 End data with <CR><LF>.<CR><LF>")
                    buf = []
                    while True:
                        l = rfile.readline(1 << 20)
                        if not l or l in (b".\r\n", b".\n"):
                            break
                        buf.append(l[1:] if l.startswith(b".") else l)
                    if not l:
                        return
                    with self.lock:
                        txn["seq"], self.seq = self.seq, self.seq + 1
                    txn["data"] = b"".join(buf)
                    txn["message_id"] = message_id(txn["data"])
                    r = self._decide("DATA", txn, "250 2.0.0 Ok: queued")
                    txn["reply"] = r
                    with self.lock:
                        self.transactions.append(txn)
                        if r.startswith("2"):
                            self.accepted.append(txn)
                            if self.dir:
                                with open(os.path.join(self.dir, "msg.%06d" % txn["seq"]), "wb") as f:
                                    f.write(txn["data"])
                    txn = {"mail_from": None, "rcpts": []}
                    send(r)
                elif verb == b"RSET":
                    txn = {"mail_from": None, "rcpts": []}
                    send("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    send("221 2.0.0 Bye")
                    return
                elif verb == b"NOOP":
                    send("250 2.0.0 Ok")
                else:
                    send("502 5.5.2 Command not recognized")
        except (OSError, ConnectionAbortedError):
            return

    def message_ids(self):
        """Message-IDs of accepted messages (a list: duplicates show)."""
        with self.lock:
            return [t["message_id"] for t in self.accepted]

    def wait_count(self, n, timeout=60):
        """Wait until at least n messages were accepted; returns the count."""
        wait_for(lambda: len(self.accepted) >= n, timeout)
        return len(self.accepted)

    def close(self):
        """Stop listening (open sessions end with the process)."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- sealgate

class Instance:
    """A sealgate instance: `sealctl init` into a fresh folder, then run it.

    Instance(next_hop=PORT) listens on a free port (.port).  Edit the YAML
    with edit_config()/append_config() before start().  The daemon's stderr
    goes to DIR/sealgate.log (appended across restarts)."""

    def __init__(self, next_hop, port=None, hostname="gw.test.example", init_args=(), dir=None):
        self.port = port or free_port()
        self.next_hop = next_hop
        self.hostname = hostname
        self.base = dir or tmpdir("sealgate")
        self.dir = os.path.join(self.base, "inst")
        self.config = os.path.join(self.dir, "sealgate.yaml")
        self.logfile = os.path.join(self.base, "sealgate.log")
        self.proc = None
        r = subprocess.run([binary("sealctl"), "init", self.dir,
                            "--listen", "127.0.0.1:%d" % self.port,
                            "--next-hop", "127.0.0.1:%d" % next_hop,
                            "--hostname", hostname] + list(init_args),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("sealctl init failed (%d): %s" % (r.returncode, r.stderr))

    # config
    def read_config(self):
        """The YAML text of sealgate.yaml."""
        with open(self.config) as f:
            return f.read()

    def write_config(self, text):
        """Replace sealgate.yaml with text."""
        with open(self.config, "w") as f:
            f.write(text)

    def edit_config(self, old, new, count=1):
        """Replace `old` by `new` in the YAML (old must be present)."""
        text = self.read_config()
        if old not in text:
            raise ValueError("%r not in %s" % (old, self.config))
        self.write_config(text.replace(old, new, count))

    def append_config(self, text):
        """Append YAML text (a newline is added before it if needed)."""
        cur = self.read_config()
        self.write_config(cur + ("" if cur.endswith("\n") else "\n") + text)

    # process
    def start(self, timeout=60, wait=True, args=()):
        """Run `sealgate -c sealgate.yaml`; wait until the port answers."""
        log = open(self.logfile, "ab")
        self.proc = subprocess.Popen([binary("sealgate"), "-c", self.config] + list(args),
                                     stdout=log, stderr=log)
        log.close()
        if wait and not wait_port(self.port, timeout, self.proc):
            raise RuntimeError("sealgate did not answer on %d (exit %s): %s"
                               % (self.port, self.proc.poll(), self.log()[-2000:]))
        return self

    def running(self):
        """True while the daemon process lives."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code (None if not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("sealgate ignored SIGTERM for %s s" % timeout)
        return self.proc.returncode

    def kill9(self):
        """SIGKILL (a crash); waits for the process to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout=60):
        """stop() then start()."""
        self.stop()
        return self.start(timeout)

    def signal(self, sig):
        """Send a signal, e.g. signal.SIGHUP for a reload."""
        self.proc.send_signal(sig)

    def peak_rss_kib(self):
        """VmHWM of the running daemon in KiB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for l in f:
                if l.startswith("VmHWM:"):
                    return int(l.split()[1])

    def log(self):
        """Everything the daemon wrote to stderr so far."""
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def queued_files(self):
        """Paths of the queued message files in spool/q*/.  Recycled pool
        files (.pK, see docs/SPOOL.md) and spool/corrupt/ are not messages."""
        root, out = os.path.join(self.dir, "spool"), []
        for q in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            if re.fullmatch(r"q\d+", q):
                out.extend(os.path.join(root, q, n) for n in sorted(os.listdir(os.path.join(root, q)))
                           if not n.startswith("."))
        return out

    def corrupt_files(self):
        """Names of the files the daemon set aside in spool/corrupt/."""
        d = os.path.join(self.dir, "spool", "corrupt")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def sealctl(self, *args, check=False, timeout=60):
        """Run `sealctl -c CONFIG ARGS...`; returns CompletedProcess (text)."""
        return subprocess.run([binary("sealctl"), "-c", self.config] + list(args),
                              capture_output=True, text=True, timeout=timeout, check=check)

    def close(self):
        """Stop the daemon (SIGTERM, then SIGKILL) and remove the folder."""
        try:
            self.stop(10)
        except RuntimeError:
            pass
        finally:
            cleanup(self.base)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sealctl_ok(gw, *args, timeout=60):
    """`sealctl ARGS` on gw must exit 0 without a sanitizer report; its stdout."""
    r = gw.sealctl(*args, timeout=timeout)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    assert_no_sanitizer_report(r.stderr)
    return r.stdout


def sealctl_fails(gw, *args, code=1, says=None):
    """`sealctl ARGS` on gw must exit code, name `says` (case-insensitive) on
    stderr, and neither crash nor leave a sanitizer report; its stderr."""
    r = gw.sealctl(*args)
    assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
    if says:
        assert says.lower() in r.stderr.lower(), (says, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert_no_sanitizer_report(r.stderr)
    return r.stderr


def limits_yaml(limits):
    """A `limits:` YAML block from a dict of already-quoted values, e.g.
    {"message_size": '"10K"', "recipients": "5"}."""
    return "limits:\n" + "".join("  %s: %s\n" % kv for kv in limits.items())


# ---------------------------------------------------------------- daemon checks

# Lines that AddressSanitizer / LeakSanitizer / UBSan write in their reports.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "LeakSanitizer", "runtime error:")


def assert_no_sanitizer_report(log, tail=6000):
    """Assert that log (a daemon's or a command's output) holds no
    sanitizer report; the message shows the last `tail` characters."""
    for mark in SANITIZER_MARKS:
        assert mark not in log, "sanitizer report in the daemon log:\n" + log[-tail:]


def assert_running(gw, what=""):
    """Assert that the daemon of Instance gw still runs."""
    assert gw.running(), "sealgate died%s:\n%s" % (" " + what if what else "", gw.log()[-3000:])


def assert_clean_stop(gw, tail=3000):
    """SIGTERM the daemon of Instance gw; assert it exits 0."""
    code = gw.stop()
    assert code == 0, "sealgate exited %s on SIGTERM:\n%s" % (code, gw.log()[-tail:])


def shut_down(gw):
    """Tear Instance gw down whatever state it is in: stop it (SIGTERM,
    then SIGKILL) and remove its folder; returns what its log held."""
    try:
        gw.stop(10)
    except RuntimeError:
        pass
    log = gw.log()
    gw.close()
    return log


def dispose(gw):
    """shut_down(gw), then assert its log holds no sanitizer report."""
    assert_no_sanitizer_report(shut_down(gw))


# ---------------------------------------------------------------- managed gateways

@contextlib.contextmanager
def gateway(next_hop, limits=None, yaml="", edits=(), setup=None, start=True,
            on_exit="running", **instance_args):
    """An Instance relaying to 127.0.0.1:next_hop, configured and (unless
    start=False) started; yields it.

    Configuration, in this order: edits, (old, new) replacements in
    sealgate.yaml; limits, a dict for limits_yaml() appended; yaml, text
    appended; setup(gw), a function for anything else.  instance_args go
    to Instance (e.g. hostname=).

    Leaving the block normally checks, by on_exit:
      "running"     the daemon still runs and exits 0 on SIGTERM;
      "if_running"  if the daemon still runs, it exits 0 on SIGTERM
                    (for tests that stop or never start it themselves);
      None          nothing (the test checks its stops itself).
    In any case the daemon is then stopped, its folder removed and its log
    must hold no sanitizer report (see dispose())."""
    if on_exit not in ("running", "if_running", None):
        raise ValueError("on_exit: %r" % (on_exit,))
    gw = Instance(next_hop=next_hop, **instance_args)
    try:
        for old, new in edits:
            gw.edit_config(old, new)
        if limits:
            gw.append_config(limits_yaml(limits))
        if yaml:
            gw.append_config(yaml)
        if setup:
            setup(gw)
        if start:
            gw.start()
        yield gw
        if on_exit == "running":
            assert_running(gw)
        if on_exit == "running" or (on_exit == "if_running" and gw.running()):
            assert_clean_stop(gw)
    finally:
        dispose(gw)


class HopGateway:
    """Base of test set-ups that hold a FakeHop (self.hop) and a started
    gateway() context (self.cm, entered as self.gw): closing ends both,
    the gateway's exit checks applying when the test went well."""

    def close(self, ok=True):
        try:
            self.cm.__exit__(None if ok else Exception, None, None)
        finally:
            self.hop.close()

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        self.close(et is None)


@contextlib.contextmanager
def sink_gateway(limits=None, yaml="", edits=(), setup=None, on_exit="running", **instance_args):
    """smtp-sink plus a started sealgate relaying to it; yields (gw, sink).
    The arguments and the checks on the way out are gateway()'s."""
    with Sink() as sink, gateway(sink.port, limits=limits, yaml=yaml, edits=edits, setup=setup,
                                 on_exit=on_exit, **instance_args) as gw:
        yield gw, sink


# ---------------------------------------------------------------- clients

class SMTPClient:
    """Raw SMTP over a socket: send exact lines, read (code, text) replies.

    c = SMTPClient(port); c.banner -> (220, "..."); c.cmd("EHLO x");
    c.data(msg) sends DATA, the dot-stuffed message and the final dot, and
    returns the final reply; c.send(b"raw bytes") for protocol abuse.
    source: connect from this local address (e.g. "127.0.0.2", "::1")."""

    def __init__(self, port, host="127.0.0.1", timeout=30, source=None):
        self._connect(port, host, timeout, source)
        self.banner = self.reply()

    def _connect(self, port, host, timeout, source):
        """Open the connection, from address `source` if given."""
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.rfile = self.sock.makefile("rb")

    def send(self, data):
        """Send raw bytes (str is encoded as UTF-8), nothing added."""
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def reply(self):
        """Read one (possibly multi-line) reply: (code, text); text joins the
        lines with "\\n".  (0, "") when the server closed the connection."""
        lines = []
        while True:
            l = self.rfile.readline(65536)
            if not l:
                return (0, "\n".join(lines))
            l = l.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(l[4:])
            if len(l) < 4 or l[3] != "-":
                try:
                    return (int(l[:3]), "\n".join(lines))
                except ValueError:
                    return (0, "\n".join(lines))

    def cmd(self, line):
        """Send one command line (CRLF added) and return its reply."""
        self.send(line + "\r\n")
        return self.reply()

    def data(self, msg):
        """DATA + message + ".": returns the final reply (or the DATA reply
        when that was not 354)."""
        r = self.cmd("DATA")
        if r[0] != 354:
            return r
        if isinstance(msg, str):
            msg = msg.encode()
        msg = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not msg.endswith(b"\r\n"):
            msg += b"\r\n"
        msg = re.sub(rb"(?m)^\.", b"..", msg)
        self.send(msg + b".\r\n")
        return self.reply()

    def close(self):
        """QUIT (ignoring errors) and close."""
        try:
            self.cmd("QUIT")
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Client(SMTPClient):
    """SMTPClient with assertions, for tests of the server side.

    Client(port, source="127.0.0.2") connects from that address.  The
    banner's code must be want_banner (None: not checked; the banner may
    then be (0, "") when the server closed at once).  expect(line, code,
    enh) sends a command and asserts its reply; expect_closed() asserts the
    server closed the connection; close() ignores a connection already
    gone."""

    def __init__(self, port, source=None, host="127.0.0.1", timeout=15, want_banner=220):
        self._connect(port, host, timeout, source)
        self.banner = self.reply_safe()
        if want_banner:
            assert self.banner[0] == want_banner, "banner: %r" % (self.banner,)

    def expect(self, line, code, enh=None):
        """Send a command; assert the reply code (and enhanced code)."""
        r = self.cmd(line)
        check(r, code, enh, line)
        return r

    def reply_safe(self):
        """reply(), with a reset after the server's close counted as EOF."""
        try:
            return self.reply()
        except ConnectionResetError:
            return (0, "")

    def expect_closed(self, what=""):
        """Assert that the server closed the connection (no more replies)."""
        r = self.reply_safe()
        assert r == (0, ""), "%s: expected the server to close, got %r" % (what, r)

    def close(self):
        try:
            super().close()
        except OSError:
            pass


def send_message(port, sender, rcpts, msg, helo="client.test", host="127.0.0.1"):
    """One full transaction; returns the first non-success (code, text), or
    the final reply after DATA."""
    with SMTPClient(port, host) as c:
        if c.banner[0] != 220:
            return c.banner
        for line, ok in [("EHLO " + helo, 250), ("MAIL FROM:<%s>" % sender, 250)] + \
                        [("RCPT TO:<%s>" % r, 250) for r in rcpts]:
            r = c.cmd(line)
            if r[0] != ok and not (ok == 250 and r[0] == 251):
                return r
        return c.data(msg)


def swaks(port, *args, sender="sender@example.com", to="rcpt@example.net", timeout=60):
    """Run swaks against 127.0.0.1:port; extra args are passed through
    (e.g. "--header", "Subject: x", "--data", "@file").  Returns
    CompletedProcess with text output."""
    cmd = ["swaks", "--server", "127.0.0.1:%d" % port, "--from", sender,
           "--to", to, "--helo", "swaks.test"] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- reply and delivery checks

def check(r, code, enh=None, what=""):
    """Assert that reply r = (code, text) has this code and, if enh is
    given, that its text starts with that enhanced status code ("5.7.1");
    what names the step in the message."""
    assert r[0] == code, "%s: expected %d, got %r" % (what, code, r)
    if enh:
        assert r[1].startswith(enh + " "), "%s: expected %s, got %r" % (what, enh, r)


def queued_id(reply):
    """The queue id from a "250 2.0.0 Ok: queued as ID" reply (asserted)."""
    m = re.search(r"queued as (\S+)", reply[1])
    assert reply[0] == 250 and m, "not queued: %r" % (reply,)
    return m.group(1)


def wait_delivered(gw, qid, timeout=15):
    """Wait for the log line of Instance gw saying qid was delivered
    (asserted)."""
    pat = re.compile(r"queue_id=%s .*result=delivered" % re.escape(qid))
    assert wait_for(lambda: pat.search(gw.log()), timeout), \
        "%s not delivered:\n%s" % (qid, gw.log()[-2000:])


def sink_ids(sink):
    """Message-IDs of everything a Sink has stored (duplicates show)."""
    return [message_id(m) for m in sink.messages()]


# ---------------------------------------------------------------- test runner
#
# A test is a function named test_*; it passes when it returns and fails
# when it raises.  A test file ends with
#
#     if __name__ == "__main__":
#         sys.exit(sgtest.run_tests(TESTS))
#
# and runs the tests named on its command line, or all of them.

def registry():
    """(tests, test): a list, and a decorator that appends to it in the
    order of definition::

        TESTS, test = sgtest.registry()

        @test
        def test_something(): ...
    """
    tests = []

    def test(fn):
        tests.append(fn)
        return fn
    return tests, test


def collect_tests(namespace):
    """The test_* functions of a module's globals(), sorted by name."""
    return [f for n, f in sorted(namespace.items()) if n.startswith("test_") and callable(f)]


def run_tests(tests, argv=None, shared=None, after_each=None, shared_name="shared gateway"):
    """Run test functions and report; returns the exit status (1 if any failed).

    argv: the names to run (default sys.argv[1:]; empty: all).  Prints
    "PASS name (1.2s)" or "FAIL name (1.2s)" with the traceback for each,
    then "N failed: names" or "all passed".

    shared: a context manager factory; the tests run inside one shared()
    (e.g. a gateway that they use through module globals).  after_each(name)
    runs after each test, inside it (e.g. to assert the shared daemon still
    runs).  An exception from either ends the run and counts as a failure
    named after shared_name."""
    only = sys.argv[1:] if argv is None else list(argv)
    failed = []

    def run_all():
        for fn in tests:
            name = fn.__name__
            if only and name not in only:
                continue
            t0 = time.monotonic()
            try:
                fn()
                print("PASS %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
            except Exception:  # noqa: BLE001 - report and go on
                failed.append(name)
                print("FAIL %s (%.1fs)\n%s" % (name, time.monotonic() - t0,
                                               traceback.format_exc()), flush=True)
            if after_each:
                after_each(name)

    if shared is None:
        run_all()
    else:
        try:
            with shared():
                run_all()
        except Exception:  # noqa: BLE001 - the shared fixture's own checks
            failed.append(shared_name.replace(" ", "-"))
            print("FAIL %s\n%s" % (shared_name, traceback.format_exc()), flush=True)
    print("%d failed: %s" % (len(failed), " ".join(failed)) if failed else "all passed")
    return 1 if failed else 0


def report(name, failures):
    """End of a single-test script that collects failure messages: print
    "FAIL: message" for each, then "PASS name" or "FAIL name"; returns the
    exit status."""
    for f in failures:
        print("FAIL: " + f)
    print("FAIL %s" % name if failures else "PASS %s" % name)
    return 1 if failures else 0
