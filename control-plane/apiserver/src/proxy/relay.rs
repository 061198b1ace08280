//! The byte relay between a client's upgraded connection and the kubelet's (exec, attach and
//! port-forward streams pass through it unparsed).

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Bytes read at a time in each direction.
const CHUNK: usize = 256 * 1024;

/// Joins the two upgraded connections once both upgrades complete, in a task of its own.
pub(super) fn spawn(what: &'static str, kubelet: OnUpgrade, client: OnUpgrade) {
    tokio::spawn(async move {
        let (kubelet, client) = match tokio::try_join!(kubelet, client) {
            Ok(both) => both,
            Err(e) => return tracing::info!(what, error = %e, "upgrade failed"),
        };
        let (up, down) = splice(TokioIo::new(client), TokioIo::new(kubelet)).await;
        tracing::debug!(what, up, down, "relay done");
    });
}

/// Copies both ways until each direction has ended; returns the bytes copied a → b and
/// b → a. Unlike `tokio::io::copy_bidirectional`, a read error ends only its own direction,
/// and only after everything read before it was passed on: a TLS peer that closes without
/// close_notify (rustls reports UnexpectedEof) would otherwise cut the tail of a transfer
/// still queued towards a slower reader.
pub(super) async fn splice<A, B>(a: A, b: B) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (a_rd, a_wr) = tokio::io::split(a);
    let (b_rd, b_wr) = tokio::io::split(b);
    tokio::join!(pipe(a_rd, b_wr), pipe(b_rd, a_wr))
}

/// One direction: read, write everything read, and at the end shut the writer down so the
/// other side sees the end too.
async fn pipe<R, W>(mut from: R, mut to: W) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0; CHUNK];
    let mut total = 0;
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return total;
                }
                total += n as u64;
            }
        }
    }
    let _ = to.shutdown().await;
    total
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    /// Yields `data`, then fails as rustls does on a close without close_notify.
    struct Truncated(Vec<u8>);

    impl AsyncRead for Truncated {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.0.is_empty() {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            let n = buf.remaining().min(self.0.len());
            buf.put_slice(&self.0[..n]);
            self.0.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_read_error_ends_its_direction_after_what_was_read() {
        let data: Vec<u8> = (0..3 * CHUNK + 17)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        // A slow reader behind a small pipe: most of the data is still queued when the
        // error comes.
        let (mut reader, writer) = tokio::io::duplex(4096);
        let copier = tokio::spawn(pipe(Truncated(data.clone()), writer));
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(copier.await.unwrap(), data.len() as u64);
        assert!(got == data, "{} of {} bytes came", got.len(), data.len());
    }

    #[tokio::test]
    async fn splices_both_ways_until_both_end() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (kubelet, mut kubelet_peer) = tokio::io::duplex(1024);
        let relay = tokio::spawn(splice(client, kubelet));
        client_peer.write_all(b"stdin").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut up = Vec::new();
        kubelet_peer.read_to_end(&mut up).await.unwrap();
        assert_eq!(up, b"stdin");
        kubelet_peer.write_all(b"stdout!").await.unwrap();
        drop(kubelet_peer);
        let mut down = Vec::new();
        client_peer.read_to_end(&mut down).await.unwrap();
        assert_eq!(down, b"stdout!");
        assert_eq!(relay.await.unwrap(), (5, 7));
    }
}
