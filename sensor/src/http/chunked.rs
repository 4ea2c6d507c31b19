//! Incremental decoder of the chunked transfer coding (RFC 9112 §7.1).
//!
//! It is fed the body in pieces split anywhere (a chunk-size line may straddle two TCP
//! segments) and keeps only a few integers of state, never the bytes. Where the RFC leaves
//! room it does what nginx's `ngx_http_parse_chunked` does, so the sensor finds the end of a
//! body where the server behind it does: a bare LF ends a line, `;`, SP or HTAB after the size
//! start the extensions (anything up to the end of the line), trailer lines are skipped
//! without being interpreted. Lines are bounded ([`MAX_CHUNK_LINE`], [`MAX_TRAILERS`]) and a
//! size that does not fit 60 bits is an error.

use super::ParseError;

/// Longest chunk-size line (size plus extensions) or trailer line accepted, in bytes.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer section accepted after the last chunk.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// Chunk sizes at or above this are refused (nginx refuses what does not fit its off_t).
const MAX_CHUNK_SIZE: u64 = 1 << 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Start of a chunk-size line: a hex digit must come.
    Start,
    /// Inside the hex digits of the size.
    Size,
    /// Inside the extensions, up to the end of the line.
    Ext,
    /// CR seen at the end of the size line; LF must come.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After chunk data: CRLF (or LF) must come.
    AfterData,
    /// CR seen after chunk data; LF must come.
    AfterDataLf,
    /// Start of a trailer line (or of the final empty line).
    Trailer,
    /// Inside a trailer line.
    TrailerLine,
    /// CR seen at the end of a trailer line; LF must come.
    TrailerLineLf,
    /// CR seen on the final empty line; LF must come.
    LastLf,
    /// The body ended.
    Done,
}

/// Where the decoder is; `feed` it bytes, it hands out the data and says where the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
    /// Size being read, then data bytes left in the current chunk.
    size: u64,
    /// Bytes of the current line (size line or trailer line).
    line: usize,
    /// Bytes of trailer section so far.
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Broken chunked framing at byte `at` of the slice last fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk {
    /// Offset of the offending byte in the slice given to [`ChunkedDecoder::feed`].
    pub at: usize,
}

impl From<BadChunk> for ParseError {
    fn from(_: BadChunk) -> Self {
        ParseError::BadChunk
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub const fn new() -> Self {
        ChunkedDecoder {
            state: State::Start,
            size: 0,
            line: 0,
            trailers: 0,
        }
    }

    /// The body ended (last chunk and trailers seen).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes left in the current chunk (0 when not inside chunk data).
    pub fn data_left(&self) -> u64 {
        if self.state == State::Data {
            self.size
        } else {
            0
        }
    }

    /// Decode `data`: `out` gets every run of chunk data, in order. Returns `Ok(Some(n))` when
    /// the body ends after `n` bytes of `data` (the rest belongs to what follows), `Ok(None)`
    /// when all of `data` was consumed and the body goes on.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut out: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < data.len() {
            if self.state == State::Data {
                let n = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                out(&data[i..i + n]);
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::AfterData;
                }
                continue;
            }
            let b = data[i];
            let bad = BadChunk { at: i };
            i += 1;
            match self.state {
                State::Start => {
                    let Some(d) = super::hex_digit(b) else {
                        return Err(bad);
                    };
                    self.size = u64::from(d);
                    self.line = 1;
                    self.state = State::Size;
                }
                State::Size => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(bad);
                    }
                    if let Some(d) = super::hex_digit(b) {
                        self.size = self.size * 16 + u64::from(d);
                        if self.size >= MAX_CHUNK_SIZE {
                            return Err(bad);
                        }
                    } else {
                        match b {
                            b';' | b' ' | b'\t' => self.state = State::Ext,
                            b'\r' => self.state = State::SizeLf,
                            b'\n' => self.end_size_line(),
                            _ => return Err(bad),
                        }
                    }
                }
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_CHUNK_LINE {
                            return Err(bad);
                        }
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(bad);
                    }
                    self.end_size_line();
                }
                State::AfterData => match b {
                    b'\r' => self.state = State::AfterDataLf,
                    b'\n' => self.state = State::Start,
                    _ => return Err(bad),
                },
                State::AfterDataLf => {
                    if b != b'\n' {
                        return Err(bad);
                    }
                    self.state = State::Start;
                }
                State::Trailer => match b {
                    b'\r' => self.state = State::LastLf,
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(Some(i));
                    }
                    _ => {
                        self.line = 1;
                        self.count_trailer(bad)?;
                        self.state = State::TrailerLine;
                    }
                },
                State::TrailerLine => match b {
                    b'\r' => self.state = State::TrailerLineLf,
                    b'\n' => self.state = State::Trailer,
                    _ => {
                        self.line += 1;
                        if self.line > MAX_CHUNK_LINE {
                            return Err(bad);
                        }
                        self.count_trailer(bad)?;
                    }
                },
                State::TrailerLineLf => {
                    if b != b'\n' {
                        return Err(bad);
                    }
                    self.state = State::Trailer;
                }
                State::LastLf => {
                    if b != b'\n' {
                        return Err(bad);
                    }
                    self.state = State::Done;
                    return Ok(Some(i));
                }
                State::Done => return Ok(Some(i - 1)),
                // Handled before the byte-wise match.
                State::Data => {}
            }
        }
        Ok(if self.state == State::Done {
            Some(data.len())
        } else {
            None
        })
    }

    /// `n` bytes of the body were lost (not captured). Only chunk data can be passed over
    /// without losing the framing: anything else is an error.
    pub fn skip(&mut self, n: u64) -> Result<(), BadChunk> {
        if n == 0 {
            return Ok(());
        }
        if self.state != State::Data || n > self.size {
            return Err(BadChunk { at: 0 });
        }
        self.size -= n;
        if self.size == 0 {
            self.state = State::AfterData;
        }
        Ok(())
    }

    fn end_size_line(&mut self) {
        if self.size == 0 {
            self.state = State::Trailer;
            self.line = 0;
        } else {
            self.state = State::Data;
        }
    }

    fn count_trailer(&mut self, bad: BadChunk) -> Result<(), BadChunk> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(bad);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `data` in pieces of `step` bytes; returns (decoded, bytes consumed when done).
    fn run(data: &[u8], step: usize) -> Result<(Vec<u8>, Option<usize>), BadChunk> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let end = (pos + step).min(data.len());
            match d.feed(&data[pos..end], |b| body.extend_from_slice(b)) {
                Ok(Some(n)) => return Ok((body, Some(pos + n))),
                Ok(None) => pos = end,
                Err(BadChunk { at }) => return Err(BadChunk { at: pos + at }),
            }
        }
        Ok((body, None))
    }

    const BODY: &[u8] =
        b"4\r\nWiki\r\n5;ext=\"a;b\"\r\npedia\r\nE \r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    #[test]
    fn every_split_gives_the_same_body_and_end() {
        for step in 1..=BODY.len() {
            let (body, end) = run(BODY, step).unwrap();
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "step {step}");
            assert_eq!(end, Some(BODY.len() - 4), "step {step}");
        }
    }

    #[test]
    fn bare_lf_and_uppercase_hex_are_accepted() {
        let (body, end) = run(b"A\nabcdefghij\n0\n\nrest", 3).unwrap();
        assert_eq!(body, b"abcdefghij");
        assert_eq!(end, Some(16));
    }

    #[test]
    fn broken_framing_is_located() {
        assert_eq!(run(b"zz\r\n", 1), Err(BadChunk { at: 0 }));
        assert_eq!(run(b"3\r\nabcX\r\n", 2), Err(BadChunk { at: 6 }));
        assert_eq!(run(b"3\rx", 1), Err(BadChunk { at: 2 }));
        assert!(run(b"fffffffffffffffff\r\n", 4).is_err(), "size overflow");
        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE + 10, b'e');
        assert!(run(&long, 100).is_err(), "endless extension");
    }

    fn framing(head: &str) -> Result<crate::http::Framing, ParseError> {
        let limits = crate::http::ParseLimits::default();
        let (req, _) = crate::http::parse_head(head.as_bytes(), &limits)
            .expect("head parses")
            .expect("head complete");
        crate::http::body_framing(&req)
    }

    #[test]
    fn framing_follows_nginx() {
        use crate::http::Framing;
        let h = |headers: &str| framing(&format!("POST / HTTP/1.1\r\n{headers}\r\n"));
        assert_eq!(h(""), Ok(Framing::None));
        assert_eq!(h("Content-Length: 0\r\n"), Ok(Framing::None));
        assert_eq!(h("Content-Length: 12\r\n"), Ok(Framing::Length(12)));
        assert_eq!(h("Content-Length: 12, 12\r\n"), Ok(Framing::Length(12)));
        assert_eq!(
            h("Content-Length: 12\r\nContent-Length: 13\r\n"),
            Err(ParseError::BadContentLength)
        );
        for te in [
            "chunked",
            "ChUnKeD",
            "CHUNKED",
            "gzip, chunked",
            "gzip,Chunked",
        ] {
            assert_eq!(
                h(&format!("Transfer-Encoding: {te}\r\n")),
                Ok(Framing::Chunked),
                "{te}"
            );
            // Chunked wins over Content-Length, whatever the order of the headers.
            assert_eq!(
                h(&format!("Content-Length: 3\r\ntransfer-encoding: {te}\r\n")),
                Ok(Framing::Chunked),
                "{te}"
            );
        }
        // Several header lines are one list.
        assert_eq!(
            h("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
            Ok(Framing::Chunked)
        );
        for te in [
            "gzip",
            "chunked, gzip",
            "chunked, chunked",
            "identity",
            "xchunked",
            "",
        ] {
            assert_eq!(
                h(&format!("Transfer-Encoding: {te}\r\nContent-Length: 3\r\n")),
                Err(ParseError::BadTransferEncoding),
                "{te:?}"
            );
        }
    }

    #[test]
    fn whole_buffer_parse_frames_chunked_past_the_prefix() {
        use crate::http::{ParseLimits, Parsed, parse_request};
        let limits = ParseLimits {
            max_head: 1024,
            max_body: 4,
        };
        let buf =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n6\r\nabcdef\r\n0\r\n\r\nGET";
        match parse_request(buf, &limits) {
            Parsed::Complete { request, consumed } => {
                assert_eq!(request.body, b"abcd");
                assert!(request.body_truncated);
                assert_eq!(consumed, Some(buf.len() - 3), "the end is known");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lost_bytes_are_fine_inside_data_only() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"10\r\nab", |_| {}), Ok(None));
        assert_eq!(d.data_left(), 14);
        assert!(d.skip(14).is_ok());
        assert_eq!(d.feed(b"\r\n0\r\n\r\n", |_| {}), Ok(Some(7)));
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"2\r\nab", |_| {}), Ok(None));
        assert!(d.skip(1).is_err(), "the CRLF after the data was lost");
    }
}
