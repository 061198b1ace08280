//! `kpause`'s signal policy: the pod sandbox only ever stops or reaps.

/// What the sandbox does about a signal it waited for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// SIGTERM/SIGINT: the pod is being torn down; exit 0 at once.
    Exit,
    /// SIGCHLD: as the PID namespace's init it inherits orphans and must reap them.
    Reap,
    /// Anything else (not expected: only the three signals above are waited for).
    Ignore,
}

/// The signals `kpause` blocks and waits for synchronously.
pub const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD];

#[must_use]
pub fn action_for(signal: libc::c_int) -> Action {
    match signal {
        libc::SIGTERM | libc::SIGINT => Action::Exit,
        libc::SIGCHLD => Action::Reap,
        _ => Action::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_policy() {
        assert_eq!(action_for(libc::SIGTERM), Action::Exit);
        assert_eq!(action_for(libc::SIGINT), Action::Exit);
        assert_eq!(action_for(libc::SIGCHLD), Action::Reap);
        assert_eq!(action_for(libc::SIGHUP), Action::Ignore);
        assert!(SIGNALS.iter().all(|&s| action_for(s) != Action::Ignore));
    }
}
