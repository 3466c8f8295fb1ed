#!/usr/bin/env python3
"""Releasing held messages across a daemon stop (issue #6; the promise
that nothing is lost or doubled).

Forty messages are held by a content filter, released with `sealctl
quarantine release` while the daemon is stopped, and the daemon is started
and sent SIGTERM as soon as it queues the first of them again: it must
drain cleanly (exit 0, no sanitizer report), each message must be either
queued in the spool or still waiting in the quarantine's .released folder
(never both), and after the next start every message is delivered exactly
once.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_quarantine_release.py
"""

import collections
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from test_policy import Outbound  # noqa: E402

TESTS, test = sgtest.registry()
N = 40

HOLD = """
content_filters:
  - name: f_hold
    direction: outgoing
    condition: 'subject == "^hold"'
    actions: ['quarantine("Review")']
mail_policies:
  - name: default
    direction: outgoing
    senders: ["*"]
    recipients: ["*"]
    content_filters: [f_hold]
"""


@test
def test_stop_while_releasing_loses_and_doubles_nothing():
    with Outbound(yaml=HOLD) as g:
        mids = [g.send("hold %d" % i) for i in range(N)]
        assert sgtest.wait_for(lambda: g.gw.log().count("result=quarantined") >= N, 60), g.gw.log()[-2000:]
        rows = json.loads(sgtest.sealctl_ok(g.gw, "--json", "quarantine", "list"))
        assert len(rows) == N
        g.gw.stop()
        for r in rows:
            sgtest.sealctl_ok(g.gw, "quarantine", "release", r["id"])
        mark = len(g.gw.log())
        g.gw.start(wait=False)
        assert sgtest.wait_for(lambda: "queued as" in g.gw.log()[mark:], 30, 0.001), g.gw.log()[-2000:]
        g.gw.proc.send_signal(signal.SIGTERM)
        assert g.gw.proc.wait(30) == 0, g.gw.log()[-3000:]
        sgtest.assert_no_sanitizer_report(g.gw.log())
        released = os.listdir(os.path.join(g.gw.dir, "quarantine", ".released"))
        assert len(released) + len(g.gw.queued_files()) + len(g.hop.accepted) == N, \
            (len(released), len(g.gw.queued_files()), len(g.hop.accepted))
        g.gw.start()
        assert g.hop.wait_count(N, 60) >= N, g.gw.log()[-3000:]
        count = collections.Counter(t["message_id"] for t in g.hop.accepted)
        assert all(count[m] == 1 for m in mids), collections.Counter(count[m] for m in mids)
        assert os.listdir(os.path.join(g.gw.dir, "quarantine", ".released")) == []


if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS))
