//! The bookkeeping of pipelined commands (RFC 2449 §6.6): which replies are owed
//! and in what order, how many may be in flight, and how many listed bytes are in
//! flight and due. Pure data: the client sends and reads, the pipeline says when.

use std::collections::VecDeque;

/// Messages in flight at most when the server allows PIPELINING: one command each,
/// or two for a RETR or TOP and its `LIST n` fence. Their text (at most 18 bytes a
/// command, under 9 KiB in all) stays far below any socket buffer, so our writes
/// never block while the server waits for us to read its replies: the deadlock
/// pipelining must avoid.
pub(crate) const WINDOW: usize = 256;

/// Listed message bytes in flight at most, a window's worth of RETRs: enough to
/// keep a 50 ms path busy at 80 MB/s, and a bound on what a stop must drain.
pub(crate) const BYTES_IN_FLIGHT: u64 = 4 << 20;

/// Whether a pipelined run should go on after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// The replies owed for requests sent, oldest first, each with the listed bytes its
/// reply carries (a RETR's message; 0 for a short reply).
#[derive(Debug)]
pub(crate) struct Pipeline<T> {
    owed: VecDeque<(T, u64)>,
    window: usize,
    bytes_in_flight: u64,
    stopped: bool,
}

impl<T> Pipeline<T> {
    /// A pipeline of [`WINDOW`] requests where the server allows pipelining, and of
    /// one (each reply read before the next request) where it does not.
    pub(crate) fn new(pipelining: bool) -> Self {
        Pipeline {
            owed: VecDeque::new(),
            window: if pipelining { WINDOW } else { 1 },
            bytes_in_flight: 0,
            stopped: false,
        }
    }

    /// Whether a request whose reply carries `bytes` listed bytes may go out now.
    /// Requests go out in batches: once the window is half empty it is filled again,
    /// so short replies cost one write per half window, not one per reply; a
    /// request always may when nothing is owed, however large its reply.
    pub(crate) fn may_send(&self, bytes: u64) -> bool {
        if self.stopped || self.owed.len() >= self.window {
            return false;
        }
        if self.owed.is_empty() {
            return true;
        }
        self.bytes_in_flight.saturating_add(bytes) <= BYTES_IN_FLIGHT
    }

    /// Whether the window has drained far enough to be filled again.
    pub(crate) fn wants_more(&self) -> bool {
        self.owed.len() <= self.window / 2
    }

    /// A request went out; its reply is owed after those before it.
    pub(crate) fn sent(&mut self, request: T, bytes: u64) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_add(bytes);
        self.owed.push_back((request, bytes));
    }

    /// The request whose reply comes next, now taken off what is owed.
    pub(crate) fn next_reply(&mut self) -> Option<T> {
        let (request, bytes) = self.owed.pop_front()?;
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(bytes);
        Some(request)
    }

    /// Nothing more is sent; what is owed is still read.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Replies owed.
    pub(crate) fn owed(&self) -> usize {
        self.owed.len()
    }

    /// Listed bytes still to come in the replies owed: what the stream may wait for.
    #[cfg(test)]
    pub(crate) fn bytes_due(&self) -> u64 {
        self.bytes_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_pipelining_one_request_at_a_time() {
        let mut p = Pipeline::new(false);
        assert!(p.may_send(10));
        p.sent(1, 10);
        assert!(!p.may_send(0));
        assert_eq!(p.next_reply(), Some(1));
        assert!(p.may_send(0) && p.next_reply().is_none());
    }

    #[test]
    fn the_window_refills_when_half_empty() {
        let mut p = Pipeline::new(true);
        for n in 0..WINDOW {
            assert!(p.may_send(0));
            p.sent(n, 0);
        }
        assert!(!p.may_send(0));
        for n in 0..WINDOW / 2 {
            assert!(!p.wants_more());
            assert_eq!(p.next_reply(), Some(n));
        }
        assert!(p.wants_more() && p.may_send(0));
        assert_eq!(p.owed(), WINDOW / 2);
    }

    #[test]
    fn listed_bytes_bound_the_window_but_one_request_always_goes() {
        let mut p = Pipeline::new(true);
        p.sent(1, BYTES_IN_FLIGHT - 10);
        assert!(p.may_send(10) && !p.may_send(11));
        assert_eq!(p.bytes_due(), BYTES_IN_FLIGHT - 10);
        p.next_reply();
        assert!(p.may_send(10 * BYTES_IN_FLIGHT));
        assert_eq!(p.bytes_due(), 0);
    }

    #[test]
    fn a_stop_sends_nothing_more_but_keeps_what_is_owed() {
        let mut p = Pipeline::new(true);
        p.sent('a', 0);
        p.sent('b', 0);
        p.stop();
        assert!(!p.may_send(0) && p.is_stopped());
        assert_eq!(
            (p.next_reply(), p.next_reply(), p.next_reply()),
            (Some('a'), Some('b'), None)
        );
    }
}
