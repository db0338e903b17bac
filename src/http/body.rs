//! Request bodies: the chunked transfer coding decoded under a size limit, as bytes arrive.
//! A declared `Content-Length` needs no decoder: the connection checks it against the limit
//! before reading anything, and never allocates from it.

/// What decoding the bytes so far gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    /// The body is complete; the request ended after this many bytes of the input.
    Done(usize),
    /// More bytes are needed.
    More,
    /// The decoded body would exceed the limit.
    TooLarge,
    /// Not the chunked coding.
    Malformed(&'static str),
}

/// A chunked body being decoded as its bytes arrive. The decoder remembers where it stopped,
/// so every byte is looked at once however slowly the client sends.
#[derive(Debug, Default)]
pub struct ChunkedBody {
    /// How far into the input the decoder has read.
    at: usize,
    state: State,
    /// Bytes of trailer fields so far.
    trailers: usize,
}

/// Framing (size lines, extensions, trailers) allowed beyond the data itself: tiny chunks
/// with long extensions must not turn a small limit into a large buffer.
const FRAMING_ALLOWANCE: u64 = 16 * 1024;
/// All trailer fields together.
const MAX_TRAILERS: usize = 8 * 1024;

#[derive(Debug, Default, Clone, Copy)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

impl ChunkedBody {
    /// Decodes what `input` (all bytes after the head so far, the same buffer growing between
    /// calls) holds past the last call, appending data to `out`. Chunk extensions are ignored;
    /// trailer fields are read and dropped.
    pub fn feed(&mut self, input: &[u8], limit: u64, out: &mut Vec<u8>) -> Chunked {
        loop {
            if self.at as u64 > limit.saturating_mul(2).saturating_add(FRAMING_ALLOWANCE) {
                return Chunked::TooLarge;
            }
            let rest = &input[self.at..];
            match self.state {
                State::Size => {
                    let Some(len) = line(rest) else {
                        // A size line longer than this is not a size line.
                        return if rest.len() > 1024 {
                            Chunked::Malformed("chunk size line too long")
                        } else {
                            Chunked::More
                        };
                    };
                    // `1*HEXDIG [BWS ";" extension]`: nothing before the digits, only spaces or
                    // tabs after them, no stray CR anywhere.
                    let line = &rest[..len];
                    let text = line.split(|b| *b == b';').next().unwrap_or_default();
                    let text = text
                        .iter()
                        .rposition(|b| *b != b' ' && *b != b'\t')
                        .map_or(&text[..0], |end| &text[..=end]);
                    if text.is_empty()
                        || text.len() > 15
                        || !text.iter().all(u8::is_ascii_hexdigit)
                        || line.contains(&b'\r')
                    {
                        return Chunked::Malformed("bad chunk size");
                    }
                    let size = text.iter().fold(0u64, |n, b| {
                        n * 16 + (*b as char).to_digit(16).unwrap_or(0) as u64
                    });
                    self.at += len + line_ending(&rest[len..]);
                    self.state = if size == 0 {
                        State::Trailer
                    } else if out.len() as u64 + size > limit {
                        return Chunked::TooLarge;
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        return Chunked::More;
                    }
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..n]);
                    self.at += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        return Chunked::More;
                    }
                    if &rest[..2] != b"\r\n" {
                        return Chunked::Malformed("chunk data not followed by CRLF");
                    }
                    self.at += 2;
                    self.state = State::Size;
                }
                State::Trailer => {
                    let Some(len) = line(rest) else {
                        return if rest.len() > 8 * 1024 {
                            Chunked::Malformed("trailer too long")
                        } else {
                            Chunked::More
                        };
                    };
                    self.at += len + line_ending(&rest[len..]);
                    if len == 0 {
                        return Chunked::Done(self.at);
                    }
                    self.trailers += len;
                    if self.trailers > MAX_TRAILERS {
                        return Chunked::Malformed("trailer fields too large");
                    }
                }
            }
        }
    }
}

/// Length of the line at the start of `bytes` without its ending, if the ending has arrived.
fn line(bytes: &[u8]) -> Option<usize> {
    let n = bytes.iter().position(|b| *b == b'\n')?;
    Some(if n > 0 && bytes[n - 1] == b'\r' {
        n - 1
    } else {
        n
    })
}

fn line_ending(bytes: &[u8]) -> usize {
    if bytes.starts_with(b"\r\n") {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &str, limit: u64) -> (Chunked, String) {
        let mut out = Vec::new();
        let r = ChunkedBody::default().feed(input.as_bytes(), limit, &mut out);
        (r, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn decodes_chunks_and_trailers() {
        let body = "4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next";
        let (r, out) = decode(body, 100);
        assert_eq!(out, "Wikipedia");
        assert_eq!(r, Chunked::Done(body.len() - "GET /next".len()));
        assert_eq!(decode("0\r\n\r\n", 0), (Chunked::Done(5), String::new()));
    }

    #[test]
    fn framing_and_trailers_are_bounded() {
        let trailers = format!("0\r\n{}", "X-T: aaaaaaaa\r\n".repeat(1000));
        assert!(matches!(decode(&trailers, 100).0, Chunked::Malformed(_)));
        // One byte of data per chunk, a kilobyte of extension each.
        let ext = format!("1;{}\r\na\r\n", "e".repeat(1000)).repeat(100);
        assert_eq!(decode(&ext, 100).0, Chunked::TooLarge);
        assert_eq!(
            decode("3 ;x=1\r\nabc\r\n0\r\n\r\n", 100),
            (Chunked::Done(18), "abc".into())
        );
    }

    #[test]
    fn decodes_a_body_that_arrives_byte_by_byte() {
        let body = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut decoder = ChunkedBody::default();
        let mut out = Vec::new();
        for n in 1..body.len() {
            assert_eq!(
                decoder.feed(&body[..n], 100, &mut out),
                Chunked::More,
                "{n}"
            );
        }
        assert_eq!(decoder.feed(body, 100, &mut out), Chunked::Done(body.len()));
        assert_eq!(out, b"Wikipedia");
    }

    #[test]
    fn waits_refuses_and_limits() {
        for partial in ["", "4", "4\r\nWi", "4\r\nWiki\r\n", "4\r\nWiki\r\n0\r\n"] {
            assert_eq!(decode(partial, 100).0, Chunked::More, "{partial:?}");
        }
        assert_eq!(decode("5\r\nhello\r\n", 4).0, Chunked::TooLarge);
        assert_eq!(decode("3\r\nabc\r\n3\r\ndef\r\n", 5).0, Chunked::TooLarge);
        // The size is checked before the data arrives: a huge declared chunk never waits.
        assert_eq!(decode("fffffffffffffff\r\n", 1 << 20).0, Chunked::TooLarge);
        for bad in [
            "x\r\n",
            "-1\r\n",
            "ffffffffffffffff\r\n",
            "3\r\nabcX\r\n",
            "\r\n",
        ] {
            assert!(
                matches!(decode(bad, 100).0, Chunked::Malformed(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn random_bodies_never_panic_or_exceed_the_limit() {
        let mut rng = crate::engine::random::XorShift::new(42);
        let seed = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let mut bytes = seed.to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                const NOISE: &[u8] = b"0123456789abcdefF\r\n;x ";
                bytes[at] = NOISE[rng.below(NOISE.len())];
            }
            let limit = rng.below(12) as u64;
            out.clear();
            if let Chunked::Done(n) = ChunkedBody::default().feed(&bytes, limit, &mut out) {
                assert!(n <= bytes.len());
                assert!(out.len() as u64 <= limit);
            }
        }
    }
}
