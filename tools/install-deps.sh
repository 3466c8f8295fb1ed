#!/usr/bin/env bash
# install-deps.sh - install every Debian 12 package sealgate builds, runs and
# tests with.  Idempotent and quick when all is present.  Needs root (or sudo).
# Postfix is installed for smtp-source/smtp-sink only: it is preseeded to
# "No configuration", so no system Postfix is configured or started.
set -euo pipefail

PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev
  libssl-dev openssl libuv1-dev liburcu-dev liblmdb-dev libyaml-dev zlib1g-dev
  libp11-kit-dev libp11-dev libgmime-3.0-dev p11-kit p11-kit-modules softhsm2 opensc libengine-pkcs11-openssl
  libgoogle-perftools-dev libbenchmark-dev libcmocka-dev libpcre2-dev
  swaks postfix gpgsm python3 strace procps
  # NIST PKITS as signed S/MIME messages, for tests/crypto/test_pkits.c
  python3-cryptography-vectors)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root (missing: ${missing[*]})" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}" >&2
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# Belt and braces: a system Postfix must not be running (it would own port 25).
if command -v postfix >/dev/null && [ ! -f /etc/postfix/main.cf ]; then :; fi
$SUDO systemctl disable --now postfix >/dev/null 2>&1 || true
