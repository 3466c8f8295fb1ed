#!/usr/bin/env python3
"""Sending profiles: `sealctl profile list|show|export|import|search|delete`
(R26, R35; issue #6).

Profiles live in the config file.  Each test makes an instance with
`sealctl init --hsm inprocess` (so the token and its `org` certificate are
real) and gives it the profiles below, a listener and a content filter
that use two of them, and comments around them.  Changes must be all or
nothing: any refused import or delete leaves the config byte-identical
and no stray file beside it; an accepted one keeps every byte outside the
`sending_profiles:` entry, comments included, and the file's mode.  With
the daemon running, an import makes it reload (its log says so).

Run: SEALGATE_BIN=build/bin python3 tests/integration/test_profile.py [NAME...]
"""

import json
import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgtest  # noqa: E402

ok, fails = sgtest.sealctl_ok, sgtest.sealctl_fails
TESTS, test = sgtest.registry()

PROFILES = """\
# profiles for the partners (this comment stays)
sending_profiles:   # three of them
  - name: signonly        # signs only
    mode: sign
    signing_certificate: org
  - name: signenc
    mode: sign-encrypt
    signing_certificate: org
    missing_key_action: split
  - name: enconly
    mode: encrypt
    encryption: aes256-gcm   # comment on the last value
# a comment after the profiles (this one stays too)
content_filters:
  - name: confidential    # why: the legal team asked
    direction: outgoing
    condition: 'subject == "(?i)confidential"'
    actions: ['smime-gateway("signenc")']
mail_policies:
  - name: default
    direction: outgoing
    senders: ["*"]
    recipients: ["*"]
    content_filters: [confidential]
"""

# Every key of every profile with its effective value (defaults included).
EXPECTED = {
    "signonly": {"mode": "sign", "signing_certificate": "org", "sign_mode": "detached",
                 "signature": "rsa-pkcs1", "missing_key_action": None, "encryption": None,
                 "key_transport": None},
    "signenc": {"mode": "sign-encrypt", "signing_certificate": "org", "sign_mode": "detached",
                "signature": "rsa-pkcs1", "missing_key_action": "split", "encryption": "auto",
                "key_transport": "rsa-pkcs1"},
    "enconly": {"mode": "encrypt", "signing_certificate": None, "sign_mode": None, "signature": None,
                "missing_key_action": "bounce", "encryption": "aes256-gcm", "key_transport": "rsa-pkcs1"},
}
USED_BY = {"signonly": ["listener:main"], "signenc": ["content_filter:confidential"], "enconly": []}


def instance(profiles=True):
    """An instance (inprocess token); with profiles, PROFILES appended and
    the listener `main` using signonly."""
    gw = sgtest.Instance(next_hop=sgtest.free_port(), init_args=["--hsm", "inprocess"])
    if profiles:
        gw.edit_config("    flow_policy: default\n", "    flow_policy: default\n    sending_profile: signonly\n")
        gw.append_config(PROFILES)
    return gw


def raw(gw):
    with open(gw.config, "rb") as f:
        return f.read()


def profiles(gw):
    """name -> the JSON object of `profile list --json`."""
    got = json.loads(ok(gw, "--json", "profile", "list"))
    assert all("name" in p for p in got), got
    return {p["name"]: p for p in got}


def settings(gw):
    """name -> every key but name (what a profile does), in file order."""
    keys = ("mode", "signing_certificate", "sign_mode", "signature", "missing_key_action", "encryption",
            "key_transport")
    return [(n, {k: p[k] for k in keys}) for n, p in profiles(gw).items()]


def write(gw, name, text):
    path = os.path.join(gw.base, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def stray_files(gw):
    """Files beside the config that a change could leave behind."""
    return [n for n in os.listdir(gw.dir) if n.startswith("sealgate.yaml") and n != "sealgate.yaml"]


def sealctl_input(gw, text, *args):
    return subprocess.run([sgtest.binary("sealctl"), "-c", gw.config] + list(args), input=text,
                          capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- list, show, search

@test
def test_list_table():
    with instance() as gw:
        lines = ok(gw, "profile", "list").splitlines()
        assert lines[0].split() == ["NAME", "MODE", "SIGNING_CERTIFICATE", "MISSING_KEY", "ENCRYPTION", "USED_BY"]
        rows = [l.split() for l in lines[1:]]
        assert rows == [["signonly", "sign", "org", "-", "-", "listener:main"],
                        ["signenc", "sign-encrypt", "org", "split", "auto", "content_filter:confidential"],
                        ["enconly", "encrypt", "-", "bounce", "aes256-gcm", "-"]], rows


@test
def test_list_json_has_every_key_with_defaults():
    with instance() as gw:
        got = profiles(gw)
        assert list(got) == ["signonly", "signenc", "enconly"], got
        for name, want in EXPECTED.items():
            for k, v in want.items():
                assert got[name][k] == v, (name, k, got[name])
            assert got[name]["used_by"] == USED_BY[name], got[name]


@test
def test_list_without_profiles():
    with instance(profiles=False) as gw:
        assert json.loads(ok(gw, "--json", "profile", "list")) == []
        assert ok(gw, "profile", "list").splitlines()[1:] == []


@test
def test_show():
    with instance() as gw:
        out = ok(gw, "profile", "show", "signenc")
        fields = dict(l.split(None, 1) for l in out.splitlines())
        for k, v in EXPECTED["signenc"].items():
            assert fields[k] == v, (k, out)
        assert fields["used_by"] == "content_filter:confidential", out
        out = ok(gw, "profile", "show", "enconly")
        assert "sign_mode" in out and "does not apply" in out, out
        got = json.loads(ok(gw, "profile", "show", "enconly", "--json"))
        assert got["name"] == "enconly" and got["used_by"] == [], got
        for k, v in EXPECTED["enconly"].items():
            assert got[k] == v, (k, got)
        fails(gw, "profile", "show", "nosuch", says="no sending profile named 'nosuch'")


@test
def test_search():
    with instance() as gw:
        def found(text):
            return [p["name"] for p in json.loads(ok(gw, "--json", "profile", "search", text))]
        assert found("gcm") == ["enconly"]
        assert found("SIGNENC") == ["signenc"]               # names, ignoring case
        assert found("ORG") == ["signonly", "signenc"]       # values
        assert found("bounce") == ["enconly"]                # a default counts
        assert found("nothing-like-this") == []
        rows = ok(gw, "profile", "search", "Split").splitlines()
        assert rows[0].startswith("NAME") and [r.split()[0] for r in rows[1:]] == ["signenc"], rows


@test
def test_usage_errors():
    with instance() as gw:
        for args in (["profile"], ["profile", "frob"], ["profile", "show"], ["profile", "import"],
                     ["profile", "list", "extra"], ["profile", "delete", "a", "b"], ["profile", "export", "--x"]):
            fails(gw, *args, code=2)


# ---------------------------------------------------------------- export, import

@test
def test_export_import_round_trip():
    with instance() as gw, instance(profiles=False) as other:
        path = os.path.join(gw.base, "profiles.yaml")
        out = ok(gw, "profile", "export", path)
        assert "exported 3 sending profiles" in out, out
        text = open(path).read()
        # every key that applies is written out, defaults included
        assert text.count('sign_mode: "detached"') == 2 and 'key_transport: "rsa-pkcs1"' in text, text
        r = gw.sealctl("profile", "export", "-")
        assert r.returncode == 0 and r.stdout == text, (r.stdout, text)
        before = settings(gw)
        # into an instance without profiles: the same profiles
        assert "3 added, 0 replaced" in ok(other, "profile", "import", path)
        assert settings(other) == before
        # into itself: nothing changes but the spelling of the entry
        assert "0 added, 3 replaced" in ok(gw, "profile", "import", path)
        assert settings(gw) == before
        ok(gw, "config", "check")


@test
def test_import_adds_and_replaces():
    with instance() as gw:
        os.chmod(gw.config, 0o640)
        path = write(gw, "new.yaml", "sending_profiles:\n"
                     "  - name: signenc\n    mode: triple\n    signing_certificate: org\n"
                     "    encryption: aes256-cbc\n    signature: rsa-pss\n"
                     "  - name: fresh\n    mode: sign\n    signing_certificate: org\n    sign_mode: opaque\n")
        out = ok(gw, "profile", "import", path)
        assert "1 added, 1 replaced" in out, out
        got = profiles(gw)
        assert list(got) == ["signonly", "signenc", "enconly", "fresh"], got
        assert (got["signenc"]["mode"], got["signenc"]["encryption"], got["signenc"]["signature"],
                got["signenc"]["missing_key_action"]) == ("triple", "aes256-cbc", "rsa-pss", "bounce"), got
        assert got["fresh"]["sign_mode"] == "opaque" and got["enconly"]["encryption"] == "aes256-gcm", got
        assert got["signenc"]["used_by"] == ["content_filter:confidential"], got
        assert stat.S_IMODE(os.stat(gw.config).st_mode) == 0o640
        assert stray_files(gw) == []


@test
def test_import_never_follows_a_planted_symlink():
    """The instance folder may belong to the daemon's user; a symlink it
    plants where sealctl writes its temporary files must not make sealctl
    (often run as root) overwrite or chown the file it points to."""
    with instance() as gw:
        victim = write(gw, "victim", "precious\n")
        os.chmod(victim, 0o644)
        for name in ("sealgate.yaml.new", "sealgate.yaml.new.tmp", "sealgate.yaml.tmp"):
            os.symlink(victim, os.path.join(gw.dir, name))
        path = write(gw, "new.yaml", "sending_profiles:\n  - name: fresh\n    mode: sign\n"
                     "    signing_certificate: org\n")
        ok(gw, "profile", "import", path)
        assert "fresh" in profiles(gw)
        with open(victim) as f:
            assert f.read() == "precious\n"
        st = os.stat(victim)
        assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == os.getuid()


@test
def test_import_from_stdin():
    with instance() as gw:
        r = sealctl_input(gw, "sending_profiles:\n  - name: piped\n    mode: encrypt\n", "profile", "import", "-")
        assert r.returncode == 0, r.stderr
        assert profiles(gw)["piped"]["mode"] == "encrypt"
        before = raw(gw)
        r = sealctl_input(gw, "sending_profiles:\n  - name: piped\n    mode: nope\n", "profile", "import", "-")
        assert r.returncode == 1 and "<stdin>:3:" in r.stderr, r.stderr
        assert raw(gw) == before


@test
def test_import_keeps_every_other_byte():
    with instance() as gw:
        before = open(gw.config).read()
        head = before[:before.index("sending_profiles:")]
        # a comment on the line of the last value goes with the entry
        tail = before[before.index("\n# a comment after the profiles"):]
        path = write(gw, "one.yaml", "# a file from elsewhere\nsending_profiles:\n  - name: extra\n"
                     "    mode: encrypt\n")
        ok(gw, "profile", "import", path)
        after = open(gw.config).read()
        assert after.startswith(head), after
        assert after.endswith(tail), after
        assert "sealctl init" in after and "# banner, Received" in after, after
        section = after[len(head):len(after) - len(tail)]
        assert section.startswith("sending_profiles:\n  - name: \"signonly\"\n"), section
        assert '  - name: "extra"\n    mode: "encrypt"\n' in section, section


@test
def test_import_keeps_bytes_around_non_ascii():
    """libyaml counts characters, not bytes: a byte order mark, multi-byte
    UTF-8 and CRLF line ends before and after the entry must not shift
    the replaced range."""
    with instance(profiles=False) as gw:
        head = b"\xef\xbb\xbf" + raw(gw) + "# Soci\u00e9t\u00e9 \u20ac \U0001F512\r\n".encode()
        tail = "\r\n# apr\u00e8s \u20ac\r\nquarantine_dir: quarantine\r\n".encode()
        with open(gw.config, "wb") as f:
            f.write(head + b"sending_profiles:  # \xc3\xa9\r\n  - name: a\r\n    mode: encrypt" + tail)
        ok(gw, "config", "check")
        path = write(gw, "one.yaml", "sending_profiles:\n  - name: b\n    mode: encrypt\n")
        ok(gw, "profile", "import", path)
        after = raw(gw)
        assert after.startswith(head + b"sending_profiles:\n  - name: \"a\"\n"), after
        assert after.endswith(b'  - name: "b"\n    mode: "encrypt"\n    missing_key_action: "bounce"\n'
                              b'    encryption: "auto"\n    key_transport: "rsa-pkcs1"' + tail), after
        assert list(profiles(gw)) == ["a", "b"]


@test
def test_import_appends_when_config_has_none():
    with instance(profiles=False) as gw:
        before = raw(gw)
        path = write(gw, "one.yaml", "sending_profiles: [{name: a, mode: sign, signing_certificate: org}]\n")
        ok(gw, "profile", "import", path)
        after = raw(gw)
        assert after.startswith(before), after
        assert after[len(before):] == (b'sending_profiles:\n  - name: "a"\n    mode: "sign"\n'
                                       b'    signing_certificate: "org"\n    sign_mode: "detached"\n'
                                       b'    signature: "rsa-pkcs1"\n'), after
        ok(gw, "config", "check")


# (file text, line the error must name, words it must say)
BAD_IMPORTS = [
    ("sending_profiles:\n  - name: a\n    mode: sign\n    signing_certificate: org\n    colour: blue\n",
     5, "unknown key 'colour'"),
    ("# bad mode\nsending_profiles:\n  - name: a\n    mode: sing\n", 4, "invalid value 'sing'"),
    ("sending_profiles:\n  - name: a\n    mode: encrypt\n  - name: b\n    mode: encrypt\n"
     "  - name: a\n    mode: encrypt\n", 6, "duplicate name 'a'"),
    ("sending_profiles:\n  - name: a\n    mode: encrypt\n  - name: b\n    mode: sign-encrypt\n",
     4, "needs signing_certificate"),
    ("sending_profiles:\n  - name: a\n    mode: encrypt\n    sign_mode: opaque\n", 4, "does not apply"),
    ("sending_profiles:\n  - name: a\n    mode: encrypt\nlisteners: []\n", 4, "unexpected key 'listeners'"),
    ("sending_profiles:\n  - name: a\n    mode: [encrypt\n", 4, "YAML syntax error"),
    ("sending_profiles:\n  - name: a\n    mode: encrypt\n---\nsending_profiles: []\n", 4, "second YAML document"),
    ("sending_profiles: []\nsending_profiles: []\n", 2, "duplicate key 'sending_profiles'"),
    ("sending_profiles:\n  name: a\n", 2, "expected a list"),
    ("- name: a\n", 1, "expected a mapping"),
    ("# nothing\n", 1, "no sending_profiles"),
]


@test
def test_bad_import_changes_nothing():
    with instance() as gw:
        before = raw(gw)
        for i, (text, line, says) in enumerate(BAD_IMPORTS):
            path = write(gw, "bad%d.yaml" % i, text)
            err = fails(gw, "profile", "import", path, says=says)
            assert "%s:%d:" % (path, line) in err, (text, err)
            assert raw(gw) == before, text
            assert stray_files(gw) == [], stray_files(gw)
        fails(gw, "profile", "import", os.path.join(gw.base, "missing.yaml"), says="cannot read")


@test
def test_import_of_unknown_certificate_changes_nothing():
    """The file is valid YAML and a valid profile, but the token has no
    such certificate: the daemon would refuse it, so the import does."""
    with instance() as gw:
        before = raw(gw)
        path = write(gw, "cert.yaml", "sending_profiles:\n  - name: a\n    mode: sign\n"
                     "    signing_certificate: nosuchcert\n")
        fails(gw, "profile", "import", path, says="nosuchcert")
        assert raw(gw) == before
        assert stray_files(gw) == []


# ---------------------------------------------------------------- delete

@test
def test_delete_refused_while_used():
    with instance() as gw:
        before = raw(gw)
        fails(gw, "profile", "delete", "signonly", says="used by listener:main")
        fails(gw, "profile", "delete", "signenc", says="used by content_filter:confidential")
        fails(gw, "profile", "delete", "nosuch", says="no sending profile named 'nosuch'")
        assert raw(gw) == before


@test
def test_delete_unused():
    with instance() as gw:
        before = open(gw.config).read()
        assert "deleted sending profile 'enconly'" in ok(gw, "profile", "delete", "enconly")
        assert list(profiles(gw)) == ["signonly", "signenc"]
        after = open(gw.config).read()
        assert after.startswith(before[:before.index("sending_profiles:")])
        assert after.endswith(before[before.index("# a comment after the profiles"):]), after
        ok(gw, "config", "check")


@test
def test_delete_last_profile():
    with instance(profiles=False) as gw:
        gw.append_config("sending_profiles:\n  - name: only\n    mode: encrypt\n# end\n")
        ok(gw, "profile", "delete", "only")
        assert open(gw.config).read().endswith("sending_profiles: []\n# end\n")
        assert profiles(gw) == {}
        ok(gw, "config", "check")


@test
def test_message_filter_use_is_seen():
    with instance(profiles=False) as gw:
        gw.append_config("sending_profiles:\n  - name: late\n    mode: encrypt\n"
                         "message_filters: |\n"
                         "  mf1: if (subject == \"y\") { smime-gateway-on-delivery(\"late\"); }\n")
        assert profiles(gw)["late"]["used_by"] == ["message_filter:mf1"]
        before = raw(gw)
        fails(gw, "profile", "delete", "late", says="used by message_filter:mf1")
        assert raw(gw) == before


# ---------------------------------------------------------------- with the daemon

@test
def test_change_reloads_running_daemon():
    with sgtest.gateway(sgtest.free_port(), init_args=["--hsm", "inprocess"]) as gw:
        reloads = gw.log().count("configuration reloaded")
        path = write(gw, "p.yaml", "sending_profiles:\n  - name: live\n    mode: sign\n"
                     "    signing_certificate: org\n")
        out = ok(gw, "profile", "import", path)
        assert "the running daemon reloaded its configuration" in out, out
        assert sgtest.wait_for(lambda: gw.log().count("configuration reloaded") > reloads, 10), gw.log()[-2000:]
        reloads = gw.log().count("configuration reloaded")
        out = ok(gw, "profile", "delete", "live")
        assert "the running daemon reloaded its configuration" in out, out
        assert gw.log().count("configuration reloaded") > reloads, gw.log()[-2000:]


@test
def test_change_without_daemon_applies_at_next_start():
    with instance(profiles=False) as gw:
        path = write(gw, "p.yaml", "sending_profiles:\n  - name: later\n    mode: encrypt\n")
        assert "applies when sealgate next starts" in ok(gw, "profile", "import", path)


if __name__ == "__main__":
    sys.exit(sgtest.run_tests(TESTS))
