#!/usr/bin/env python3
"""250 comes after the sync: checked on the daemon's real system calls.

Runs sealgate under

    strace -f -tt -e trace=fdatasync,fsync,rename,renameat,renameat2,
           write,writev,sendto,sendmsg -y -s 200 -o FILE

sends messages (some concurrently, so folder syncs are shared), and checks
for every queue id ID that the "250 2.0.0 Ok: queued as ID" written to the
client's socket starts after

  1. fdatasync() of the file that becomes q<N>/ID returned 0: a recycled
     pool file q<N>/.pK (or q<N>/ID.tmp), synced after that file last
     changed hands (its previous rename), so the sync is for this message,
  2. the rename of that file to q<N>/ID returned 0 (and started after 1),
  3. an fsync() of the folder q<N> returned 0 that *started* after that
     rename returned (a sync that began earlier may not cover the rename).

Events are ordered by their position in strace's output (strace reports
the stops of all threads in the order it sees them, so a syscall's exit
line precedes anything the thread did after it).  A syscall interrupted
by another thread's is printed as "... <unfinished ...>" and later
"<... NAME resumed> ..."; its start is the first line, its end the second.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_durability_order.py
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402

TRACED = "fdatasync,fsync,rename,renameat,renameat2,write,writev,sendto,sendmsg"
WRITES = ("write", "writev", "sendto", "sendmsg")


# ------------------------------------------------------------------ strace parsing

class Call:
    """One system call: name, argument/result text, start and end line."""

    def __init__(self, pid, name, text, start):
        self.pid, self.name, self.text, self.start = pid, name, text, start
        self.end = None
        self.result = None

    def finish(self, rest, end):
        self.text += rest
        self.end = end
        m = re.search(r"\)\s+=\s+(-?\d+|\?)(?:\s+\w+\s+\(.*\))?\s*$", self.text)
        self.result = m.group(1) if m else None

    def ok(self):
        return self.result is not None and self.result != "?" and int(self.result) >= 0

    def __repr__(self):
        return "%s@%s-%s[%s]" % (self.name, self.start, self.end, self.text[:120])


LINE = re.compile(r"^(\d+)\s+\d\d:\d\d:\d\d\.\d+\s+(.*)$")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
START = re.compile(r"^(\w+)\((.*)$")


def parse_strace(path):
    """All complete calls of the trace, in order of their start line."""
    calls, pending = [], {}
    with open(path, errors="replace") as f:
        for idx, line in enumerate(f):
            line = line.rstrip("\n")
            m = LINE.match(line)
            if not m:
                continue
            pid, rest = int(m.group(1)), m.group(2)
            if rest.startswith(("---", "+++")):
                continue  # signals, exits
            r = RESUMED.match(rest)
            if r:
                c = pending.pop(pid, None)
                if c is not None and c.name == r.group(1):
                    c.finish(r.group(2), idx)
                continue
            s = START.match(rest)
            if not s:
                continue
            c = Call(pid, s.group(1), s.group(2), idx)
            calls.append(c)
            if rest.endswith("<unfinished ...>"):
                c.text = c.text[: -len("<unfinished ...>")].rstrip()
                pending[pid] = c
            else:
                c.finish("", idx)
    return [c for c in calls if c.end is not None]


def fd_path(c):
    """The path strace -y shows for the call's first argument (fd<path>)."""
    m = re.match(r"\d+<(.*?)>[,)]", c.text)
    return m.group(1) if m else None


def rename_paths(c):
    """(old, new) of a rename/renameat/renameat2 call."""
    s = re.findall(r'"((?:[^"\\]|\\.)*)"', c.text)
    return (s[0], s[1]) if len(s) >= 2 else (None, None)


def check_order(calls, qids):
    """Problems found for the queue ids (an empty list when all is well),
    and the set of write syscalls that carried the 250s."""
    problems, used = [], set()
    for qid in qids:
        reply = [c for c in calls if c.name in WRITES
                 and re.search(r"250 2\.0\.0 Ok: queued as %s\\r\\n" % re.escape(qid), c.text)]
        if len(reply) != 1:
            problems.append("%s: %d writes of its 250 (want 1)" % (qid, len(reply)))
            continue
        reply = reply[0]
        used.add(reply.name)
        ren = [c for c in calls if c.name.startswith("rename") and c.ok()
               and rename_paths(c)[1] is not None
               and rename_paths(c)[1].endswith("/%s" % qid)]
        if len(ren) != 1:
            problems.append("%s: %d renames to %s (want 1)" % (qid, len(ren), qid))
            continue
        ren = ren[0]
        src = rename_paths(ren)[0]
        # The file's previous life ends at the last rename that touched it.
        prev = max([c.end for c in calls if c.name.startswith("rename") and c.ok()
                    and c is not ren and c.end < ren.start and src in rename_paths(c)],
                   default=-1)
        sync = [c for c in calls if c.name == "fdatasync" and c.ok()
                and fd_path(c) == src and c.start > prev]
        if not sync:
            problems.append("%s: no successful fdatasync of %s before its rename" % (qid, src))
            continue
        sync = sync[0]
        folder = os.path.dirname(rename_paths(ren)[1])
        if os.path.dirname(fd_path(sync)) != folder:
            problems.append("%s: synced %s but renamed into %s" % (qid, fd_path(sync), folder))
        if not sync.end < ren.start:
            problems.append("%s: rename (line %d) before fdatasync returned (line %d)"
                            % (qid, ren.start + 1, sync.end + 1))
        if not ren.end < reply.start:
            problems.append("%s: 250 (line %d) before the rename returned (line %d)"
                            % (qid, reply.start + 1, ren.end + 1))
        dsync = [c for c in calls if c.name == "fsync" and c.ok() and fd_path(c) == folder
                 and c.start > ren.end and c.end < reply.start]
        if not dsync:
            problems.append("%s: no fsync of %s started after the rename (line %d) and "
                            "returned before the 250 (line %d)"
                            % (qid, folder, ren.end + 1, reply.start + 1))
    return problems, used


def self_test():
    """The parser copes with interleaved, unfinished and resumed lines."""
    t = ("11 10:00:00.000001 fdatasync(5</s/q0/A.tmp> <unfinished ...>\n"
         "12 10:00:00.000002 write(2<pipe:[1]>, \"log\\n\", 4) = 4\n"
         "11 10:00:00.000003 <... fdatasync resumed>) = 0\n"
         "11 10:00:00.000004 renameat2(AT_FDCWD</>, \"/s/q0/A.tmp\", AT_FDCWD</>, \"/s/q0/A\", "
         "RENAME_NOREPLACE <unfinished ...>\n"
         "13 10:00:00.000005 fsync(6</s/q0>) = 0\n"
         "11 10:00:00.000006 <... renameat2 resumed>) = 0\n"
         "11 10:00:00.000007 fsync(6</s/q0> <unfinished ...>\n"
         "12 10:00:00.000008 --- SIGHUP {si_signo=SIGHUP} ---\n"
         "11 10:00:00.000009 <... fsync resumed>) = 0\n"
         "12 10:00:00.000010 writev(9<TCP:[1->2]>, [{iov_base=\"250 2.0.0 Ok: queued as A\\r\\n\","
         " iov_len=28}], 1) = 28\n"
         "12 10:00:00.000011 +++ exited with 0 +++\n")
    bad = t.replace("11 10:00:00.000007 fsync(6</s/q0> <unfinished ...>\n", "") \
           .replace("11 10:00:00.000009 <... fsync resumed>) = 0\n", "")
    # A recycled pool file whose only fdatasync belongs to its previous
    # message: the rename that recycled it comes after that sync.
    stale = ("11 10:00:00.000001 fdatasync(5</s/q0/.p1>) = 0\n"
             "11 10:00:00.000002 renameat2(AT_FDCWD</>, \"/s/q0/.p1\", AT_FDCWD</>, \"/s/q0/OLD\", "
             "RENAME_NOREPLACE) = 0\n"
             "11 10:00:00.000003 rename(\"/s/q0/OLD\", \"/s/q0/.p1\") = 0\n"
             "11 10:00:00.000004 renameat2(AT_FDCWD</>, \"/s/q0/.p1\", AT_FDCWD</>, \"/s/q0/A\", "
             "RENAME_NOREPLACE) = 0\n"
             "11 10:00:00.000005 fsync(6</s/q0>) = 0\n"
             "12 10:00:00.000006 write(9<TCP:[1->2]>, \"250 2.0.0 Ok: queued as A\\r\\n\", 28) = 28\n")
    d = sgtest.tmpdir("strace-selftest")
    try:
        for text, want_ok in ((t, True), (bad, False), (stale, False)):
            p = os.path.join(d, "t")
            with open(p, "w") as f:
                f.write(text)
            problems, used = check_order(parse_strace(p), ["A"])
            assert (not problems) == want_ok, problems
            if want_ok:
                assert used == {"writev"}, used
    finally:
        sgtest.cleanup(d)


# ------------------------------------------------------------------ the test

def daemon_pid(gw):
    """The daemon's pid, from DIR/lock (strace is its parent)."""
    try:
        with open(os.path.join(gw.dir, "lock")) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def run():
    if not shutil.which("strace"):
        print("FAIL: strace is not installed")
        return 1
    self_test()
    failures = []
    sink = sgtest.Sink()
    gw = sgtest.Instance(next_hop=sink.port)
    trace = os.path.join(gw.base, "strace.out")
    proc = None
    log = ""
    try:
        log_f = open(gw.logfile, "ab")
        # LeakSanitizer cannot work under ptrace (it aborts at exit); the
        # other tests check for leaks.  ASan and UBSan stay on.
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS"), "detect_leaks=0") if x)
        proc = subprocess.Popen(["strace", "-f", "-tt", "-e", "trace=" + TRACED, "-y", "-s", "200",
                                 "-o", trace, sgtest.binary("sealgate"), "-c", gw.config],
                                stdout=log_f, stderr=log_f, env=env)
        log_f.close()
        if not sgtest.wait_port(gw.port, 60, proc):
            raise RuntimeError("sealgate under strace did not start: " + gw.log()[-2000:])
        qids, lock = [], threading.Lock()

        def send(i):
            r = sgtest.send_message(gw.port, "s@example.com", ["r%d@example.net" % i],
                                    sgtest.make_message("order%d@test" % i))
            m = re.search(r"queued as (\S+)", r[1])
            with lock:
                qids.append(m.group(1) if r[0] == 250 and m else "refused:%r" % (r,))

        for i in range(3):  # one at a time
            send(i)
        threads = [threading.Thread(target=send, args=(10 + i,)) for i in range(12)]
        for t in threads:  # and concurrently, so folder fsyncs are shared
            t.start()
        for t in threads:
            t.join(60)
        bad = [q for q in qids if q.startswith("refused")]
        if bad or len(qids) != 15:
            failures.append("not all messages queued: %s" % (bad or qids))
        sink.wait_count(15, 30)
        pid = daemon_pid(gw)
        if pid:
            os.kill(pid, signal.SIGTERM)
        proc.wait(60)
        log = gw.log()
        if proc.returncode != 0:
            failures.append("strace/sealgate exited %s" % proc.returncode)
        calls = parse_strace(trace)
        good = [q for q in qids if not q.startswith("refused")]
        problems, used = check_order(calls, good)
        failures.extend(problems)
        groups = [c for c in calls if c.name == "fsync" and c.ok()]
        print("checked %d queue ids; 250 written with %s; %d calls traced, %d folder fsyncs for "
              "%d messages" % (len(good), ",".join(sorted(used)) or "?", len(calls), len(groups),
                               len(good)))
    finally:
        if proc and proc.poll() is None:
            pid = daemon_pid(gw)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            proc.kill()
            proc.wait()
        log = log or gw.log()
        gw.close()
        sink.close()
    try:
        sgtest.assert_no_sanitizer_report(log, tail=4000)
    except AssertionError as e:
        failures.append(str(e))
    return sgtest.report("test_durability_order", failures)


if __name__ == "__main__":
    sys.exit(run())
