#!/usr/bin/env python3
"""Peak memory of the daemon for one large message (issue #4: outgoing
messages stream; target: peak RSS under 3x the message size; issue #5:
incoming ones spill large plaintexts to disk).

Starts a gateway (Release build recommended: SEALGATE_BIN=build/bin) with
smtp-sink as next hop, once as a plain relay and once per S/MIME mode
given, sends one message of SIZE MiB (default 50) and prints the daemon's
VmHWM (peak resident memory) beside the message size, the ratio, and the
idle daemon's VmHWM measured in the same run (the part that is not the
message).  Encrypting modes get a recipient key first.  The incoming
modes send an incoming listener (flow policy decrypting and verifying) a
message `openssl cms` signed (in-verify) or encrypted to the
organisation certificate (in-decrypt); the ratio is against the S/MIME
message as sent (base64 makes it about 4/3 of its content).

Run: SEALGATE_BIN=build/bin python3 bench/large_message.py [--size 50]
     [relay sign encrypt sign-encrypt triple in-verify in-decrypt]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import sgtest  # noqa: E402
from test_outgoing import profile_yaml, recipient  # noqa: E402
from test_incoming import PKI, cms, message  # noqa: E402

INCOMING = [("    direction: outgoing\n", "    direction: incoming\n    local_domains: [\"example.com\"]\n"),
            ("flow_policies:\n  - name: default\n", "flow_policies:\n  - name: default\n    smime_decrypt_verify: true\n")]


def incoming_message(gw, mode, size_mib):
    """A size_mib MiB text entity signed by a partner (in-verify) or
    encrypted to our org certificate (in-decrypt), by openssl."""
    line = ("0123456789" * 7 + "\r\n").encode()
    entity = b"Content-Type: text/plain\r\n\r\n" + line * (size_mib * 1024 * 1024 // len(line))
    if mode == "in-verify":
        pki = PKI(gw.base)
        cert, key = pki.issue("alice", "alice@partner.example")
        gw.sealctl("ca", "import", "partners", pki.cert, check=True)
        smime = cms("-sign", "-signer", cert, "-inkey", key, "-binary", data=entity)
    else:
        org = os.path.join(gw.base, "org.pem")
        with open(org, "w") as f:
            f.write(gw.sealctl("cert", "export", "org", check=True).stdout)
        smime = cms("-encrypt", "-aes256", "-binary", org, data=entity)
    return message(smime, rcpt="b@example.com")


def one(mode, size_mib):
    kw = {}
    incoming = mode.startswith("in-")
    if incoming:
        kw = dict(edits=INCOMING)
    elif mode != "relay":
        kw = dict(yaml=profile_yaml(mode),
                  edits=[("    flow_policy: default\n", "    flow_policy: default\n    sending_profile: p\n")])
    limit = '"%dM"' % (size_mib * 14 // 10 + 10)
    with sgtest.Sink() as sink, sgtest.gateway(sink.port, limits={"message_size": limit}, start=False, **kw) as gw:
        if mode in ("encrypt", "sign-encrypt", "triple"):
            pem, _ = recipient(gw.base, "b@example.net")
            gw.sealctl("pubkey", "add", "b", pem, check=True)
        rcpt = "b@example.com" if incoming else "b@example.net"
        if incoming:
            msg = incoming_message(gw, mode, size_mib)
        else:
            line = ("0123456789" * 7 + "\r\n").encode()
            msg = sgtest.make_message("big@bench", rcpt=rcpt) + line * (size_mib * 1024 * 1024 // len(line))
        gw.start()
        idle = gw.peak_rss_kib()
        t = time.time()
        code, text = sgtest.send_message(gw.port, "alice@partner.example", [rcpt], msg)
        if code != 250 or sink.wait_count(1, 300) < 1:
            raise SystemExit("%s: not delivered (%s %s)" % (mode, code, text))
        peak = gw.peak_rss_kib()
        print("%-13s message %5.1f MiB  peak RSS %6.1f MiB  ratio %.2f  (idle daemon %.1f MiB; %.1f s)"
              % (mode, len(msg) / 2**20, peak / 1024, peak * 1024 / len(msg), idle / 1024, time.time() - t),
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=50)
    ap.add_argument("modes", nargs="*", default=["relay", "sign", "encrypt", "sign-encrypt", "triple", "in-verify",
                                                 "in-decrypt"])
    a = ap.parse_args()
    print("target: peak RSS under 3x the message size")
    for m in a.modes:
        one(m, a.size)


if __name__ == "__main__":
    main()
