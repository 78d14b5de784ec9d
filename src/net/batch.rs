//! TCP batching: the plain TCP connection, told how many bytes are on their way
//! (the listed sizes of the messages asked for), has a read wait for a batch of
//! them with SO_RCVLOWAT (socket(7)) rather than wake for every segment.
//!
//! The wait is a poll(2), then a read that does not block. Not a blocking read
//! with the mark set: Linux (6.18 here) wakes such a read only when a whole mark
//! *more* than it has already taken in is queued, so one that took part of its
//! batch can sleep with the rest of it waiting, until its timeout (measured: a
//! 100 MB RETR stalled for the whole patience in 2 runs of 10, and at 250 ms
//! such stalls were half the time of syncing 50 small accounts). poll weighs
//! everything queued against the mark, and the read then takes it at once.
//! A poll still waits its patience now and then (see [`PATIENCE`]), and then
//! the read takes what has come; when nothing has come, it waits for the first
//! byte as any read, and the next batches again.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::net::RecvFlags;

/// What a read waits for while at least that much is due: one wake-up per 64 KiB,
/// where a server writing 4 KiB at a time (Dovecot's TLS proxy writes a record at
/// a time) would wake the reader for nearly every write.
pub(super) const BATCH: usize = 64 * 1024;
/// Less than this due, and a read takes whatever has come.
const MIN_BATCH: usize = 16 * 1024;
/// How long a read waits for its batch before it takes what has come: a bound
/// on what batching may add to any read. Short, because a healthy connection
/// sometimes stalls short of the mark: over a 50 ms path with TLS, 1 sync in 8
/// had a poll return only after 208 ms (TCP's 200 ms timer, it seems), with
/// 62 KiB then queued: 0.2 s added to a 0.4 s sync. A batch that is coming
/// arrives well within 20 ms on any link fast enough for batching to matter
/// (64 KiB in 20 ms is 26 Mbit/s); on a slower one a read every 20 ms still
/// saves wake-ups.
const PATIENCE: Duration = Duration::from_millis(20);

/// The TCP connection, told how many bytes are on their way: the listed sizes of
/// the messages asked for, which the replies usually exceed (a status line,
/// dot-stuffing, the terminator; under TLS, each record's header and tag). While
/// enough is due, a read waits for a batch of it (SO_RCVLOWAT, socket(7)).
pub(crate) struct Tcp {
    pub(super) socket: TcpStream,
    /// Bytes due: counted down by every byte read, and cleared when the protocol
    /// is owed nothing more, so it overshoots only by what a server overstated.
    pub(super) due: u64,
    /// SO_RCVLOWAT as it is set now; 1, the system's default, when not batching.
    pub(super) low_water: usize,
    /// The account's read timeout, as set on the socket for every blocking read;
    /// kept here so that a batch's patience never exceeds it without asking the
    /// socket on each read.
    pub(super) timeout: Duration,
    /// How long a batch may take: PATIENCE (the tests set their own).
    pub(super) patience: Duration,
    pub(super) batching: bool,
    /// Whether the peer is a SOCKS proxy rather than the server.
    pub(super) proxied: bool,
}

impl Tcp {
    pub(super) fn new(socket: TcpStream, timeout: Duration) -> Tcp {
        Tcp {
            socket,
            due: 0,
            low_water: 1,
            timeout,
            patience: PATIENCE,
            batching: true,
            proxied: false,
        }
    }

    /// The address connected to.
    pub(super) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.socket.peer_addr().ok()
    }

    pub(super) fn local(&self) -> Option<std::net::SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// `bytes` more are on their way.
    pub(super) fn due(&mut self, bytes: u64) {
        self.due = self.due.saturating_add(bytes);
    }

    /// Nothing more is owed.
    pub(super) fn clear_due(&mut self) {
        self.due = 0;
    }

    fn set_rcvlowat(&self, bytes: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let size = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
            .map_err(|_| io::Error::other("the size of an int does not fit a socklen_t"))?;
        // SAFETY: the descriptor is this socket's, open for as long as `self`,
        // and the option value is a c_int, as SO_RCVLOWAT takes.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const libc::c_int).cast(),
                size,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Has reads wait for `bytes` at a time (within `patience`, in [`Tcp::read_batch`]).
    fn batch(&mut self, bytes: usize) -> io::Result<()> {
        self.set_rcvlowat(bytes)?;
        self.low_water = bytes;
        Ok(())
    }

    /// Has reads take whatever comes, within the account's timeout.
    fn settle(&mut self) -> io::Result<()> {
        if self.low_water != 1 {
            self.set_rcvlowat(1)?;
            self.low_water = 1;
        }
        Ok(())
    }

    /// Settles for good: batching is an optimisation, and whatever goes wrong
    /// with it ends it for the connection.
    fn stop_batching(&mut self) -> io::Result<()> {
        self.batching = false;
        self.due = 0;
        self.settle()
    }

    /// How much a read of `room` bytes waits for: a batch of what is due, or
    /// 1 (whatever comes) when too little is due to be worth the wait.
    fn wanted(&self, room: usize) -> usize {
        if !self.batching {
            return 1;
        }
        // Whatever does not fit a usize is more than BATCH anyway.
        let due = usize::try_from(self.due).unwrap_or(usize::MAX);
        let batch = due.min(BATCH).min(room);
        if batch >= MIN_BATCH {
            batch
        } else {
            1
        }
    }
}

impl Tcp {
    /// Waits up to the patience for the batch (the mark is set), then takes what
    /// has come without blocking, a whole batch or not. Nothing at all within the
    /// patience (the first reply after a round trip longer than the patience, a
    /// slow server) and this read waits as any other, within the account's
    /// timeout, for whatever comes first; the next read batches again.
    fn read_batch(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let patience = rustix::time::Timespec::try_from(self.patience.min(self.timeout))
            .map_err(|_| io::Error::other("the patience does not fit a timespec"))?;
        let mut fds = [PollFd::new(&self.socket, PollFlags::IN)];
        loop {
            match rustix::event::poll(&mut fds, Some(&patience)) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // A read that does not block takes whatever is queued, mark or not.
        match rustix::net::recv(&self.socket, &mut *buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(e.into()),
        }
        self.settle()?;
        self.socket.read(buf)
    }
}

impl Read for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.wanted(buf.len());
        if self.batching && want != self.low_water {
            if want == 1 {
                self.settle()?;
            } else if self.batch(want).is_err() {
                self.stop_batching()?;
            }
        }
        let n = if self.low_water > 1 {
            self.read_batch(buf)?
        } else {
            self.socket.read(buf)?
        };
        let read = u64::try_from(n)
            .map_err(|_| io::Error::other("a read returned more bytes than a u64 counts"))?;
        self.due = self.due.saturating_sub(read);
        Ok(n)
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}
