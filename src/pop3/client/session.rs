//! A logged-in connection in the TRANSACTION state (RFC 1939 §5): the listing,
//! then (in `fetch`) retrieval, then deletion and QUIT. Deletions take effect only
//! at QUIT (RFC 1939 §6), so a session dropped without `quit` deletes nothing.

use super::connection::Connection;
use crate::net::Wire;
use crate::pop3::proto::command::Command;
use crate::pop3::proto::listing::{
    join, repeated_number, repeated_uids, with_sizes, LineBudget, ListedMessage, Listing,
    MAX_LISTED,
};
use crate::pop3::proto::pipeline::{Flow, Pipeline, WINDOW};
use crate::pop3::proto::response::{parse_list_line, parse_uidl_line, Status};
use crate::pop3::proto::Error;

/// What STAT said and the unique-ids of the first and last message, if the
/// server gave them: see [`Session::stat_and_ends`].
pub(crate) type Glimpse = (Option<(u32, u64)>, Option<(String, String)>);

/// A logged-in connection in the TRANSACTION state.
pub(crate) struct Session<S> {
    pub(super) conn: Connection<S>,
    pub(super) pipelining: bool,
    /// The round trip is long enough to ask UIDL and LIST together.
    slow_path: bool,
    /// What CAPA said of LOGIN-DELAY before the login (RFC 2449 §6.5).
    pub(super) login_delay: Option<u64>,
    /// A STAT queued to go out with the next listing, its reply not read yet.
    stat_owed: bool,
    /// What the last STAT said: message count and octets.
    stat_seen: Option<(u32, u64)>,
    /// The server refused UIDL.
    uidl_refused: bool,
}

impl<S: Wire> Session<S> {
    pub(super) fn new(conn: Connection<S>, pipelining: bool, slow_path: bool) -> Self {
        Session {
            conn,
            pipelining,
            slow_path,
            login_delay: None,
            stat_owed: false,
            stat_seen: None,
            uidl_refused: false,
        }
    }

    /// The server's LOGIN-DELAY in seconds, if its CAPA announced one (RFC 2449 §6.5).
    pub(crate) fn login_delay(&self) -> Option<u64> {
        self.login_delay
    }

    /// STAT (RFC 1939 §5): message count and total size.
    pub(crate) fn stat(&mut self) -> Result<(u32, u64), Error> {
        self.conn.send(Command::Stat)?;
        self.read_stat()
    }

    /// Asks STAT along with the next listing: queued to go out with its UIDL
    /// where the server allows pipelining, else at once. Its answer is then
    /// [`stat_seen`](Self::stat_seen).
    pub(crate) fn stat_with_listing(&mut self) -> Result<(), Error> {
        if self.pipelining {
            self.conn.queue(Command::Stat)?;
            self.stat_owed = true;
        } else {
            self.conn.send(Command::Stat)?;
            self.stat_seen = self.read_stat_loosely()?;
        }
        Ok(())
    }

    /// Whether commands may be pipelined (RFC 2449 §6.6).
    pub(crate) fn pipelines(&self) -> bool {
        self.pipelining
    }

    /// Whether the server refused UIDL: its unique-ids are popfetch's digests.
    pub(crate) fn uidl_refused(&self) -> bool {
        self.uidl_refused
    }

    /// What the last STAT said, if one was asked.
    pub(crate) fn stat_seen(&self) -> Option<(u32, u64)> {
        self.stat_seen
    }

    /// Reads the reply to a STAT queued before a listing.
    fn read_owed_stat(&mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.stat_owed) {
            self.stat_seen = self.read_stat_loosely()?;
        }
        Ok(())
    }

    /// The reply to a STAT asked only to spare a listing: a -ERR or a reply
    /// that does not parse is one line all the same, and says nothing.
    fn read_stat_loosely(&mut self) -> Result<Option<(u32, u64)>, Error> {
        let status = self.conn.read_status("STAT")?;
        if !status.ok {
            return Ok(None);
        }
        let mut words = status.text.split(' ');
        let count = words.next().and_then(|w| w.parse::<u32>().ok());
        let octets = words.next().and_then(|w| w.parse::<u64>().ok());
        let seen = count.zip(octets);
        self.stat_seen = seen;
        Ok(seen)
    }

    /// The reply to STAT: count and octets.
    fn read_stat(&mut self) -> Result<(u32, u64), Error> {
        let status = self.conn.expect_ok("STAT")?;
        let mut words = status.text.split(' ');
        let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
        let malformed = || Error::Protocol(format!("malformed STAT reply \"{}\"", status.text));
        match (number(), number()) {
            (Some(count), Some(size)) => {
                // RFC 1939 numbers messages from 1; more than u32 of them is a lie.
                let count = u32::try_from(count).map_err(|_| malformed())?;
                self.stat_seen = Some((count, size));
                Ok((count, size))
            }
            _ => Err(malformed()),
        }
    }

    /// STAT, and the unique-ids of the first and of the `count`th message:
    /// `UIDL 1` and `UIDL count` (RFC 1939 §5, §7), all three in one round trip
    /// where the server allows pipelining. The unique-ids are `None` when the
    /// server refuses either (no UIDL, or fewer messages than `count`).
    pub(crate) fn stat_and_ends(&mut self, count: u32) -> Result<Glimpse, Error> {
        if !self.pipelining || count == 0 {
            self.conn.send(Command::Stat)?;
            let stat = self.read_stat_loosely()?;
            // Fewer messages than `count`: no `count`th to ask for.
            if stat.is_none_or(|(n, _)| n < count) || count == 0 {
                return Ok((stat, None));
            }
            self.conn.send(Command::UidlOne(1))?;
            let first = self.uidl_reply(1)?;
            self.conn.send(Command::UidlOne(count))?;
            let last = self.uidl_reply(count)?;
            return Ok((stat, first.zip(last)));
        }
        self.conn.queue(Command::Stat)?;
        self.conn.queue(Command::UidlOne(1))?;
        self.conn.queue(Command::UidlOne(count))?;
        self.conn.flush("STAT")?;
        let stat = self.read_stat_loosely()?;
        let first = self.uidl_reply(1)?;
        let last = self.uidl_reply(count)?;
        Ok((stat, first.zip(last)))
    }

    /// The messages `first..=last` with their unique-ids and sizes: `UIDL n` and
    /// `LIST n` for each (RFC 1939 §5, §7), pipelined where the server allows.
    /// `None` when the server refuses any of them (a message gone meanwhile, no
    /// UIDL): the caller then lists everything.
    pub(crate) fn tail(
        &mut self,
        first: u32,
        last: u32,
    ) -> Result<Option<Vec<ListedMessage>>, Error> {
        // One command per item, so that a server without PIPELINING gets one at
        // a time (RFC 2449 §6.6): `UIDL n`, then `LIST n`.
        let items: Vec<(u32, bool)> = (first..=last)
            .flat_map(|num| [(num, false), (num, true)])
            .collect();
        let mut listed = Vec::with_capacity(items.len() / 2);
        let mut uid = None;
        let mut refused = false;
        self.pipelined(
            "UIDL",
            &items,
            |_| 0,
            |conn, &(num, size)| match size {
                false => conn.queue(Command::UidlOne(num)),
                true => conn.queue(Command::ListOne(num)),
            },
            |conn, &(num, size), stopped| {
                let status = conn.read_status(if size { "LIST" } else { "UIDL" })?;
                if stopped || refused {
                    return Ok(Flow::Stop);
                }
                if !status.ok {
                    refused = true;
                    return Ok(Flow::Stop);
                }
                let text = status.text.as_bytes();
                let at = if size {
                    let (at, size) = parse_list_line(text)?;
                    if let Some(uid) = uid.take() {
                        listed.push(ListedMessage { num, size, uid });
                    }
                    at
                } else {
                    let (at, listed_uid) = parse_uidl_line(text)?;
                    uid = Some(listed_uid);
                    at
                };
                if at != num {
                    return Err(Error::Protocol(format!(
                        "asked for message {num}, the server answered for message {at}"
                    )));
                }
                Ok(Flow::Continue)
            },
        )?;
        Ok((!refused).then_some(listed))
    }

    /// The reply to `UIDL num`: `+OK num uid`, or `None` for -ERR.
    fn uidl_reply(&mut self, num: u32) -> Result<Option<String>, Error> {
        let status = self.conn.read_status("UIDL")?;
        if !status.ok {
            return Ok(None);
        }
        let (listed, uid) = parse_uidl_line(status.text.as_bytes())?;
        if listed != num {
            let wrong = Err(Error::Protocol(format!(
                "asked UIDL {num}, the server answered for message {listed}"
            )));
            return self.conn.check(wrong);
        }
        Ok(Some(uid))
    }

    /// Every message with its size and unique-id: UIDL and LIST, sent together when
    /// the server allows pipelining. A server without UIDL gives sizes only.
    pub(crate) fn listing(&mut self) -> Result<Listing, Error> {
        self.conn.queue(Command::Uidl)?;
        if self.pipelining {
            self.conn.queue(Command::List)?;
        }
        self.conn.flush("UIDL")?;
        self.read_owed_stat()?;
        let uids = self.read_uids()?;
        if !self.pipelining {
            self.conn.send(Command::List)?;
        }
        let sizes = self.read_sizes(uids.as_ref().map(Vec::len))?;
        match uids {
            Some(uids) => join(uids, &sizes).map(Listing::WithUids),
            None => Ok(Listing::SizesOnly(sizes)),
        }
    }

    /// Every message with its unique-id, and its size where `sized` (given the
    /// unique-id) says it matters or the unique-id repeats; the others have size 0.
    /// The sizes come from `LIST n` for each, pipelined, when they are few, and from
    /// one LIST otherwise; a run with nothing new asks no LIST at all. On a slow
    /// path this is [`listing`](Self::listing). A server without UIDL gives sizes
    /// only.
    pub(crate) fn listing_sized(&mut self, sized: &dyn Fn(&str) -> bool) -> Result<Listing, Error> {
        if self.pipelining && self.slow_path {
            return self.listing();
        }
        self.conn.send(Command::Uidl)?;
        self.read_owed_stat()?;
        let Some(uids) = self.read_uids()? else {
            self.conn.send(Command::List)?;
            return Ok(Listing::SizesOnly(self.read_sizes(None)?));
        };
        if let Some(num) = repeated_number(&uids) {
            let repeated = Err(Error::Protocol(format!("UIDL names message {num} twice")));
            return self.conn.check(repeated);
        }
        // A unique-id that repeats is sized whatever `sized` says: telling its
        // messages apart takes their sizes (see `connect::listing`).
        let repeated = repeated_uids(uids.iter().map(|(_, uid)| uid.as_str()));
        let wanted: Vec<u32> = uids
            .iter()
            .filter(|(_, uid)| repeated.contains(uid.as_str()) || sized(uid))
            .map(|&(num, _)| num)
            .collect();
        let sizes = self.sizes_of(&wanted, uids.len())?;
        Ok(Listing::WithUids(with_sizes(uids, sizes)))
    }

    /// The unique-id listing, or `None` when the server refuses UIDL.
    fn read_uids(&mut self) -> Result<Option<Vec<(u32, String)>>, Error> {
        if !self.conn.read_status("UIDL")?.ok {
            self.uidl_refused = true;
            return Ok(None);
        }
        let mut uids = Vec::new();
        self.conn
            .each_listed("UIDL", LineBudget::listing(MAX_LISTED), |line| {
                uids.push(parse_uidl_line(line)?);
                Ok(())
            })?;
        Ok(Some(uids))
    }

    /// The reply to a LIST of every message: as many lines as `expected` at most
    /// (UIDL's count, when known, for both list the same messages).
    fn read_sizes(&mut self, expected: Option<usize>) -> Result<Vec<(u32, u64)>, Error> {
        self.conn.expect_ok("LIST")?;
        let mut sizes = Vec::new();
        let budget = LineBudget::listing(expected.unwrap_or(MAX_LISTED));
        self.conn.each_listed("LIST", budget, |line| {
            sizes.push(parse_list_line(line)?);
            Ok(())
        })?;
        Ok(sizes)
    }

    /// The sizes of the messages `nums`, in that order: `LIST n` for each, through
    /// the pipeline, when the server allows pipelining and they fit in a window, or
    /// one LIST of everything, kept to `nums`.
    fn sizes_of(&mut self, nums: &[u32], listed: usize) -> Result<Vec<(u32, u64)>, Error> {
        if nums.is_empty() {
            return Ok(Vec::new());
        }
        if self.pipelining && nums.len() <= WINDOW {
            let mut sizes = Vec::with_capacity(nums.len());
            self.pipelined(
                "LIST",
                nums,
                |_| 0,
                |conn, &num| conn.queue(Command::ListOne(num)),
                |conn, &num, _| {
                    let status = conn.expect_ok("LIST")?;
                    let (listed, size) = parse_list_line(status.text.as_bytes())?;
                    if listed != num {
                        return Err(Error::Protocol(format!(
                            "asked LIST {num}, the server answered for message {listed}"
                        )));
                    }
                    sizes.push((num, size));
                    Ok(Flow::Continue)
                },
            )?;
            return Ok(sizes);
        }
        self.conn.send(Command::List)?;
        let mut all = self.read_sizes(Some(listed))?;
        // Searched, not hashed: no table beside a listing of 100,000 (issue 22).
        // Servers list in ascending order, which the sort finds at once.
        all.sort_unstable_by_key(|&(num, _)| num);
        nums.iter()
            .map(
                |&num| match all.binary_search_by_key(&num, |&(listed, _)| listed) {
                    Ok(at) => Ok((num, all[at].1)),
                    Err(_) => Err(Error::Protocol(format!(
                        "UIDL names message {num}, which LIST does not"
                    ))),
                },
            )
            .collect()
    }

    /// Marks messages deleted (RFC 1939 §5); they go at QUIT. Returns the ones the
    /// server refused, which stay on the server.
    pub(crate) fn delete(&mut self, nums: &[u32]) -> Result<Vec<(u32, Status)>, Error> {
        let mut refused = Vec::new();
        self.pipelined(
            "DELE",
            nums,
            |_| 0,
            |conn, &num| conn.queue(Command::Dele(num)),
            |conn, &num, _| {
                let status = conn.read_status("DELE")?;
                if !status.ok {
                    refused.push((num, status));
                }
                Ok(Flow::Continue)
            },
        )?;
        Ok(refused)
    }

    /// Sends one request per item through the session's [`Pipeline`] and reads the
    /// replies in order: every pipelined command goes through here. `bytes` says
    /// how many listed bytes an item's reply carries (the stream may wait for them);
    /// `send` queues an item's commands; `receive` reads its replies, told whether
    /// the run was stopped (its reply must still be read, and nothing kept). A
    /// `Flow::Stop` sends nothing more; what is owed is still read, so the session
    /// stays usable. An error marks the connection unusable.
    pub(super) fn pipelined<T: Copy>(
        &mut self,
        phase: &'static str,
        items: &[T],
        bytes: impl Fn(&T) -> u64,
        mut send: impl FnMut(&mut Connection<S>, &T) -> Result<(), Error>,
        mut receive: impl FnMut(&mut Connection<S>, &T, bool) -> Result<Flow, Error>,
    ) -> Result<(), Error> {
        let mut pipeline = Pipeline::new(self.pipelining);
        let mut items = items.iter().peekable();
        let ran = (|| loop {
            if pipeline.wants_more() {
                while let Some(item) = items.next_if(|item| pipeline.may_send(bytes(item))) {
                    send(&mut self.conn, item)?;
                    pipeline.sent(*item, bytes(item));
                    self.conn.io.get_mut().due(bytes(item));
                }
                self.conn.flush(phase)?;
            }
            let Some(item) = pipeline.next_reply() else {
                return Ok(());
            };
            let stopped = pipeline.is_stopped();
            if receive(&mut self.conn, &item, stopped)? == Flow::Stop {
                pipeline.stop();
            }
            if pipeline.owed() == 0 {
                self.conn.io.get_mut().clear_due();
            }
        })();
        // What a server overstated must not make a later reply wait.
        self.conn.io.get_mut().clear_due();
        self.conn.check(ran)
    }

    /// QUIT (RFC 1939 §6): the server now removes the deleted messages. -ERR here
    /// means some of them were not removed. Over a broken connection nothing is
    /// sent: the connection is closed and the deletions are not made.
    pub(crate) fn quit(mut self) -> Result<(), Error> {
        self.conn.usable("QUIT")?;
        self.conn.send(Command::Quit)?;
        self.conn.expect_ok("QUIT").map(drop)
    }
}
