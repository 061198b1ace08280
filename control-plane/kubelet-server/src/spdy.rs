//! SPDY/3.1 framing, as far as Kubernetes' port-forward uses it (kubectl's client is
//! moby/spdystream): frames, and the zlib-compressed header blocks with the SPDY/3 dictionary
//! (one compression context per direction for the whole session).
//!
//! Frame layout (SPDY/3 §2.2): a control frame is `1 | version:15 | type:16 | flags:8 |
//! length:24 | payload`, a data frame `0 | stream-id:31 | flags:8 | length:24 | payload`.
//! spdystream does no flow control (it never sends WINDOW_UPDATE and ignores the ones it
//! gets), so neither do we: back-pressure is TCP's.

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt as _};

pub const VERSION: u16 = 3;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes (SPDY/3 §2.6.3).
pub const CANCEL: u32 = 5;

/// The largest payload a frame may carry (24-bit length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Header blocks are small (port-forward sends three headers); a bigger one is an attack.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Name/value pairs of a header block, names lower-case. Several values of one name are
/// NUL-separated on the wire and separate pairs here.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame of a type SPDY/3 defines but we have no use for (skipped, §2.2.1).
    Other {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("reading a frame")]
    Io(#[source] std::io::Error),
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("header block: {0}")]
    HeaderBlock(String),
}

/// The SPDY/3 header compression dictionary (SPDY/3 §2.6.10.1): each word with a 4-byte
/// big-endian length, then a run of status codes, dates and media types.
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "10010120120220520630030230330430530630740240540640740840941041141241341441541641",
        "7502504505203 Non-Authoritative Information204 No Content301 Moved Permanently40",
        "0 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept O",
        "ct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,imag",
        "e/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/",
        "javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1",
        ",utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&u32::try_from(w.len()).unwrap_or(0).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
});

/// Our outgoing header blocks: one zlib stream for the whole session, each block ended by
/// a sync flush (what Go's framer writes and reads).
pub struct HeaderEncoder(Compress);

impl HeaderEncoder {
    pub fn new() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream (zlib refuses a dictionary only after data).
        let _ = c.set_dictionary(&DICTIONARY);
        Self(c)
    }

    pub fn encode(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        let raw = header_block(headers);
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.0.total_in();
        loop {
            let done = usize::try_from(self.0.total_in() - start).unwrap_or(raw.len());
            // Errors only on a corrupt stream state, which our own use never produces.
            let _ = self
                .0
                .compress_vec(&raw[done..], &mut out, FlushCompress::Sync);
            let done = usize::try_from(self.0.total_in() - start).unwrap_or(raw.len());
            // A sync flush that left room in the buffer has written everything.
            if done == raw.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The peer's header blocks, one zlib stream for the session.
pub struct HeaderDecoder(Decompress);

impl HeaderDecoder {
    pub fn new() -> Self {
        Self(Decompress::new(true))
    }

    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.0.total_in();
        loop {
            let done = usize::try_from(self.0.total_in() - start).unwrap_or(block.len());
            if let Err(e) = self
                .0
                .decompress_vec(&block[done..], &mut out, FlushDecompress::Sync)
            {
                if e.needs_dictionary().is_none() {
                    return Err(SpdyError::HeaderBlock(e.to_string()));
                }
                self.0
                    .set_dictionary(&DICTIONARY)
                    .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
                continue;
            }
            let done = usize::try_from(self.0.total_in() - start).unwrap_or(block.len());
            if done == block.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::HeaderBlock("too large".into()));
            }
            out.reserve(out.capacity());
        }
        parse_header_block(&out)
    }
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The uncompressed block (SPDY/3 §2.6.10): a pair count, then length-prefixed names and
/// values, all lengths 32-bit big-endian.
pub fn header_block(headers: &[(String, String)]) -> Vec<u8> {
    // Repeated names become one NUL-separated value, in first-seen order.
    let mut merged: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push('\0');
                v.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    let mut out = Vec::new();
    put_len(&mut out, merged.len());
    for (name, value) in &merged {
        put_len(&mut out, name.len());
        out.extend_from_slice(name.as_bytes());
        put_len(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

pub fn parse_header_block(mut b: &[u8]) -> Result<Headers, SpdyError> {
    let bad = || SpdyError::HeaderBlock("truncated".into());
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        if b.len() < n {
            return Err(bad());
        }
        let (head, rest) = b.split_at(n);
        b = rest;
        Ok(head)
    };
    let count = be32(take(4)?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

/// The first value of `name` in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A stream id or other 31-bit field (the high bit is reserved).
fn be31(b: &[u8]) -> u32 {
    be32(b) & 0x7fff_ffff
}

/// The 8-byte header of a data frame carrying `len` bytes.
pub fn data_header(stream: u32, fin: bool, len: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    let flags = if fin { FLAG_FIN } else { 0 };
    let len = u32::try_from(len.min(MAX_PAYLOAD)).unwrap_or(0);
    h[4..].copy_from_slice(&(u32::from(flags) << 24 | len).to_be_bytes());
    h
}

/// Encodes a control frame (a data frame is written as [`data_header`] + payload).
pub fn encode_control(frame: &Frame, enc: &mut HeaderEncoder) -> Vec<u8> {
    let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
    let (kind, flags, payload) = match frame {
        Frame::Data { stream, fin, data } => {
            let mut out = data_header(*stream, *fin, data.len()).to_vec();
            out.extend_from_slice(data);
            return out;
        }
        Frame::SynStream {
            stream,
            associated,
            priority,
            flags,
            headers,
        } => {
            let mut p = Vec::new();
            p.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
            p.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
            p.push(priority << 5);
            p.push(0); // slot
            p.extend_from_slice(&enc.encode(headers));
            (SYN_STREAM, *flags, p)
        }
        Frame::SynReply {
            stream,
            fin,
            headers,
        } => (
            SYN_REPLY,
            fin_flag(*fin),
            stream_block(*stream, headers, enc),
        ),
        Frame::Headers {
            stream,
            fin,
            headers,
        } => (HEADERS, fin_flag(*fin), stream_block(*stream, headers, enc)),
        Frame::RstStream { stream, status } => (RST_STREAM, 0, pair(*stream, *status)),
        Frame::Settings => (SETTINGS, 0, vec![0; 4]),
        Frame::Ping { id } => (PING, 0, id.to_be_bytes().to_vec()),
        Frame::GoAway { last_good, status } => (GOAWAY, 0, pair(*last_good, *status)),
        Frame::WindowUpdate { stream, delta } => (WINDOW_UPDATE, 0, pair(*stream, *delta)),
        Frame::Other { kind } => (*kind, 0, Vec::new()),
    };
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    let len = u32::try_from(payload.len()).unwrap_or(0);
    out.extend_from_slice(&(u32::from(flags) << 24 | len).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The payload SYN_REPLY and HEADERS share: the stream id, then the header block.
fn stream_block(stream: u32, headers: &[(String, String)], enc: &mut HeaderEncoder) -> Vec<u8> {
    let mut p = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(&enc.encode(headers));
    p
}

fn pair(a: u32, b: u32) -> Vec<u8> {
    let mut p = (a & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(&b.to_be_bytes());
    p
}

/// Reads one frame; `None` at a clean end of the connection (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut HeaderDecoder,
) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(SpdyError::Io(e)),
    }
    let flags = head[4];
    let len = (be32(&head[4..]) & 0x00ff_ffff) as usize;
    let mut payload = BytesMut::zeroed(len);
    r.read_exact(&mut payload).await.map_err(SpdyError::Io)?;
    let payload = payload.freeze();
    if head[0] & 0x80 == 0 {
        return Ok(Some(Frame::Data {
            stream: be31(&head),
            fin: flags & FLAG_FIN != 0,
            data: payload,
        }));
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    decode_control(kind, flags, &payload, dec).map(Some)
}

/// The payload SYN_REPLY and HEADERS share: a stream id, then a header block.
fn stream_headers(
    p: &[u8],
    dec: &mut HeaderDecoder,
    what: &'static str,
) -> Result<(u32, Headers), SpdyError> {
    if p.len() < 4 {
        return Err(SpdyError::Malformed(what));
    }
    Ok((be31(p), dec.decode(&p[4..])?))
}

fn decode_control(
    kind: u16,
    flags: u8,
    p: &[u8],
    dec: &mut HeaderDecoder,
) -> Result<Frame, SpdyError> {
    let need = |n: usize, what: &'static str| {
        if p.len() < n {
            Err(SpdyError::Malformed(what))
        } else {
            Ok(())
        }
    };
    let fin = flags & FLAG_FIN != 0;
    Ok(match kind {
        SYN_STREAM => {
            need(10, "SYN_STREAM")?;
            Frame::SynStream {
                stream: be31(p),
                associated: be31(&p[4..]),
                priority: p[8] >> 5,
                flags,
                headers: dec.decode(&p[10..])?,
            }
        }
        SYN_REPLY => {
            let (stream, headers) = stream_headers(p, dec, "SYN_REPLY")?;
            Frame::SynReply {
                stream,
                fin,
                headers,
            }
        }
        HEADERS => {
            let (stream, headers) = stream_headers(p, dec, "HEADERS")?;
            Frame::Headers {
                stream,
                fin,
                headers,
            }
        }
        RST_STREAM => {
            need(8, "RST_STREAM")?;
            Frame::RstStream {
                stream: be31(p),
                status: be32(&p[4..]),
            }
        }
        SETTINGS => Frame::Settings,
        PING => {
            need(4, "PING")?;
            Frame::Ping { id: be32(p) }
        }
        GOAWAY => {
            need(4, "GOAWAY")?;
            Frame::GoAway {
                last_good: be31(p),
                status: if p.len() >= 8 { be32(&p[4..]) } else { 0 },
            }
        }
        WINDOW_UPDATE => {
            need(8, "WINDOW_UPDATE")?;
            Frame::WindowUpdate {
                stream: be31(p),
                delta: be31(&p[4..]),
            }
        }
        kind => Frame::Other { kind },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
            .collect()
    }

    /// Adler-32 (RFC 1950 §8.2), written out here to check the dictionary id independently.
    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        b << 16 | a
    }

    async fn read_all(bytes: &[u8], dec: &mut HeaderDecoder) -> Vec<Frame> {
        let mut r = bytes;
        let mut out = Vec::new();
        while let Some(f) = read_frame(&mut r, dec).await.unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        // 65 length-prefixed words and the tail: 1423 bytes, the dictionary id Go's zlib
        // (and every SPDY/3 peer) expects in the stream header.
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
    }

    #[test]
    fn control_frames_have_the_spec_layout() {
        let mut enc = HeaderEncoder::new();
        // §2.6.5 PING: control bit + version 3, type 6, no flags, length 4, the id.
        assert_eq!(
            encode_control(&Frame::Ping { id: 1 }, &mut enc),
            [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]
        );
        // §2.6.3 RST_STREAM: stream id, status (5 = CANCEL).
        assert_eq!(
            encode_control(
                &Frame::RstStream {
                    stream: 3,
                    status: CANCEL
                },
                &mut enc
            ),
            [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]
        );
        // §2.6.6 GOAWAY: last good stream id, status.
        assert_eq!(
            encode_control(
                &Frame::GoAway {
                    last_good: 7,
                    status: 0
                },
                &mut enc
            ),
            [0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 0]
        );
        // §2.2.2 data frame: stream id without the control bit, FIN flag, 24-bit length.
        assert_eq!(data_header(5, true, 3), [0, 0, 0, 5, 1, 0, 0, 3]);
        assert_eq!(
            data_header(0x8000_0001, false, 0x01_0203),
            [0, 0, 0, 1, 0, 1, 2, 3]
        );
    }

    #[test]
    fn header_blocks_are_length_prefixed_pairs() {
        assert_eq!(
            header_block(&h(&[("Port", "80")])),
            b"\0\0\0\x01\0\0\0\x04port\0\0\0\x0280".to_vec()
        );
        // Repeated names travel as one NUL-separated value and come back as pairs.
        let multi = h(&[("a", "1"), ("b", "2"), ("a", "3")]);
        let block = header_block(&multi);
        assert_eq!(
            block,
            b"\0\0\0\x02\0\0\0\x01a\0\0\0\x031\x003\0\0\0\x01b\0\0\0\x012".to_vec()
        );
        assert_eq!(
            parse_header_block(&block).unwrap(),
            h(&[("a", "1"), ("a", "3"), ("b", "2")])
        );
        assert!(parse_header_block(&block[..block.len() - 1]).is_err());
        assert!(parse_header_block(b"\0\0\0\x09").is_err());
    }

    #[test]
    fn compression_uses_the_dictionary_and_one_context() {
        let mut enc = HeaderEncoder::new();
        let first = enc.encode(&h(&[("streamtype", "error"), ("port", "80")]));
        // RFC 1950: CMF 0x78 (deflate, 32K window), FLG with FDICT, the header a multiple
        // of 31, then the dictionary's Adler-32.
        assert_eq!(first[0], 0x78);
        assert_ne!(first[1] & 0x20, 0, "FDICT");
        assert_eq!((u16::from(first[0]) << 8 | u16::from(first[1])) % 31, 0);
        assert_eq!(be32(&first[2..6]), adler32(&DICTIONARY));
        // Each block ends with a sync flush (an empty stored block).
        assert_eq!(&first[first.len() - 4..], [0, 0, 0xff, 0xff]);
        let second = enc.encode(&h(&[("streamtype", "data"), ("port", "80")]));
        assert_ne!(second[0], 0x78, "no new zlib header: the stream continues");

        let mut dec = HeaderDecoder::new();
        assert_eq!(
            dec.decode(&first).unwrap(),
            h(&[("streamtype", "error"), ("port", "80")])
        );
        assert_eq!(
            dec.decode(&second).unwrap(),
            h(&[("streamtype", "data"), ("port", "80")])
        );
        // The second block means nothing without the first.
        assert!(HeaderDecoder::new().decode(&second).is_err());
        assert!(HeaderDecoder::new().decode(b"\x78\xbb garbage").is_err());
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream: 3,
                associated: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream: 1,
                fin: false,
                headers: Vec::new(),
            },
            Frame::Headers {
                stream: 3,
                fin: true,
                headers: h(&[("x", "y")]),
            },
            Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"),
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream: 3,
                status: 1, // PROTOCOL_ERROR
            },
            Frame::Ping { id: 2 },
            Frame::WindowUpdate {
                stream: 1,
                delta: 65536,
            },
            Frame::Settings,
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ];
        let mut enc = HeaderEncoder::new();
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|f| encode_control(f, &mut enc))
            .collect();
        let mut dec = HeaderDecoder::new();
        assert_eq!(read_all(&wire, &mut dec).await, frames);
        // A cut frame is an error, not a clean end.
        let mut dec = HeaderDecoder::new();
        let mut r = &wire[..wire.len() - 2];
        let mut last = Ok(None);
        for _ in 0..frames.len() {
            last = read_frame(&mut r, &mut dec).await;
            if last.is_err() {
                break;
            }
        }
        assert!(matches!(last, Err(SpdyError::Io(_))), "{last:?}");
        // SPDY/2 is refused.
        let mut r: &[u8] = &[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            read_frame(&mut r, &mut HeaderDecoder::new()).await,
            Err(SpdyError::Version(2))
        ));
    }
}
