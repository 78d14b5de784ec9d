#!/usr/bin/env bash
# Installs what the test suite needs on Debian (as root, or through sudo): the one
# list of packages, used by scripts/test.sh and by .ci/run. Installs Rust through
# rustup when cargo is missing (Debian's own is older than popfetch's 1.89).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

PACKAGES=(
    # Building: OpenSSL's headers.
    libssl-dev pkg-config ca-certificates curl build-essential
    # The servers and tools the tests run for real.
    dovecot-pop3d openssl procmail maildrop python3 mutt
    # Delivery targets: Dovecot's LMTP and IMAP, and Exim as the SMTP server.
    dovecot-lmtpd dovecot-imapd exim4-daemon-light
    # The keyring tests: a session bus and gnome-keyring.
    dbus dbus-bin dbus-daemon gnome-keyring
    # Clock games, pseudo-terminals (script(1), tmux) and the tools import-state reads.
    faketime bsdutils tmux mpop fetchmail getmail6
    # A real SOCKS5 server (RFC 1928 and 1929) for the proxy tests; the package
    # starts no service, the tests start it on loopback.
    microsocks
    # systemd-analyze, to verify the units in contrib/systemd. Installing it starts
    # nothing where systemd is not PID 1 (containers, CI).
    systemd
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
interop=${POPFETCH_INTEROP_DIR:-/opt/popfetch-interop}
if [ "${#missing[@]}" -gt 0 ] || [ ! -d "$interop/popa3d" ]; then
    # Package scripts must not start a system Dovecot: it would listen on every
    # interface, and the tests start their own on loopback.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
    fi
    as_root apt-get update -qq
fi
if [ "${#missing[@]}" -gt 0 ]; then
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Cyrus, Courier, popa3d and solid-pop3d for the interoperability matrix (they
# conflict with dovecot-pop3d as packages, so they are unpacked beside it).
if [ ! -d "$interop/popa3d" ]; then
    as_root bash .ci/interop-setup
fi
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
fi
# The OAuth2 tests run a real authorization server, npm's oidc-provider 9, which
# needs Node.js 20 or newer. Debian 12's own nodejs is 18: where that is all there
# is, Debian's npm fetches Node.js 22 from the npm registry (the `node` package,
# an official build) into /opt/popfetch-node, linked first on PATH.
node_major() { node --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'; }
if [ -z "$(node_major)" ] || [ "$(node_major)" -lt 20 ] || ! command -v npm >/dev/null 2>&1; then
    if ! command -v npm >/dev/null 2>&1; then
        [ "${#missing[@]}" -gt 0 ] || as_root apt-get update -qq
        as_root apt-get install -y -qq --no-install-recommends nodejs npm
    fi
    if [ -z "$(node_major)" ] || [ "$(node_major)" -lt 20 ]; then
        as_root npm install --prefix /opt/popfetch-node --no-audit --no-fund --loglevel=error node@22
        as_root ln -sf /opt/popfetch-node/node_modules/node/bin/node /usr/local/bin/node
        hash -r
    fi
fi
if [ -z "$(node_major)" ] || [ "$(node_major)" -lt 20 ]; then
    echo "test-deps: the OAuth2 tests need Node.js >= 20 with npm (found: $(node --version 2>/dev/null || echo none) at $(command -v node || echo nowhere)); install the nodejs package from NodeSource (node_20.x or later) and run this again." >&2
    exit 1
fi
# npm ci only when the lock file changed since the last install (npm ci starts by
# deleting node_modules, so it is not free to repeat).
oauth=tests/oauth-server
if [ ! -d "$oauth/node_modules" ] || [ "$oauth/package-lock.json" -nt "$oauth/node_modules" ]; then
    npm ci --prefix "$oauth" --no-audit --no-fund --loglevel=error
    touch "$oauth/node_modules"
fi
