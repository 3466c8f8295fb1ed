#!/usr/bin/env python3
"""`sealctl quarantine list|show|release|delete` without a daemon (issue #6).

Quarantines are seeded by `quarantine_put` (tests/core/quarantine_put.c,
built beside the unit tests), which holds a message exactly as the
daemon's quarantine("NAME") action does.  The daemon's side of a release
(the control request, the requeue) is tested with the daemon elsewhere;
here a release must leave the message in ROOT/.released and say that the
daemon delivers it when it starts.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_quarantine_cli.py [NAME...]
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402

ok, fails = sgtest.sealctl_ok, sgtest.sealctl_fails

MESSAGE = (b"From: alice@example.com\r\nSubject: quarterly\r\n\tnumbers\r\n"
           b"Message-ID: <q1@test>\r\n\r\nthe secret body\r\n")


def instance():
    return sgtest.Instance(next_hop=sgtest.free_port())


def root(gw):
    return os.path.join(gw.dir, "quarantine")


def hold(gw, name, held_ms=0, sender="alice@example.com", rcpts="bob@example.net", filt="f1", reason="smime=fail",
         message=MESSAGE):
    """Hold message in quarantine name of gw; its ID."""
    exe = os.environ.get("SEALGATE_QUARANTINE_PUT") or os.path.join(os.path.dirname(sgtest.BIN_DIR), "tests",
                                                                     "quarantine_put")
    r = subprocess.run([exe, root(gw), name, str(held_ms), sender, rcpts, filt, reason], input=message,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sgtest.assert_no_sanitizer_report(r.stderr.decode())
    return r.stdout.decode().strip()


def listed(gw, *name):
    rows = json.loads(ok(gw, "--json", "quarantine", "list", *name))
    assert all("id" in r for r in rows), rows
    return rows


def test_list_json_and_table():
    with instance() as gw:
        assert listed(gw) == []
        new = hold(gw, "Policy", 2_000_000_000_000, rcpts="bob@example.net,carol@example.org")
        old = hold(gw, "Spam", 1_000_000_000_000, sender="", filt="spam_filter", reason="")
        rows = listed(gw)
        assert [r["id"] for r in rows] == [old, new], rows  # oldest first
        assert rows[1] == {"id": new, "quarantine": "Policy", "held": "2033-05-18T03:33:20Z", "size": len(MESSAGE),
                           "sender": "alice@example.com", "recipients": ["bob@example.net", "carol@example.org"],
                           "filter": "f1", "reason": "smime=fail"}, rows[1]
        assert rows[0]["sender"] == "" and rows[0]["held"] == "2001-09-09T01:46:40Z", rows[0]
        assert [r["id"] for r in listed(gw, "Spam")] == [old]
        assert listed(gw, "Nothing") == []
        table = ok(gw, "quarantine", "list").splitlines()
        assert table[0].split() == ["ID", "QUARANTINE", "HELD", "SIZE", "FROM", "RCPTS", "FILTER"], table[0]
        assert table[1].split() == [old, "Spam", "2001-09-09T01:46:40Z", str(len(MESSAGE)), "<>", "bob@example.net",
                                    "spam_filter"], table[1]
        assert table[2].split()[-4:] == ["alice@example.com", "bob@example.net", "(+1)", "f1"], table[2]


def test_show_headers_but_not_body():
    with instance() as gw:
        qid = hold(gw, "Policy")
        out = ok(gw, "quarantine", "show", qid)
        assert "id:           %s\n" % qid in out and "quarantine:   Policy\n" in out, out
        assert "reason:       smime=fail\n" in out and "to:           bob@example.net\n" in out, out
        assert "Subject: quarterly\n numbers\n" in out and "Message-ID: <q1@test>\n" in out, out
        assert "secret" not in out, out
        doc = json.loads(ok(gw, "--json", "quarantine", "show", qid))
        assert doc["id"] == qid and doc["headers"] == MESSAGE.split(b"\r\n\r\n")[0].decode() + "\r\n", doc
        assert "body" not in doc and doc["recipients"] == ["bob@example.net"], doc
        doc = json.loads(ok(gw, "--json", "quarantine", "show", qid, "--body"))
        assert doc["body"] == "the secret body\r\n", doc
        raw = gw.sealctl("quarantine", "show", qid, "--body")
        assert raw.returncode == 0 and raw.stdout.endswith("\n\n" + MESSAGE.decode().replace("\r\n", "\n")), raw


def test_text_output_is_safe_for_a_terminal():
    with instance() as gw:
        evil = b"Subject: \x1b]0;owned\x07\x1b[2J\r\n\r\nx\r\n"
        qid = hold(gw, "Policy", sender="a\x1b[31m@example.com", filt="f\x1b[0m", message=evil)
        for args in (("quarantine", "list"), ("quarantine", "show", qid)):
            out = ok(gw, *args)
            assert "\x1b" not in out and "\x07" not in out, (args, out)
        assert "a?[31m@example.com" in ok(gw, "quarantine", "list")
        doc = json.loads(ok(gw, "--json", "quarantine", "show", qid))
        assert doc["sender"] == "a\x1b[31m@example.com" and "\x1b]0;owned" in doc["headers"], doc


def test_release_without_daemon():
    with instance() as gw:
        qid, other = hold(gw, "Policy"), hold(gw, "Policy")
        r = gw.sealctl("quarantine", "release", qid)
        assert r.returncode == 0 and "released; the daemon delivers it when it starts" in r.stdout, r
        assert os.path.exists(os.path.join(root(gw), ".released", qid))
        assert not os.path.exists(os.path.join(root(gw), "Policy", qid))
        assert [x["id"] for x in listed(gw)] == [other]
        fails(gw, "quarantine", "release", qid, says="no quarantined message '%s'" % qid)


def test_delete():
    with instance() as gw:
        qid = hold(gw, "Spam")
        assert ok(gw, "quarantine", "delete", qid) == "deleted %s\n" % qid
        assert listed(gw) == [] and os.listdir(os.path.join(root(gw), "Spam")) == []
        fails(gw, "quarantine", "delete", qid, says="no quarantined message '%s'" % qid)


def test_usage_and_unknown_ids():
    with instance() as gw:
        qid = hold(gw, "Policy")
        for bad in ("../x", "", "ABCDEF", "0123/4", "f" * 40):
            for cmd in ("show", "release", "delete"):
                fails(gw, "quarantine", cmd, bad, code=2, says="not a quarantined message id")
        fails(gw, "quarantine", "show", "0123456789abcdef01234567", says="no quarantined message '0123456789abcdef")
        fails(gw, "quarantine", "list", "../Policy", code=2, says="not a quarantine name")
        fails(gw, "quarantine", "list", "A", "B", code=2, says="usage")
        fails(gw, "quarantine", "show", qid, "--raw", code=2, says="unknown option --raw")
        fails(gw, "quarantine", "delete", qid, qid, code=2, says="usage")
        fails(gw, "quarantine", "frob", code=2, says="unknown subcommand")
        fails(gw, "quarantine", code=2, says="subcommand")
        assert [x["id"] for x in listed(gw)] == [qid]  # nothing was touched


def test_damaged_file_is_listed_not_released():
    with instance() as gw:
        qid = hold(gw, "Policy", 1_000)
        path = os.path.join(root(gw), "Policy", qid)
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            data[-20] ^= 0x01  # in the message data: the spool record's CRC catches it
            f.seek(0)
            f.write(data)
        assert listed(gw) == [{"id": qid, "quarantine": "Policy", "held": "1970-01-01T00:00:01Z",
                               "size": len(data), "corrupt": "checksum mismatch"}]
        assert "CORRUPT: checksum mismatch" in ok(gw, "quarantine", "list")
        fails(gw, "quarantine", "show", qid, says="damaged")
        fails(gw, "quarantine", "release", qid, says="not released")
        assert os.path.exists(path)
        ok(gw, "quarantine", "delete", qid)
        assert not os.path.exists(path)


def main():
    return sgtest.run_tests([
        test_list_json_and_table, test_show_headers_but_not_body, test_text_output_is_safe_for_a_terminal,
        test_release_without_daemon, test_delete, test_usage_and_unknown_ids, test_damaged_file_is_listed_not_released,
    ])


if __name__ == "__main__":
    sys.exit(main())
