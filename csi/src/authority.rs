//! Serving gRPC clients that send a unix socket's path as the HTTP/2
//! `:authority` (Python's and Java's grpc, grpcurl: `/run/csi.sock` or its
//! percent-encoding). The HTTP/2 layer under tonic refuses such a request
//! with `RST_STREAM PROTOCOL_ERROR` (hyperium/h2#487, grpc/grpc#38142), so
//! [`AuthorityFix`] sits between the socket and the server and, for a
//! connection whose first request carries an authority that is not one,
//! rewrites it to `localhost` in every request header block (HPACK
//! decoded and encoded again, so the server's header table stays in step).
//! A connection whose first authority is valid (tonic, grpc-go,
//! democratic-csi's clients) is passed through untouched after that first
//! look; the server's replies are never touched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's floor).
const MAX_FRAME: usize = 16_384;
/// What an invalid authority becomes (what Kubernetes and grpc-go send).
const REPLACEMENT: &[u8] = b"localhost";

enum Mode {
    /// Reading the preface and frames up to the first header block.
    Looking,
    /// The first authority was valid: bytes pass as they are.
    Passthrough,
    /// Header blocks are decoded, fixed and encoded again.
    Rewrite { decoder: Box<loona_hpack::Decoder<'static>>, encoder: Box<loona_hpack::Encoder<'static>> },
}

/// A client connection whose request authorities are made acceptable.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    preface_done: bool,
    /// Bytes read from the client and not yet looked at.
    pending: Vec<u8>,
    /// Bytes ready for the server.
    ready: Vec<u8>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted client connection.
    pub fn new(inner: S) -> Self {
        Self { inner, mode: Mode::Looking, preface_done: false, pending: Vec::new(), ready: Vec::new(), eof: false }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves what can be judged from `pending` to `ready`.
    fn process(&mut self) -> io::Result<()> {
        if !self.preface_done {
            if self.pending.len() < PREFACE.len() && !self.eof {
                return Ok(());
            }
            self.preface_done = true;
            let take = PREFACE.len().min(self.pending.len());
            self.ready.extend(self.pending.drain(..take));
        }
        loop {
            if matches!(self.mode, Mode::Passthrough) || self.eof {
                self.ready.append(&mut self.pending);
                return Ok(());
            }
            let Some((end, block_frames)) = next_unit(&self.pending) else { return Ok(()) };
            if !block_frames {
                self.ready.extend(self.pending.drain(..end));
                continue;
            }
            let unit: Vec<u8> = self.pending.drain(..end).collect();
            let (header, fragment) = header_block(&unit)?;
            self.rewrite_block(&unit, &header, &fragment)?;
        }
    }

    /// Handles one request header block (`unit`: a HEADERS frame and its
    /// CONTINUATIONs; `fragment`: the block they carry).
    fn rewrite_block(&mut self, unit: &[u8], header: &HeadersFrame, fragment: &[u8]) -> io::Result<()> {
        if matches!(self.mode, Mode::Looking) {
            let mut decoder = Box::new(loona_hpack::Decoder::new());
            let fields = decoder.decode(fragment).map_err(|e| invalid(format!("request headers: {e:?}")))?;
            if !fields.iter().any(|(name, value)| name == b":authority" && !acceptable(value)) {
                self.mode = Mode::Passthrough;
                self.ready.extend_from_slice(unit);
                return Ok(());
            }
            tracing::debug!("a gRPC client sends an authority HTTP/2 refuses; rewriting it to localhost");
            let encoder = Box::new(loona_hpack::Encoder::new());
            self.mode = Mode::Rewrite { decoder, encoder };
            return self.emit(header, fields);
        }
        let Mode::Rewrite { decoder, .. } = &mut self.mode else { unreachable!("passthrough never parses") };
        let fields = decoder.decode(fragment).map_err(|e| invalid(format!("request headers: {e:?}")))?;
        self.emit(header, fields)
    }

    /// Encodes `fields` (authority fixed) as a HEADERS frame plus
    /// CONTINUATIONs for the stream of `header`.
    fn emit(&mut self, header: &HeadersFrame, fields: Vec<(Vec<u8>, Vec<u8>)>) -> io::Result<()> {
        let Mode::Rewrite { encoder, .. } = &mut self.mode else { unreachable!("only rewrite mode emits") };
        let fixed = fields.iter().map(|(name, value)| {
            let value = if name == b":authority" && !acceptable(value) { REPLACEMENT } else { value.as_slice() };
            (name.as_slice(), value)
        });
        let block = encoder.encode(fixed);
        let mut first = header.priority.map(|p| p.to_vec()).unwrap_or_default();
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = block.split_at(block.len().min(room));
        first.extend_from_slice(head);
        let mut flags = header.flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        push_frame(&mut self.ready, HEADERS, flags, header.stream, &first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            push_frame(
                &mut self.ready,
                CONTINUATION,
                if rest.is_empty() { END_HEADERS } else { 0 },
                header.stream,
                chunk,
            );
        }
        Ok(())
    }
}

/// Whether HTTP/2 (and so tonic) takes `value` as an authority.
fn acceptable(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|text| text.parse::<http::uri::Authority>().is_ok())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn push_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let length = payload.len() as u32;
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// `(length, type, flags, stream)` of the frame at the start of `bytes`.
fn frame_at(bytes: &[u8]) -> Option<(usize, u8, u8, u32)> {
    let header = bytes.get(..FRAME_HEADER)?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    Some((length, header[3], header[4], stream))
}

/// The end of the next complete unit in `bytes`: one frame, or a HEADERS
/// frame with all its CONTINUATIONs (then `true`).
fn next_unit(bytes: &[u8]) -> Option<(usize, bool)> {
    let (length, kind, flags, _) = frame_at(bytes)?;
    let mut end = FRAME_HEADER + length;
    if bytes.len() < end {
        return None;
    }
    if kind != HEADERS {
        return Some((end, false));
    }
    let mut last_flags = flags;
    while last_flags & END_HEADERS == 0 {
        let (length, _, flags, _) = frame_at(&bytes[end..])?;
        end += FRAME_HEADER + length;
        if bytes.len() < end {
            return None;
        }
        last_flags = flags;
    }
    Some((end, true))
}

/// What is kept of a HEADERS frame besides its block.
struct HeadersFrame {
    flags: u8,
    stream: u32,
    priority: Option<[u8; 5]>,
}

/// The HEADERS frame's fields and the whole header block of `unit`.
fn header_block(unit: &[u8]) -> io::Result<(HeadersFrame, Vec<u8>)> {
    let malformed = || invalid("malformed HEADERS frame".into());
    let (length, _, flags, stream) = frame_at(unit).ok_or_else(malformed)?;
    let mut payload = &unit[FRAME_HEADER..FRAME_HEADER + length];
    if flags & PADDED != 0 {
        let pad = usize::from(*payload.first().ok_or_else(malformed)?);
        payload = payload.get(1..payload.len().checked_sub(pad).ok_or_else(malformed)?).ok_or_else(malformed)?;
    }
    let priority = if flags & PRIORITY != 0 {
        let fields: [u8; 5] = payload.get(..5).ok_or_else(malformed)?.try_into().map_err(|_| malformed())?;
        payload = &payload[5..];
        Some(fields)
    } else {
        None
    };
    let mut block = payload.to_vec();
    let mut at = FRAME_HEADER + length;
    while at < unit.len() {
        let (length, _, _, _) = frame_at(&unit[at..]).ok_or_else(malformed)?;
        block.extend_from_slice(unit.get(at + FRAME_HEADER..at + FRAME_HEADER + length).ok_or_else(malformed)?);
        at += FRAME_HEADER + length;
    }
    Ok((HeadersFrame { flags, stream, priority }, block))
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Passthrough) && this.pending.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            }
            this.pending.extend_from_slice(read.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn request(encoder: &mut loona_hpack::Encoder<'_>, authority: &[u8], stream: u32) -> Vec<u8> {
        let block = encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/csi.v1.Identity/GetPluginInfo"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ]);
        let mut frames = Vec::new();
        // One HEADERS frame holding half the block, then a CONTINUATION.
        let (head, tail) = block.split_at(block.len() / 2);
        push_frame(&mut frames, HEADERS, END_STREAM, stream, head);
        push_frame(&mut frames, CONTINUATION, END_HEADERS, stream, tail);
        push_frame(&mut frames, 0x0, END_STREAM, stream, b"\0\0\0\0\0");
        frames
    }

    async fn through_fix(bytes: Vec<u8>) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        tokio::io::AsyncWriteExt::write_all(&mut client, &bytes).await.unwrap();
        drop(client);
        let mut fixed = AuthorityFix::new(server);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        out
    }

    fn authorities(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut found = Vec::new();
        let mut rest = &bytes[PREFACE.len()..];
        while let Some((end, block)) = next_unit(rest) {
            if block {
                let (_, fragment) = header_block(&rest[..end]).unwrap();
                let fields = decoder.decode(&fragment).unwrap();
                found.extend(fields.into_iter().filter(|(n, _)| n == b":authority").map(|(_, v)| v));
            }
            rest = &rest[end..];
        }
        found
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_in_every_request() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        push_frame(&mut bytes, 0x4, 0, 0, &[]);
        bytes.extend(request(&mut encoder, b"/run/berth/csi.sock", 1));
        bytes.extend(request(&mut encoder, b"/run/berth/csi.sock", 3));
        let out = through_fix(bytes).await;
        assert_eq!(authorities(&out), [b"localhost".to_vec(), b"localhost".to_vec()]);
    }

    #[tokio::test]
    async fn a_valid_authority_passes_untouched() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(request(&mut encoder, b"localhost", 1));
        bytes.extend(request(&mut encoder, b"localhost", 3));
        assert_eq!(through_fix(bytes.clone()).await, bytes);
    }
}
