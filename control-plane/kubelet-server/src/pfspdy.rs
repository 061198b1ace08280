//! The kubelet side of `kubectl port-forward` over SPDY/3.1 (`portforward.k8s.io`).
//!
//! Per forwarded connection the client opens two streams with the same `requestid`: `error`
//! (which it half-closes at once) and `data`. Every stream gets an empty SYN_REPLY (the
//! client waits for it); a stream with a bad `port` or `streamtype` is reset. When both
//! streams of a request are there, we connect inside the pod and copy: data frames to the
//! pod, the pod's bytes back as data frames (FIN at its EOF). A failure is written on the
//! error stream; the error stream is closed (FIN) when the request ends, which is what the
//! client waits for. Client pings are answered; a GOAWAY or the end of the connection ends
//! the session and every forwarded connection with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufWriter};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::netns::Dial;
use crate::spdy::{self, Frame, HeaderDecoder, HeaderEncoder, SpdyError};

/// Bytes read from the pod per data frame: big frames keep the per-frame cost (ours and the
/// client's) small on bulk transfers.
pub const READ_CHUNK: usize = 256 * 1024;
/// Frames queued for the writer; with [`READ_CHUNK`] about 8 MiB in flight at most.
const OUT_QUEUE: usize = 32;
/// Client data frames queued per forwarded connection before the reader waits.
const IN_QUEUE: usize = 16;
/// A data frame's header.
const HEADER: usize = 8;

/// What the writer task sends: control frames are encoded there (the header compression
/// context is the writer's); data frames come framed (the pod's bytes are read in after
/// room for the header, so each goes out in one write, without a copy).
#[derive(Debug)]
enum Out {
    Control(Frame),
    Framed(Bytes),
}

/// A stream the client opened, as the reader needs it.
struct Entry {
    /// Client data for the pod (data streams only); dropped at the client's FIN.
    to_pod: Option<mpsc::Sender<Bytes>>,
    /// Fired when the client resets the stream.
    reset: Option<oneshot::Sender<()>>,
}

/// A request's streams until both are there.
#[derive(Default)]
struct Pending {
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Bytes>, oneshot::Receiver<()>)>,
    port: u16,
}

type Streams = Arc<Mutex<HashMap<u32, Entry>>>;

fn lock(s: &Streams) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves one upgraded connection until the client goes away or `stop` fires.
pub async fn serve<S, D: Dial>(conn: S, pod: D, mut stop: watch::Receiver<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(conn);
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(write_frames(wr, out_rx));
    let streams: Streams = Arc::default();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut dec = HeaderDecoder::new();
    loop {
        let frame = tokio::select! {
            f = spdy::read_frame(&mut rd, &mut dec) => f,
            _ = stop.changed() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                log_read_error(&e);
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream,
                flags,
                headers,
                ..
            } => {
                let Some((request, kind, port)) = accept(&out, stream, &headers).await else {
                    continue;
                };
                let (reset_tx, reset_rx) = oneshot::channel();
                let mut entry = Entry {
                    to_pod: None,
                    reset: Some(reset_tx),
                };
                let p = pending.entry(request.clone()).or_default();
                p.port = port;
                let duplicate = if kind == StreamKind::Error {
                    p.error.replace(stream).is_some()
                } else if p.data.is_some() {
                    true
                } else {
                    let (tx, rx) = mpsc::channel(IN_QUEUE);
                    // A FIN on the SYN_STREAM: the client sends nothing on it.
                    if flags & spdy::FLAG_FIN == 0 {
                        entry.to_pod = Some(tx);
                    }
                    p.data = Some((stream, rx, reset_rx));
                    false
                };
                lock(&streams).insert(stream, entry);
                if duplicate {
                    let what = if kind == StreamKind::Error {
                        "error"
                    } else {
                        "data"
                    };
                    let msg = format!(
                        "error processing stream for request {request}: {what} stream already assigned"
                    );
                    tracing::info!(request, "port-forward: duplicate stream");
                    if let Some(err) = pending.get(&request).and_then(|p| p.error) {
                        let _ = out.send(data(err, false, msg)).await;
                    }
                    continue;
                }
                let ready = pending
                    .get(&request)
                    .is_some_and(|p| p.error.is_some() && p.data.is_some());
                if ready
                    && let Some(Pending {
                        error: Some(err),
                        data: Some((data_id, rx, reset)),
                        port,
                    }) = pending.remove(&request)
                {
                    tasks.spawn(forward(
                        pod.clone(),
                        port,
                        Pair {
                            error: err,
                            data: data_id,
                            from_client: rx,
                            reset,
                        },
                        out.clone(),
                        streams.clone(),
                    ));
                }
            }
            Frame::Data {
                stream,
                fin,
                data: bytes,
            } => {
                let tx = {
                    let mut s = lock(&streams);
                    let Some(e) = s.get_mut(&stream) else {
                        continue;
                    };
                    if fin {
                        e.to_pod.take()
                    } else {
                        e.to_pod.clone()
                    }
                };
                // Waits while the pod is slower than the client: TCP back-pressure, as
                // spdystream (which has no flow control) does.
                if let Some(tx) = tx
                    && !bytes.is_empty()
                {
                    let _ = tx.send(bytes).await;
                }
            }
            Frame::RstStream { stream, .. } => {
                if let Some(mut e) = lock(&streams).remove(&stream)
                    && let Some(r) = e.reset.take()
                {
                    let _ = r.send(());
                }
            }
            // Our own pings would be even; a client's (odd) come back unchanged.
            Frame::Ping { id } if id % 2 == 1 => {
                let _ = out.send(Out::Control(Frame::Ping { id })).await;
            }
            Frame::GoAway { .. } => break,
            // SETTINGS, WINDOW_UPDATE (no flow control, see `spdy`), HEADERS, replies.
            _ => {}
        }
    }
    tasks.shutdown().await;
    drop(out);
    let _ = writer.await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Error,
    Data,
}

/// Checks a new stream's headers (as the kubelet's stream handler does) and replies or
/// resets it. Returns the request id, the stream's kind and the port.
async fn accept(
    out: &mpsc::Sender<Out>,
    stream: u32,
    headers: &[(String, String)],
) -> Option<(String, StreamKind, u16)> {
    match check_stream(stream, headers) {
        Ok(ok) => {
            let reply = Frame::SynReply {
                stream,
                fin: false,
                headers: Vec::new(),
            };
            out.send(Out::Control(reply)).await.ok()?;
            Some(ok)
        }
        Err(why) => {
            tracing::info!(stream, why, "port-forward: stream rejected");
            let reset = Frame::RstStream {
                stream,
                status: spdy::CANCEL,
            };
            let _ = out.send(Out::Control(reset)).await;
            None
        }
    }
}

/// The request id, kind and port of a new stream, or why it is refused (Kubernetes' words).
fn check_stream(
    stream: u32,
    headers: &[(String, String)],
) -> Result<(String, StreamKind, u16), String> {
    let port = spdy::header(headers, "port")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "\"port\" header is required".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    let kind = match spdy::header(headers, "streamtype") {
        None | Some("") => return Err("\"streamType\" header is required".into()),
        Some("error") => StreamKind::Error,
        Some("data") => StreamKind::Data,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
    };
    // Old clients send no request id: their streams come in (error, data) pairs with
    // consecutive odd ids, which is what the kubelet derives the id from.
    let request = match spdy::header(headers, "requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => match kind {
            StreamKind::Error => stream.to_string(),
            StreamKind::Data => stream.saturating_sub(2).to_string(),
        },
    };
    Ok((request, kind, port))
}

/// The two streams of one forwarded connection.
struct Pair {
    error: u32,
    data: u32,
    from_client: mpsc::Receiver<Bytes>,
    reset: oneshot::Receiver<()>,
}

/// One forwarded connection: connect in the pod, copy both ways, report a failure on the
/// error stream, close the streams.
async fn forward<D: Dial>(pod: D, port: u16, pair: Pair, out: mpsc::Sender<Out>, streams: Streams) {
    let Pair {
        error,
        data: data_id,
        mut from_client,
        mut reset,
    } = pair;
    let mut data_closed = false;
    match pod.dial(port).await {
        Err(msg) => {
            tracing::info!(port, error = msg, "port-forward: connect failed");
            let _ = out.send(data(error, false, msg)).await;
        }
        Ok(sock) => {
            let (mut from_pod, mut to_pod) = sock.into_split();
            let up = async {
                while let Some(b) = from_client.recv().await {
                    if to_pod.write_all(&b).await.is_err() {
                        return;
                    }
                }
                // The client's FIN: the pod sees our half-close.
                let _ = to_pod.shutdown().await;
            };
            let down = async {
                let mut buf = BytesMut::with_capacity(READ_CHUNK + HEADER);
                loop {
                    buf.reserve(READ_CHUNK + HEADER);
                    buf.put_bytes(0, HEADER);
                    match from_pod.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            buf[..HEADER].copy_from_slice(&spdy::data_header(data_id, false, n));
                            if out.send(Out::Framed(buf.split().freeze())).await.is_err() {
                                return false;
                            }
                        }
                    }
                }
                out.send(data(data_id, true, Bytes::new())).await.is_ok()
            };
            tokio::select! {
                ((), fin) = async { tokio::join!(up, down) } => data_closed = fin,
                // The client reset the data stream (it does once the pod's side ended, or
                // when its local connection failed): nothing more to copy.
                _ = &mut reset => data_closed = true,
            }
        }
    }
    if !data_closed {
        let _ = out.send(data(data_id, true, Bytes::new())).await;
    }
    let _ = out.send(data(error, true, Bytes::new())).await;
    let mut s = lock(&streams);
    s.remove(&error);
    s.remove(&data_id);
}

/// A small data frame (a message, a FIN).
fn data(stream: u32, fin: bool, bytes: impl AsRef<[u8]>) -> Out {
    let bytes = bytes.as_ref();
    let mut b = BytesMut::with_capacity(HEADER + bytes.len());
    b.put_slice(&spdy::data_header(stream, fin, bytes.len()));
    b.put_slice(bytes);
    Out::Framed(b.freeze())
}

/// Writes queued frames, flushing whenever the queue runs dry.
async fn write_frames<W: AsyncWrite + Unpin>(wr: W, mut rx: mpsc::Receiver<Out>) {
    let mut w = BufWriter::with_capacity(64 * 1024, wr);
    let mut enc = HeaderEncoder::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next {
            let r = match frame {
                Out::Control(f) => w.write_all(&spdy::encode_control(&f, &mut enc)).await,
                Out::Framed(bytes) => w.write_all(&bytes).await,
            };
            if r.is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

fn log_read_error(e: &SpdyError) {
    tracing::info!(
        error = e as &dyn std::error::Error,
        "port-forward: session ended"
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::DuplexStream;
    use tokio::net::TcpListener;

    use super::*;
    use crate::netns::Loopback;

    /// A SPDY client as kubectl drives one (spdystream's framing, our codec).
    struct Client {
        conn: DuplexStream,
        enc: HeaderEncoder,
        dec: HeaderDecoder,
    }

    impl Client {
        async fn send(&mut self, f: &Frame) {
            let bytes = spdy::encode_control(f, &mut self.enc);
            self.conn.write_all(&bytes).await.unwrap();
        }

        async fn open(&mut self, stream: u32, kind: &str, port: u16, request: &str) {
            let headers = h(&[
                ("streamtype", kind),
                ("port", &port.to_string()),
                ("requestid", request),
            ]);
            self.send(&Frame::SynStream {
                stream,
                associated: 0,
                priority: 0,
                flags: 0,
                headers,
            })
            .await;
        }

        async fn data(&mut self, stream: u32, fin: bool, data: &'static [u8]) {
            self.send(&Frame::Data {
                stream,
                fin,
                data: Bytes::from_static(data),
            })
            .await;
        }

        async fn next(&mut self) -> Frame {
            tokio::time::timeout(
                Duration::from_secs(10),
                spdy::read_frame(&mut self.conn, &mut self.dec),
            )
            .await
            .expect("a frame in time")
            .unwrap()
            .expect("the session is open")
        }

        /// Frames until `stream` gets its FIN; returns its data and every frame seen.
        async fn until_fin(&mut self, stream: u32, seen: &mut Vec<Frame>) -> Vec<u8> {
            let mut got = Vec::new();
            loop {
                let f = self.next().await;
                let done = matches!(&f, Frame::Data { stream: s, fin: true, .. } if *s == stream);
                if let Frame::Data {
                    stream: s, data, ..
                } = &f
                    && *s == stream
                {
                    got.extend_from_slice(data);
                }
                seen.push(f);
                if done {
                    return got;
                }
            }
        }
    }

    /// An echo server on a loopback port: each connection's bytes back, then EOF.
    async fn echo_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn serves_a_kubectl_like_client() {
        let echo = echo_server().await;
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let (_stop, stop_rx) = watch::channel(());
        let session = tokio::spawn(serve(server_end, Loopback, stop_rx));
        let mut c = Client {
            conn: client_end,
            enc: HeaderEncoder::new(),
            dec: HeaderDecoder::new(),
        };

        // A client's ping comes back.
        c.send(&Frame::Ping { id: 1 }).await;
        assert_eq!(c.next().await, Frame::Ping { id: 1 });

        // kubectl: the error stream (half-closed at once), then the data stream.
        c.open(1, "error", echo, "0").await;
        c.data(1, true, b"").await;
        c.open(3, "data", echo, "0").await;
        let reply = |stream| Frame::SynReply {
            stream,
            fin: false,
            headers: Vec::new(),
        };
        assert_eq!(c.next().await, reply(1));
        assert_eq!(c.next().await, reply(3));
        c.data(3, false, b"hello ").await;
        c.data(3, false, b"pod").await;
        c.data(3, true, b"").await;
        let mut seen = Vec::new();
        assert_eq!(c.until_fin(3, &mut seen).await, b"hello pod");
        // Nothing went wrong: the error stream just ends.
        assert_eq!(c.until_fin(1, &mut seen).await, b"");

        // Nothing listens: the message on the error stream, then both streams end.
        c.open(5, "error", closed, "1").await;
        c.data(5, true, b"").await;
        c.open(7, "data", closed, "1").await;
        assert_eq!(c.next().await, reply(5));
        assert_eq!(c.next().await, reply(7));
        let mut seen = Vec::new();
        let msg = String::from_utf8(c.until_fin(5, &mut seen).await).unwrap();
        assert!(msg.starts_with(&format!("dial {closed}: ")), "{msg}");
        assert!(
            seen.iter().any(|f| matches!(
                f,
                Frame::Data {
                    stream: 7,
                    fin: true,
                    ..
                }
            )),
            "{seen:?}"
        );

        // A stream the kubelet would refuse is reset.
        c.open(9, "stdin", echo, "2").await;
        assert_eq!(
            c.next().await,
            Frame::RstStream {
                stream: 9,
                status: spdy::CANCEL
            }
        );

        // GOAWAY ends the session.
        c.send(&Frame::GoAway {
            last_good: 0,
            status: 0,
        })
        .await;
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the session ends")
            .unwrap();
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn checks_stream_headers_as_the_kubelet_does() {
        assert_eq!(
            check_stream(
                1,
                &h(&[("streamtype", "error"), ("port", "80"), ("requestid", "7")])
            ),
            Ok(("7".into(), StreamKind::Error, 80))
        );
        // Without a request id: derived from the stream ids (error 5, data 7 → "5").
        assert_eq!(
            check_stream(7, &h(&[("streamtype", "data"), ("port", "80")])),
            Ok(("5".into(), StreamKind::Data, 80))
        );
        assert_eq!(
            check_stream(1, &h(&[("streamtype", "data")])),
            Err("\"port\" header is required".into())
        );
        assert!(
            check_stream(1, &h(&[("streamtype", "data"), ("port", "x")]))
                .unwrap_err()
                .starts_with("unable to parse \"x\" as a port")
        );
        assert_eq!(
            check_stream(1, &h(&[("streamtype", "data"), ("port", "0")])),
            Err("port \"0\" must be > 0".into())
        );
        assert_eq!(
            check_stream(1, &h(&[("streamtype", "stdin"), ("port", "1")])),
            Err("invalid stream type \"stdin\"".into())
        );
    }
}
