//! Reading a multi-line response body (RFC 1939 §3) from the connection as a
//! stream, through the protocol core's decoder.

use std::io::{self, BufRead, Read};

use crate::pop3::proto::multiline::Decoder;

/// Where a body stands: the decoder's state and how reading failed, if it did. Kept
/// apart from the connection so a RETR reply can read through it and still send
/// its fence on the same connection.
#[derive(Debug, Default)]
pub(crate) struct Body {
    decoder: Decoder,
    /// Set when the connection failed under us, so the session knows it is unusable
    /// even if the consumer swallowed the error.
    failure: Option<io::ErrorKind>,
}

impl Body {
    /// How reading from the connection failed, if it did.
    pub(crate) fn failure(&self) -> Option<io::ErrorKind> {
        self.failure
    }

    /// Reads the next decoded bytes from `inner` into `out`. Returns end of file
    /// exactly at the terminator; a connection that ends before it is an
    /// `UnexpectedEof` error, never a silently truncated message.
    pub(crate) fn read_from<R: BufRead>(
        &mut self,
        inner: &mut R,
        out: &mut [u8],
    ) -> io::Result<usize> {
        while !self.decoder.is_done() && !out.is_empty() {
            let input = match inner.fill_buf() {
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
            inner.consume(used);
            // Return what we have rather than block for more: the consumer can write it
            // out while the network delivers the next chunk.
            if written > 0 {
                return Ok(written);
            }
        }
        Ok(0)
    }
}

/// One multi-line response body read from `inner` up to (not including) the
/// terminating ".".
pub(crate) struct DotReader<'a, R: BufRead> {
    inner: &'a mut R,
    body: Body,
}

impl<'a, R: BufRead> DotReader<'a, R> {
    pub(crate) fn new(inner: &'a mut R) -> Self {
        DotReader {
            inner,
            body: Body::default(),
        }
    }

    /// How reading from the connection failed, if it did.
    pub(crate) fn failure(&self) -> Option<io::ErrorKind> {
        self.body.failure()
    }

    /// Reads and discards the rest of the body, so the next response can be read.
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        let mut scratch = [0u8; 8192];
        while self.read(&mut scratch)? > 0 {}
        Ok(())
    }
}

impl<R: BufRead> Read for DotReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.body.read_from(self.inner, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::mock::Trickle;
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
        let mut rest = String::new();
        buffered.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "+OK\r\n");
    }
}
