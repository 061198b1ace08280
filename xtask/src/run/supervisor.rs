//! The component processes: each started with its log, its ready line watched, restarted
//! with a growing delay when it dies, stopped with SIGTERM then SIGKILL.

use std::{
    io::{BufRead as _, BufReader, Seek as _, SeekFrom},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::LOG_DIR;
use crate::util::stop_requested;

/// One supervised process: its command line, log and the line that says it is ready.
pub struct Component {
    pub name: String,
    pub bin: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, &'static str)>,
    pub log: String,
    pub ready: &'static str,
    /// A named network namespace (`/run/netns/NAME`) to start in: a simulated node.
    pub netns: Option<String>,
    pub child: Option<Child>,
    /// Where this start's part of the (appended) log begins.
    pub log_offset: u64,
    pub started: Instant,
    /// Restarts in a row of a component that died soon after starting.
    pub quick_deaths: u32,
    pub retry_at: Option<Instant>,
    /// Restarted by the supervisor at this time, not yet ready.
    pub restarting: Option<Instant>,
}

impl Component {
    pub fn new(
        name: impl Into<String>,
        bin: PathBuf,
        args: &[&str],
        log: &str,
        ready: &'static str,
    ) -> Self {
        Self {
            name: name.into(),
            bin,
            args: args.iter().map(|a| (*a).to_string()).collect(),
            env: Vec::new(),
            log: format!("{LOG_DIR}/{log}"),
            ready,
            netns: None,
            child: None,
            log_offset: 0,
            started: Instant::now(),
            quick_deaths: 0,
            retry_at: None,
            restarting: None,
        }
    }

    pub fn spawn(&mut self) -> Result<()> {
        std::fs::create_dir_all(LOG_DIR).with_context(|| format!("create {LOG_DIR}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log))?;
        self.log_offset = log.metadata().map_or(0, |m| m.len());
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .envs(self.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: the terminal's Ctrl-C reaches only `run`, which stops
            // the components in order.
            .process_group(0);
        // Opened here, entered in the child: only the network namespace changes (unlike
        // `ip netns exec`, which also remounts /sys and so hides bpffs and the cgroups).
        let netns = match &self.netns {
            Some(ns) => Some(
                std::fs::File::open(format!("/run/netns/{ns}"))
                    .with_context(|| format!("open network namespace {ns}"))?,
            ),
            None => None,
        };
        let netns_fd = netns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: prctl and setns are async-signal-safe; prctl makes the component die with
        // `run` (even if `run` is killed) instead of outliving it unsupervised; the
        // namespace's file stays open until after the spawn.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if let Some(fd) = netns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("start {}", self.bin.display()))?,
        );
        drop(netns);
        self.started = Instant::now();
        Ok(())
    }

    /// Whether this start's part of the log has the ready line yet.
    pub fn logged_ready(&self) -> bool {
        let Ok(mut f) = std::fs::File::open(&self.log) else {
            return false;
        };
        if f.seek(SeekFrom::Start(self.log_offset)).is_err() {
            return false;
        }
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains(self.ready))
    }

    /// The exit status if the process ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("run: {} did not stop in {grace:?}; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits until every component in `comps` logged its ready line (30 s at most each).
pub fn wait_ready(comps: &mut [&mut Component]) -> Result<()> {
    let started = Instant::now();
    let mut pending: Vec<usize> = (0..comps.len()).collect();
    while !pending.is_empty() {
        if stop_requested() {
            bail!("interrupted while starting");
        }
        let mut still = Vec::new();
        for i in pending {
            let c = &mut *comps[i];
            if let Some(status) = c.exited() {
                bail!("{} exited while starting ({status}); see {}", c.name, c.log);
            }
            if !c.logged_ready() {
                still.push(i);
            }
        }
        pending = still;
        if started.elapsed() > Duration::from_secs(30) {
            let names: Vec<&str> = pending.iter().map(|&i| comps[i].name.as_str()).collect();
            bail!("not ready after 30 s: {}; see {LOG_DIR}/", names.join(", "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Restarts a component that exits until Ctrl-C; one that keeps dying soon after starting
/// waits 1, 2, 4 … 30 s between attempts.
pub fn supervise(comps: &mut [Component]) {
    while !stop_requested() {
        for c in comps.iter_mut() {
            if let Some(status) = c.exited() {
                c.restarting = None;
                let lived = c.started.elapsed();
                c.quick_deaths = if lived < Duration::from_secs(30) {
                    c.quick_deaths + 1
                } else {
                    0
                };
                let delay = restart_delay(c.quick_deaths);
                println!(
                    "run: {} exited ({status}) after {:.1} s; restarting it{} (log {})",
                    c.name,
                    lived.as_secs_f64(),
                    if delay.is_zero() {
                        String::new()
                    } else {
                        format!(" in {} s", delay.as_secs())
                    },
                    c.log
                );
                c.retry_at = Some(Instant::now() + delay);
            }
            if c.child.is_none() && c.retry_at.is_some_and(|t| Instant::now() >= t) {
                c.retry_at = None;
                match c.spawn() {
                    Ok(()) => c.restarting = Some(Instant::now()),
                    Err(e) => {
                        println!("run: restarting {} failed: {e:#}", c.name);
                        c.retry_at = Some(Instant::now() + Duration::from_secs(5));
                    }
                }
            }
            // Readiness of a restarted component is polled here, not waited for, so the
            // others stay watched meanwhile.
            if let Some(since) = c.restarting {
                if c.logged_ready() {
                    c.restarting = None;
                    println!("run: {} is running again", c.name);
                } else if since.elapsed() > Duration::from_secs(30) {
                    println!(
                        "run: {} did not become ready in 30 s; restarting it (log {})",
                        c.name, c.log
                    );
                    c.restarting = None;
                    if let Some(mut child) = c.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    c.quick_deaths += 1;
                    c.retry_at = Some(Instant::now() + restart_delay(c.quick_deaths));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No wait for a component that ran a while; then 1, 2, 4 … 30 s while it keeps dying soon
/// after starting.
fn restart_delay(quick_deaths: u32) -> Duration {
    match quick_deaths {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1 << (n - 2).min(5)).min(Duration::from_secs(30)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays_grow_to_half_a_minute() {
        let d: Vec<u64> = (0..9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(d, [0, 0, 1, 2, 4, 8, 16, 30, 30]);
    }
}
