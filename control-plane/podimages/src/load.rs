//! The load engine behind `kecho load` and `kctl bench`: new TCP connections per second and
//! HTTP/1.0 requests per second, with latency percentiles, against a few targets. A target
//! may have several addresses (`pods=IP:PORT,IP:PORT`): each new connection takes the next
//! one, round-robin, so a set of pods can be compared with a service spreading over them.
//!
//! Each target is measured in two phases:
//! - *connections*: every worker connects, half-closes, waits for the server to close and
//!   closes with `SO_LINGER` 0 (an RST), so no TIME_WAIT sockets pile up and the ephemeral
//!   ports last; the latency is `connect()`'s.
//! - *requests*: every worker connects, sends `GET PATH HTTP/1.0`, reads to EOF and closes; the
//!   latency covers the whole exchange. A non-2xx answer is a failure.
//!
//! Machine noise (another build, a CPU frequency change) would favour whichever target ran
//! in a quiet moment, so targets are interleaved: `rounds` rounds, each running every target
//! for `duration / rounds`, half of it per phase; even rounds run the targets in reverse
//! order (A B, B A, A B, ...) so that no target always runs right after another. Failures are
//! counted and reported, with the first error's message, never dropped.
//!
//! Std plus serde (it runs in a `FROM scratch` image); threads, not async: one per worker.
//! The JSON lines it reports ([`Line`]) are read back by `kctl bench` with the same types.

use std::{
    fmt,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::http::{get_request, status};

pub const DEFAULT_CONNECTIONS: usize = 8;
pub const DEFAULT_DURATION: Duration = Duration::from_secs(6);
pub const DEFAULT_ROUNDS: u32 = 3;
pub const MAX_CONNECTIONS: usize = 1024;
/// Each phase slice must last long enough to mean something.
pub const MIN_SLICE: Duration = Duration::from_millis(100);
pub const MAX_DURATION: Duration = Duration::from_mins(10);
/// Addresses one target may spread its connections over.
pub const MAX_ADDRESSES: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A failing target (refused, unreachable) answers at once: pausing after a failure keeps
/// the workers from spinning and the failure count meaningful.
const FAILURE_PAUSE: Duration = Duration::from_millis(20);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

// === config ===

/// What to measure, with the name it is reported under (`pod`, `clusterip`, ...): one
/// address, or several that new connections take in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// Never empty, no duplicates.
    pub addrs: Vec<SocketAddr>,
}

impl Target {
    /// A target with one address.
    #[must_use]
    pub fn single(name: &str, addr: SocketAddr) -> Self {
        Self {
            name: name.to_string(),
            addrs: vec![addr],
        }
    }

    /// Parses `NAME=IP:PORT[,IP:PORT...]`.
    pub fn parse(s: &str) -> Result<Self, LoadError> {
        let bad = || LoadError::BadTarget(s.to_string());
        let (name, list) = s.split_once('=').ok_or_else(bad)?;
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(bad());
        }
        let mut addrs = Vec::new();
        for item in list.split(',') {
            let addr: SocketAddr = item.parse().map_err(|_| bad())?;
            if addr.port() == 0 || addrs.contains(&addr) {
                return Err(bad());
            }
            addrs.push(addr);
        }
        if addrs.len() > MAX_ADDRESSES {
            return Err(LoadError::TooManyAddresses(name.to_string(), addrs.len()));
        }
        Ok(Self {
            name: name.to_string(),
            addrs,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.name)?;
        for (i, a) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// The order targets run in round `round` (1-based): as given in odd rounds, reversed in
/// even ones (ABBA), so that no target always runs right after another.
#[must_use]
pub fn round_order(targets: usize, round: u32) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..targets).rev().collect()
    } else {
        (0..targets).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    pub targets: Vec<Target>,
    /// Concurrent workers per phase.
    pub connections: usize,
    /// Measuring time per target, both phases and all rounds together.
    pub duration: Duration,
    pub rounds: u32,
    /// The request path of the requests phase.
    pub path: String,
}

impl LoadConfig {
    /// A config with the defaults for `targets`.
    #[must_use]
    pub fn new(targets: Vec<Target>) -> Self {
        Self {
            targets,
            connections: DEFAULT_CONNECTIONS,
            duration: DEFAULT_DURATION,
            rounds: DEFAULT_ROUNDS,
            path: "/".to_string(),
        }
    }

    /// Parses `kecho load`'s arguments (after `load`): `[--connections N] [--duration D]
    /// [--rounds R] [--path P] NAME=IP:PORT[,IP:PORT...]...`.
    pub fn from_args(args: &[String]) -> Result<Self, LoadError> {
        let mut cfg = Self::new(Vec::new());
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| LoadError::MissingValue(flag.to_string()))
            };
            match flag {
                "--connections" | "-c" => {
                    let v = value()?;
                    cfg.connections = v
                        .parse()
                        .map_err(|_| LoadError::BadConnections(v.clone()))?;
                }
                "--duration" | "-d" => cfg.duration = parse_duration(&value()?)?,
                "--rounds" => {
                    let v = value()?;
                    cfg.rounds = v.parse().map_err(|_| LoadError::BadRounds(v.clone()))?;
                }
                "--path" => cfg.path = value()?,
                _ if arg.starts_with('-') => return Err(LoadError::UnknownArgument(arg.clone())),
                _ => cfg.targets.push(Target::parse(arg)?),
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the limits; [`run`] expects a validated config.
    pub fn validate(&self) -> Result<(), LoadError> {
        if self.targets.is_empty() {
            return Err(LoadError::NoTargets);
        }
        for t in &self.targets {
            if t.addrs.is_empty() {
                return Err(LoadError::BadTarget(t.to_string()));
            }
            if t.addrs.len() > MAX_ADDRESSES {
                return Err(LoadError::TooManyAddresses(t.name.clone(), t.addrs.len()));
            }
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(LoadError::BadConnections(self.connections.to_string()));
        }
        if self.rounds == 0 || self.rounds > 100 {
            return Err(LoadError::BadRounds(self.rounds.to_string()));
        }
        if self.duration > MAX_DURATION || self.slice() < MIN_SLICE {
            return Err(LoadError::DurationOutOfRange {
                duration: self.duration,
                min: MIN_SLICE * 2 * self.rounds,
            });
        }
        if !self.path.starts_with('/') || self.path.chars().any(char::is_whitespace) {
            return Err(LoadError::BadPath(self.path.clone()));
        }
        Ok(())
    }

    /// How long one phase of one target runs in one round.
    #[must_use]
    pub fn slice(&self) -> Duration {
        self.duration / self.rounds.max(1) / 2
    }

    /// The whole run's length (without the last in-flight operations).
    #[must_use]
    pub fn total(&self) -> Duration {
        self.slice() * 2 * self.rounds * u32::try_from(self.targets.len()).unwrap_or(u32::MAX)
    }

    /// The arguments [`LoadConfig::from_args`] reads back (for `kecho load` in a pod).
    #[must_use]
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--connections".to_string(),
            self.connections.to_string(),
            "--duration".to_string(),
            format!("{}ms", self.duration.as_millis()),
            "--rounds".to_string(),
            self.rounds.to_string(),
            "--path".to_string(),
            self.path.clone(),
        ];
        args.extend(self.targets.iter().map(Target::to_string));
        args
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoadError {
    NoTargets,
    BadTarget(String),
    TooManyAddresses(String, usize),
    BadConnections(String),
    BadRounds(String),
    BadDuration(String),
    DurationOutOfRange { duration: Duration, min: Duration },
    BadPath(String),
    MissingValue(String),
    UnknownArgument(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTargets => write!(f, "no target given (NAME=IP:PORT[,IP:PORT...])"),
            Self::BadTarget(t) => write!(
                f,
                "target {t:?} is not NAME=IP:PORT[,IP:PORT...] (distinct addresses, port not 0)"
            ),
            Self::TooManyAddresses(name, n) => write!(
                f,
                "target {name:?} has {n} addresses: at most {MAX_ADDRESSES}"
            ),
            Self::BadConnections(v) => {
                write!(f, "connections {v:?}: expected 1 to {MAX_CONNECTIONS}")
            }
            Self::BadRounds(v) => write!(f, "rounds {v:?}: expected 1 to 100"),
            Self::BadDuration(v) => write!(
                f,
                "duration {v:?}: expected a number with a unit, like 6s, 500ms or 1m"
            ),
            Self::DurationOutOfRange { duration, min } => write!(
                f,
                "duration {duration:?}: expected {min:?} to {MAX_DURATION:?} (each phase of each round needs {MIN_SLICE:?})"
            ),
            Self::BadPath(p) => write!(f, "path {p:?}: must start with / and have no spaces"),
            Self::MissingValue(flag) => write!(f, "{flag} needs a value"),
            Self::UnknownArgument(a) => write!(
                f,
                "unknown argument {a:?} (usage: kecho load [--connections N] [--duration D] [--rounds R] [--path P] NAME=IP:PORT[,IP:PORT...]...)"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Parses a duration: a decimal number with the unit `ms`, `s`, `m` or `h` (`6s`, `1.5s`,
/// `500ms`, `2m`); a bare number is seconds. Go's `1m30s` compounds work too.
pub fn parse_duration(s: &str) -> Result<Duration, LoadError> {
    let bad = || LoadError::BadDuration(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(n * scale).map_err(|_| bad())?;
        rest = tail;
    }
    Ok(total)
}

// === results ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Connections,
    Requests,
}

impl Phase {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Requests => "requests",
        }
    }
}

/// A phase's raw figures, summed over rounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseStats {
    pub ok: u64,
    pub failed: u64,
    /// Time spent in the phase (all its slices).
    pub elapsed: Duration,
    /// Latency of every successful operation, in microseconds.
    pub latencies_us: Vec<u32>,
    pub first_error: Option<String>,
}

impl PhaseStats {
    /// Adds another slice's figures (the first error seen stays first).
    pub fn merge(&mut self, other: PhaseStats) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The summary reported for the phase.
    #[must_use]
    pub fn summary(mut self) -> PhaseResult {
        self.latencies_us.sort_unstable();
        let secs = self.elapsed.as_secs_f64();
        #[expect(
            clippy::cast_precision_loss,
            reason = "a count of operations fits f64's 52 bits"
        )]
        let per_second = if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        };
        PhaseResult {
            ok: self.ok,
            failed: self.failed,
            seconds: secs,
            per_second,
            p50_us: percentile(&self.latencies_us, 50.0),
            p90_us: percentile(&self.latencies_us, 90.0),
            p99_us: percentile(&self.latencies_us, 99.0),
            first_error: self.first_error,
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
    /// Successful operations per second.
    pub per_second: f64,
    pub p50_us: Option<u32>,
    pub p90_us: Option<u32>,
    pub p99_us: Option<u32>,
    pub first_error: Option<String>,
}

/// One target's figures: the final line of `kecho load` for it (and a row of `kctl bench -o
/// json`'s `results`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    pub target: String,
    /// The target's addresses, connections spread round-robin over them.
    pub addresses: Vec<SocketAddr>,
    pub connections: PhaseResult,
    pub requests: PhaseResult,
}

/// Where the run is, reported about once a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub target: String,
    pub phase: Phase,
    /// 1-based.
    pub round: u32,
    pub rounds: u32,
    /// The slice running (1-based) out of all `slices` (rounds × targets × 2).
    pub slice: u32,
    pub slices: u32,
    /// This slice so far.
    pub ok: u64,
    pub failed: u64,
    pub per_second: f64,
}

/// What [`run`] reports as it goes; serialized, the same JSON as a [`Line`].
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event<'a> {
    Progress(&'a Progress),
    Result(&'a TargetResult),
}

impl Event<'_> {
    /// The JSON line `kecho load` prints: `{"type":"progress",...}` or `{"type":"result",...}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Plain structs of numbers, strings and addresses: serializing them cannot fail (a
        // non-finite rate becomes null).
        serde_json::to_string(self).expect("serializing a load event")
    }
}

/// A JSON line of the engine, read back (an owned [`Event`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    Progress(Progress),
    Result(TargetResult),
}

impl Line {
    /// A JSON line of the engine, `None` for anything else (a pod's own messages).
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        line.starts_with('{')
            .then(|| serde_json::from_str(line).ok())
            .flatten()
    }
}

/// The nearest-rank percentile `p` (0-100] of sorted `values`; `None` when empty.
#[must_use]
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rank within the slice's length"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

// === engine ===

/// Closes with an RST instead of a FIN: no TIME_WAIT socket on our side.
fn set_linger_zero(stream: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is open for the stream's lifetime and the option value is a valid
    // `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            libc::socklen_t::try_from(size_of::<libc::linger>()).unwrap_or(8),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One new connection; returns the connect latency.
///
/// The kernel completes handshakes without the server: closing right after `connect()`
/// would open connections faster than the server accepts them, overflow its accept queue and
/// measure the 1 s SYN retransmissions that follow. So the worker half-closes (FIN) and
/// waits until the server has accepted and closed its side, then closes with an RST.
fn connect_once(addr: SocketAddr, buf: &mut [u8]) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    let took = started.elapsed();
    set_linger_zero(&stream).map_err(|e| format!("SO_LINGER: {e}"))?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|e| format!("socket timeout: {e}"))?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    loop {
        match stream.read(buf) {
            // A server may answer an empty request with an error page or a reset: either
            // way it has accepted and served the connection.
            Ok(0) => return Ok(took),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(took),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("waiting for the server to close: {e}")),
        }
    }
}

/// One HTTP/1.0 GET read to EOF; returns its whole latency.
fn request_once(addr: SocketAddr, request: &[u8], buf: &mut [u8]) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    stream
        .write_all(request)
        .map_err(|e| format!("send: {e}"))?;
    // Keep the start of the response for its status line.
    let mut head = Vec::with_capacity(64);
    loop {
        match stream.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                if head.len() < 256 {
                    head.extend_from_slice(&buf[..n.min(256 - head.len())]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let took = started.elapsed();
    match status(&head) {
        Ok(code) if (200..300).contains(&code) => Ok(took),
        Ok(code) => Err(format!("HTTP status {code}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Counters the workers of one slice share with the progress reporter.
struct Shared {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// The next connection's address (index modulo the target's addresses).
    next: AtomicUsize,
}

impl Shared {
    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(error);
        }
    }
}

/// One worker: operations back to back until `deadline`, each new connection to the
/// target's next address.
fn worker(
    target: &Target,
    phase: Phase,
    path: &str,
    deadline: Instant,
    shared: &Shared,
) -> Vec<u32> {
    let requests: Vec<Vec<u8>> = target
        .addrs
        .iter()
        .map(|a| get_request(&a.to_string(), path))
        .collect();
    let mut buf = vec![0u8; 16 * 1024];
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let i = shared.next.fetch_add(1, Ordering::Relaxed) % target.addrs.len();
        let addr = target.addrs[i];
        let result = match phase {
            Phase::Connections => connect_once(addr, &mut buf),
            Phase::Requests => request_once(addr, &requests[i], &mut buf),
        };
        match result {
            Ok(took) => {
                latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                shared.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.fail(e);
                thread::sleep(FAILURE_PAUSE);
            }
        }
    }
    latencies
}

/// Which slice runs, for progress reports.
struct SliceInfo<'a> {
    target: &'a Target,
    phase: Phase,
    round: u32,
    slice: u32,
}

/// Runs one phase against one target for the config's slice, reporting progress.
fn run_slice(
    cfg: &LoadConfig,
    at: &SliceInfo<'_>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> PhaseStats {
    let shared = Shared {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
        next: AtomicUsize::new(0),
    };
    let started = Instant::now();
    let deadline = started + cfg.slice();
    let slices = cfg.rounds * 2 * u32::try_from(cfg.targets.len()).unwrap_or(u32::MAX);
    let mut latencies = Vec::new();
    thread::scope(|scope| {
        let workers: Vec<_> = (0..cfg.connections)
            .map(|_| {
                let shared = &shared;
                scope.spawn(move || worker(at.target, at.phase, &cfg.path, deadline, shared))
            })
            .collect();
        let report = |on_event: &mut dyn FnMut(Event<'_>)| {
            let ok = shared.ok.load(Ordering::Relaxed);
            #[expect(
                clippy::cast_precision_loss,
                reason = "a count of operations fits f64's 52 bits"
            )]
            let per_second = ok as f64 / started.elapsed().as_secs_f64().max(1e-6);
            on_event(Event::Progress(&Progress {
                target: at.target.name.clone(),
                phase: at.phase,
                round: at.round,
                rounds: cfg.rounds,
                slice: at.slice,
                slices,
                ok,
                failed: shared.failed.load(Ordering::Relaxed),
                per_second,
            }));
        };
        let mut next = started + PROGRESS_EVERY;
        while next < deadline {
            thread::sleep(next.saturating_duration_since(Instant::now()));
            report(on_event);
            next += PROGRESS_EVERY;
        }
        for w in workers {
            // A worker only panics on a bug; its figures are then missing, not invented,
            // and the panic is reported as a failure.
            match w.join() {
                Ok(l) => latencies.extend(l),
                Err(panic) => shared.fail(format!(
                    "a load worker thread panicked: {}",
                    panic_message(panic.as_ref())
                )),
            }
        }
        report(on_event);
    });
    PhaseStats {
        ok: shared.ok.into_inner(),
        failed: shared.failed.into_inner(),
        elapsed: started.elapsed(),
        latencies_us: latencies,
        first_error: shared.first_error.into_inner().ok().flatten(),
    }
}

/// The message of a panic payload (`panic!` with a string or a format).
#[must_use]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// Runs the whole measurement (see the module doc), reporting progress and each target's
/// result as soon as its last round is done. `cfg` must be valid ([`LoadConfig::validate`]).
pub fn run(cfg: &LoadConfig, on_event: &mut dyn FnMut(Event<'_>)) -> Vec<TargetResult> {
    let mut stats: Vec<[PhaseStats; 2]> = vec![Default::default(); cfg.targets.len()];
    let mut slice = 0;
    for round in 1..=cfg.rounds {
        for i in round_order(cfg.targets.len(), round) {
            let target = &cfg.targets[i];
            for (p, phase) in [Phase::Connections, Phase::Requests]
                .into_iter()
                .enumerate()
            {
                slice += 1;
                let at = SliceInfo {
                    target,
                    phase,
                    round,
                    slice,
                };
                let s = run_slice(cfg, &at, on_event);
                stats[i][p].merge(s);
            }
        }
    }
    let mut results = Vec::with_capacity(cfg.targets.len());
    for (target, [conns, reqs]) in cfg.targets.iter().zip(stats) {
        let r = TargetResult {
            target: target.name.clone(),
            addresses: target.addrs.clone(),
            connections: conns.summary(),
            requests: reqs.summary(),
        };
        on_event(Event::Result(&r));
        results.push(r);
    }
    results
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("6s"), Ok(Duration::from_secs(6)));
        assert_eq!(parse_duration("6"), Ok(Duration::from_secs(6)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "s", "6x", "-1s", "6 s", "1..2s", "ms5", "-3"] {
            assert_eq!(
                parse_duration(bad),
                Err(LoadError::BadDuration(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("pod=10.0.0.5:80"),
            Ok(Target::single("pod", "10.0.0.5:80".parse().unwrap()))
        );
        let pods = Target::parse("pods=10.0.0.5:80,10.0.0.6:8080,[fd00::1]:80").unwrap();
        assert_eq!(pods.name, "pods");
        assert_eq!(pods.addrs.len(), 3);
        assert_eq!(pods.addrs[1], "10.0.0.6:8080".parse().unwrap());
        assert_eq!(
            pods.to_string(),
            "pods=10.0.0.5:80,10.0.0.6:8080,[fd00::1]:80"
        );
        assert_eq!(Target::parse(&pods.to_string()), Ok(pods));
        for bad in [
            "10.0.0.5:80",
            "=10.0.0.5:80",
            "pod=10.0.0.5",
            "a b=1.2.3.4:1",
            "pod=x:80",
            "pod=1.2.3.4:0",
            "pod=",
            "pod=1.2.3.4:80,",
            "pod=1.2.3.4:80,,1.2.3.5:80",
            "pod=1.2.3.4:80,1.2.3.4:80",
            "pod=1.2.3.4:80,1.2.3.5:0",
        ] {
            assert_eq!(
                Target::parse(bad),
                Err(LoadError::BadTarget(bad.into())),
                "{bad}"
            );
        }
        let msg = Target::parse("pod=1.2.3.4").unwrap_err().to_string();
        assert!(msg.contains("NAME=IP:PORT[,IP:PORT...]"), "{msg}");
        let many: Vec<String> = (1..=300).map(|p| format!("10.0.0.1:{p}")).collect();
        let e = Target::parse(&format!("pods={}", many.join(","))).unwrap_err();
        assert_eq!(e, LoadError::TooManyAddresses("pods".into(), 300));
        assert!(e.to_string().contains("at most 256"), "{e}");
        // A config built in code is checked too.
        let empty = LoadConfig::new(vec![Target {
            name: "pods".into(),
            addrs: vec![],
        }]);
        assert!(matches!(empty.validate(), Err(LoadError::BadTarget(_))));
    }

    #[test]
    fn even_rounds_reverse_the_order() {
        assert_eq!(round_order(2, 1), [0, 1]);
        assert_eq!(round_order(2, 2), [1, 0]);
        assert_eq!(round_order(2, 3), [0, 1]);
        assert_eq!(round_order(3, 4), [2, 1, 0]);
        assert_eq!(round_order(1, 2), [0]);
        // Over the rounds each target runs right after the other one as often (ABBA).
        let seq: Vec<usize> = (1..=4).flat_map(|r| round_order(2, r)).collect();
        assert_eq!(seq, [0, 1, 1, 0, 0, 1, 1, 0]);
    }

    #[test]
    fn load_args_round_trip() {
        let cfg = LoadConfig::from_args(&args(&[
            "--connections",
            "4",
            "--duration=3s",
            "--rounds",
            "2",
            "--path",
            "/x",
            "pod=10.0.0.5:80,10.0.0.6:80",
            "clusterip=10.96.0.10:80",
        ]))
        .unwrap();
        assert_eq!(cfg.connections, 4);
        assert_eq!(cfg.duration, Duration::from_secs(3));
        assert_eq!(cfg.rounds, 2);
        assert_eq!(cfg.path, "/x");
        assert_eq!(cfg.targets.len(), 2);
        assert_eq!(cfg.slice(), Duration::from_millis(750));
        assert_eq!(cfg.total(), Duration::from_secs(6));
        assert_eq!(LoadConfig::from_args(&cfg.to_args()), Ok(cfg));
        let d = LoadConfig::from_args(&args(&["pod=10.0.0.5:80"])).unwrap();
        assert_eq!(
            (d.connections, d.duration, d.rounds, d.path.as_str()),
            (8, Duration::from_secs(6), 3, "/")
        );
    }

    #[test]
    fn bad_load_args() {
        let t = "pod=10.0.0.5:80";
        assert_eq!(LoadConfig::from_args(&[]), Err(LoadError::NoTargets));
        assert_eq!(
            LoadConfig::from_args(&args(&["-c", "0", t])),
            Err(LoadError::BadConnections("0".into()))
        );
        assert_eq!(
            LoadConfig::from_args(&args(&["-c", "many", t])),
            Err(LoadError::BadConnections("many".into()))
        );
        assert_eq!(
            LoadConfig::from_args(&args(&["--rounds", "0", t])),
            Err(LoadError::BadRounds("0".into()))
        );
        assert!(matches!(
            LoadConfig::from_args(&args(&["-d", "100ms", t])),
            Err(LoadError::DurationOutOfRange { .. })
        ));
        assert!(matches!(
            LoadConfig::from_args(&args(&["-d", "1h", t])),
            Err(LoadError::DurationOutOfRange { .. })
        ));
        assert_eq!(
            LoadConfig::from_args(&args(&["--path", "x", t])),
            Err(LoadError::BadPath("x".into()))
        );
        assert_eq!(
            LoadConfig::from_args(&args(&[t, "--duration"])),
            Err(LoadError::MissingValue("--duration".into()))
        );
        assert_eq!(
            LoadConfig::from_args(&args(&["--fast", t])),
            Err(LoadError::UnknownArgument("--fast".into()))
        );
        let msg = LoadConfig::from_args(&args(&["-d", "soon", t]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("6s, 500ms or 1m"), "{msg}");
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn rounds_aggregate() {
        let mut total = PhaseStats::default();
        total.merge(PhaseStats {
            ok: 3,
            failed: 0,
            elapsed: Duration::from_secs(1),
            latencies_us: vec![30, 10, 20],
            first_error: None,
        });
        total.merge(PhaseStats {
            ok: 1,
            failed: 2,
            elapsed: Duration::from_secs(1),
            latencies_us: vec![40],
            first_error: Some("connect: refused".into()),
        });
        total.merge(PhaseStats {
            ok: 0,
            failed: 1,
            elapsed: Duration::from_secs(2),
            latencies_us: vec![],
            first_error: Some("later".into()),
        });
        let r = total.summary();
        assert_eq!((r.ok, r.failed), (4, 3));
        assert!((r.seconds - 4.0).abs() < 1e-9);
        assert!((r.per_second - 1.0).abs() < 1e-9);
        assert_eq!(
            (r.p50_us, r.p90_us, r.p99_us),
            (Some(20), Some(40), Some(40))
        );
        assert_eq!(r.first_error.as_deref(), Some("connect: refused"));
        let empty = PhaseStats::default().summary();
        assert_eq!((empty.per_second, empty.p50_us), (0.0, None));
    }

    #[test]
    fn json_lines_round_trip() {
        let r = TargetResult {
            target: "pod".into(),
            addresses: vec![
                "10.0.0.5:80".parse().unwrap(),
                "10.0.0.6:80".parse().unwrap(),
            ],
            connections: PhaseResult {
                ok: 10,
                failed: 0,
                seconds: 1.0,
                per_second: 10.0,
                p50_us: Some(100),
                p90_us: Some(200),
                p99_us: Some(300),
                first_error: None,
            },
            requests: PhaseResult {
                ok: 0,
                failed: 2,
                seconds: 0.5,
                per_second: 0.0,
                p50_us: None,
                p90_us: None,
                p99_us: None,
                first_error: Some("HTTP status 404 \"x\"\n".into()),
            },
        };
        let line = Event::Result(&r).to_json();
        // The shape `kctl bench` and its `-o json` readers rely on.
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "result",
                "target": "pod",
                "addresses": ["10.0.0.5:80", "10.0.0.6:80"],
                "connections": {"ok": 10, "failed": 0, "seconds": 1.0, "per_second": 10.0,
                                "p50_us": 100, "p90_us": 200, "p99_us": 300, "first_error": null},
                "requests": {"ok": 0, "failed": 2, "seconds": 0.5, "per_second": 0.0,
                             "p50_us": null, "p90_us": null, "p99_us": null,
                             "first_error": "HTTP status 404 \"x\"\n"},
            })
        );
        assert!(!line.contains('\n'), "one line: {line}");
        assert_eq!(Line::parse(&line), Some(Line::Result(r)));

        let p = Progress {
            target: "clusterip".into(),
            phase: Phase::Requests,
            round: 2,
            rounds: 3,
            slice: 6,
            slices: 12,
            ok: 10,
            failed: 1,
            per_second: 12345.5,
        };
        let line = Event::Progress(&p).to_json();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "progress", "target": "clusterip", "phase": "requests",
                               "round": 2, "rounds": 3, "slice": 6, "slices": 12,
                               "ok": 10, "failed": 1, "per_second": 12345.5})
        );
        assert_eq!(Line::parse(&format!("  {line}\n")), Some(Line::Progress(p)));
        // A rate is never NaN, but if it were the line would still be JSON.
        let nan = Progress {
            per_second: f64::NAN,
            ..Progress {
                target: "pod".into(),
                phase: Phase::Connections,
                round: 1,
                rounds: 1,
                slice: 1,
                slices: 2,
                ok: 0,
                failed: 0,
                per_second: 0.0,
            }
        };
        let v: serde_json::Value = serde_json::from_str(&Event::Progress(&nan).to_json()).unwrap();
        assert_eq!(v["per_second"], serde_json::Value::Null);
    }

    #[test]
    fn other_lines_are_not_engine_lines() {
        assert_eq!(Line::parse("kecho: load: 8 connections"), None);
        assert_eq!(Line::parse("{not json"), None);
        assert_eq!(Line::parse(r#"{"type":"other","target":"pod"}"#), None);
        assert_eq!(Line::parse(r#"{"type":"result","target":"pod"}"#), None);
        assert_eq!(Line::parse(""), None);
    }

    /// A tiny HTTP/1.0 server on loopback: answers every request with `status` and closes.
    fn serve(status: &'static str) -> SocketAddr {
        serve_counting(status).0
    }

    /// [`serve`], counting the connections it accepted.
    fn serve_counting(status: &'static str) -> (SocketAddr, std::sync::Arc<AtomicU64>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = std::sync::Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                count.fetch_add(1, Ordering::Relaxed);
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(
                        format!("HTTP/1.0 {status}\r\nContent-Length: 2\r\n\r\nok").as_bytes(),
                    );
                });
            }
        });
        (addr, accepted)
    }

    #[test]
    fn connections_take_the_addresses_in_turn() {
        let servers: Vec<_> = (0..3).map(|_| serve_counting("200 OK")).collect();
        let mut cfg = LoadConfig::new(vec![Target {
            name: "pods".into(),
            addrs: servers.iter().map(|(a, _)| *a).collect(),
        }]);
        cfg.connections = 3;
        cfg.duration = Duration::from_millis(400);
        cfg.rounds = 1;
        cfg.validate().unwrap();
        let results = run(&cfg, &mut |_| {});
        let r = &results[0];
        assert_eq!(r.addresses.len(), 3);
        assert!(r.requests.ok > 30 && r.requests.failed == 0, "{r:?}");
        // Round-robin: every server got a third of the connections, give or take the
        // few in flight when a slice ended.
        let counts: Vec<u64> = servers
            .iter()
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        assert!(
            total >= r.connections.ok + r.requests.ok,
            "{counts:?} {r:?}"
        );
        for n in &counts {
            assert!(n.abs_diff(total / 3) <= 8, "uneven spread {counts:?}");
        }
    }

    #[test]
    fn loopback_run_measures_and_reports() {
        let good = serve("200 OK");
        let missing = serve("404 Not Found");
        // Nothing listens there: bind, learn the port, close.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut cfg = LoadConfig::new(vec![
            Target::single("good", good),
            Target::single("missing", missing),
            Target::single("closed", closed),
        ]);
        cfg.connections = 2;
        cfg.duration = Duration::from_millis(800);
        cfg.rounds = 2;
        cfg.validate().unwrap();
        let mut progress = Vec::new();
        let mut finals = Vec::new();
        let results = run(&cfg, &mut |e| match e {
            Event::Progress(p) => progress.push(p.clone()),
            Event::Result(r) => finals.push(r.clone()),
        });
        assert_eq!(results.len(), 3);
        assert_eq!(finals, results);
        // Every slice reported at least once, in order, interleaving targets by round.
        let slices: Vec<u32> = progress.iter().map(|p| p.slice).collect();
        assert!(slices.windows(2).all(|w| w[0] <= w[1]), "{slices:?}");
        assert_eq!(slices.last(), Some(&12));
        assert_eq!(progress.last().unwrap().round, 2);
        // The slices' targets: in order in round 1, reversed in round 2.
        let mut order: Vec<(u32, String)> = progress
            .iter()
            .map(|p| (p.slice, p.target.clone()))
            .collect();
        order.dedup();
        let names: Vec<&str> = order.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "good", "good", "missing", "missing", "closed", "closed", // round 1
                "closed", "closed", "missing", "missing", "good", "good", // round 2
            ]
        );

        let [g, m, c] = &results[..] else {
            unreachable!()
        };
        assert!(g.connections.ok > 10 && g.connections.failed == 0, "{g:?}");
        assert!(g.requests.ok > 10 && g.requests.failed == 0, "{g:?}");
        assert!(g.requests.p50_us.is_some() && g.requests.p50_us <= g.requests.p99_us);
        assert!((g.requests.seconds - 0.4).abs() < 0.3, "{g:?}");
        // 404s are failed requests (the connections themselves succeed).
        assert!(
            m.connections.ok > 0 && m.requests.ok == 0 && m.requests.failed > 0,
            "{m:?}"
        );
        assert_eq!(m.requests.first_error.as_deref(), Some("HTTP status 404"));
        assert!(c.connections.ok == 0 && c.connections.failed > 0, "{c:?}");
        assert!(
            c.connections
                .first_error
                .as_deref()
                .is_some_and(|e| e.starts_with("connect: ")),
            "{c:?}"
        );
    }
}
