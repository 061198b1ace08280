//! `kpause`: the pod sandbox. As PID 1 of the pod it holds the namespaces, sleeps until
//! SIGTERM/SIGINT (then exits 0) and reaps the zombies it inherits, like Kubernetes' pause.

use std::io;

use kproxy_podimages::pause::{Action, SIGNALS, action_for};

/// Reaps every exited child without blocking.
fn reap() {
    loop {
        // SAFETY: waitpid with a null status pointer and WNOHANG has no memory preconditions.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

fn main() {
    // Blocked signals stay pending for sigwait: no async handler, no races. PID 1 also gets
    // no default actions, so the signals it cares about must be taken explicitly.
    // SAFETY: the set is initialised by sigemptyset before use; all pointers are valid.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        for s in SIGNALS {
            libc::sigaddset(&raw mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) != 0 {
            eprintln!("kpause: sigprocmask: {}", io::Error::last_os_error());
            std::process::exit(1);
        }
        set
    };
    if std::process::id() != 1 {
        eprintln!("kpause: warning: not PID 1, orphans are not reaped here");
    }
    // Children may have exited before the mask was set.
    reap();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid initialised sigset and `sig` a valid out-pointer.
        let rc = unsafe { libc::sigwait(&raw const set, &raw mut sig) };
        if rc != 0 {
            continue;
        }
        match action_for(sig) {
            Action::Exit => {
                eprintln!("kpause: signal {sig}: exiting");
                std::process::exit(0);
            }
            Action::Reap => reap(),
            Action::Ignore => {}
        }
    }
}
