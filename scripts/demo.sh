#!/usr/bin/env bash
# Tries popfetch end to end on this machine: starts a throwaway Dovecot on loopback
# with sample mail and its own CA, and runs `popfetch sync` into a Maildir, with the
# progress bar when run at a terminal. Nothing outside a temporary directory is
# touched, and everything is cleaned up at the end.
#
#   bash scripts/demo.sh            # builds popfetch (release) first
#   POPFETCH=path/to/popfetch bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ]; }
if ! need dovecot /usr/sbin/dovecot || ! need openssl /usr/bin/openssl; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "demo: needs Dovecot and OpenSSL: sudo apt-get install dovecot-pop3d openssl" >&2
        exit 69
    fi
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-pop3d openssl >/dev/null
fi
if [ -z "${POPFETCH:-}" ]; then
    cargo build --release --quiet
    POPFETCH=$PWD/target/release/popfetch
fi

demo=$(mktemp -d /tmp/popfetch-demo.XXXXXX)
chmod 755 "$demo"
dovecot_pid=
cleanup() {
    [ -n "$dovecot_pid" ] && kill "$dovecot_pid" 2>/dev/null && wait "$dovecot_pid" 2>/dev/null || true
    rm -rf "$demo"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)

# A CA of our own and a certificate for 127.0.0.1.
(
    cd "$demo"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj "/CN=popfetch demo CA" 2>/dev/null
    openssl req "${ec[@]}" -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf 2>/dev/null
    chmod 644 server.key server.pem
)

# Dovecot's login processes may not run as root; as root use Debian's system users.
if [ "$(id -u)" -eq 0 ]; then
    internal=dovecot login=dovenull mail_uid=dovecot
else
    internal=$(id -un) login=$(id -un) mail_uid=$(id -u)
fi
echo 'demo:{PLAIN}demo-password' > "$demo/passwd"
cat > "$demo/dovecot.conf" <<CONF
base_dir = $demo/run
state_dir = $demo/state
log_path = $demo/dovecot.log
instance_name = popfetch-demo-$port
protocols = pop3
listen = 127.0.0.1
ssl = required
ssl_cert = <$demo/server.pem
ssl_key = <$demo/server.key
default_internal_user = $internal
default_internal_group = $internal
default_login_user = $login
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $demo/passwd
}
userdb {
  driver = static
  args = uid=$mail_uid gid=$mail_uid home=$demo/home/%u
}
service pop3-login {
  chroot =
  inet_listener pop3s {
    address = 127.0.0.1
    port = $port
    ssl = yes
  }
}
service imap-login {
  chroot =
}
service anvil {
  chroot =
}
CONF

# Sample mail, as a local delivery would leave it.
box=$demo/home/demo/Maildir
mkdir -p "$box/new" "$box/cur" "$box/tmp"
for i in $(seq 1 300); do
    {
        printf 'From: Sender %d <sender%d@example.org>\nTo: demo@example.org\n' "$i" "$i"
        printf 'Subject: Sample message %d\nMessage-ID: <%d.demo@example.org>\n\n' "$i" "$i"
        for _ in $(seq 1 $(( (i % 40) + 5 ))); do echo "Line of sample text in message $i."; done
    } > "$box/new/$i.demo"
done
chown -R "$mail_uid" "$demo/home"

/usr/sbin/dovecot -F -c "$demo/dovecot.conf" &
dovecot_pid=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

mkdir -p "$demo/config/popfetch"
cat > "$demo/config/popfetch/config.toml" <<CONF
[accounts.demo]
host = "127.0.0.1"
port = $port
tls = "implicit"
tls_ca_file = "$demo/ca.pem"
user = "demo"
password_command = "echo demo-password"
deliver = "maildir:$demo/Mail"
keep = true
CONF
chmod 600 "$demo/config/popfetch/config.toml"

export XDG_CONFIG_HOME=$demo/config XDG_STATE_HOME=$demo/state-popfetch
echo "demo: a throwaway Dovecot on 127.0.0.1:$port holds 300 messages; fetching them over TLS:"
"$POPFETCH" sync
"$POPFETCH" list | head -4
delivered=$(find "$demo/Mail/new" -type f | wc -l)
echo "demo: $delivered messages delivered into a Maildir; a second sync fetches nothing:"
"$POPFETCH" -v sync 2>&1 | tail -1
[ "$delivered" -eq 300 ]
