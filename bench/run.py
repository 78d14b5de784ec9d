#!/usr/bin/env python3
"""Side-by-side benchmark: popfetch against mpop, fetchmail and getmail.

Every fetcher reads the same mailboxes from a private Dovecot (POP3 on
127.0.0.1 only) and delivers into a Maildir with keep on.  Scenarios:

  1. many small messages over loopback
  2. fewer small messages through an in-process TCP proxy adding latency
  3. one huge message: peak RSS (and wall time) of the fetcher
  4. a big mailbox with nothing new: a run after everything was fetched
  5. `popfetch list` of a mailbox through the latency proxy (popfetch only: the
     peers have no command that shows each message's headers)
  6. many small messages delivered into a second, LMTP-only Dovecot over its
     unix socket (popfetch `deliver = "lmtp:SOCKET"` against fetchmail `lmtp`)
  7. many small messages delivered into Exim over SMTP on loopback (popfetch
     `deliver = "smtp:127.0.0.1:PORT"` against fetchmail's SMTP forwarding)
  8. many accounts (50 Dovecot users of 40 messages), all synced by one run of
     each tool: one popfetch config, one mpoprc (`mpop -a`), one .fetchmailrc
     with a poll entry per account, getmail with an --rcfile per account
  9. a big mailbox (100,000 × 2 KB), in steps on one state: a first sync (wall
     time and peak RSS; popfetch's state file size a message after it and after
     the next step), a run with nothing new, a run with 10 new messages

1 to 4 each in plain POP3 and over implicit TLS, with a table of TLS against
plain; 6 and 7 get a table of their own with popfetch / fetchmail.

Each timed run starts from fresh state (empty Maildir, no UIDL state) except
scenario 4, which keeps the state of one untimed first run, and the later steps
of 9, which keep the state of the step before (at full size only popfetch and
mpop run 9 unless --big-peers says more); in 6 and 7 every
run delivers to a new recipient, whose Maildir the server creates.  A run
counts only if the tool exits successfully *and* the Maildir holds exactly
the expected number of messages afterwards (for Exim, once its spool is
empty: that wait is timed too).  Medians of --runs runs are shown.

Needs: Python 3 standard library, dovecot (package dovecot-pop3d), openssl,
and a built popfetch; for 6 and 7 dovecot-lmtpd and exim4-daemon-light (the
bench starts its own, on 127.0.0.1 and a socket in its temp dir).  Peers
(mpop, fetchmail + procmail, getmail6) are optional; missing ones, and a
missing LMTP server or Exim, are skipped with a note, except that --tiny
counts a missing LMTP server or Exim as popfetch failing.

  python3 bench/run.py --tiny            # a few seconds; exit 0 iff popfetch OK
  python3 bench/run.py                   # full sizes, 3 runs each
  python3 bench/run.py --runs 5 --popfetch target/release/popfetch

Run as root, Dovecot drops to the dovecot/dovenull users and Exim to
Debian-exim; run as any other user, everything runs as that user.  Nothing binds anywhere but 127.0.0.1.
"""

import argparse
import os
import platform
import pwd
import grp
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PASSWORD = "secret"

TOOLS = ["popfetch", "mpop", "fetchmail", "getmail"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def which(name):
    path = shutil.which(name)
    if path:
        return path
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# Test data


def make_message(i, size, tag):
    """An RFC 5322 message of exactly `size` bytes (LF line ends)."""
    head = (
        "Return-Path: <sender@example.org>\n"
        "From: Sender <sender@example.org>\n"
        "To: Alice <alice@example.org>\n"
        f"Subject: {tag} benchmark message {i}\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\n"
        f"Message-ID: <{tag}.{i}@bench.popfetch>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
    ).encode()
    line = (f"{i:08d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2).encode()[:75] + b"\n"
    need = size - len(head)
    if need <= 0:
        return head
    n, rest = divmod(need, len(line))
    tail = b"x" * (rest - 1) + b"\n" if rest > 1 else b"\n" * rest
    return head + line * n + tail


def write_big_message(path, size, tag):
    """Stream a `size`-byte message to `path` without holding it in memory."""
    head = make_message(0, 0, tag)
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/\n"
    chunk = line * 13000
    with open(path, "wb") as f:
        f.write(head)
        left = size - len(head)
        while left >= len(chunk):
            f.write(chunk)
            left -= len(chunk)
        n, rest = divmod(left, len(line))
        f.write(line * n)
        if rest:
            f.write(b"y" * (rest - 1) + b"\n")


class BatchedSocket:
    """Reads as popfetch does (src/net/batch.rs): while at least 16 KiB are
    surely due (the listed sizes of the messages asked for), a read waits for up
    to 64 KiB of them (SO_RCVLOWAT), in poll(2), for at most 20 ms, then takes
    whatever has come; a wait that brought nothing waits for the first byte,
    and the next read batches again."""

    def __init__(self, sock, timeout):
        self.sock, self.timeout = sock, timeout
        self.due, self.low = 0, 1
        sock.settimeout(timeout)

    def _low_water(self, n):
        if n != self.low:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, n)
            self.sock.settimeout(0.02 if n > 1 else self.timeout)
            self.low = n

    def recv(self, n):
        want = min(self.due, 64 << 10, n)
        self._low_water(want if want >= 16 << 10 else 1)
        try:
            data = self.sock.recv(n)
        except socket.timeout:
            if self.low == 1:
                raise
            # Python polls before any read with a timeout; none, to take
            # what is queued.
            self.sock.settimeout(0)
            try:
                data = self.sock.recv(n)
            except BlockingIOError:
                data = None
            self.sock.settimeout(0.02)
            if data is None:
                self._low_water(1)
                data = self.sock.recv(n)
        self.due = max(0, self.due - len(data))
        return data

    def sendall(self, data):
        self.sock.sendall(data)


class TlsOver:
    """TLS through memory buffers over a BatchedSocket, so that the batching
    applies to the bytes on the wire as it does in popfetch."""

    def __init__(self, raw, ca):
        import ssl
        self.raw = raw
        self.inb, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        ctx = ssl.create_default_context(cafile=ca)
        self.obj = ctx.wrap_bio(self.inb, self.outb, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._pump()
                self._feed()
        self._pump()

    def _pump(self):
        data = self.outb.read()
        if data:
            self.raw.sendall(data)

    def _feed(self):
        data = self.raw.recv(1 << 20)
        if not data:
            raise OSError("the server closed the connection")
        self.inb.write(data)

    def recv(self, n):
        import ssl
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self._pump()
                self._feed()

    def sendall(self, data):
        self.obj.write(data)
        self._pump()


FLOOR_CONNECTIONS = 16   # the floor's sessions at once, for many accounts


def bare_read(sc, server):
    """The server's floor for a scenario: a client that logs in, pipelines
    UIDL, LIST and every RETR (or, when state is kept, sends UIDL alone, as a
    fetcher that knows every unique-id need not ask for sizes, then RETRs the
    new messages at the end), reads the replies into nothing, in batches as
    popfetch does, and quits. No delivery, no state, no process start: what is
    left of a fetcher's time is the server's and the network's.  Over many
    accounts, up to FLOOR_CONNECTIONS sessions run at once, each taking the
    next account as it ends."""
    users = sc.users
    if len(users) == 1:
        return bare_session(sc, server, users[0])
    t0 = time.monotonic()
    todo = queue.Queue()
    for u in users:
        todo.put(u)
    errors = []

    def worker():
        while True:
            try:
                u = todo.get_nowait()
            except queue.Empty:
                return
            try:
                bare_session(sc, server, u)
            except (OSError, ValueError) as e:
                errors.append(e)

    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(min(FLOOR_CONNECTIONS, len(users)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return RunResult(True, time.monotonic() - t0)


def bare_session(sc, server, user):
    """One account's session of bare_read."""
    t0 = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", server["port"]), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw = BatchedSocket(sock, 120)
    conn = TlsOver(raw, server["ca"]) if server["tls"] else raw
    buf = bytearray()

    def read_until(end):
        start = 0
        while True:
            i = buf.find(end, start)
            if i >= 0:
                del buf[:i + len(end)]
                return
            # Only the new bytes (and a possible split marker) are searched again.
            start = max(0, len(buf) - len(end) + 1)
            data = conn.recv(1 << 20)
            if not data:
                raise OSError("the server closed the connection")
            buf.extend(data)

    read_until(b"\r\n")
    user, password = f"USER {user}\r\n".encode(), f"PASS {PASSWORD}\r\n".encode()
    if sc.delay:
        # Over a slow path, USER and PASS in one round trip, as popfetch does.
        conn.sendall(user + password)
        read_until(b"\r\n")
    else:
        # Over loopback one at a time: Dovecot's reply to a pipelined PASS waits
        # for the client's delayed ACK of the reply to USER.
        conn.sendall(user)
        read_until(b"\r\n")
        conn.sendall(password)
    read_until(b"\r\n")
    if sc.state_kept:
        conn.sendall(b"UIDL\r\n")
        read_until(b"\r\n.\r\n")
        if sc.new:
            raw.due += sc.new * sc.size
            first = sc.count - sc.new + 1
            conn.sendall(b"".join(b"RETR %d\r\n" % n for n in range(first, sc.count + 1)))
            for _ in range(sc.new):
                read_until(b"\r\n.\r\n")
    elif sc.command == "list":
        # A listing with sizes, then every message's headers (TOP n 0), pipelined.
        conn.sendall(b"UIDL\r\nLIST\r\n")
        read_until(b"\r\n.\r\n")
        read_until(b"\r\n.\r\n")
        conn.sendall(b"".join(b"TOP %d 0\r\n" % n for n in range(1, sc.count + 1)))
        for _ in range(sc.count):
            read_until(b"\r\n.\r\n")
    else:
        conn.sendall(b"UIDL\r\nLIST\r\n")
        read_until(b"\r\n.\r\n")
        read_until(b"\r\n.\r\n")
    if not sc.state_kept and sc.command == "sync":
        raw.due += sc.count * sc.size
        conn.sendall(b"".join(b"RETR %d\r\n" % n for n in range(1, sc.count + 1)))
        for _ in range(sc.count):
            read_until(b"\r\n.\r\n")
    conn.sendall(b"QUIT\r\n")
    read_until(b"\r\n")
    sock.close()
    return RunResult(True, time.monotonic() - t0)


def delivery_floor(sc, server):
    """The mail server's floor for scenarios 6 and 7: a bare in-process client
    that sends the scenario's messages (already in memory, CRLF; no line
    starts with a dot, so none needs stuffing) to a new recipient over
    one connection, each transaction's MAIL, RCPT and DATA pipelined with the
    end of the previous message's data (RFC 2920), one transaction per message
    as a fetcher makes.  No POP3, no state, no process start: what is left of
    a fetcher's time is the POP3 side and its own."""
    sink = server["sink"]
    rcpt, dest = sink.fresh("floor")
    msgs = [make_message(i, sc.size, sc.user).replace(b"\n", b"\r\n") + b".\r\n"
            for i in range(sc.count)]
    t0 = time.monotonic()
    if sc.target == "lmtp":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(120)
        sock.connect(server["socket"])
    else:
        sock = socket.create_connection(("127.0.0.1", server["smtp_port"]), timeout=120)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = sock.makefile("rb")

    def reply(want):
        while True:
            line = f.readline()
            if not line:
                raise OSError("the server closed the connection")
            if line[3:4] != b"-":
                break
        if not line.startswith(want):
            raise OSError(f"the server answered {line.decode(errors='replace').strip()}")

    reply(b"220")
    sock.sendall(b"LHLO bench\r\n" if sc.target == "lmtp" else b"EHLO bench\r\n")
    reply(b"250")
    envelope = f"MAIL FROM:<sender@example.org>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
    sock.sendall(envelope)
    for i, m in enumerate(msgs):
        reply(b"250")
        reply(b"250")
        reply(b"354")
        last = i + 1 == len(msgs)
        sock.sendall(m + (b"QUIT\r\n" if last else envelope))
        reply(b"250")
    reply(b"221")
    sock.close()
    wall = time.monotonic() - t0 + sink.settle(120)
    got = count_maildir(dest)
    if got != sc.count:
        raise OSError(f"delivered {got}/{sc.count}")
    return RunResult(True, wall)


def count_maildir(path):
    n = 0
    for sub in ("new", "cur"):
        try:
            n += sum(1 for e in os.scandir(os.path.join(path, sub)) if e.is_file())
        except FileNotFoundError:
            pass
    return n


def largest_in_maildir(path):
    best = 0
    for sub in ("new", "cur"):
        try:
            for e in os.scandir(os.path.join(path, sub)):
                best = max(best, e.stat().st_size)
        except FileNotFoundError:
            pass
    return best


def fresh_maildir(path):
    shutil.rmtree(path, ignore_errors=True)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub))


# --------------------------------------------------------------------------
# Dovecot


class Dovecot:
    def __init__(self, root, binary):
        self.root = root
        self.binary = binary
        self.proc = None
        self.port = free_port()
        self.tls_port = free_port()
        self.users = []
        os.makedirs(root, exist_ok=True)
        os.chmod(os.path.dirname(root), 0o755)   # dovecot's users must reach home/
        os.chmod(root, 0o755)
        if os.geteuid() == 0:
            self.internal_user, self.login_user = "dovecot", "dovenull"
            try:
                pwd.getpwnam("dovecot")
                pwd.getpwnam("dovenull")
            except KeyError:
                raise SystemExit("dovecot/dovenull users missing (install dovecot-core)")
        else:
            me = pwd.getpwuid(os.geteuid()).pw_name
            self.internal_user = self.login_user = me
        u = pwd.getpwnam(self.internal_user)
        self.uid, self.gid = u.pw_uid, u.pw_gid
        self.group = grp.getgrgid(self.gid).gr_name
        self.ca = os.path.join(root, "ca.pem")
        self._make_certs()

    def _make_certs(self):
        r = self.root
        ossl = which("openssl")
        if not ossl:
            raise SystemExit("openssl is not installed")

        def run(*args):
            subprocess.run([ossl, *args], cwd=r, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=popfetch bench CA", "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")
        with open(os.path.join(r, "ext.cnf"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                    "basicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
        os.chmod(os.path.join(r, "server.key"), 0o644 if os.geteuid() else 0o600)

    def maildir(self, user):
        return os.path.join(self.root, "home", user, "Maildir")

    def add_user(self, user):
        self.users.append(user)
        md = self.maildir(user)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        return os.path.join(md, "new")

    def _chown_tree(self, path):
        if os.geteuid() != 0:
            return
        for dirpath, dirnames, filenames in os.walk(path):
            os.chown(dirpath, self.uid, self.gid)
            for n in filenames:
                os.chown(os.path.join(dirpath, n), self.uid, self.gid)

    def start(self):
        r = self.root
        with open(os.path.join(r, "passwd"), "w") as f:
            for u in self.users:
                f.write(f"{u}:{{PLAIN}}{PASSWORD}\n")
        for d in ("base", "state"):
            os.makedirs(os.path.join(r, d), exist_ok=True)
        self._chown_tree(os.path.join(r, "home"))
        conf = os.path.join(r, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(f"""
base_dir = {r}/base
state_dir = {r}/state
log_path = {r}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{r}/server.pem
ssl_key = <{r}/server.key
disable_plaintext_auth = no
auth_failure_delay = 0
default_internal_user = {self.internal_user}
default_internal_group = {self.group}
default_login_user = {self.login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
userdb {{
  driver = static
  args = uid={self.internal_user} gid={self.group} home={r}/home/%u
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
service imap-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
""")
        self.proc = subprocess.Popen([self.binary, "-F", "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                greet = s.recv(512)
                s.close()
                if greet.startswith(b"+OK"):
                    return
            except OSError:
                time.sleep(0.1)
        tail = ""
        try:
            with open(os.path.join(r, "dovecot.log"), errors="replace") as f:
                tail = f.read()[-2000:]
        except OSError:
            pass
        raise SystemExit(f"dovecot did not start\n{tail}")

    def warm_up(self, user, expect):
        """One untimed session per mailbox so Dovecot's index is built before
        any fetcher is timed; also checks the server sees every message."""
        import poplib
        p = poplib.POP3("127.0.0.1", self.port, timeout=600)
        p.user(user)
        p.pass_(PASSWORD)
        n, _ = p.stat()
        p.uidl()
        p.list()
        p.quit()
        if n != expect:
            raise SystemExit(f"dovecot shows {n} messages for {user}, expected {expect}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.proc = None


# --------------------------------------------------------------------------
# Mail servers to deliver into (scenarios 6 and 7)


def wait_banner(port, proc, prefix, seconds=20):
    """Whether a server greets with `prefix` on 127.0.0.1:port in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            greet = s.recv(512)
            s.close()
            if greet.startswith(prefix):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def read_tail(*paths):
    text = ""
    for p in paths:
        try:
            with open(p, errors="replace") as f:
                text += f.read()[-2000:]
        except OSError:
            pass
    return text


class LmtpStore(Dovecot):
    """A second Dovecot, LMTP only (a unix socket in its directory and a
    127.0.0.1 port), storing into ~/Maildir of any recipient: every run
    delivers to a new one, so each starts with an empty Maildir."""

    target = "lmtp"

    def __init__(self, root, binary):
        super().__init__(root, binary)
        self.socket = os.path.join(root, "lmtp")
        self.serial = 0

    def _make_certs(self):
        pass   # LMTP on loopback, no TLS

    def start(self):
        r = self.root
        for d in ("base", "state", "home"):
            os.makedirs(os.path.join(r, d), exist_ok=True)
        self._chown_tree(os.path.join(r, "home"))
        conf = os.path.join(r, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(f"""
base_dir = {r}/base
state_dir = {r}/state
log_path = {r}/dovecot.log
instance_name = popfetch-bench-lmtp-{self.port}
hostname = localhost
postmaster_address = postmaster@localhost
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_internal_user = {self.internal_user}
default_internal_group = {self.group}
default_login_user = {self.login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={self.internal_user} gid={self.group} home={r}/home/%n allow_all_users=yes
}}
service lmtp {{
  unix_listener {r}/lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
service imap-login {{
  chroot =
}}
service pop3-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
""")
        self.proc = subprocess.Popen([self.binary, "-F", "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        if wait_banner(self.port, self.proc, b"220") and os.path.exists(self.socket):
            return
        self.stop()
        raise RuntimeError("dovecot LMTP did not start\n"
                           + read_tail(os.path.join(r, "dovecot.log")))

    def fresh(self, who):
        """A recipient no run has used, and its Maildir (not there yet)."""
        self.serial += 1
        name = f"{who}{self.serial}"
        home = os.path.join(self.root, "home", name)
        os.makedirs(home)
        if os.geteuid() == 0:
            os.chown(home, self.uid, self.gid)
        return f"{name}@localhost", os.path.join(home, "Maildir")

    def settle(self, limit):
        return 0.0   # LMTP answers each DATA once the message is stored


class Exim:
    """Exim as a daemon on a 127.0.0.1 port with its own config, spool and
    logs, delivering every message at once (-odi, no queueing) into a Maildir
    per local part; no TLS, no DNS or ident lookups.  The configuration is
    tests/integration/support/exim.rs's, less TLS and AUTH, with no limit of
    messages per connection (Exim's default is 1,000).  Each run delivers to a
    new local part, so each starts with an empty Maildir."""

    target = "smtp"

    def __init__(self, root, binary):
        self.root, self.binary = root, binary
        self.proc = None
        self.port = free_port()
        self.serial = 0
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o755)
        if os.geteuid() == 0:
            try:
                u = pwd.getpwnam("Debian-exim")
            except KeyError:
                raise RuntimeError("the Debian-exim user is missing "
                                   "(apt-get install exim4-daemon-light)")
        else:
            u = pwd.getpwuid(os.geteuid())
        self.user, self.uid, self.gid = u.pw_name, u.pw_uid, u.pw_gid
        for sub in ("spool", "log", "mail"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
            os.chown(os.path.join(root, sub), self.uid, self.gid)

    def start(self):
        r = self.root
        conf = os.path.join(r, "exim.conf")
        with open(conf, "w") as f:
            f.write(f"""
primary_hostname = localhost
qualify_domain = localhost
domainlist local_domains = localhost
spool_directory = {r}/spool
split_spool_directory = false
log_file_path = {r}/log/%slog
pid_file_path = {r}/exim.pid
exim_user = {self.user}
exim_group = {self.gid}
never_users = root
trusted_users = {self.user}
keep_environment =
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
recipient_unqualified_hosts = *
sender_unqualified_hosts = *
queue_only = false
smtp_accept_queue_per_connection = 0
smtp_accept_max_per_connection = 0
received_headers_max = 1000
message_size_limit = 0
check_spool_space = 0
check_log_space = 0
smtp_receive_timeout = 30s
timeout_frozen_after = 0s
ignore_bounce_errors_after = 0s
daemon_smtp_ports = {self.port}
local_interfaces = <; 127.0.0.1.{self.port}
tls_advertise_hosts =
acl_smtp_rcpt = acl_rcpt

begin acl

acl_rcpt:
  require verify = recipient
  accept

begin routers

local:
  driver = accept
  domains = +local_domains
  local_parts = dsearch;{r}/mail
  transport = maildir

begin transports

maildir:
  driver = appendfile
  directory = {r}/mail/$local_part_data
  maildir_format
  create_directory
  delivery_date_add = false
  envelope_to_add = false
  return_path_add = false
  user = {self.user}
  group = {self.gid}
  mode = 0644
""")
        os.chmod(conf, 0o644)
        # -bdf: the listening daemon, in the foreground (our child);
        # -odi: each message delivered by the process that received it, at once.
        with open(os.path.join(r, "exim.stderr"), "wb") as err:
            self.proc = subprocess.Popen([self.binary, "-C", conf, "-bdf", "-odi"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)
        if wait_banner(self.port, self.proc, b"220"):
            return
        self.stop()
        raise RuntimeError("exim did not start\n" + read_tail(
            os.path.join(r, "log", "mainlog"), os.path.join(r, "log", "paniclog"),
            os.path.join(r, "exim.stderr")))

    def fresh(self, who):
        """A local part no run has used, with its (empty) Maildir: Exim
        accepts mail only for a local part that has one."""
        self.serial += 1
        name = f"{who}{self.serial}"
        md = os.path.join(self.root, "mail", name)
        os.makedirs(md)
        os.chown(md, self.uid, self.gid)
        return f"{name}@localhost", md

    def settle(self, limit):
        """Waits until no accepted message is still in the spool (on its way
        to the Maildir); returns how long that took."""
        t0 = time.monotonic()
        spool = os.path.join(self.root, "spool", "input")
        while time.monotonic() - t0 < limit:
            try:
                if not any(True for _ in os.scandir(spool)):
                    break
            except FileNotFoundError:
                break
            time.sleep(0.005)
        return time.monotonic() - t0

    def log(self):
        return read_tail(os.path.join(self.root, "log", "mainlog"),
                         os.path.join(self.root, "log", "paniclog"))

    def stop(self):
        Dovecot.stop(self)


# --------------------------------------------------------------------------
# Latency proxy


class DelayProxy:
    """Forwards 127.0.0.1:port -> 127.0.0.1:target, holding every chunk back
    for `delay` seconds in each direction (bandwidth is not limited)."""

    def __init__(self, target, delay):
        self.target, self.delay = target, delay
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, client):
        try:
            up = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            client.close()
            return
        for s in (client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = threading.Semaphore(0)
        for src, dst in ((client, up), (up, client)):
            threading.Thread(target=self._pump, args=(src, dst, done), daemon=True).start()
        done.acquire()
        done.acquire()
        client.close()
        up.close()

    def _pump(self, src, dst, done):
        q = queue.Queue()

        def writer():
            while True:
                due, data = q.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    if data is None:
                        dst.shutdown(socket.SHUT_WR)
                        break
                    dst.sendall(data)
                except OSError:
                    break
            done.release()

        threading.Thread(target=writer, daemon=True).start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.delay, data or None))
            if not data:
                return

    def close(self):
        self.closed = True
        try:
            self.lsock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# Running one tool once


class RunResult:
    def __init__(self, ok, wall=0.0, cpu=0.0, maxrss_kb=0, note=""):
        self.ok, self.wall, self.cpu, self.maxrss_kb, self.note = ok, wall, cpu, maxrss_kb, note


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_measured(argv, env, logpath, limit, user=None, rssfile=None):
    """Run argv, return (wall, user+sys cpu, peak RSS KiB, exit code, timed_out).

    Peak RSS: a process started straight from this (large) Python process
    inherits Python's RSS as its high-water mark at exec, so when GNU time is
    installed the tool is started through it (small, and it reports the peak
    RSS of its child, %M).  Otherwise wait4()'s ru_maxrss is used, which is
    then only an upper bound (never below this script's own RSS)."""
    rssfile = rssfile or logpath + ".rss"
    full = argv
    if GNU_TIME:
        full = [GNU_TIME, "-q", "-f", "%M", "-o", rssfile] + argv
    kw = {}
    if user is not None:
        kw = {"user": user[0], "group": user[1], "extra_groups": []}
    with open(logpath, "ab") as lf:
        lf.write(("\n$ " + " ".join(argv) + "\n").encode())
        lf.flush()
        t0 = time.monotonic()
        p = subprocess.Popen(full, env=env, stdin=subprocess.DEVNULL, stdout=lf,
                             stderr=lf, start_new_session=True, **kw)
        timed_out = []

        def kill():
            timed_out.append(True)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(limit, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            kill()
            p.wait()
            raise
        finally:
            timer.cancel()
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        # Leftover children in its session (none expected) must not linger.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    rss = ru.ru_maxrss
    if GNU_TIME:
        try:
            with open(rssfile) as f:
                rss = int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
        try:
            os.unlink(rssfile)
        except OSError:
            pass
    return wall, ru.ru_utime + ru.ru_stime, rss, p.returncode, bool(timed_out)


class Tool:
    name = "?"
    ok_codes = (0,)
    run_as = None   # (uid, gid) to drop to, for tools that refuse to run as root

    def __init__(self, work, binary):
        self.work = work
        self.binary = binary
        os.makedirs(work, exist_ok=True)
        self.env = dict(os.environ)
        # A stock system does not set these; a build machine may, and OpenSSL-based
        # tools would then parse the whole bundle named there on every run.
        for var in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            self.env.pop(var, None)
        self.env["HOME"] = work
        self.env["LC_ALL"] = "C"

    def maildir(self, scen):
        return os.path.join(self.work, scen, "Maildir")

    def reset(self, scen):
        """Fresh state: empty Maildir, no UIDL memory.

        The previous run's directory is moved aside, not deleted: deleting
        thousands of files just before a run makes ext4's inode allocator
        crawl past the recently freed inodes (recently_deleted()), and that
        noise, not the fetcher, would then dominate the timing.  The trash
        goes with the temporary directory at the end."""
        old = os.path.join(self.work, scen)
        if os.path.exists(old):
            trash = os.path.join(self.work, ".trash")
            os.makedirs(trash, exist_ok=True)
            os.rename(old, tempfile.mkdtemp(dir=trash))
        os.makedirs(old)
        fresh_maildir(self.maildir(scen))
        self.fix_owner(scen)

    def fix_owner(self, scen):
        if self.run_as is None:
            return
        uid, gid = self.run_as
        os.chown(self.work, uid, gid)
        for dirpath, dirnames, filenames in os.walk(os.path.join(self.work, scen)):
            os.chown(dirpath, uid, gid)
            for n in filenames:
                os.chown(os.path.join(dirpath, n), uid, gid)

    def argv(self, scen, server):
        raise NotImplementedError

    def supports(self, server):
        return True

    def runs(self, sc):
        """Whether the tool has a command for the scenario (all fetch; only
        popfetch lists; only popfetch and fetchmail forward over LMTP and SMTP)."""
        return sc.command == "sync" and not sc.target


class Popfetch(Tool):
    name = "popfetch"
    command = "sync"
    jobs = None   # --jobs for sync; None: popfetch's default

    def runs(self, sc):
        return True

    def argv(self, scen, server):
        d = os.path.join(self.work, scen)
        cfg = os.path.join(d, "config.toml")
        tls = 'tls = "implicit"\ntls_ca_file = "%s"' % server["ca"] if server["tls"] else 'tls = "none"'
        if server.get("target") == "lmtp":
            deliver = f'deliver = "lmtp:{server["socket"]}"\nrecipient = "{server["recipient"]}"'
        elif server.get("target") == "smtp":
            deliver = (f'deliver = "smtp:127.0.0.1:{server["smtp_port"]}"\nsmtp_tls = "none"\n'
                       f'recipient = "{server["recipient"]}"')
        else:
            deliver = f'deliver = "maildir:{self.maildir(scen)}"'
        accounts = []
        for user in server["users"]:
            # One account is "bench"; many are named after their users.
            name = "bench" if len(server["users"]) == 1 else user
            accounts.append(f"""[accounts.{name}]
host = "127.0.0.1"
port = {server['port']}
{tls}
auth = "user"
user = "{user}"
password = "{PASSWORD}"
{deliver}
keep = true
state_dir = "{d}/state"
timeout = 60
""")
        with open(cfg, "w") as f:
            f.write("\n".join(accounts))
        os.chmod(cfg, 0o600)
        jobs = ["--jobs", str(self.jobs)] if self.jobs and self.command == "sync" else []
        return [self.binary, "-c", cfg, self.command] + jobs


class Mpop(Tool):
    name = "mpop"

    def argv(self, scen, server):
        """One mpoprc with an account per user, all fetched by `mpop -a` (mpop
        takes them one after another)."""
        d = os.path.join(self.work, scen)
        if server["tls"]:
            tls = f"tls on\ntls_starttls off\ntls_trust_file {server['ca']}"
        else:
            tls = "tls off"
        rc = os.path.join(d, "mpoprc")
        with open(rc, "w") as f:
            f.write(f"""defaults
host 127.0.0.1
port {server['port']}
auth user
password {PASSWORD}
keep on
only_new on
received_header off
timeout 60
delivery maildir {self.maildir(scen)}
{tls}
""")
            for user in server["users"]:
                f.write(f"\naccount {user}\nuser {user}\nuidls_file {d}/uidls-{user}\n")
        os.chmod(rc, 0o600)
        return [self.binary, "-C", rc, "-a", "--quiet"]


class Fetchmail(Tool):
    name = "fetchmail"
    ok_codes = (0, 1)   # 1 = "no new mail", a success for scenario 4

    def __init__(self, work, binary, procmail):
        super().__init__(work, binary)
        self.procmail = procmail
        self.env["FETCHMAILHOME"] = work

    def runs(self, sc):
        return sc.command == "sync"

    def argv(self, scen, server):
        """One .fetchmailrc with a poll entry per user (`via` the one server),
        all polled by one run."""
        d = os.path.join(self.work, scen)
        if server.get("target") == "lmtp":
            # For LMTP a smtphost starting with '/' is a unix socket.
            deliver = f"smtphost \"{server['socket']}\" lmtp smtpname \"{server['recipient']}\""
        elif server.get("target") == "smtp":
            deliver = (f"smtphost 127.0.0.1/{server['smtp_port']} "
                       f"smtpname \"{server['recipient']}\"")
        else:
            prc = os.path.join(d, "procmailrc")
            with open(prc, "w") as f:
                f.write(f"LOGFILE=/dev/null\n:0\n{self.maildir(scen)}/\n")
            deliver = f"mda \"{self.procmail} -m {prc}\""
        rc = os.path.join(d, "fetchmailrc")
        if server["tls"]:
            tls = f"ssl sslcertck sslcertfile \"{server['ca']}\" sslcommonname localhost"
        else:
            tls = "sslproto ''"
        with open(rc, "w") as f:
            f.write("set no bouncemail\nset no syslog\n")
            for user in server["users"]:
                f.write(f"""poll {user} via 127.0.0.1 port {server['port']} protocol pop3 uidl auth password timeout 60
  user "{user}" password "{PASSWORD}" keep {tls}
  {deliver}
""")
        os.chmod(rc, 0o600)
        return [self.binary, "-f", rc, "--idfile", f"{d}/fetchids",
                "--pidfile", f"{d}/fetchmail.pid", "--nodetach", "--silent"]


class Getmail(Tool):
    name = "getmail"

    def __init__(self, work, binary):
        super().__init__(work, binary)
        if os.geteuid() == 0:
            # getmail's Maildir destination refuses to deliver as root.
            nobody = pwd.getpwnam("nobody")
            self.run_as = (nobody.pw_uid, nobody.pw_gid)

    def argv(self, scen, server):
        """An rc file per user, all named to one getmail run (--rcfile each)."""
        d = os.path.join(self.work, scen)
        gdir = os.path.join(d, "getmail")
        os.makedirs(gdir, exist_ok=True)
        if server["tls"]:
            retr = f"type = SimplePOP3SSLRetriever\nca_certs = {server['ca']}\n"
        else:
            retr = "type = SimplePOP3Retriever\n"
        rcs = []
        for user in server["users"]:
            rc = os.path.join(gdir, f"getmailrc-{user}")
            rcs.append(f"--rcfile={rc}")
            with open(rc, "w") as f:
                f.write(f"""[retriever]
{retr}server = 127.0.0.1
port = {server['port']}
username = {user}
password = {PASSWORD}
timeout = 60

[destination]
type = Maildir
path = {self.maildir(scen)}/

[options]
read_all = false
delete = false
verbose = 0
received = false
delivered_to = false
message_log_verbose = false
""")
        self.fix_owner(scen)
        return [self.binary, f"--getmaildir={gdir}", *rcs, "--quiet"]


# --------------------------------------------------------------------------
# Scenarios


class Scenario:
    def __init__(self, key, label, user, count, size, tls=False, delay=0.0,
                 metric="time", state_kept=False, big=False, same_runs_as=None, plain_of=None,
                 command="sync", target=None, accounts=1, new=0, group=None):
        self.key, self.label, self.user = key, label, user
        self.count, self.size, self.tls, self.delay = count, size, tls, delay
        self.metric, self.state_kept, self.big = metric, state_kept, big
        self.same_runs_as = same_runs_as   # another metric of that scenario's runs
        self.plain_of = plain_of           # for a TLS scenario: its plain twin
        self.command = command             # "sync", or "list" (popfetch only)
        self.target = target               # None (a Maildir), "lmtp" or "smtp"
        self.accounts = accounts           # mailboxes (users user01...), one run over all
        self.new = new                     # messages new since the kept state (the last ones)
        self.group = group                 # scenarios run as steps of one sequence share it

    @property
    def users(self):
        """The Dovecot users the scenario reads: `user`, or user01... for many accounts."""
        if self.accounts == 1:
            return [self.user]
        return [f"{self.user}{i:02d}" for i in range(1, self.accounts + 1)]

    @property
    def total(self):
        """Messages a run leaves in the Maildir (every account delivers into one)."""
        return self.count * self.accounts

    @property
    def workdir(self):
        """A tool's directory for the scenario; the steps of a group share one, so
        each step starts from the state and Maildir the step before left."""
        return self.group or self.key


def human_size(n):
    for unit, f in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= f:
            v = n / f
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def daemon_memory(binary, dove, work, polls, limit):
    """`popfetch daemon` polling every 10 ms: its RSS after 10 polls and after
    `polls`, and whether it grew by at most 1 MiB (issue 19); also the growth
    from poll 100 on, past the first poll's peak, which could hide a slow leak.
    The mailbox is bob's (scenario 2's), keep on: the first poll fetches it,
    the rest find nothing new, as a long-running daemon mostly does. SIGTERM
    must end it with exit 0. Returns (note, ok)."""
    d = os.path.join(work, "daemon")
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(f"""[accounts.bench]
host = "127.0.0.1"
port = {dove.port}
tls = "none"
auth = "user"
user = "bob"
password = "{PASSWORD}"
deliver = "maildir:{d}/Maildir"
keep = true
state_dir = "{d}/state"
poll_interval = "10ms"
""")
    os.chmod(cfg, 0o600)
    logpath = os.path.join(d, "daemon.log")
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(d, "xdg"))
    with open(logpath, "w") as logf:
        proc = subprocess.Popen([binary, "-c", cfg, "--log-format", "json", "daemon",
                                 "--foreground", "-v"], stdout=subprocess.DEVNULL,
                                stderr=logf, env=env)
    seen = {"polls": 0, "offset": 0}

    def count_polls():
        with open(logpath, "rb") as f:
            f.seek(seen["offset"])
            chunk = f.read()
        cut = chunk.rfind(b"\n") + 1
        seen["offset"] += cut
        seen["polls"] += chunk[:cut].count(b'"event":"synced"')
        return seen["polls"]

    def rss_kib():
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def wait_for(n):
        deadline = time.monotonic() + limit
        while count_polls() < n:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    try:
        if not wait_for(10):
            return (f"- daemon memory: FAILED, {seen['polls']} poll(s) seen; "
                    f"{read_tail(logpath)}", False)
        early = rss_kib()
        if not wait_for(100):
            return (f"- daemon memory: FAILED after {seen['polls']} poll(s); "
                    f"{read_tail(logpath)}", False)
        settled = rss_kib()
        if not wait_for(polls):
            return (f"- daemon memory: FAILED after {seen['polls']} poll(s); "
                    f"{read_tail(logpath)}", False)
        late = rss_kib()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    grown, drift = late - early, late - settled
    ok = grown <= 1024 and proc.returncode == 0
    return (f"- daemon memory: `popfetch daemon` at a 10 ms interval, RSS {early:,} KiB "
            f"after 10 polls, {settled:,} after 100 and {late:,} after {seen['polls']:,}: "
            f"{grown:+,} KiB ({drift:+,} from poll 100; target ≤ +1,024 KiB); SIGTERM "
            f"exit {proc.returncode} {'ok' if ok else 'FAILED'}", ok)


def build_scenarios(tiny):
    if tiny:
        small, lat, big, many, listed, relay = 30, 10, 1 << 20, 300, 20, 20
        accounts, per_account, huge, news = 3, 3, 300, 3
    else:
        small, lat, big, many, listed, relay = 2000, 200, 100 << 20, 20000, 1000, 2000
        accounts, per_account, huge, news = 50, 40, 100000, 10
    kb4, kb2 = 4096, 2048
    return [
        Scenario("s1", f"1. {small:,} × 4 KB, loopback, plain", "alice", small, kb4),
        Scenario("s1tls", f"1. {small:,} × 4 KB, loopback, implicit TLS", "alice", small, kb4,
                 tls=True, plain_of="s1"),
        Scenario("s2", f"2. {lat:,} × 4 KB, +50 ms RTT proxy, plain", "bob", lat, kb4,
                 delay=0.025),
        Scenario("s2tls", f"2. {lat:,} × 4 KB, +50 ms RTT proxy, implicit TLS", "bob", lat,
                 kb4, tls=True, delay=0.025, plain_of="s2"),
        Scenario("s3", f"3. 1 × {human_size(big)}: peak RSS", "carol", 1, big,
                 metric="rss", big=True),
        Scenario("s3t", f"3. 1 × {human_size(big)}: wall time", "carol", 1, big,
                 metric="time", big=True, same_runs_as="s3"),
        Scenario("s3tls", f"3. 1 × {human_size(big)}, implicit TLS: peak RSS", "carol", 1,
                 big, tls=True, metric="rss", big=True),
        Scenario("s3tlst", f"3. 1 × {human_size(big)}, implicit TLS: wall time", "carol", 1,
                 big, tls=True, metric="time", big=True, same_runs_as="s3tls",
                 plain_of="s3t"),
        Scenario("s4", f"4. {many:,} × 1 KB, nothing new (state kept)", "dave", many, 1024,
                 state_kept=True),
        Scenario("s4tls", f"4. {many:,} × 1 KB, nothing new, implicit TLS", "dave", many,
                 1024, tls=True, state_kept=True, plain_of="s4"),
        Scenario("s5", f"5. `list` of {listed:,} × 4 KB, +50 ms RTT proxy", "erin", listed,
                 kb4, delay=0.025, command="list"),
        Scenario("s6", f"6. {relay:,} × 4 KB into Dovecot LMTP (unix socket)", "frank", relay,
                 kb4, target="lmtp"),
        Scenario("s7", f"7. {relay:,} × 4 KB into Exim, SMTP on loopback", "frank", relay,
                 kb4, target="smtp"),
        Scenario("m1", f"8. {accounts} accounts × {per_account} × 4 KB, one run over all",
                 "acct", per_account, kb4, accounts=accounts),
        # Steps of one sequence, in this order, for each tool in each run: a first
        # sync of a big mailbox, a run with nothing new, a run with `news` new.
        Scenario("b1", f"9. {huge:,} × 2 KB, first sync", "grace", huge, kb2, group="big"),
        Scenario("b1rss", f"9. {huge:,} × 2 KB, first sync: peak RSS", "grace", huge, kb2,
                 metric="rss", group="big", same_runs_as="b1"),
        Scenario("b2", f"9. {huge:,} × 2 KB, nothing new", "grace", huge, kb2,
                 state_kept=True, group="big"),
        Scenario("b3", f"9. {huge:,} × 2 KB, {news} new", "grace", huge + news, kb2,
                 state_kept=True, new=news, group="big"),
    ]


def write_messages(newdir, tag, first, count, size, stamp=1700000000):
    """Messages first..first+count-1 of `size` bytes, straight into a Maildir's
    new/ (far faster than delivering them: 100,000 take seconds)."""
    for i in range(first, first + count):
        with open(os.path.join(newdir, f"{stamp}.M{i}P1.bench"), "wb") as f:
            f.write(make_message(i, size, tag))


def populate(dove, scenarios):
    seen = set()
    for sc in scenarios:
        for user in sc.users:
            if user in seen:
                continue
            seen.add(user)
            newdir = dove.add_user(user)
            if sc.big:
                write_big_message(os.path.join(newdir, "1700000000.M0P1.bench"), sc.size, user)
            else:
                write_messages(newdir, user, 0, sc.count - sc.new, sc.size)


NEW_STAMP = 1800000000   # the file names of messages added between runs start with it


def add_new(dove, sc):
    """Adds the scenario's `new` messages to its mailbox (as a delivery would,
    and Dovecot's index learns them before any fetcher is timed)."""
    newdir = os.path.join(dove.maildir(sc.user), "new")
    write_messages(newdir, sc.user, sc.count - sc.new, sc.new, sc.size, NEW_STAMP)
    dove._chown_tree(dove.maildir(sc.user))
    dove.warm_up(sc.user, sc.count)


def remove_new(dove, sc):
    """Takes the messages add_new added out of the mailbox again."""
    md = dove.maildir(sc.user)
    for sub in ("new", "cur"):
        for e in os.scandir(os.path.join(md, sub)):
            if e.name.startswith(f"{NEW_STAMP}."):
                os.unlink(e.path)
    dove.warm_up(sc.user, sc.count - sc.new)


def one_run(tool, sc, server, logpath, limit, fresh=True):
    if fresh:
        tool.reset(sc.workdir)
    tool.command = sc.command
    dest = tool.maildir(sc.workdir)
    sink = server.get("sink")
    if sink:
        # A new recipient, so a new (empty) destination Maildir, every run.
        server["recipient"], dest = sink.fresh(tool.name)
    argv = tool.argv(sc.workdir, server)
    # Nothing dirty from an earlier run may land on this run's fsyncs.
    os.sync()
    try:
        start = os.path.getsize(logpath)
    except OSError:
        start = 0
    wall, cpu, rss, code, timed_out = run_measured(argv, tool.env, logpath, limit, tool.run_as,
                                                   os.path.join(tool.work, "rss.txt"))
    if timed_out:
        return RunResult(False, wall, note=f"failed after {limit:.0f} s (time limit)")
    if code not in tool.ok_codes:
        return RunResult(False, wall, note=f"failed: exit {code}{last_error(logpath, start)}")
    if sink:
        # Timed until every message is in the Maildir, not only accepted.
        wall += sink.settle(limit)
    if sc.command == "list":
        listed = len(log_since(logpath, start).splitlines())
        if listed < sc.count:
            return RunResult(False, wall, note=f"failed: listed {listed}/{sc.count} lines")
        return RunResult(True, wall, cpu, rss)
    got = count_maildir(dest)
    if got != sc.total:
        return RunResult(False, wall, note=f"failed: delivered {got}/{sc.total}")
    if sc.big and largest_in_maildir(dest) < sc.size:
        return RunResult(False, wall, note="failed: message truncated")
    return RunResult(True, wall, cpu, rss)


class Runner:
    """Runs the scenarios: for each, `runs` rounds of the server floor and every
    tool once, the tools taking turns run by run so that whatever else the
    machine is doing (writeback, Dovecot's own housekeeping) falls on all alike.
    Results go to `results`: (scenario key, tool name or "floor"/"dfloor") ->
    list of RunResult."""

    def __init__(self, tools, dove, sinks, missing, runs, limit, tmp, big_peers):
        self.tools, self.dove, self.sinks, self.missing = tools, dove, sinks, missing
        self.runs, self.limit, self.big_peers = runs, limit, big_peers
        self.results = {}
        self.state_sizes = {}   # "first"/"second" -> bytes per message of popfetch's state
        self.logpaths = {t.name: os.path.join(tmp, f"{t.name}.log") for t in tools}
        self.proxies = []

    def close(self):
        for p in self.proxies:
            p.close()
        self.proxies = []

    def server_for(self, sc):
        """Where a scenario's tools connect to, and deliver into."""
        dove = self.dove
        port = dove.tls_port if sc.tls else dove.port
        if sc.delay:
            proxy = DelayProxy(port, sc.delay)
            self.proxies.append(proxy)
            port = proxy.port
        server = {"port": port, "tls": sc.tls, "ca": dove.ca, "users": sc.users}
        if sc.target:
            sink = self.sinks[sc.target]
            server.update(target=sc.target, sink=sink, socket=getattr(sink, "socket", None),
                          smtp_port=sink.port)
        return server

    def run_all(self, scenarios):
        done = set()
        for sc in scenarios:
            if sc.same_runs_as and any(k[0] == sc.same_runs_as for k in self.results):
                for tool in self.tools:
                    self.results[(sc.key, tool.name)] = self.results.get(
                        (sc.same_runs_as, tool.name))
                continue
            if sc.group:
                if sc.group not in done:
                    done.add(sc.group)
                    self.run_group([s for s in scenarios
                                    if s.group == sc.group and not s.same_runs_as])
                continue
            if sc.target in self.missing:
                self.results[(sc.key, "popfetch")] = [RunResult(
                    False, note="failed: " + self.missing[sc.target].splitlines()[0])]
                continue
            self.run_scenario(sc)
            self.close()

    def run_scenario(self, sc):
        server = self.server_for(sc)
        runs_of = {t.name: [] for t in self.tools}
        stopped = set()
        if sc.state_kept:
            # One untimed first run, so that the timed ones find nothing new.
            for tool in self.tools:
                first = one_run(tool, sc, server, self.logpaths[tool.name], self.limit)
                if not first.ok:
                    first.note = "first run " + first.note
                    runs_of[tool.name].append(first)
                    stopped.add(tool.name)
        for _ in range(self.runs):
            self.round(sc, server, runs_of, stopped, fresh=not sc.state_kept)
        self.record(sc, runs_of)

    def run_group(self, steps):
        """A sequence of steps on one mailbox (scenario 9), in each run for each
        tool in turn: a first sync from fresh state, then each later step on
        the state the one before left (a step with new messages adds them to
        the mailbox before its round and takes them out after).  Peers not in
        --big-peers are not run (at full size fetchmail and getmail would take
        many minutes a run).  popfetch's state file is measured after the
        first and the second step."""
        server = self.server_for(steps[0])
        runs_of = {sc.key: {t.name: [] for t in self.tools} for sc in steps}
        stopped = {t.name for t in self.tools
                   if t.name != "popfetch" and t.name not in self.big_peers}
        sizes = {"first": [], "second": []}
        popfetch = self.tools[0]
        for _ in range(self.runs):
            for i, sc in enumerate(steps):
                if sc.new:
                    add_new(self.dove, sc)
                self.round(sc, server, runs_of[sc.key], stopped, fresh=i == 0)
                if sc.new:
                    remove_new(self.dove, sc)
                if i < 2 and "popfetch" not in stopped:
                    sizes["first" if i == 0 else "second"].append(
                        state_bytes(popfetch, sc) / (sc.total or 1))
        for sc in steps:
            for name in stopped:
                if name != "popfetch" and not runs_of[sc.key][name]:
                    runs_of[sc.key][name] = [RunResult(False, note="not run (--big-peers)")]
            self.record(sc, runs_of[sc.key])
        self.state_sizes = {k: statistics.median(v) for k, v in sizes.items() if v}

    def round(self, sc, server, runs_of, stopped, fresh):
        """The floor, then every tool that has a command for the scenario, once."""
        try:
            runs_of.setdefault("floor", []).append(bare_read(sc, server))
        except (OSError, ValueError) as e:
            log(f"  {sc.key:6} floor     failed: {e}")
        if sc.target:
            try:
                runs_of.setdefault("dfloor", []).append(delivery_floor(sc, server))
            except (OSError, ValueError) as e:
                log(f"  {sc.key:6} delivery floor failed: {e}")
        for tool in self.tools:
            if tool.name in stopped or not tool.runs(sc):
                continue
            r = one_run(tool, sc, server, self.logpaths[tool.name], self.limit, fresh=fresh)
            runs_of[tool.name].append(r)
            if not r.ok:
                stopped.add(tool.name)

    def record(self, sc, runs_of):
        """Keeps a scenario's runs and logs them (a failure with its log's tail)."""
        for kind in ("floor", "dfloor"):
            if runs_of.get(kind):
                self.results[(sc.key, kind)] = runs_of[kind]
                log(f"  {sc.key:6} {kind:9} "
                    + " ".join(fmt_value("time", r.wall) for r in runs_of[kind]))
        for tool in self.tools:
            rs = runs_of[tool.name]
            if not tool.runs(sc) or not rs:
                continue
            self.results[(sc.key, tool.name)] = rs
            last = rs[-1]
            if last.ok:
                v = [fmt_value(sc.metric, r.maxrss_kb if sc.metric == "rss" else r.wall)
                     for r in rs]
                log(f"  {sc.key:6} {tool.name:9} {' '.join(v)}")
                continue
            log(f"  {sc.key:6} {tool.name:9} {last.note}")
            if last.note.startswith("not run"):
                continue
            if sc.target == "smtp":
                log("    | exim: " + "\n    | exim: ".join(
                    self.sinks["smtp"].log().strip().splitlines()[-6:]))
            try:
                with open(self.logpaths[tool.name], errors="replace") as f:
                    tail = f.read()[-1500 if tool.name == "popfetch" else -400:]
                log("    | " + "\n    | ".join(tail.strip().splitlines()[-12:]))
            except OSError:
                pass


def state_bytes(tool, sc):
    """The size of popfetch's state files (*.state) for a scenario."""
    total = 0
    for dirpath, _, filenames in os.walk(os.path.join(tool.work, sc.workdir, "state")):
        total += sum(os.path.getsize(os.path.join(dirpath, n))
                     for n in filenames if n.endswith(".state"))
    return total


def log_since(logpath, start):
    """What this run wrote to its log."""
    try:
        with open(logpath, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def last_error(logpath, start):
    """The last meaningful line this run wrote to its log, for the table."""
    text = log_since(logpath, start)
    lines = [l.strip() for l in text.splitlines()
             if l.strip() and not l.startswith("$ ") and "Running as root" not in l]
    if not lines:
        return ""
    msg = lines[-1].replace("|", "/")
    if len(msg) > 70:
        msg = msg[:67] + "..."
    return f" ({msg})"


def fmt_value(metric, v):
    if metric == "rss":
        return f"{v / 1024:.1f} MB"
    if v < 0.1:
        return f"{v * 1000:.0f} ms"
    return f"{v:.2f} s"


def target_notes(scenarios, cell, bench, popfetch):
    """Issue 22's targets for scenarios 8 and 9, met or not."""
    notes = []
    by_key = {sc.key: sc for sc in scenarios}

    def ratio(key, target):
        sc = by_key[key]
        pf, mp = cell(sc, "popfetch")[1], cell(sc, "mpop")[1]
        if pf is None or not mp:
            return f"{sc.label}: popfetch/mpop — (target ≤ {target}×)"
        r = pf / mp
        return (f"{sc.label}: popfetch/mpop {r:.2f}× (target ≤ {target}×) "
                f"{'ok' if r <= target else 'MISSED'}")

    if "m1" in by_key:
        jobs = popfetch.jobs or "default"
        notes.append(f"- scenario 8 (popfetch --jobs {jobs}; mpop -a, one account after "
                     "another; fetchmail one rc with a poll entry per account; getmail "
                     "--rcfile per account; floor: "
                     f"{FLOOR_CONNECTIONS} sessions at once): " + ratio("m1", 0.3))
    for key in ("b1", "b2", "b3"):
        if key in by_key:
            notes.append("- scenario " + ratio(key, 0.7))
    if "b1rss" in by_key:
        v = cell(by_key["b1rss"], "popfetch")[1]
        if v is not None:
            mib = v / 1024
            notes.append(f"- scenario 9, first sync: popfetch peak RSS {mib:.1f} MiB "
                         f"(target ≤ 32 MiB) {'ok' if mib <= 32 else 'MISSED'}")
    for step, what in (("first", "after the first sync"), ("second", "after a second run")):
        v = bench.state_sizes.get(step)
        if v is not None:
            notes.append(f"- scenario 9: popfetch's state file {what}: {v:.1f} bytes a "
                         f"message (target ≤ 64) {'ok' if v <= 64 else 'MISSED'}")
    return notes


def fmt_spread(metric, v, spread):
    """The spread of a cell's runs, in the unit fmt_value shows `v` in."""
    if metric == "rss":
        return f"±{spread / 1024:.1f}"
    if v < 0.1:
        return f"±{spread * 1000:.0f}"
    return f"±{spread:.2f}"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="small sizes, 1 run: a few seconds, for CI")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per cell (default 3)")
    ap.add_argument("--popfetch", default=os.path.join(REPO, "target", "release", "popfetch"),
                    help="popfetch binary (default: target/release/popfetch)")
    ap.add_argument("--peers", default="mpop,fetchmail,getmail",
                    help="comma-separated peers to run (default: all installed)")
    ap.add_argument("--only", default="",
                    help="comma-separated scenario keys "
                         "(s1,s1tls,s2,s2tls,s3,s3t,s3tls,s3tlst,s4,s4tls,s5,s6,s7,m1,"
                         "b1,b1rss,b2,b3; each of b1...b3 runs the whole sequence of "
                         "scenario 9, as each step needs the one before)")
    ap.add_argument("--big-peers", default=None,
                    help="comma-separated peers to run in scenario 9 (default: mpop; "
                         "at full size fetchmail and getmail take many minutes a run)")
    ap.add_argument("--popfetch-jobs", type=int, default=None,
                    help="popfetch sync --jobs N (default: popfetch's own default)")
    ap.add_argument("--limit", type=float, default=None,
                    help="time limit of one run in seconds (default 600, --tiny 60)")
    ap.add_argument("--keep-tmp", action="store_true", help="leave the temp dir for debugging")
    args = ap.parse_args()
    runs = args.runs if args.runs is not None else (1 if args.tiny else 3)
    limit = args.limit or (60.0 if args.tiny else 600.0)
    if runs < 1:
        ap.error("--runs must be at least 1")

    popfetch = os.path.abspath(args.popfetch)
    if not os.access(popfetch, os.X_OK):
        log(f"popfetch binary not found: {popfetch} (cargo build --release?)")
        return 2
    dovecot_bin = which("dovecot")
    if not dovecot_bin:
        log("dovecot is not installed (apt-get install dovecot-pop3d); cannot benchmark")
        return 2

    tmp = tempfile.mkdtemp(prefix="popfetch-bench-")
    dove = None
    sinks = {}     # "lmtp"/"smtp" -> a started LmtpStore/Exim
    old_handlers = {}

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    for s in (signal.SIGTERM, signal.SIGHUP):
        old_handlers[s] = signal.signal(s, on_signal)

    skipped = []
    try:
        tools = [Popfetch(os.path.join(tmp, "popfetch"), popfetch)]
        wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
        for peer in ("mpop", "fetchmail", "getmail"):
            if peer not in wanted:
                skipped.append(f"{peer}: not requested")
                continue
            binary = which(peer)
            if peer == "fetchmail":
                procmail = which("procmail")
                if not binary or not procmail:
                    skipped.append("fetchmail: not installed (needs fetchmail and procmail)")
                    continue
                tools.append(Fetchmail(os.path.join(tmp, peer), binary, procmail))
            elif not binary:
                skipped.append(f"{peer}: not installed")
            elif peer == "mpop":
                tools.append(Mpop(os.path.join(tmp, peer), binary))
            else:
                tools.append(Getmail(os.path.join(tmp, peer), binary))
        for s in skipped:
            log(f"skipping {s}")

        tools[0].jobs = args.popfetch_jobs
        if args.big_peers is not None:
            big_peers = {p.strip() for p in args.big_peers.split(",") if p.strip()}
        else:
            big_peers = {"mpop"}
        scenarios = build_scenarios(args.tiny)
        if args.only:
            keys = {k.strip() for k in args.only.split(",")}
            # A step of a sequence needs the others: any one selects its group.
            groups = {s.group for s in scenarios if s.key in keys and s.group}
            scenarios = [s for s in scenarios if s.key in keys or s.group in groups]

        t0 = time.monotonic()
        log(f"writing test mailboxes under {tmp} ...")
        dove = Dovecot(os.path.join(tmp, "dovecot"), dovecot_bin)
        populate(dove, scenarios)
        dove.start()
        warmed = set()
        for sc in scenarios:
            for user in sc.users:
                if user not in warmed:
                    dove.warm_up(user, sc.count - sc.new)
                    warmed.add(user)
        log(f"dovecot ready on 127.0.0.1:{dove.port}/{dove.tls_port} "
            f"({time.monotonic() - t0:.1f} s)")

        # The servers scenarios 6 and 7 deliver into.  Without one, a scenario is
        # skipped with a note; in --tiny it counts as popfetch failing.
        missing = {}   # target -> why it cannot run
        for target in sorted({sc.target for sc in scenarios if sc.target}):
            try:
                if target == "lmtp":
                    if not os.access("/usr/lib/dovecot/lmtp", os.X_OK):
                        raise RuntimeError("dovecot's LMTP server is not installed "
                                           "(apt-get install dovecot-lmtpd)")
                    sink = LmtpStore(os.path.join(tmp, "lmtp"), dovecot_bin)
                else:
                    exim = which("exim4") or which("exim")
                    if not exim:
                        raise RuntimeError("exim is not installed "
                                           "(apt-get install exim4-daemon-light)")
                    sink = Exim(os.path.join(tmp, "exim"), exim)
                sink.start()
                sinks[target] = sink
                log(f"{target} server ready")
            except RuntimeError as e:
                missing[target] = str(e).strip()
                log(f"cannot deliver over {target.upper()}: {missing[target]}")
        if not args.tiny:
            for sc in scenarios:
                if sc.target in missing:
                    skipped.append(f"scenario {sc.label}: "
                                   + missing[sc.target].splitlines()[0])
            scenarios = [sc for sc in scenarios if sc.target not in missing]

        bench = Runner(tools, dove, sinks, missing, runs, limit, tmp, big_peers)
        try:
            bench.run_all(scenarios)
        finally:
            bench.close()
        results = bench.results

        # ---------------------------------------------------------------- table
        present = {t.name for t in tools}

        def values(sc, name, what="main"):
            """The runs' values of a cell, or None (not run, failed)."""
            if name not in present and name not in ("floor", "dfloor"):
                return None
            rs = results.get((sc.key, name))
            if not rs or not rs[-1].ok:
                return None
            if what == "cpu":
                return [r.cpu for r in rs]
            return [r.maxrss_kb if sc.metric == "rss" else r.wall for r in rs]

        def cell(sc, name, what="main", noise=False):
            """A cell's text and median; with noise, the text adds the spread
            (max − min) of the runs."""
            vs = values(sc, name, what)
            if vs is None:
                rs = results.get((sc.key, name)) if name in present else None
                return (rs[-1].note if rs else "—"), None
            metric = "time" if what == "cpu" else sc.metric
            v = statistics.median(vs)
            text = fmt_value(metric, v)
            if noise and len(vs) > 1:
                text += " " + fmt_spread(metric, v, max(vs) - min(vs))
            return text, v

        def floor_of(sc):
            """The floor's runs of a time row (an RSS row has none)."""
            if sc.metric != "time":
                return None
            return results.get((sc.same_runs_as or sc.key, "floor"))

        def above_floor(sc):
            """Each tool's median minus the floor's, and popfetch's share of mpop's
            with the target (≤ 0.5×) where mpop is above the floor by more than
            the noise (the larger spread of mpop's runs and the floor's)."""
            fl = floor_of(sc)
            if not fl:
                return "—", "—", None
            f = statistics.median(r.wall for r in fl)
            over = {}
            for t in TOOLS:
                v = cell(sc, t)[1]
                over[t] = None if v is None else v - f
            text = " / ".join("—" if over[t] is None else fmt_value("time", over[t])
                              for t in TOOLS)
            pf, mp = over["popfetch"], over["mpop"]
            if pf is None or mp is None:
                return text, "—", None
            mvs = values(sc, "mpop")
            noise = max(max(mvs) - min(mvs), max(r.wall for r in fl) - min(r.wall for r in fl))
            if mp <= noise:
                return text, f"— (mpop within noise, {noise * 1000:.0f} ms)", None
            if pf <= 0:
                # Accounts in parallel can end below a floor that runs 16 sessions.
                return text, "popfetch at or below the floor ✓", 0.0
            share = pf / mp
            return text, f"{share:.2f}× {'✓' if share <= 0.5 else '✗'}", share

        def table(title, what):
            floor = what == "main"
            lines = [f"### {title}", "",
                     "| scenario | popfetch | mpop | fetchmail | getmail | popfetch/mpop |"
                     + (" server floor | above floor: popfetch / mpop / fetchmail / getmail "
                        "| popfetch/mpop above floor |" if floor else ""),
                     "|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if floor else "")]
            for sc in scenarios:
                if what == "cpu" and sc.metric == "rss" or what == "main" and sc.target:
                    continue
                cells = [cell(sc, t, what, noise=floor) for t in TOOLS]
                pf, mp = cells[0][1], cells[1][1]
                ratio = f"{pf / mp:.2f}×" if pf is not None and mp else "—"
                extra = ""
                if floor:
                    fl = floor_of(sc)
                    vs = [r.wall for r in fl] if fl else []
                    fl_text = "—"
                    if vs:
                        m = statistics.median(vs)
                        fl_text = fmt_value("time", m) + (
                            " " + fmt_spread("time", m, max(vs) - min(vs)) if len(vs) > 1 else "")
                    over, share, _ = above_floor(sc)
                    extra = f" {fl_text} | {over} | {share} |"
                lines.append(f"| {sc.label} | " + " | ".join(c[0] for c in cells)
                             + f" | {ratio} |" + extra)
            return "\n".join(lines)

        print()
        if any(not sc.target for sc in scenarios):
            print(table(f"Wall time (peak RSS for the RSS row), median of {runs} run(s)", "main"))
            print()
        print(table("CPU time (user+sys of the fetcher and its children), median", "cpu"))
        print()
        relayed = [sc for sc in scenarios if sc.target]
        if relayed:
            lines = [f"### Delivery into a mail server: wall time until every message is in "
                     f"the destination Maildir, median of {runs} run(s)", "",
                     "| scenario | popfetch | fetchmail | popfetch / fetchmail "
                     "| popfetch CPU | fetchmail CPU | POP3 floor | delivery floor |",
                     "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for sc in relayed:
                (pf_t, pf), (fm_t, fm) = cell(sc, "popfetch"), cell(sc, "fetchmail")
                ratio = f"{pf / fm:.2f}×" if pf is not None and fm else "—"
                floors = []
                for kind in ("floor", "dfloor"):
                    fl = results.get((sc.key, kind))
                    floors.append(fmt_value("time", statistics.median(r.wall for r in fl))
                                  if fl else "—")
                lines.append(f"| {sc.label} | {pf_t} | {fm_t} | {ratio} | "
                             f"{cell(sc, 'popfetch', 'cpu')[0]} | "
                             f"{cell(sc, 'fetchmail', 'cpu')[0]} | {' | '.join(floors)} |")
            print("\n".join(lines))
            print()
        twins = [sc for sc in scenarios if sc.plain_of]
        by_key = {sc.key: sc for sc in scenarios}
        if twins:
            lines = ["### Implicit TLS against plain (wall time, median)", "",
                     "| scenario | popfetch | mpop | fetchmail | getmail |",
                     "|---|---:|---:|---:|---:|"]
            for sc in twins:
                plain = by_key.get(sc.plain_of)
                row = []
                for t in TOOLS:
                    tls_v = cell(sc, t)[1]
                    plain_v = cell(plain, t)[1] if plain else None
                    row.append(f"{tls_v / plain_v:.2f}×" if tls_v and plain_v else "—")
                lines.append(f"| {sc.label} | " + " | ".join(row) + " |")
            print("\n".join(lines))
            print()
        notes = [f"- machine: {platform.node()}, {cpu_model()}, {os.cpu_count()} CPUs, "
                 f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
                 f"- dovecot {dovecot_version(dovecot_bin)}; "
                 + "; ".join(f"{t.name} {tool_version(t)}" for t in tools)]
        for s in skipped:
            notes.append(f"- skipped {s}")
        notes.append("- Maildir delivery, keep on, fresh state per run except scenario 4 "
                     "(timed runs follow one untimed full fetch) and scenario 9 (each run: "
                     "a first sync, nothing new, new messages added, on one state)")
        notes.append("- ±: the spread (max − min) of a cell's runs; above floor: a tool's "
                     "median minus the floor's; target popfetch ≤ 0.5× mpop's where mpop is "
                     "above the floor by more than the noise (the larger spread of mpop and "
                     "the floor)")
        notes.extend(target_notes(scenarios, cell, bench, tools[0]))
        if relayed:
            notes.append("- scenarios 6 and 7: popfetch `deliver = \"lmtp:SOCKET\"` / "
                         "`\"smtp:127.0.0.1:PORT\"` (smtp_tls = \"none\"), fetchmail `smtphost` "
                         "(+ `lmtp`) and `smtpname`; a new recipient (empty Maildir) every run; "
                         "Exim (-odi, no TLS) is timed until its spool is empty; "
                         "target: popfetch / fetchmail ≤ 0.50×")
        if "smtp" in sinks:
            notes.append(f"- exim {exim_version(sinks['smtp'].binary)}")
        for sc in scenarios:
            pf, fl = cell(sc, "popfetch")[1], results.get((sc.key, "floor"))
            if sc.command == "list" and pf and fl:
                floor_v = statistics.median(r.wall for r in fl)
                notes.append(f"- scenario 5: popfetch list takes {pf / floor_v:.2f}× "
                             "the server floor (UIDL, LIST and every TOP n 0 pipelined)")
        notes.append("- server floor: a bare in-process client that pipelines the same "
                     "commands and reads the replies into nothing (no delivery, no state, "
                     "no process start)")
        if relayed:
            notes.append("- delivery floor (6, 7): a bare in-process client that sends the same "
                         "messages, one transaction each, straight into the LMTP server or "
                         "Exim (MAIL, RCPT, DATA pipelined with the previous message's end; "
                         "no POP3, no state, no process start)")
        if "bob" in dove.users:
            daemon_note, daemon_ok = daemon_memory(args.popfetch, dove, tmp,
                                                   200 if args.tiny else 1000, limit)
        else:
            daemon_note, daemon_ok = "- daemon memory: skipped (--only without scenario 2)", True
        notes.append(daemon_note)
        print("\n".join(notes))

        pf_ok = daemon_ok and all(results.get((sc.key, "popfetch")) and results[(sc.key, "popfetch")][-1].ok
                    for sc in scenarios)
        if not pf_ok:
            log("popfetch FAILED in at least one scenario")
        return 0 if pf_ok else 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if dove:
            dove.stop()
        for sink in sinks.values():
            sink.stop()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def dovecot_version(binary):
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=10).stdout.split()[0]
    except Exception:
        return "?"


def exim_version(binary):
    try:
        out = subprocess.run([binary, "-bV"], capture_output=True, text=True, timeout=10).stdout
        return out.split()[2]
    except Exception:
        return "?"


def tool_version(tool):
    flag = {"popfetch": "--version", "mpop": "--version", "fetchmail": "-V",
            "getmail": "--version"}[tool.name]
    try:
        p = subprocess.run([tool.binary, flag], capture_output=True, text=True, timeout=10,
                           env=tool.env, stdin=subprocess.DEVNULL)
        out = (p.stdout + "\n" + p.stderr).splitlines()
    except Exception:
        return "?"
    import re
    for line in out:
        if "WARNING" in line:
            continue
        m = re.search(r"(\d+\.\d+(?:\.\d+)*)", line)
        if m:
            return m.group(1)
    return "?"


if __name__ == "__main__":
    sys.exit(main())
