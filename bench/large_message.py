#!/usr/bin/env python3
"""Peak memory of the daemon for one large message (issue #4: outgoing
messages stream; target: peak RSS under 3x the message size).

Starts a gateway (Release build recommended: SEALGATE_BIN=build/bin) with
smtp-sink as next hop, once as a plain relay and once per S/MIME mode
given, sends one message of SIZE MiB (default 50) and prints the daemon's
VmHWM (peak resident memory) beside the message size, the ratio, and the
idle daemon's VmHWM measured in the same run (the part that is not the
message).  Encrypting modes get a recipient key first.

Run: SEALGATE_BIN=build/bin python3 bench/large_message.py [--size 50] [relay sign encrypt sign-encrypt triple]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import sgtest  # noqa: E402
from test_outgoing import profile_yaml, recipient  # noqa: E402


def one(mode, size_mib):
    kw = {}
    if mode != "relay":
        kw = dict(yaml=profile_yaml(mode),
                  edits=[("    flow_policy: default\n", "    flow_policy: default\n    sending_profile: p\n")])
    limit = '"%dM"' % (size_mib + 10)
    with sgtest.Sink() as sink, sgtest.gateway(sink.port, limits={"message_size": limit}, start=False, **kw) as gw:
        if mode in ("encrypt", "sign-encrypt", "triple"):
            pem, _ = recipient(gw.base, "b@example.net")
            gw.sealctl("pubkey", "add", "b", pem, check=True)
        gw.start()
        idle = gw.peak_rss_kib()
        line = ("0123456789" * 7 + "\r\n").encode()
        msg = sgtest.make_message("big@bench", rcpt="b@example.net") + line * (size_mib * 1024 * 1024 // len(line))
        t = time.time()
        code, text = sgtest.send_message(gw.port, "a@example.com", ["b@example.net"], msg)
        if code != 250 or sink.wait_count(1, 300) < 1:
            raise SystemExit("%s: not delivered (%s %s)" % (mode, code, text))
        peak = gw.peak_rss_kib()
        print("%-13s message %5.1f MiB  peak RSS %6.1f MiB  ratio %.2f  (idle daemon %.1f MiB; %.1f s)"
              % (mode, len(msg) / 2**20, peak / 1024, peak * 1024 / len(msg), idle / 1024, time.time() - t),
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=50)
    ap.add_argument("modes", nargs="*", default=["relay", "sign", "encrypt", "sign-encrypt", "triple"])
    a = ap.parse_args()
    print("target: peak RSS under 3x the message size")
    for m in a.modes:
        one(m, a.size)


if __name__ == "__main__":
    main()
