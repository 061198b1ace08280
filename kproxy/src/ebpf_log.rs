//! Forwards aya-log records from the eBPF programs into `tracing`, so kernel-side events
//! land in the same log stream as everything else (target `kproxy::ebpf`).

use aya_log::EbpfLogger;
use tokio::io::{Interest, unix::AsyncFd};

/// Target of every event forwarded from the eBPF programs.
pub const TARGET: &str = "kproxy::ebpf";

struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "kproxy::ebpf", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "kproxy::ebpf", "{msg}"),
            log::Level::Info => tracing::info!(target: "kproxy::ebpf", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "kproxy::ebpf", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "kproxy::ebpf", "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// Takes the aya-log ring buffer out of `ebpf` and drains it on a tokio task until the
/// runtime stops.
pub fn spawn(ebpf: &mut aya::Ebpf) -> Result<(), aya_log::Error> {
    let logger = EbpfLogger::init_with_logger(ebpf, TracingLog)?;
    // SAFETY: the EbpfLogger owns its ring buffer fd, which stays open and unchanged until
    // the logger (and with it this AsyncFd) is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut logger = match registered {
        Ok(l) => l,
        Err(err) => {
            tracing::warn!(
                ?err,
                "cannot poll the eBPF log ring buffer; eBPF logs disabled"
            );
            return Ok(());
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                break;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}
