//! The body of a multi-line response (RFC 1939 §3) as a stream: dot-unstuffing and
//! CRLF to LF happen on the fly, so a message of any size passes through a fixed buffer.

use std::io::{self, BufRead, Read};

/// Where we are within the current line of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the first byte of a line, where a "." is special.
    Start,
    /// After a leading ".": either the terminator or a byte-stuffed line.
    Dot,
    /// After ".\r": the terminator if LF follows.
    DotCr,
    /// Inside a line.
    Middle,
    /// After a CR inside a line: CRLF becomes LF, a lone CR is kept.
    Cr,
}

/// Reads one multi-line response body up to (not including) the terminating ".".
/// Returns end of file exactly at the terminator; a connection that ends before it is an
/// `UnexpectedEof` error, never a silently truncated message.
pub struct DotReader<'a, R: BufRead> {
    inner: &'a mut R,
    decoder: Decoder,
    /// Set when the connection failed under us, so the session knows it is unusable
    /// even if the consumer swallowed the error.
    failure: Option<io::ErrorKind>,
}

impl<'a, R: BufRead> DotReader<'a, R> {
    pub fn new(inner: &'a mut R) -> Self {
        DotReader {
            inner,
            decoder: Decoder {
                line: Line::Start,
                done: false,
            },
            failure: None,
        }
    }

    /// The connection under the body, for what follows its terminator.
    pub fn inner(&mut self) -> &mut R {
        self.inner
    }

    /// True once the terminator has been read.
    pub fn is_done(&self) -> bool {
        self.decoder.done
    }

    /// How reading from the connection failed, if it did.
    pub fn failure(&self) -> Option<io::ErrorKind> {
        self.failure
    }

    /// Reads and discards the rest of the body, so the next response can be read.
    pub fn drain(&mut self) -> io::Result<()> {
        let mut scratch = [0u8; 8192];
        while self.read(&mut scratch)? > 0 {}
        Ok(())
    }
}

/// The line-state machine, kept apart from the input it reads.
struct Decoder {
    line: Line,
    done: bool,
}

impl Decoder {
    /// Decodes from `input` into `out`; returns (bytes consumed, bytes written).
    fn decode(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        let (mut i, mut o) = (0, 0);
        while i < input.len() && o < out.len() {
            match self.line {
                Line::Start => {
                    if input[i] == b'.' {
                        i += 1;
                        self.line = Line::Dot;
                    } else {
                        self.line = Line::Middle;
                    }
                }
                Line::Dot => match input[i] {
                    b'\r' => {
                        i += 1;
                        self.line = Line::DotCr;
                    }
                    // A bare ".\n" is taken as the terminator too: some servers send LF.
                    b'\n' => {
                        self.done = true;
                        return (i + 1, o);
                    }
                    // A byte-stuffed line: the leading "." has been dropped.
                    _ => self.line = Line::Middle,
                },
                Line::DotCr => {
                    if input[i] == b'\n' {
                        self.done = true;
                        return (i + 1, o);
                    }
                    out[o] = b'\r';
                    o += 1;
                    self.line = Line::Middle;
                }
                Line::Middle => {
                    let room = (input.len() - i).min(out.len() - o);
                    let span = &input[i..i + room];
                    match memchr::memchr2(b'\r', b'\n', span) {
                        Some(p) => {
                            out[o..o + p].copy_from_slice(&span[..p]);
                            o += p;
                            i += p + 1;
                            if span[p] == b'\n' {
                                out[o] = b'\n';
                                o += 1;
                                self.line = Line::Start;
                            } else {
                                self.line = Line::Cr;
                            }
                        }
                        None => {
                            out[o..o + room].copy_from_slice(span);
                            o += room;
                            i += room;
                        }
                    }
                }
                Line::Cr => {
                    if input[i] == b'\n' {
                        i += 1;
                        out[o] = b'\n';
                        o += 1;
                        self.line = Line::Start;
                    } else {
                        out[o] = b'\r';
                        o += 1;
                        self.line = Line::Middle;
                    }
                }
            }
        }
        (i, o)
    }
}

impl<R: BufRead> Read for DotReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while !self.decoder.done && !out.is_empty() {
            let input = match self.inner.fill_buf() {
                Ok(input) => input,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.failure = Some(e.kind());
                    return Err(e);
                }
            };
            if input.is_empty() {
                self.failure = Some(io::ErrorKind::UnexpectedEof);
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the end of the response",
                ));
            }
            let (used, written) = self.decoder.decode(input, out);
            self.inner.consume(used);
            // Return what we have rather than block for more: the consumer can write it
            // out while the network delivers the next chunk.
            if written > 0 {
                return Ok(written);
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::mock::Trickle;
    use super::*;
    use std::io::BufReader;

    /// Decodes `wire` with every chunking of the input and output from 1 byte up, and
    /// checks that all agree; returns the decoded body and what follows the terminator.
    fn decode_all_ways(wire: &[u8]) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut first: Option<(Vec<u8>, Vec<u8>)> = None;
        for step in 1..=wire.len().clamp(1, 12) {
            for out_size in [1, 2, 3, 7, 4096] {
                let mut buffered = BufReader::with_capacity(step, Trickle { data: wire, step });
                let mut body = Vec::new();
                {
                    let mut reader = DotReader::new(&mut buffered);
                    let mut buf = vec![0; out_size];
                    loop {
                        let n = reader.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&buf[..n]);
                    }
                }
                let mut rest = Vec::new();
                buffered.read_to_end(&mut rest)?;
                match &first {
                    None => first = Some((body, rest)),
                    Some(f) => assert_eq!(f, &(body, rest), "step {step} out {out_size}"),
                }
            }
        }
        Ok(first.unwrap())
    }

    #[test]
    fn plain_body_and_trailing_data() {
        let (body, rest) =
            decode_all_ways(b"Subject: x\r\n\r\nhello\r\n.\r\n+OK next\r\n").unwrap();
        assert_eq!(body, b"Subject: x\n\nhello\n");
        assert_eq!(rest, b"+OK next\r\n");
    }

    #[test]
    fn dot_stuffing_is_undone() {
        let (body, _) = decode_all_ways(b"..\r\n..dot\r\n.x\r\na.b\r\n...\r\n.\r\n").unwrap();
        assert_eq!(body, b".\n.dot\nx\na.b\n..\n");
    }

    #[test]
    fn empty_body() {
        let (body, rest) = decode_all_ways(b".\r\nNEXT").unwrap();
        assert!(body.is_empty());
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn lone_cr_and_bare_lf_are_kept_as_lines() {
        let (body, _) = decode_all_ways(b"a\rb\r\nc\nd\r\r\n.\r\n").unwrap();
        assert_eq!(body, b"a\rb\nc\nd\r\n");
    }

    #[test]
    fn dot_cr_without_lf_is_content() {
        let (body, _) = decode_all_ways(b".\rx\r\n.\r\n").unwrap();
        assert_eq!(body, b"\rx\n");
    }

    #[test]
    fn long_lines_and_binary_bytes() {
        let mut wire = vec![0xffu8; 100_000];
        wire.extend_from_slice(b"\r\n\x00\x80.\r\n.\r\n");
        let mut buffered = BufReader::new(&wire[..]);
        let mut body = Vec::new();
        DotReader::new(&mut buffered)
            .read_to_end(&mut body)
            .unwrap();
        let mut expected = vec![0xffu8; 100_000];
        expected.extend_from_slice(b"\n\x00\x80.\n");
        assert_eq!(body, expected);
    }

    #[test]
    fn missing_terminator_is_an_error() {
        for wire in [&b"abc\r\n"[..], b"abc\r\n.", b"abc\r\n.\r", b""] {
            let err = decode_all_ways(wire).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{wire:?}");
        }
    }

    #[test]
    fn drain_leaves_the_next_response() {
        let wire = b"lots\r\nof\r\ntext\r\n.\r\n+OK\r\n";
        let mut buffered = BufReader::new(&wire[..]);
        let mut reader = DotReader::new(&mut buffered);
        let mut one = [0u8; 2];
        reader.read_exact(&mut one).unwrap();
        reader.drain().unwrap();
        assert!(reader.is_done());
        let mut rest = String::new();
        buffered.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "+OK\r\n");
    }
}
