//! Startup, liveness and readiness probes: running one check (httpGet, tcpSocket, exec) and
//! the per-container state machine that turns results into "started", "ready" and "restart".

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::runtime::PodRuntime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// Consecutive results of one probe and when it runs next.
#[derive(Debug, Clone)]
pub struct ProbeState {
    successes: i32,
    failures: i32,
    pub next_due: Instant,
    /// The probe's verdict once a threshold was crossed.
    pub passing: Option<bool>,
}

/// A verdict change worth acting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    Passed,
    Failed,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default)).unwrap_or(0))
}

impl ProbeState {
    pub fn new(probe: &Probe, started: Instant) -> Self {
        Self {
            successes: 0,
            failures: 0,
            next_due: started + secs(probe.initial_delay_seconds, 0),
            passing: None,
        }
    }

    /// Records one result at `now` and schedules the next run.
    pub fn record(&mut self, probe: &Probe, ok: bool, now: Instant) -> Verdict {
        self.next_due = now + secs(probe.period_seconds, 10).max(Duration::from_secs(1));
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= probe.success_threshold.unwrap_or(1).max(1)
                && self.passing != Some(true)
            {
                self.passing = Some(true);
                return Verdict::Passed;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= probe.failure_threshold.unwrap_or(3).max(1)
                && self.passing != Some(false)
            {
                self.passing = Some(false);
                return Verdict::Failed;
            }
        }
        Verdict::Unchanged
    }
}

/// The probes of one running container (keyed by its Docker id by the caller: a new attempt
/// starts over).
#[derive(Debug, Clone)]
pub struct Probes {
    pub startup: Option<ProbeState>,
    pub liveness: Option<ProbeState>,
    pub readiness: Option<ProbeState>,
}

impl Probes {
    pub fn new(c: &Container, started: Instant) -> Self {
        Self {
            startup: c
                .startup_probe
                .as_ref()
                .map(|p| ProbeState::new(p, started)),
            liveness: c
                .liveness_probe
                .as_ref()
                .map(|p| ProbeState::new(p, started)),
            readiness: c
                .readiness_probe
                .as_ref()
                .map(|p| ProbeState::new(p, started)),
        }
    }

    /// Started: no startup probe, or it passed. Liveness and readiness wait for it.
    pub fn started(&self) -> bool {
        self.startup
            .as_ref()
            .is_none_or(|s| s.passing == Some(true))
    }

    pub fn ready(&self) -> bool {
        self.started()
            && self
                .readiness
                .as_ref()
                .is_none_or(|s| s.passing == Some(true))
    }

    /// Probes due at `now`, in the order they may run.
    pub fn due(&self, now: Instant) -> Vec<Kind> {
        let mut out = Vec::new();
        let due = |s: &Option<ProbeState>| s.as_ref().is_some_and(|s| s.next_due <= now);
        if !self.started() {
            if due(&self.startup) {
                out.push(Kind::Startup);
            }
            return out;
        }
        if due(&self.liveness) {
            out.push(Kind::Liveness);
        }
        if due(&self.readiness) {
            out.push(Kind::Readiness);
        }
        out
    }

    /// The earliest time a probe is due.
    pub fn next_due(&self) -> Option<Instant> {
        let states: Vec<&ProbeState> = if self.started() {
            [&self.liveness, &self.readiness]
                .into_iter()
                .flatten()
                .collect()
        } else {
            self.startup.iter().collect()
        };
        states.iter().map(|s| s.next_due).min()
    }

    pub fn state_mut(&mut self, kind: Kind) -> Option<&mut ProbeState> {
        match kind {
            Kind::Startup => self.startup.as_mut(),
            Kind::Liveness => self.liveness.as_mut(),
            Kind::Readiness => self.readiness.as_mut(),
        }
    }
}

pub fn spec(c: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => c.startup_probe.as_ref(),
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => c.readiness_probe.as_ref(),
    }
}

/// A probe port: a number, or the name of one of the container's ports.
pub fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("port {name:?} is not a named port of the container"))
        }
    }
}

/// Runs one check. Ok when the probe succeeded, Err with the reason otherwise.
pub async fn check(
    probe: &Probe,
    c: &Container,
    pod_ip: &str,
    runtime: &impl PodRuntime,
    container_id: &str,
) -> Result<(), String> {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    let run = async {
        if let Some(h) = &probe.http_get {
            let port = resolve_port(c, &h.port)?;
            if h.scheme.as_deref().is_some_and(|s| s != "HTTP") {
                return Err(format!(
                    "probe scheme {:?} is not supported (HTTP only)",
                    h.scheme.as_deref().unwrap_or_default()
                ));
            }
            let host = h.host.as_deref().unwrap_or(pod_ip);
            let headers: Vec<(String, String)> = h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            http_get(host, port, h.path.as_deref().unwrap_or("/"), &headers).await
        } else if let Some(t) = &probe.tcp_socket {
            let port = resolve_port(c, &t.port)?;
            let host = t.host.as_deref().unwrap_or(pod_ip);
            TcpStream::connect((host, port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        } else if let Some(e) = &probe.exec {
            let cmd = e.command.clone().unwrap_or_default();
            if cmd.is_empty() {
                return Err("exec probe without a command".into());
            }
            match runtime.exec(container_id, cmd).await {
                Ok((0, _)) => Ok(()),
                Ok((code, out)) => Err(format!(
                    "command exited with {code}: {}",
                    out.trim().chars().take(200).collect::<String>()
                )),
                Err(e) => Err(format!("exec failed: {e:#}")),
            }
        } else {
            Err("probe has no supported handler (httpGet, tcpSocket or exec)".into())
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// An HTTP/1.1 GET; success is a status in 200..400, as for Kubernetes' probes.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))?;
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": dial tcp {addr}: {e}"))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.extend([k.as_str(), ": ", v.as_str(), "\r\n"]);
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 512];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let code = status_code(&buf[..n]).ok_or("malformed HTTP response")?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

fn status_code(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    fn probe(failure: i32, success: i32) -> Probe {
        Probe {
            failure_threshold: Some(failure),
            success_threshold: Some(success),
            period_seconds: Some(2),
            initial_delay_seconds: Some(5),
            ..Default::default()
        }
    }

    #[test]
    fn thresholds_decide_the_verdict() {
        let p = probe(3, 2);
        let t = Instant::now();
        let mut s = ProbeState::new(&p, t);
        assert_eq!(s.next_due, t + Duration::from_secs(5), "initial delay");
        assert_eq!(s.record(&p, true, t), Verdict::Unchanged);
        assert_eq!(s.record(&p, true, t), Verdict::Passed);
        assert_eq!(s.next_due, t + Duration::from_secs(2));
        assert_eq!(s.record(&p, true, t), Verdict::Unchanged);
        assert_eq!(s.record(&p, false, t), Verdict::Unchanged);
        assert_eq!(s.record(&p, false, t), Verdict::Unchanged);
        assert_eq!(s.record(&p, false, t), Verdict::Failed);
        assert_eq!(s.passing, Some(false));
        assert_eq!(s.record(&p, false, t), Verdict::Unchanged);
        assert_eq!(s.record(&p, true, t), Verdict::Unchanged);
        assert_eq!(s.record(&p, true, t), Verdict::Passed);
    }

    #[test]
    fn startup_gates_the_other_probes() {
        let c = Container {
            name: "c".into(),
            startup_probe: Some(probe(3, 1)),
            readiness_probe: Some(probe(3, 1)),
            ..Default::default()
        };
        let t = Instant::now();
        let later = t + Duration::from_mins(1);
        let mut p = Probes::new(&c, t);
        assert!(!p.started() && !p.ready());
        assert_eq!(p.due(later), vec![Kind::Startup]);
        let sp = c.startup_probe.clone().unwrap();
        p.state_mut(Kind::Startup).unwrap().record(&sp, true, t);
        assert!(p.started() && !p.ready());
        assert_eq!(p.due(later), vec![Kind::Readiness]);
        let without = Probes::new(&Container::default(), t);
        assert!(without.started() && without.ready());
        assert_eq!(without.next_due(), None);
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&c, &IntOrString::Int(80)), Ok(80));
        assert_eq!(
            resolve_port(&c, &IntOrString::String("http".into())),
            Ok(8080)
        );
        assert!(resolve_port(&c, &IntOrString::String("grpc".into())).is_err());
        assert!(resolve_port(&c, &IntOrString::Int(70000)).is_err());
        assert!(resolve_port(&c, &IntOrString::Int(0)).is_err());
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 500 x"), Some(500));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code(b""), None);
    }

    #[tokio::test]
    async fn http_get_judges_status_codes() {
        async fn serve(reply: &'static str) -> u16 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                s.write_all(reply.as_bytes()).await.unwrap();
            });
            port
        }
        let ok = serve("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(http_get("127.0.0.1", ok, "/", &[]).await, Ok(()));
        let bad = serve("HTTP/1.1 503 Unavailable\r\n\r\n").await;
        assert_eq!(
            http_get("127.0.0.1", bad, "/healthz", &[]).await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
    }
}
