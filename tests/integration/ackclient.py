#!/usr/bin/env python3
"""ackclient.py: crash-test SMTP client that records what was acknowledged.

Sends --count messages over --concurrency parallel SMTP connections (one
thread each).  Message i carries the header

    Message-ID: <PREFIX.i@ackclient.test>      (i = 0 .. count-1, 6 digits)

and, when the server answers 250 after the final ".", the bare id
PREFIX.i@ackclient.test (no angle brackets) is appended to --acked as one
line, flushed and fsynced before the thread moves on.  A message that did
not get 250 after DATA is never recorded.  So after a crash every line in
the file names a message the server promised to deliver.

On connection refused/reset/closed, a 4xx reply, or a timeout, the thread
drops its connection, backs off briefly (50 ms doubling to 1 s) and retries
the same message on a new connection, until it is acknowledged or
--deadline seconds have passed since start.  A 5xx reply is final for that
message (counted as rejected, not retried).  Connections are reused across
messages after each completed transaction.

Prints a one-line summary; exit 0 only when every message was acknowledged.
Standard library only.

  ackclient.py --host 127.0.0.1 --port P --count 2000 --concurrency 8 \\
      --acked FILE --prefix X [--size 2048] [--deadline 600]
"""

import argparse
import os
import queue
import random
import smtplib
import socket
import sys
import threading
import time
from email.utils import formatdate

# What counts as "try again": network trouble and SMTP-level disconnects.
TRANSIENT = (OSError, smtplib.SMTPException)


class Temporary(Exception):
    """A 4xx (or otherwise unexpected) reply: reconnect and retry."""


class Permanent(Exception):
    """A 5xx reply: the message is rejected for good."""


def message_id(prefix, seq):
    """The bare Message-ID (no angle brackets) of message number seq."""
    return "%s.%06d@ackclient.test" % (prefix, seq)


def build_message(prefix, seq, size, sender, rcpt):
    """Message seq as CRLF-terminated bytes, padded to about size bytes."""
    head = (
        "From: <%s>\r\nTo: <%s>\r\nSubject: ackclient %s %d\r\n"
        "Date: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        % (sender, rcpt, prefix, seq, formatdate(localtime=False),
           message_id(prefix, seq))
    ).encode("ascii")
    line = ("%s %06d " % (prefix, seq)).encode("ascii")
    line = (line * (1 + 74 // len(line)))[:74] + b"\r\n"
    body = b""
    while len(head) + len(body) < size:
        body += line
    return head + (body or b"\r\n")


class AckLog:
    """Append-only, fsynced record of acknowledged Message-IDs."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a", encoding="ascii")
        # Make the file's directory entry durable too.
        d = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(d)
        finally:
            os.close(d)

    def record(self, mid):
        """Write one line and fsync it before returning."""
        with self.lock:
            self.f.write(mid + "\n")
            self.f.flush()
            os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


class Stats:
    """Counters shared by the sender threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attempts = self.acked = self.retries = self.rejected = 0
        self.unacked = 0
        self.errors = {}

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def error(self, what):
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


def check(code, resp, ok, what):
    """Raise Temporary/Permanent unless code is in ok."""
    if code in ok:
        return
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
    if 500 <= code < 600:
        raise Permanent("%s: %d %s" % (what, code, text))
    raise Temporary("%s: %d %s" % (what, code, text))


def sender_thread(args, work, acklog, stats, deadline):
    """Take message numbers from work and send each until acknowledged."""
    conn = None
    while True:
        try:
            seq = work.get_nowait()
        except queue.Empty:
            break
        mid = message_id(args.prefix, seq)
        msg = build_message(args.prefix, seq, args.size, args.sender, args.rcpt)
        backoff = 0.05
        while True:
            if time.monotonic() > deadline:
                stats.add(unacked=1)
                break
            try:
                if conn is None:
                    conn = smtplib.SMTP(args.host, args.port, timeout=args.timeout,
                                        local_hostname="ackclient.test")
                    check(*conn.ehlo(), (250,), "EHLO")
                check(*conn.mail(args.sender), (250,), "MAIL")
                check(*conn.rcpt(args.rcpt), (250, 251), "RCPT")
                stats.add(attempts=1)
                try:
                    code, resp = conn.data(msg)
                except smtplib.SMTPDataError as e:      # DATA itself refused
                    code, resp = e.smtp_code, e.smtp_error
                check(code, resp, (250,), "DATA")
                acklog.record(mid)
                stats.add(acked=1)
                break
            except Permanent as e:
                stats.error(str(e).split(":")[0] + " 5xx")
                stats.add(rejected=1)
                if args.verbose:
                    print("ackclient: %s rejected: %s" % (mid, e), file=sys.stderr)
                conn = close(conn)
                break
            except (Temporary,) + TRANSIENT as e:
                stats.error(type(e).__name__)
                stats.add(retries=1)
                if args.verbose:
                    print("ackclient: %s retry: %s: %s" % (mid, type(e).__name__, e),
                          file=sys.stderr)
                conn = close(conn)
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 1.0)
    close(conn, quit=True)


def close(conn, quit=False):
    """Close conn (politely with QUIT when quit is set); returns None."""
    if conn is not None:
        try:
            if quit:
                conn.quit()
            else:
                conn.close()
        except TRANSIENT:
            try:
                conn.close()
            except TRANSIENT:
                pass
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True, help="messages to send")
    p.add_argument("--concurrency", type=int, default=8, help="parallel connections")
    p.add_argument("--acked", required=True, help="file receiving acknowledged Message-IDs")
    p.add_argument("--prefix", required=True, help="Message-ID prefix")
    p.add_argument("--size", type=int, default=2048, help="message size in bytes")
    p.add_argument("--deadline", type=float, default=600, help="give up after this many seconds")
    p.add_argument("--timeout", type=float, default=30, help="per-command timeout in seconds")
    p.add_argument("--from", dest="sender", default="ackclient@example.com")
    p.add_argument("--to", dest="rcpt", default="sink@example.net")
    p.add_argument("--verbose", "-v", action="store_true", help="log every retry on stderr")
    args = p.parse_args(argv)

    work = queue.Queue()
    for i in range(args.count):
        work.put(i)
    acklog = AckLog(args.acked)
    stats = Stats()
    t0 = time.monotonic()
    deadline = t0 + args.deadline
    threads = [threading.Thread(target=sender_thread, daemon=True,
                                args=(args, work, acklog, stats, deadline))
               for _ in range(max(1, args.concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acklog.close()
    el = time.monotonic() - t0
    errs = ",".join("%s=%d" % kv for kv in sorted(stats.errors.items()))
    print("ackclient: messages=%d sent=%d acked=%d retries=%d rejected=%d unacked=%d "
          "elapsed=%.1fs rate=%.0f/s%s"
          % (args.count, stats.attempts, stats.acked, stats.retries, stats.rejected,
             stats.unacked, el, stats.acked / el if el > 0 else 0,
             " errors: " + errs if errs else ""))
    return 0 if stats.acked == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
