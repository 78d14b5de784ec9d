//! The body of a multi-line response (RFC 1939 §3) decoded as it arrives:
//! dot-unstuffing and CRLF to LF on the fly, over whatever bytes are at hand, so a
//! message of any size passes through a fixed buffer. Reading is the client's.

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

/// The line-state machine, kept apart from the input it reads.
#[derive(Debug)]
pub(crate) struct Decoder {
    line: Line,
    done: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            line: Line::Start,
            done: false,
        }
    }
}

impl Decoder {
    /// True once the terminating "." line has been decoded.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Decodes from `input` into `out`; returns (bytes consumed, bytes written).
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` in chunks of `step` bytes into 3-byte outputs.
    fn decode(wire: &[u8], step: usize) -> (Vec<u8>, usize) {
        let mut decoder = Decoder::default();
        let (mut body, mut used) = (Vec::new(), 0);
        while used < wire.len() && !decoder.is_done() {
            let end = (used + step).min(wire.len());
            let mut out = [0u8; 3];
            let (i, o) = decoder.decode(&wire[used..end], &mut out);
            used += i;
            body.extend_from_slice(&out[..o]);
        }
        (body, used)
    }

    #[test]
    fn the_decoder_stops_at_the_terminator_however_input_is_cut() {
        let wire = b"a.\r\n..b\r\n.\r\n+OK";
        for step in 1..wire.len() {
            assert_eq!(decode(wire, step), (b"a.\n.b\n".to_vec(), wire.len() - 3));
        }
    }
}
