//! Running netlink work inside another network namespace.
//!
//! `setns` changes the namespace of the calling thread only, so the work runs on a thread
//! spawned for it, which enters the namespace, opens its own netlink socket there (a socket
//! stays in the namespace it was created in) and exits when done. The caller's threads, and
//! the tokio workers among them, never change namespace.

use std::{fs::File, future::Future, os::fd::AsRawFd as _, path::Path};

use rtnetlink::Handle;

use crate::{Error, Result, nl::Netlink};

/// Runs `work` with a netlink handle inside the namespace at `netns` (e.g.
/// `/proc/<pid>/ns/net` or `/run/netns/<name>`).
pub(crate) async fn in_netns<T, F, Fut>(netns: &Path, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let path = netns.to_owned();
    let file = File::open(&path).map_err(|source| Error::Setns {
        path: path.clone(),
        source,
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("podnet-netns".into())
        .spawn(move || {
            let _ = tx.send(run_inside(&thread_path, &file, work));
        })
        .map_err(|e| Error::NetnsThread {
            path: path.clone(),
            reason: format!("cannot spawn: {e}"),
        })?;
    rx.await.map_err(|_| Error::NetnsThread {
        path,
        reason: "it panicked".into(),
    })?
}

fn run_inside<T, F, Fut>(path: &Path, file: &File, work: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    // SAFETY: `file` is an open descriptor for the duration of the call; setns only
    // affects this thread, which exits right after the work.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::Setns {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::NetnsThread {
            path: path.to_owned(),
            reason: format!("cannot build its runtime: {e}"),
        })?;
    runtime.block_on(async {
        let nl = Netlink::open()?;
        work(nl.handle.clone()).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_namespace_is_a_clear_error() {
        let err = in_netns(Path::new("/nonexistent/netns"), |_h| async { Ok(()) })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Setns { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
    }
}
