//! Request loops against a service while something happens to the cluster: a shell loop of
//! curl calls, one new connection each, run in whatever context its `sh` command starts in
//! (the host's socket-LB cgroup or the client namespace). Every answer or failure is kept
//! with the time it came.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::unique;

/// One shell command that prints the page `url` answers, or `FAILED rc=N <curl's error>`.
pub fn curl_line(url: &str) -> String {
    format!(
        r#"out=$(curl -sS --fail --max-time 3 {url} 2>&1) && echo "$out" || echo "FAILED rc=$? $(echo $out)""#
    )
}

/// The pod named on an httpd page (`<p>pod: NAME</p>`).
pub fn page_pod(line: &str) -> Option<&str> {
    let rest = line.split("<p>pod: ").nth(1)?;
    Some(rest.split('<').next()?.trim())
}

pub struct RequestLoop {
    pub what: String,
    child: Child,
    stop_file: PathBuf,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl RequestLoop {
    /// Starts `sh -c` looping over [`curl_line`] with `pause` between requests until stopped
    /// (a stop file in `dir`).
    pub fn start(mut sh: Command, url: &str, what: &str, dir: &Path, pause: Duration) -> Self {
        let stop_file = dir.join(unique("stop"));
        let script = format!(
            r#"while [ ! -e "{}" ]; do {}; sleep {}; done"#,
            stop_file.display(),
            curl_line(url),
            pause.as_secs_f64()
        );
        let mut child = sh
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a request loop");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Self {
            what: what.to_string(),
            child,
            stop_file,
            lines,
            reader: Some(reader),
        }
    }

    /// Every line printed so far, each with when it came.
    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines printed since `since`, each with when it came: a page or a `FAILED` line.
    pub fn lines_since(&self, since: Instant) -> Vec<(Instant, String)> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|(t, _)| *t >= since).cloned().collect()
    }

    /// Stops the loop after its current request and waits for it; false if it had to be
    /// killed after 10 s.
    pub fn stop(&mut self) -> bool {
        let _ = std::fs::write(&self.stop_file, b"");
        let started = Instant::now();
        let mut stopped = false;
        while started.elapsed() < Duration::from_secs(10) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                stopped = true;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        stopped
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stop_file);
    }
}
