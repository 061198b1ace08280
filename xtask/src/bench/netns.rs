//! Work done from inside a network namespace (a thread that setns'es), for the cluster
//! benches: the lab client namespace and the workers of `run --nodes`.

use std::{
    net::SocketAddr,
    os::fd::AsRawFd as _,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::util::http_get;

/// Polls `addr` every 2 ms from the network namespace at `netns` (or this one) until a page
/// contains `needle`; the time it took, `None` after `limit`.
pub(super) fn until_answered(
    addr: SocketAddr,
    needle: String,
    netns: Option<PathBuf>,
    since: Instant,
    limit: Duration,
) -> Result<Option<Duration>> {
    in_netns(netns, move || {
        while since.elapsed() < limit {
            if crate::util::stop_requested() {
                bail!("interrupted");
            }
            let page = http_get(addr, "/", Duration::from_millis(300));
            if page.is_ok_and(|(status, body)| status == 200 && body.contains(&needle)) {
                return Ok(Some(since.elapsed()));
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(None)
    })
}

/// Runs `f` on a thread of its own in the network namespace at `netns` (or this one).
pub(super) fn in_netns<T: Send + 'static>(
    netns: Option<PathBuf>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    thread::spawn(move || {
        if let Some(path) = netns {
            let file =
                std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
            // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("setns {}", path.display()));
            }
        }
        f()
    })
    .join()
    .map_err(|_| anyhow!("a measuring thread panicked"))?
}
