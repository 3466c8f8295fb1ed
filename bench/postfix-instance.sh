#!/bin/sh
# postfix-instance.sh: a private Postfix relay in a folder of its own, for
# benchmarks and integration tests.  Never touches /etc/postfix/main.cf or
# the system instance.  Run as root (Postfix's master must start as root).
#
#   postfix-instance.sh start DIR LISTEN_PORT NEXTHOP_PORT
#       (re)writes DIR/etc/{main,master}.cf, creates DIR/queue, DIR/data,
#       DIR/log, runs `postfix -c DIR/etc check` and `start`, and waits until
#       127.0.0.1:LISTEN_PORT answers with a 220 banner.
#   postfix-instance.sh stop DIR      stops it (waits for master to exit)
#   postfix-instance.sh status DIR    exit 0 when running
#   postfix-instance.sh flush DIR     attempt delivery of deferred mail now
#
# The instance accepts mail from 127.0.0.0/8 on 127.0.0.1:LISTEN_PORT and
# relays everything to [127.0.0.1]:NEXTHOP_PORT.  Durability is stock Postfix
# (queue files fsynced before "250"); only addresses, concurrency and
# logging are set.  Log: DIR/log/maillog.
set -eu

die() { echo "postfix-instance.sh: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 start DIR LISTEN_PORT NEXTHOP_PORT | stop DIR | status DIR | flush DIR" >&2
    exit 2
}

# wait_port PORT SECONDS: until 127.0.0.1:PORT sends an SMTP 220 banner.
wait_port() {
    python3 - "$1" "$2" <<'EOF'
import socket, sys, time
port, limit = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + limit
while time.time() < end:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(5)
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}

abspath() { (cd "$1" && pwd -P); }

running() { postfix -c "$1/etc" status >/dev/null 2>&1; }

write_config() {
    dir=$1 lport=$2 nport=$3
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/log"
    # Postfix wants root-owned config and queue roots; data belongs to postfix.
    chown root:root "$dir/etc" "$dir/queue"
    chmod 755 "$dir/etc" "$dir/queue" "$dir/log"
    chown postfix:postfix "$dir/data"
    cat >"$dir/etc/main.cf" <<EOF
# Private benchmark/test instance written by bench/postfix-instance.sh.
compatibility_level = 3.6
config_directory = $dir/etc
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pfbench.localdomain
mydomain = localdomain
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Relay everything, deliver nothing locally.
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled
alias_maps =
alias_database =
relay_domains =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
relayhost = [127.0.0.1]:$nport
# No DNS at all: numeric next hop, addresses from /etc/hosts only.
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
# Reuse connections to the next hop.
smtp_connection_cache_on_demand = yes
smtp_connection_cache_destinations = \$relayhost
# Sensible concurrency (smtp-source uses 20 sessions).
default_destination_concurrency_limit = 20
initial_destination_concurrency = 5
default_process_limit = 100
# Retry quickly when the next hop is away (tests restart it).
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 60s
# Logging to a file in the folder: no syslog needed.
maillog_file = $dir/log/maillog
maillog_file_prefixes = $dir/log
biff = no
append_dot_mydomain = no
readme_directory = no
smtputf8_enable = no
EOF
    # No chroot (a chroot would need copies of /etc files in the queue).
    cat >"$dir/etc/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$lport inet n -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

cmd=${1:-}
case "$cmd" in
start)
    [ $# -eq 4 ] || usage
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    id postfix >/dev/null 2>&1 || die "no user postfix (install the postfix package)"
    getent group postdrop >/dev/null || die "no group postdrop (install the postfix package)"
    mkdir -p "$2"
    dir=$(abspath "$2")
    lport=$3 nport=$4
    if running "$dir"; then
        postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    fi
    write_config "$dir" "$lport" "$nport"
    postfix -c "$dir/etc" check || die "postfix check failed (see $dir/log/maillog)"
    postfix -c "$dir/etc" start >/dev/null 2>&1 ||
        { tail -n 20 "$dir/log/maillog" >&2 2>/dev/null || true; die "postfix start failed"; }
    wait_port "$lport" 30 ||
        { tail -n 20 "$dir/log/maillog" >&2 2>/dev/null || true; die "port $lport did not answer"; }
    echo "postfix instance $dir: 127.0.0.1:$lport -> [127.0.0.1]:$nport"
    ;;
stop)
    [ $# -eq 2 ] || usage
    [ -d "$2/etc" ] || die "$2 is not an instance folder"
    dir=$(abspath "$2")
    running "$dir" || exit 0
    postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    # "postfix stop" returns before master has gone; wait for its pid file.
    pidf="$dir/queue/pid/master.pid"
    i=0
    while running "$dir" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if running "$dir" && [ -s "$pidf" ]; then
        pid=$(tr -dc 0-9 <"$pidf")
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    fi
    ;;
status)
    [ $# -eq 2 ] || usage
    running "$(abspath "$2")"
    ;;
flush)
    [ $# -eq 2 ] || usage
    postqueue -c "$(abspath "$2")/etc" -f
    ;;
*)
    usage
    ;;
esac
