#!/usr/bin/env bash
# demo.sh - install, build, create a demo instance in ./demo and run the
# gateway in the foreground on the embedded defaults, with a local next hop
# (Postfix's smtp-sink) that stores every message it receives in
# demo-received/ (beside the instance: the instance folder is 0700 and the
# sink runs as user postfix).  Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
LISTEN=${LISTEN:-127.0.0.1:2525}
NEXT_HOP=${NEXT_HOP:-127.0.0.1:2526}

tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target sealgate sealctl
[ -f demo/sealgate.yaml ] || build/bin/sealctl init demo --domain example.com \
  --listen "$LISTEN" --next-hop "$NEXT_HOP"

RECEIVED=$PWD/demo-received
mkdir -p "$RECEIVED"
sink_user=()
if [ "$(id -u)" = 0 ]; then
  sink_user=(-u postfix)
  chown postfix "$RECEIVED"
  # A checkout in a private folder (/root is 0700) is out of the postfix
  # user's reach: store the mail where it can write.
  if ! runuser -u postfix -- test -w "$RECEIVED"; then
    RECEIVED=/var/tmp/sealgate-demo-received
    mkdir -p "$RECEIVED" && chown postfix "$RECEIVED" && chmod 0755 "$RECEIVED"
  fi
fi
/usr/sbin/smtp-sink "${sink_user[@]}" -c -d "$RECEIVED/%Y%m%d/msg." "$NEXT_HOP" 256 &
SINK=$!
trap 'kill $SINK 2>/dev/null || true' EXIT

cat <<TXT

sealgate demo: listening on $LISTEN, delivering to a local sink on $NEXT_HOP
that stores each message under $RECEIVED/.
Send it a message from another terminal:

  swaks --server $LISTEN --from alice@example.com --to bob@example.net --header "Subject: hello"

Then: ls -R $RECEIVED   |   build/bin/sealctl -c demo/sealgate.yaml queue list
Ctrl-C stops the gateway (it drains first).

TXT
# In the background so that a TERM to this script drains the gateway too.
build/bin/sealgate -c demo/sealgate.yaml &
SG=$!
trap 'kill -TERM $SG 2>/dev/null || true' INT TERM
wait $SG || wait $SG
