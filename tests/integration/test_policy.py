#!/usr/bin/env python3
"""Mail policies, content filters and quarantine end to end (R27-R30, R35;
issue #6).

One gateway (outgoing listener, FakeHop next hop) carries a config with a
content filter per condition and action, two mail policies (a "vip"
policy for some recipients and the "default" policy, written first but
tried last), and a quarantine with limits.  Each test sends a real
message over SMTP and checks what the next hop received, what the
gateway logged and what `sealctl quarantine` shows; signatures are
checked with `openssl cms -verify` against the org certificate.

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_policy.py [NAME...]
"""

import base64
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402
from test_cert import run  # noqa: E402

TESTS, test = sgtest.registry()

FILTERS = """
sending_profiles:
  - name: signer
    mode: sign
    signing_certificate: org
content_filters:
  - name: f_subject
    direction: outgoing
    condition: 'subject == "(?i)confidential"'
    actions: ['smime-gateway("signer")']
  - name: f_tag
    direction: outgoing
    condition: 'subject == "(?i)confidential|tagme"'
    actions: ['insert-header("X-Tagged", "yes")']
  - name: f_body
    direction: outgoing
    condition: 'body-contains("Geheimnis")'
    actions: ['smime-gateway-on-delivery("signer")', 'insert-header("X-Body", "matched")']
  - name: f_header
    direction: outgoing
    condition: 'header("X-Priority") == "^1"'
    actions: ['insert-header("X-Prio", "high")']
  - name: f_from
    direction: outgoing
    condition: 'mail-from == "^ceo@"'
    actions: ['insert-header("X-From-Ceo", "1")']
  - name: f_rcpt
    direction: outgoing
    condition: 'rcpt-to == "@legal\\\\.example$"'
    actions: ['insert-header("X-Legal", "1")']
  - name: f_attach
    direction: outgoing
    condition: 'attachment-filename == "(?i)\\\\.exe$"'
    actions: ['drop()']
  - name: f_size
    direction: outgoing
    condition: 'body-size > 200K'
    actions: ['bounce()']
  - name: f_hold
    direction: outgoing
    condition: 'subject == "^hold me"'
    actions: ['quarantine("Review")']
  - name: f_after_hold
    direction: outgoing
    condition: 'subject == "^hold me"'
    actions: ['insert-header("X-After-Hold", "1")', 'smime-gateway-on-delivery("signer")']
  - name: f_small
    direction: outgoing
    condition: 'subject == "^small hold"'
    actions: ['quarantine("Small")']
  - name: f_combo
    direction: outgoing
    condition: 'subject == "^combo" and not (header("X-A") == "no" or body-size > 1M)'
    actions: ['insert-header("X-Combo", "1")']
  - name: f_deliver
    direction: outgoing
    condition: 'subject == "^stop here"'
    actions: ['deliver()']
  - name: f_after_deliver
    direction: outgoing
    condition: 'subject == "^stop here"'
    actions: ['drop()']
  - name: f_vip
    direction: outgoing
    condition: 'subject != "^never$"'
    actions: ['smime-gateway("signer")']
mail_policies:
  - name: default
    direction: outgoing
    senders: ["*"]
    recipients: ["*"]
    content_filters: [f_subject, f_tag, f_body, f_header, f_from, f_rcpt, f_attach, f_size, f_hold,
                      f_after_hold, f_small, f_combo, f_deliver, f_after_deliver]
  - name: vip
    direction: outgoing
    senders: ["*"]
    recipients: ["@vip.example", "*.board.example"]
    content_filters: [f_vip]
quarantines:
  - name: Small
    max_size: "16K"
"""

GW = None  # the shared set-up


class Outbound(sgtest.HopGateway):
    def __init__(self, yaml=FILTERS):
        self.hop = sgtest.FakeHop()
        self.cm = sgtest.gateway(self.hop.port, yaml=yaml, limits={"retry_min": '"1s"', "retry_max": '"2s"'})
        self.gw = self.cm.__enter__()
        self.org = os.path.join(self.gw.base, "org.pem")
        with open(self.org, "w") as f:
            f.write(self.gw.sealctl("cert", "export", "org", check=True).stdout)

    def send(self, subject, body="hello\r\n", sender="alice@example.com", rcpts=("bob@example.net",), extra=(),
             raw=None):
        """Send a message; returns its Message-ID."""
        self.mark = len(self.gw.log())  # not_delivered looks at what was logged after this
        mid = "p%d.%d@example.com" % (os.getpid(), time.monotonic_ns())
        msg = raw if raw is not None else \
            ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s>\r\n%s\r\n%s"
             % (sender, rcpts[0], subject, mid, "".join(h + "\r\n" for h in extra), body)).encode()
        if raw is not None:
            mid = sgtest.message_id(raw)
        code, text = sgtest.send_message(self.gw.port, sender, list(rcpts), msg)
        assert code == 250, (code, text)
        return mid

    def received(self, mid, n=1, timeout=30):
        """The transactions of the next hop for Message-ID mid (wait for n)."""
        def got():
            return [t for t in list(self.hop.accepted) if t["message_id"] == mid]
        sgtest.wait_for(lambda: len(got()) >= n, timeout)
        ts = got()
        assert len(ts) >= n, (mid, len(ts), self.gw.log()[-3000:])
        return ts

    def one(self, mid):
        return self.received(mid)[0]["data"]

    def not_delivered(self, mid, log_pattern, timeout=30):
        """mid is never delivered; the log says why (pattern)."""
        assert sgtest.wait_for(lambda: re.search(log_pattern, self.gw.log()[self.mark:]), timeout), \
            self.gw.log()[-3000:]
        time.sleep(0.5)
        assert not [t for t in self.hop.accepted if t["message_id"] == mid]

    def quarantine(self, *args):
        out = sgtest.sealctl_ok(self.gw, "--json", "quarantine", *args)
        return json.loads(out) if out.strip() else None

    def verify(self, data):
        """The signature verifies with the org certificate (openssl)."""
        r = run("openssl", "cms", "-verify", "-noverify", "-certfile", self.org, input=data, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout


def rcpts_of(t):
    """The recipient addresses of a FakeHop transaction."""
    return sorted(re.sub(r"(?i)^TO:\s*<?([^>\s]*)>?.*$", r"\1", r) for r in t["rcpts"])


def head(data):
    return data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")


def has_field(data, name, value=None):
    m = re.search(r"(?im)^%s:[ \t]*(.*)$" % re.escape(name), head(data))
    return bool(m) and (value is None or m.group(1).strip() == value)


def is_signed(data):
    return re.search(r"(?im)^Content-Type:\s*multipart/signed", head(data)) is not None


# ---------------------------------------------------------------- conditions and the order of actions

@test
def test_subject_final_signs_and_skips_later_filters():
    """R28: subject == "(?i)confidential" matches "Quarterly CONFIDENTIAL
    numbers"; smime-gateway is final: signed, and f_tag (which matches the
    same subject but comes later) never ran."""
    mid = GW.send("Quarterly CONFIDENTIAL numbers")
    data = GW.one(mid)
    assert is_signed(data), head(data)
    GW.verify(data)
    assert not has_field(data, "X-Tagged"), head(data)


@test
def test_filter_without_final_action_lets_the_rest_run():
    mid = GW.send("please tagme", extra=["X-Priority: 1 (Highest)"])
    data = GW.one(mid)
    assert has_field(data, "X-Tagged", "yes") and has_field(data, "X-Prio", "high"), head(data)
    assert not is_signed(data)


@test
def test_body_contains_decodes_quoted_printable_and_on_delivery_signs_last():
    """R27, R29: the word is split by a quoted-printable soft line break
    and written in another case; smime-gateway-on-delivery lets the later
    filters run (f_header adds X-Prio) and signs as the last step: the
    inserted fields are in the delivered header, the signature verifies."""
    body = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" \
           "Das ist ein GEHEIM=\r\nNIS f=C3=BCr dich.\r\n"
    mid = "qp%d@example.com" % time.monotonic_ns()
    raw = ("From: <alice@example.com>\r\nTo: <bob@example.net>\r\nSubject: q\r\nMessage-ID: <%s>\r\n"
           "MIME-Version: 1.0\r\nX-Priority: 1\r\n%s" % (mid, body)).encode()
    data = GW.one(GW.send(None, raw=raw))
    assert is_signed(data), head(data)
    assert has_field(data, "X-Body", "matched") and has_field(data, "X-Prio", "high"), head(data)
    assert "GEHEIM=" in GW.verify(data)  # the content as written, still encoded


@test
def test_body_contains_base64_and_charset():
    """Base64 text in ISO-8859-1: decoded and converted before the search."""
    text = "Ein Geheimnis f\u00fcr dich".encode("iso-8859-1")
    body = ("Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(text).decode() + "\r\n")
    mid = "b64%d@example.com" % time.monotonic_ns()
    raw = ("From: <alice@example.com>\r\nTo: <bob@example.net>\r\nSubject: b\r\nMessage-ID: <%s>\r\n"
           "MIME-Version: 1.0\r\n%s" % (mid, body)).encode()
    data = GW.one(GW.send(None, raw=raw))
    assert has_field(data, "X-Body", "matched"), head(data)


@test
def test_body_contains_does_not_match_the_header():
    data = GW.one(GW.send("Geheimnis in the subject only"))
    assert not has_field(data, "X-Body"), head(data)


@test
def test_mail_from_and_rcpt_to():
    data = GW.one(GW.send("x", sender="ceo@example.com", rcpts=("counsel@legal.example",)))
    assert has_field(data, "X-From-Ceo", "1") and has_field(data, "X-Legal", "1"), head(data)
    data = GW.one(GW.send("x", sender="staff@example.com", rcpts=("counsel@legal.example.org",)))
    assert not has_field(data, "X-From-Ceo") and not has_field(data, "X-Legal"), head(data)


@test
def test_attachment_filename_drop():
    """attachment-filename matches a MIME part's file name; drop() is final
    and silent: nothing delivered, no DSN, one log line naming the filter."""
    b = "b0undary"
    mid = "att%d@example.com" % time.monotonic_ns()
    raw = ("From: <alice@example.com>\r\nTo: <bob@example.net>\r\nSubject: files\r\nMessage-ID: <%s>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=%s\r\n\r\n--%s\r\n"
           "Content-Type: text/plain\r\n\r\nsee attached\r\n--%s\r\nContent-Type: application/octet-stream\r\n"
           "Content-Disposition: attachment; filename=\"Setup.EXE\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           "TVqQAAMAAAAEAAAA\r\n--%s--\r\n" % (mid, b, b, b, b)).encode()
    n = len(GW.hop.accepted)
    GW.send(None, raw=raw)
    GW.not_delivered(mid, r"result=dropped filter=\"f_attach\"")
    assert len(GW.hop.accepted) == n  # no DSN either


@test
def test_body_size_bounce_sends_a_dsn():
    mid = GW.send("big", body="x" * 70 + "\r\n" * 1 + ("y" * 998 + "\r\n") * 210)
    assert sgtest.wait_for(lambda: any(b"refused by filter 'f_size'" in t["data"] for t in GW.hop.accepted), 30), \
        GW.gw.log()[-3000:]
    assert not [t for t in GW.hop.accepted if t["message_id"] == mid]


@test
def test_and_or_not_parentheses():
    assert has_field(GW.one(GW.send("combo 1")), "X-Combo", "1")
    assert not has_field(GW.one(GW.send("combo 2", extra=["X-A: no"])), "X-Combo")
    assert has_field(GW.one(GW.send("combo 3", extra=["X-A: yes"])), "X-Combo", "1")


@test
def test_deliver_is_final():
    """deliver() ends the run: the drop() of a later filter never happens."""
    GW.one(GW.send("stop here"))


# ---------------------------------------------------------------- mail policies (R30)

@test
def test_policy_split_by_recipient():
    """Recipients of one message in two policies: the vip ones (exact
    domain and *.subdomain) get a signed copy, the others a plain one; the
    "default" policy is tried last though written first."""
    rcpts = ("a@vip.example", "b@other.example", "c@x.board.example", "d@board.example")
    mid = GW.send("plain words", rcpts=rcpts)
    ts = GW.received(mid, 2)
    assert len(ts) == 2, ts
    by = {tuple(rcpts_of(t)): t["data"] for t in ts}
    assert set(by) == {("a@vip.example", "c@x.board.example"), ("b@other.example", "d@board.example")}, by.keys()
    assert is_signed(by[("a@vip.example", "c@x.board.example")])
    assert not is_signed(by[("b@other.example", "d@board.example")])
    assert "split off" in GW.gw.log()


@test
def test_same_outcome_is_not_split():
    mid = GW.send("plain words", rcpts=("a@one.example", "b@two.example"))
    ts = GW.received(mid)
    time.sleep(0.5)
    assert len([t for t in GW.hop.accepted if t["message_id"] == mid]) == 1
    assert rcpts_of(ts[0]) == ["a@one.example", "b@two.example"]


# ---------------------------------------------------------------- quarantine

def held(mid, name=None):
    rows = GW.quarantine("list", *( [name] if name else []))
    return [r for r in rows if mid in json.dumps(r) or r.get("message_id") == mid]


@test
def test_quarantine_then_release_applies_the_remaining_processing():
    """quarantine() holds the message (not final: the later filter's
    actions are kept for the release); release delivers it as it would
    have been delivered: with X-After-Hold, signed on delivery."""
    mid = GW.send("hold me please")
    GW.not_delivered(mid, r"result=quarantined quarantine=Review")
    rows = GW.quarantine("list", "Review")
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["quarantine"] == "Review" and row["filter"] == "f_hold", row
    shown = GW.quarantine("show", row["id"])
    assert "hold me please" in shown["headers"], shown
    sgtest.sealctl_ok(GW.gw, "quarantine", "release", row["id"])
    data = GW.one(mid)
    assert is_signed(data) and has_field(data, "X-After-Hold", "1"), head(data)
    GW.verify(data)
    assert GW.quarantine("list", "Review") == []


@test
def test_quarantine_survives_restart_and_delete():
    mid = GW.send("hold me across a restart")
    GW.not_delivered(mid, r"result=quarantined")
    rows = GW.quarantine("list", "Review")
    assert len(rows) == 1
    GW.gw.restart()
    assert [r["id"] for r in GW.quarantine("list", "Review")] == [rows[0]["id"]]
    sgtest.sealctl_ok(GW.gw, "quarantine", "delete", rows[0]["id"])
    assert GW.quarantine("list", "Review") == []
    sgtest.sealctl_fails(GW.gw, "quarantine", "show", rows[0]["id"], code=1)
    time.sleep(1)
    assert not [t for t in GW.hop.accepted if t["message_id"] == mid]


@test
def test_quarantine_release_while_stopped_is_delivered_at_start():
    mid = GW.send("hold me while stopped")
    GW.not_delivered(mid, r"result=quarantined quarantine=Review id=\S+ filter=\"f_hold\"")
    row = GW.quarantine("list", "Review")[0]
    GW.gw.stop()
    sgtest.sealctl_ok(GW.gw, "quarantine", "release", row["id"])
    GW.gw.start()
    assert is_signed(GW.one(mid))


@test
def test_quarantine_size_limit_expires_the_oldest():
    """quarantines: Small has max_size 16K: a third 5 KiB message makes
    the oldest go, with a log line; a message the quarantine could never
    hold is refused with a DSN instead of being held and expired at once."""
    mids = []
    for i in range(3):
        mids.append(GW.send("small hold %d" % i, body=("z" * 60 + "\r\n") * 80))
        GW.not_delivered(mids[-1], r"result=quarantined quarantine=Small")
        time.sleep(0.05)
    rows = GW.quarantine("list", "Small")
    assert len(rows) == 2, rows
    assert re.search(r"quarantine: expired id=\S+ quarantine=Small .*reason=size", GW.gw.log()), GW.gw.log()[-2000:]
    GW.send("small hold big", body=("z" * 60 + "\r\n") * 300)
    assert sgtest.wait_for(lambda: any(b"larger than that quarantine's max_size" in t["data"]
                                       for t in GW.hop.accepted), 30), GW.gw.log()[-3000:]
    assert len(GW.quarantine("list", "Small")) == 2


@test
def test_policy_quarantine_always_exists():
    assert os.path.isdir(os.path.join(GW.gw.dir, "quarantine", "Policy"))
    assert GW.quarantine("list", "Policy") == []


@test
def test_split_does_not_let_a_part_escape_a_message_filter():
    """A message filter holds every message with a recipient at boss@: the
    vip recipient would be signed and the other not, but held alike they
    stay one message (nothing delivered); released, the parts are split
    and each judged with all the original recipients, so none is held
    again and none escapes the signature its policy asks for."""
    good = GW.gw.read_config()
    try:
        GW.gw.write_config(good + "message_filters: |\n  boss: if (rcpt-to == \"^boss@\") { quarantine(\"Boss\"); }\n")
        sgtest.sealctl_ok(GW.gw, "reload")
        mid = GW.send("plain words", rcpts=("a@vip.example", "boss@other.example"))
        GW.not_delivered(mid, r"result=quarantined quarantine=Boss")
        rows = GW.quarantine("list", "Boss")
        assert len(rows) == 1 and sorted(rows[0]["recipients"]) == ["a@vip.example", "boss@other.example"], rows
        sgtest.sealctl_ok(GW.gw, "quarantine", "release", rows[0]["id"])
        ts = GW.received(mid, 2)
        by = {tuple(rcpts_of(t)): t["data"] for t in ts}
        assert is_signed(by[("a@vip.example",)]) and not is_signed(by[("boss@other.example",)]), by.keys()
        assert GW.quarantine("list", "Boss") == []
    finally:
        GW.gw.write_config(good)
        sgtest.sealctl_ok(GW.gw, "reload")


# ---------------------------------------------------------------- config errors (R35)

BAD = [
    # (what replaces the f_combo condition, expected text: line/column relative to the condition)
    ("'subject = \"x\"'", "filter 'f_combo'", "expected"),
    ("'subject == \"(unclosed\"'", "filter 'f_combo'", "missing closing parenthesis"),
    ("'body-size > lots'", "filter 'f_combo'", "number"),
]


def condition_position(text, needle):
    """(line, column) 1-based of needle in the config text."""
    i = text.index(needle)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


@test
def test_config_errors_name_filter_line_and_column():
    """Each mistake is rejected by `sealctl config check` with the filter's
    name and the line and column where it is; a running daemon refuses the
    reload and keeps its config (R35)."""
    good = GW.gw.read_config()
    cond = "'subject == \"^combo\" and not (header(\"X-A\") == \"no\" or body-size > 1M)'"
    try:
        cases = [
            ("'subject = \"x\"'", "f_combo", 9, "'='"),
            ("'subject == \"^combo\" and (body-size > 5'", "f_combo", None, "')'"),
            ("'header(\"X-A\") == \"(\"'", "f_combo", 20, "regular expression"),  # PCRE2 points past the "("
        ]
        for new, fname, col_in_cond, says in cases:
            text = good.replace("condition: " + cond, "condition: " + new)
            assert text != good
            GW.gw.write_config(text)
            r = GW.gw.sealctl("config", "check")
            assert r.returncode == 1, r
            line, col = condition_position(text, "condition: " + new)
            col += len("condition: ") + 1  # the quote
            assert "filter '%s'" % fname in r.stderr, r.stderr
            m = re.search(r"line (\d+), column (\d+)", r.stderr)
            assert m and int(m.group(1)) == line, (r.stderr, line)
            if col_in_cond:
                assert int(m.group(2)) == col + col_in_cond - 1, (r.stderr, col + col_in_cond - 1)
            assert says in r.stderr, r.stderr
            rr = GW.gw.sealctl("reload")
            assert rr.returncode != 0, rr
        # an action naming a profile that does not exist, and one after a final action
        text = good.replace("['deliver()']", "['smime-gateway(\"nope\")']")
        GW.gw.write_config(text)
        r = GW.gw.sealctl("config", "check")
        assert r.returncode == 1 and "no sending profile named 'nope'" in r.stderr and "f_deliver" in r.stderr, r
        line, col = condition_position(text, "smime-gateway(\"nope\")")
        assert "line %d, column %d" % (line, col) in r.stderr, (r.stderr, line, col)
        text = good.replace("['deliver()']", "['drop()', 'insert-header(\"X\", \"y\")']")
        GW.gw.write_config(text)
        r = GW.gw.sealctl("config", "check")
        assert r.returncode == 1 and "can never run" in r.stderr, r.stderr
        # a mail policy naming a filter of the other direction, and a bad pattern
        text = good.replace('recipients: ["@vip.example", "*.board.example"]', 'recipients: ["vip.example"]')
        GW.gw.write_config(text)
        r = GW.gw.sealctl("config", "check")
        assert r.returncode == 1 and "'vip.example' is not" in r.stderr, r.stderr
    finally:
        GW.gw.write_config(good)
    sgtest.sealctl_ok(GW.gw, "config", "check")
    # the daemon kept the config it had: filters still work
    assert has_field(GW.one(GW.send("please tagme")), "X-Tagged", "yes")


@test
def test_message_filter_syntax_error_names_line_and_column():
    good = GW.gw.read_config()
    try:
        text = good + ("message_filters: |\n  first: if (subject == \"a\") { insert-header(\"X-M\", \"1\"); }\n"
                       "  second: if (subject == \"b\" { drop(); }\n")
        GW.gw.write_config(text)
        r = GW.gw.sealctl("config", "check")
        assert r.returncode == 1, r
        line = text.count("\n", 0, text.index("  second:")) + 1
        col = 2 + len("second: if (subject == \"b\" ") + 1
        assert "line %d, column %d: filter 'second'" % (line, col) in r.stderr, (r.stderr, line, col)
    finally:
        GW.gw.write_config(good)


@test
def test_message_filters_run_before_content_filters():
    """message_filters apply to every message first; an else branch; a
    message filter's deliver() does not stop the content filters."""
    good = GW.gw.read_config()
    try:
        GW.gw.write_config(good + (
            "message_filters: |\n"
            "  mark: if (subject == \"^mf\") { insert-header(\"X-MF\", \"yes\"); deliver(); }\n"
            "        else { insert-header(\"X-MF\", \"no\"); }\n"))
        sgtest.sealctl_ok(GW.gw, "reload")
        data = GW.one(GW.send("mf tagme"))
        assert has_field(data, "X-MF", "yes") and has_field(data, "X-Tagged", "yes"), head(data)
        data = GW.one(GW.send("other"))
        assert has_field(data, "X-MF", "no"), head(data)
    finally:
        GW.gw.write_config(good)
        sgtest.sealctl_ok(GW.gw, "reload")


def shared():
    global GW
    import contextlib

    @contextlib.contextmanager
    def cm():
        global GW
        with Outbound() as GW:
            yield GW
    return cm()


if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS, shared=shared))
