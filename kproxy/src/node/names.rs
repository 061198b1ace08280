//! The task that keeps the service names for `/metrics`, `/lb` and `kproxy dump`.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use kproxy::names::{FrontendName, Names};
use tokio::sync::mpsc;

use super::sleep_until;
use crate::setup;

/// A change of the names (revnat id → Service, kind, terminating backends).
pub(super) enum NamesUpdate {
    /// All of them (after a full pass).
    Replace(Names),
    /// Those of one Service's plan.
    Changes(Vec<(u16, Option<FrontendName>)>),
}

/// How often changed names are saved for `kproxy dump`.
const NAMES_EVERY: Duration = Duration::from_millis(250);

/// The task that owns the shared names: it applies the main loop's updates (so the loop
/// never waits for a lock or a rebuild of every Service's names) and saves them for
/// `kproxy dump` at most every `NAMES_EVERY`, off the runtime's threads.
pub(super) fn spawn_names(
    bpffs: PathBuf,
    shared: Arc<RwLock<Names>>,
) -> mpsc::UnboundedSender<NamesUpdate> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut due = None;
        loop {
            tokio::select! {
                update = rx.recv() => {
                    let Some(update) = update else { return };
                    let mut names = shared.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match update {
                        NamesUpdate::Replace(all) => *names = all,
                        NamesUpdate::Changes(changes) => names.apply(changes),
                    }
                    due.get_or_insert_with(|| tokio::time::Instant::now() + NAMES_EVERY);
                }
                () = sleep_until(due) => {
                    due = None;
                    let (bpffs, shared) = (bpffs.clone(), Arc::clone(&shared));
                    let _ = tokio::task::spawn_blocking(move || {
                        let names = shared.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                        setup::save_names_logged(&bpffs, &names);
                    })
                    .await;
                }
            }
        }
    });
    tx
}
