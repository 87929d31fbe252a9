//! A request body as it arrives, in whatever pieces: a [`Decoder`] takes
//! the bytes that are here, passes the body's own to a sink and keeps its
//! place, so a body can be read a piece at a time whenever its socket has
//! something (the connection waits in the room in between, holding no
//! thread). Chunked framing (RFC 9112 §7.1) is decoded here; bytes after
//! the body (a pipelined request) are left where they are.

use super::conn::BodyError;
use super::request::{self, Framing};
use std::io::Write;

/// The longest chunk-size or trailer line taken.
const MAX_CHUNK_LINE: usize = 4096;

/// Where a body being decoded is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A chunk-size line is due.
    Size,
    /// This many bytes of data are due (then the chunk's line end, if
    /// chunked).
    Data {
        left: u64,
        chunked: bool,
    },
    /// The empty line after a chunk's data is due.
    DataEnd,
    /// Trailer fields (ignored, bounded like a head) until an empty line;
    /// `seen` bytes of them so far.
    Trailer {
        seen: usize,
    },
    Done,
}

/// Decodes one body, from pieces, into a sink.
#[derive(Debug)]
pub struct Decoder {
    phase: Phase,
    /// Body bytes so far.
    total: u64,
    limit: u64,
    /// The most trailer bytes taken.
    max_trailer: usize,
}

impl Decoder {
    /// A body framed so, of at most `limit` bytes: a declared length over
    /// it is refused before a byte is read.
    pub fn new(framing: Framing, limit: u64, max_trailer: usize) -> Result<Decoder, BodyError> {
        let phase = match framing {
            Framing::None | Framing::Length(0) => Phase::Done,
            Framing::Length(n) if n > limit => return Err(BodyError::TooLarge),
            Framing::Length(n) => Phase::Data { left: n, chunked: false },
            Framing::Chunked => Phase::Size,
        };
        Ok(Decoder { phase, total: 0, limit, max_trailer })
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Takes what it can of `input` (the front of it), writing the body's
    /// bytes to `sink`; what it cannot use yet (a line not whole) or that
    /// is not the body's (after its end) stays in `input`.
    pub fn feed(&mut self, input: &mut Vec<u8>, sink: &mut impl Write) -> Result<(), BodyError> {
        let mut used = 0;
        let outcome = self.feed_from(input, &mut used, sink);
        input.drain(..used);
        outcome
    }

    fn feed_from(&mut self, input: &[u8], used: &mut usize, sink: &mut impl Write) -> Result<(), BodyError> {
        loop {
            let rest = &input[*used..];
            match self.phase {
                Phase::Done => return Ok(()),
                Phase::Data { left, chunked } => {
                    if rest.is_empty() {
                        return Ok(());
                    }
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    sink.write_all(&rest[..n]).map_err(BodyError::Sink)?;
                    *used += n;
                    let left = left - n as u64;
                    self.phase = match (left, chunked) {
                        (0, true) => Phase::DataEnd,
                        (0, false) => Phase::Done,
                        (left, chunked) => Phase::Data { left, chunked },
                    };
                }
                Phase::Size | Phase::DataEnd | Phase::Trailer { .. } => {
                    let Some(line) = take_line(rest)? else { return Ok(()) };
                    *used += line.len() + 2;
                    self.phase = self.after_line(line)?;
                }
            }
        }
    }

    /// Where a whole line (without its CRLF) leads.
    fn after_line(&mut self, line: &[u8]) -> Result<Phase, BodyError> {
        match self.phase {
            Phase::Size => {
                let size = request::chunk_size(line).ok_or(BodyError::Malformed)?;
                if size == 0 {
                    return Ok(Phase::Trailer { seen: 0 });
                }
                self.total = self.total.checked_add(size).filter(|&t| t <= self.limit).ok_or(BodyError::TooLarge)?;
                Ok(Phase::Data { left: size, chunked: true })
            }
            Phase::DataEnd if line.is_empty() => Ok(Phase::Size),
            Phase::Trailer { .. } if line.is_empty() => Ok(Phase::Done),
            Phase::Trailer { seen } if seen + line.len() + 2 <= self.max_trailer => {
                Ok(Phase::Trailer { seen: seen + line.len() + 2 })
            }
            _ => Err(BodyError::Malformed),
        }
    }
}

/// The first CRLF-terminated line of `bytes`, without its line end; `None`
/// if it is not whole yet. A bare LF is malformed (RFC 9112 §7.1 gives no
/// leniency inside chunked bodies), and so is a line too long.
fn take_line(bytes: &[u8]) -> Result<Option<&[u8]>, BodyError> {
    let Some(end) = bytes.iter().take(MAX_CHUNK_LINE + 2).position(|&b| b == b'\n') else {
        return if bytes.len() > MAX_CHUNK_LINE + 1 { Err(BodyError::Malformed) } else { Ok(None) };
    };
    match end.checked_sub(1) {
        Some(cr) if bytes[cr] == b'\r' => Ok(Some(&bytes[..cr])),
        _ => Err(BodyError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of the given sizes (cycled).
    fn decode(framing: Framing, limit: u64, wire: &[u8], pieces: &[usize]) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut decoder = Decoder::new(framing, limit, 64)?;
        let (mut input, mut body) = (Vec::new(), Vec::new());
        let mut at = 0;
        for size in pieces.iter().cycle() {
            if decoder.is_done() || at >= wire.len() {
                break;
            }
            let end = (at + size.max(&1)).min(wire.len());
            input.extend_from_slice(&wire[at..end]);
            at = end;
            decoder.feed(&mut input, &mut body)?;
        }
        assert!(decoder.is_done(), "not done after all of it");
        input.extend_from_slice(&wire[at..]);
        Ok((body, input))
    }

    #[test]
    fn a_body_in_any_pieces_leaves_what_follows_it() {
        let wire = b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\n";
        for pieces in [&[1][..], &[2, 7], &[1000]] {
            let (body, rest) = decode(Framing::Chunked, 100, wire, pieces).unwrap();
            assert_eq!(body, b"hello");
            assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        }
        let (body, rest) = decode(Framing::Length(3), 3, b"abcNEXT", &[2]).unwrap();
        assert_eq!((&body[..], &rest[..]), (&b"abc"[..], &b"NEXT"[..]));
    }

    #[test]
    fn limits_and_malformed_framing_are_refused() {
        assert!(matches!(Decoder::new(Framing::Length(11), 10, 64), Err(BodyError::TooLarge)));
        for (wire, limit) in [(&b"6\r\n123456\r\n"[..], 5), (b"3\r\nabc\r\n3\r\nabc\r\n", 5)] {
            assert!(matches!(decode(Framing::Chunked, limit, wire, &[4]), Err(BodyError::TooLarge)), "{wire:?}");
        }
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"zz\r\n",
            b"0\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        ] {
            assert!(matches!(decode(Framing::Chunked, 100, wire, &[3]), Err(BodyError::Malformed)), "{wire:?}");
        }
        let endless = vec![b'1'; MAX_CHUNK_LINE + 10];
        let mut decoder = Decoder::new(Framing::Chunked, u64::MAX, 64).unwrap();
        let mut input = endless;
        assert!(matches!(decoder.feed(&mut input, &mut Vec::new()), Err(BodyError::Malformed)));
    }

    proptest::proptest! {
        #[test]
        fn chunked_bodies_decode_to_what_was_sent_whatever_the_pieces(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..200), 0..8),
            pieces in proptest::collection::vec(1usize..50, 1..6),
        ) {
            let mut wire = Vec::new();
            for chunk in &chunks {
                wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                wire.extend_from_slice(chunk);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\nafter");
            let (body, rest) = decode(Framing::Chunked, u64::MAX, &wire, &pieces).unwrap();
            proptest::prop_assert_eq!(body, chunks.concat());
            proptest::prop_assert_eq!(rest, b"after".to_vec());
        }
    }
}
