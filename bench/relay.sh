#!/bin/sh
# relay.sh: end-to-end relay benchmark (issue #2).
#
#   smtp-source -> smtp-sink                       (harness limit)
#   smtp-source -> private Postfix -> smtp-sink    (reference, same run)
#   smtp-source -> sealgate -> smtp-sink
#
# Each figure is messages / (time from starting smtp-source until the sink
# has received the last message).  Exits non-zero when a relay fails or the
# sink receives fewer messages than were sent.  Run as root.  See
# bench/README.md.
#
# Environment:
#   MSGS=20000 SESSIONS=20 SIZE=4096   load (smtp-source -m, -s, -l)
#   BUILD=<repo>/build                 sealgate binaries in $BUILD/bin;
#                                      temp folders under $BUILD (same disk)
#   RELAYS="sink postfix sealgate"     which paths to measure, in this order
#   SOURCE_OPTS=                       extra smtp-source flags (e.g. -d to
#                                      reuse each session for many messages)
#   SG_CONFIG_APPEND=FILE              YAML appended to sealgate.yaml
#   STALL=120                          fail after this many seconds without
#                                      progress at the sink
#   KEEP=1                             keep the temp folder (kept on failure)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd -P)
REPO=$(cd "$HERE/.." && pwd -P)
MSGS=${MSGS:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-4096}
BUILD=${BUILD:-$REPO/build}
RELAYS=${RELAYS:-sink postfix sealgate}
SOURCE_OPTS=${SOURCE_OPTS:-}
STALL=${STALL:-120}
KEEP=${KEEP:-0}
BIN=$BUILD/bin
FROM=bench@example.com
TO=sink@example.net

die() { echo "relay.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (Postfix and smtp-sink -u postfix need it)"
for p in smtp-source smtp-sink postfix python3; do
    command -v "$p" >/dev/null || die "$p not found (apt-get install postfix python3)"
done
case " $RELAYS " in *" sealgate "*)
    [ -x "$BIN/sealgate" ] && [ -x "$BIN/sealctl" ] ||
        die "no $BIN/sealgate or sealctl: build first, set BUILD, or RELAYS='sink postfix'"
esac

mkdir -p "$BUILD"
WORK=$(mktemp -d "$BUILD/bench-relay.XXXXXX")
chmod 755 "$WORK"   # the postfix user must reach its sink and queue folders
fs_of() { findmnt -n -o SOURCE,FSTYPE -T "$1" 2>/dev/null || df -P "$1" | awk 'NR==2{print $1}'; }
WORK_FS=$(fs_of "$WORK")
case "$WORK_FS" in *tmpfs*) echo "relay.sh: warning: $WORK is on tmpfs; durability costs are not comparable" >&2 ;; esac
[ "$WORK_FS" = "$(fs_of "$REPO")" ] ||
    echo "relay.sh: warning: $WORK ($WORK_FS) is not on the repo's filesystem" >&2

SINK_PIDS='' SG_PID='' PF_UP='' OK=0
cleanup() {
    set +e
    if [ -n "$SG_PID" ] && kill -0 "$SG_PID" 2>/dev/null; then
        kill -TERM "$SG_PID"; i=0
        while kill -0 "$SG_PID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
        kill -0 "$SG_PID" 2>/dev/null && kill -9 "$SG_PID"
    fi
    [ -n "$PF_UP" ] && "$HERE/postfix-instance.sh" stop "$WORK/postfix"
    for p in $SINK_PIDS; do kill "$p" 2>/dev/null; done
    if [ "$KEEP" = 1 ] || [ "$OK" != 1 ]; then
        echo "relay.sh: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_ports N: N distinct loopback ports free right now.
free_ports() {
    python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# wait_banner PORT SECONDS [PID]: until 127.0.0.1:PORT answers 220
# (gives up early when PID has exited).
wait_banner() {
    python3 - "$@" <<'EOF'
import os, socket, sys, time
port, end = int(sys.argv[1]), time.time() + float(sys.argv[2])
pid = int(sys.argv[3]) if len(sys.argv) > 3 else 0
while time.time() < end:
    if pid:
        try: os.kill(pid, 0)
        except ProcessLookupError: sys.exit(1)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(10)
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n"); sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit(1)
EOF
}

# start_sink NAME PORT: a counting smtp-sink (no files; counters on stdout).
start_sink() {
    smtp-sink -u postfix -c -h sink.localdomain "127.0.0.1:$2" 256 >"$WORK/sink-$1.out" 2>&1 &
    SINK_PIDS="$SINK_PIDS $!"
    wait_banner "$2" 10 $! || die "smtp-sink on port $2 did not start: $(tr '\r' '\n' <"$WORK/sink-$1.out" | tail -n 3)"
}

# measure NAME PORT: run smtp-source against PORT, wait until sink NAME has
# counted MSGS messages; prints "SECONDS RECEIVED" (exit 1 on failure).
measure() {
    python3 - "$1" "$2" "$WORK" "$MSGS" "$SESSIONS" "$SIZE" "$STALL" "$FROM" "$TO" $SOURCE_OPTS <<'EOF'
import os, re, subprocess, sys, time
name, port, work, msgs, sess, size, stall, frm, to = sys.argv[1:10]
extra = sys.argv[10:]
msgs, stall = int(msgs), float(stall)
out = os.path.join(work, "sink-%s.out" % name)

def count():
    # smtp-sink -c rewrites "sess=N quit=N mesg=N\r" after each event.
    with open(out, "rb") as f:
        f.seek(max(0, os.path.getsize(out) - 256))
        m = re.findall(rb"mesg=(\d+)", f.read())
    return int(m[-1]) if m else 0

log = open(os.path.join(work, "source-%s.log" % name), "wb")
cmd = ["smtp-source", "-m", str(msgs), "-s", sess, "-l", size, "-f", frm,
       "-t", to, "-M", "source.localdomain"] + extra + ["127.0.0.1:" + port]
t0 = time.monotonic()
src = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
last, last_change, rc = 0, t0, None
while True:
    n = count()
    now = time.monotonic()
    if n != last:
        last, last_change = n, now
    if n >= msgs:
        break
    if rc is None:
        rc = src.poll()
        if rc is not None and rc != 0:
            print("smtp-source failed (exit %d), see %s" % (rc, log.name), file=sys.stderr)
            print("%.3f %d" % (now - t0, n)); sys.exit(1)
    if now - last_change > stall:
        print("%s: no progress for %.0f s at %d/%d" % (name, stall, n, msgs), file=sys.stderr)
        print("%.3f %d" % (now - t0, n)); sys.exit(1)
    time.sleep(0.005)
elapsed = time.monotonic() - t0
if src.wait() != 0:
    print("smtp-source failed (exit %d), see %s" % (src.returncode, log.name), file=sys.stderr)
    print("%.3f %d" % (elapsed, n)); sys.exit(1)
time.sleep(0.5)            # report late duplicates, if any
print("%.3f %d" % (elapsed, count()))
EOF
}

rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", (t > 0 ? n / t : 0) }'; }

RESULTS='' FAIL=0 PF_RATE='' SG_RATE='' SG_RSS=''
# record LABEL NAME: run measure and add a results line.
record() {
    if r=$(measure "$2" "$3"); then st=ok; else st=FAILED; FAIL=1; fi
    set -- "$1" "$2" "$3" $r
    secs=${4:-0} got=${5:-0}
    if [ "$got" -lt "$MSGS" ]; then
        st="FAILED: sink got $got of $MSGS"; FAIL=1
    elif [ "$got" -gt "$MSGS" ]; then
        st="ok ($((got - MSGS)) duplicates)"
    fi
    r=$(rate "$got" "$secs")
    printf '%-40s %8s msgs/s %8.2f s  %s\n' "$1" "$r" "$secs" "$st" >&2
    [ "$st" = ok ] || r="$r ($st)"
    RESULTS="$RESULTS| $1 | $r | $secs |
"
    LAST_RATE=$(rate "$got" "$secs")
}

echo "relay.sh: $MSGS msgs x $SIZE B, $SESSIONS sessions${SOURCE_OPTS:+, smtp-source $SOURCE_OPTS}; work $WORK" >&2
for relay in $RELAYS; do
    case $relay in
    sink)
        set -- $(free_ports 1)
        start_sink direct "$1"
        record "smtp-source -> smtp-sink (harness)" direct "$1"
        ;;
    postfix)
        set -- $(free_ports 2)
        start_sink postfix "$2"
        "$HERE/postfix-instance.sh" start "$WORK/postfix" "$1" "$2" >/dev/null
        PF_UP=1
        record "smtp-source -> Postfix -> smtp-sink" postfix "$1"
        PF_RATE=$LAST_RATE
        "$HERE/postfix-instance.sh" stop "$WORK/postfix"
        PF_UP=''
        ;;
    sealgate)
        set -- $(free_ports 2)
        start_sink sealgate "$2"
        "$BIN/sealctl" init "$WORK/sealgate" --listen "127.0.0.1:$1" \
            --next-hop "127.0.0.1:$2" --hostname bench.localdomain \
            >"$WORK/sealctl-init.log" 2>&1 ||
            die "sealctl init failed: $(tail -n 5 "$WORK/sealctl-init.log")"
        if [ -n "${SG_CONFIG_APPEND:-}" ]; then
            cat "$SG_CONFIG_APPEND" >>"$WORK/sealgate/sealgate.yaml"
        fi
        "$BIN/sealgate" -c "$WORK/sealgate/sealgate.yaml" 2>"$WORK/sealgate.log" &
        SG_PID=$!
        wait_banner "$1" 60 "$SG_PID" ||
            die "sealgate did not answer on port $1: $(tail -n 5 "$WORK/sealgate.log")"
        record "smtp-source -> sealgate -> smtp-sink" sealgate "$1"
        SG_RATE=$LAST_RATE
        SG_RSS=$(awk '/^VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$SG_PID/status" 2>/dev/null || true)
        kill -TERM "$SG_PID"
        i=0
        while kill -0 "$SG_PID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
        if kill -0 "$SG_PID" 2>/dev/null; then
            echo "relay.sh: sealgate did not exit 30 s after SIGTERM" >&2; FAIL=1
        elif ! wait "$SG_PID"; then
            echo "relay.sh: sealgate exited non-zero after SIGTERM" >&2; FAIL=1
        fi
        SG_PID=''
        ;;
    *) die "unknown relay '$relay' in RELAYS" ;;
    esac
done

commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
pfver=$(dpkg-query -W -f '${Version}' postfix 2>/dev/null || true)
echo
echo "### relay benchmark $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
echo "$(nproc) cores, $(uname -r), Postfix ${pfver:-?}; $MSGS msgs x $SIZE B, $SESSIONS sessions${SOURCE_OPTS:+, smtp-source $SOURCE_OPTS}; spool/queue on $WORK_FS"
echo
echo "| path | msgs/s | seconds |"
echo "|---|---|---|"
printf '%s' "$RESULTS"
if [ -n "$SG_RATE" ] && [ -n "$PF_RATE" ]; then
    echo
    echo "sealgate/Postfix: $(awk -v a="$SG_RATE" -v b="$PF_RATE" 'BEGIN { printf "%.2f", a / b }')x"
fi
[ -n "$SG_RSS" ] && echo "sealgate peak RSS (VmHWM): $SG_RSS"
[ "$FAIL" = 0 ] || { echo "relay.sh: FAILED (see above)" >&2; exit 1; }
OK=1
