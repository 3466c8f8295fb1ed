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

mkdir -p demo-received
sink_user=()
if [ "$(id -u)" = 0 ]; then chown postfix demo-received; sink_user=(-u postfix); fi
/usr/sbin/smtp-sink "${sink_user[@]}" -c -d "$PWD/demo-received/%Y%m%d/msg." "$NEXT_HOP" 256 &
SINK=$!
trap 'kill $SINK 2>/dev/null || true' EXIT

cat <<TXT

sealgate demo: listening on $LISTEN, delivering to a local sink on $NEXT_HOP
that stores each message under $PWD/demo-received/.
Send it a message from another terminal:

  swaks --server $LISTEN --from alice@example.com --to bob@example.net --header "Subject: hello"

Then: ls -R demo-received   |   build/bin/sealctl -c demo/sealgate.yaml queue list
Ctrl-C stops the gateway (it drains first).

TXT
# In the background so that a TERM to this script drains the gateway too.
build/bin/sealgate -c demo/sealgate.yaml &
SG=$!
trap 'kill -TERM $SG 2>/dev/null || true' INT TERM
wait $SG || wait $SG
