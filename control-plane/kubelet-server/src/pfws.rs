//! The kubelet side of port-forward over Kubernetes' WebSocket channel protocol
//! (`v4.channel.k8s.io`, what kube-rs' `Api::<Pod>::portforward` speaks): one WebSocket
//! carries one connection per requested port. Port `i` (in the order of the `port`
//! parameters) has data channel `2i` and error channel `2i+1`; every message is the channel
//! byte and a payload. The server opens each channel with the port as two little-endian
//! bytes, then the data channel carries the pod's bytes and the error channel a failure.
//! When every port's connection has ended the server closes the WebSocket.

use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::netns::Dial;
use crate::pfspdy::READ_CHUNK;

/// The subprotocol we answer with (the kubelet's binary one).
pub const PROTOCOL: &str = "v4.channel.k8s.io";

const OUT_QUEUE: usize = 32;
const IN_QUEUE: usize = 16;
/// How long the client may take to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A message on `channel`.
pub fn frame(channel: u8, payload: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(1 + payload.len());
    b.put_u8(channel);
    b.put_slice(payload);
    Message::binary(b.freeze())
}

/// The channel and payload of a client message; `None` for anything but a binary message
/// with a channel byte.
pub fn parse(msg: &Message) -> Option<(u8, Bytes)> {
    match msg {
        Message::Binary(b) if !b.is_empty() => Some((b[0], b.slice(1..))),
        _ => None,
    }
}

/// The two-byte opening message of port `port`'s channels.
pub fn port_prefix(port: u16) -> [u8; 2] {
    port.to_le_bytes()
}

/// Serves one WebSocket until every port's connection ended, the client closed, or `stop`.
pub async fn serve<S, D: Dial>(
    ws: WebSocketStream<S>,
    pod: D,
    ports: Vec<u16>,
    mut stop: watch::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(OUT_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.feed(m).await.is_err() {
                return None;
            }
            if out_rx.is_empty() && sink.flush().await.is_err() {
                return None;
            }
        }
        sink.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await
        .ok()
        .map(|()| sink)
    });
    let mut to_pods = Vec::with_capacity(ports.len());
    let mut tasks = JoinSet::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let Ok(index) = u8::try_from(i * 2) else {
            break;
        };
        for ch in [index, index + 1] {
            if out.send(frame(ch, &port_prefix(port))).await.is_err() {
                return;
            }
        }
        let (tx, rx) = mpsc::channel(IN_QUEUE);
        to_pods.push(tx);
        tasks.spawn(forward(pod.clone(), port, index, rx, out.clone()));
    }
    drop(out);
    loop {
        tokio::select! {
            msg = incoming.next() => match msg {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(m)) => {
                    let Some((ch, payload)) = parse(&m) else { continue };
                    if ch % 2 == 0
                        && !payload.is_empty()
                        && let Some(tx) = to_pods.get(usize::from(ch / 2))
                    {
                        let _ = tx.send(payload).await;
                    }
                }
            },
            done = tasks.join_next() => if done.is_none() {
                // Every connection ended: the writer sends the close frame.
                if let Ok(Some(sink)) = writer.await {
                    let _ = tokio::time::timeout(CLOSE_GRACE, close(sink, incoming)).await;
                }
                return;
            },
            _ = stop.changed() => break,
        }
    }
    tasks.shutdown().await;
    writer.abort();
}

/// Ends the WebSocket after our close frame went out: the client's close is awaited, then
/// the stream is shut down (TLS close_notify). Dropping it unannounced instead reads as a
/// truncation to the API server's TLS (rustls: UnexpectedEof), and a client close still
/// unread at close() resets the connection, which discards whatever the kernel had yet to
/// send: the tail of a large transfer.
async fn close<S>(
    sink: SplitSink<WebSocketStream<S>, Message>,
    mut incoming: SplitStream<WebSocketStream<S>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(m)) = incoming.next().await {
        if m.is_close() {
            break;
        }
    }
    if let Ok(mut ws) = sink.reunite(incoming) {
        let _ = ws.get_mut().shutdown().await;
    }
}

/// One port's connection: its data channel is `index`, its error channel `index + 1`.
async fn forward<D: Dial>(
    pod: D,
    port: u16,
    index: u8,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Message>,
) {
    let sock = match pod.dial(port).await {
        Ok(s) => s,
        Err(msg) => {
            tracing::info!(port, error = msg, "port-forward: connect failed");
            let _ = out.send(frame(index + 1, msg.as_bytes())).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = sock.into_split();
    let up = async {
        while let Some(b) = from_client.recv().await {
            if to_pod.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
        // v4 has no half-close: the connection lasts until the pod's side ends.
        std::future::pending::<()>().await;
    };
    let down = async {
        let mut buf = BytesMut::with_capacity(READ_CHUNK + 1);
        loop {
            buf.reserve(READ_CHUNK + 1);
            buf.put_u8(index);
            match from_pod.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if out
                        .send(Message::binary(buf.split().freeze()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::netns::Loopback;

    async fn session(
        ports: Vec<u16>,
    ) -> (
        WebSocketStream<tokio::io::DuplexStream>,
        tokio::task::JoinHandle<()>,
        watch::Sender<()>,
    ) {
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let server = WebSocketStream::from_raw_socket(server_end, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(client_end, Role::Client, None).await;
        let (stop, stop_rx) = watch::channel(());
        let task = tokio::spawn(serve(server, Loopback, ports, stop_rx));
        (client, task, stop)
    }

    async fn next(ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> Message {
        tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a message")
    }

    #[tokio::test]
    async fn serves_a_kube_rs_like_client() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };

        // Nothing listens: both channels opened with the port, the message on the error
        // channel, then the server closes.
        let (mut ws, task, _stop) = session(vec![closed]).await;
        assert_eq!(next(&mut ws).await, frame(0, &port_prefix(closed)));
        assert_eq!(next(&mut ws).await, frame(1, &port_prefix(closed)));
        let (ch, msg) = parse(&next(&mut ws).await).unwrap();
        assert_eq!(ch, 1);
        assert!(
            msg.starts_with(format!("dial {closed}: ").as_bytes()),
            "{msg:?}"
        );
        assert!(next(&mut ws).await.is_close());
        // Our close answers theirs; then the server ends the stream itself, at once.
        let _ = ws.close(None).await;
        let ended = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("the server ends the stream after the close handshake");
        assert!(ended.is_none(), "{ended:?}");
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();

        // Two ports: channels 0/1 and 2/3; bytes on a data channel reach that port.
        let (mut ws, task, _stop) = session(vec![echo, echo]).await;
        for ch in 0..4 {
            assert_eq!(next(&mut ws).await, frame(ch, &port_prefix(echo)));
        }
        ws.send(frame(2, b"second")).await.unwrap();
        assert_eq!(next(&mut ws).await, frame(2, b"second"));
        ws.send(frame(0, b"first")).await.unwrap();
        assert_eq!(next(&mut ws).await, frame(0, b"first"));
        // The client's close ends the session.
        ws.send(Message::Close(None)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn channel_framing() {
        // Port 8080 = 0x1f90, little-endian.
        assert_eq!(port_prefix(8080), [0x90, 0x1f]);
        assert_eq!(
            frame(3, &port_prefix(80)),
            Message::binary(vec![3u8, 80, 0])
        );
        assert_eq!(
            parse(&Message::binary(vec![2u8, b'h', b'i'])),
            Some((2, Bytes::from_static(b"hi")))
        );
        assert_eq!(parse(&Message::binary(vec![0u8])), Some((0, Bytes::new())));
        assert_eq!(parse(&Message::binary(Vec::new())), None);
        assert_eq!(parse(&Message::text("0abc")), None);
    }
}
