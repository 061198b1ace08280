//! Query parameters of the log and exec endpoints. Parsed strictly: a value the kubelet cannot
//! honour is a 400 naming the parameter, never a silent default.

use crate::error::HttpError;

/// The decoded `key=value` pairs of a query string, in order (exec repeats `command`).
pub fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

struct Params<'a>(&'a [(String, String)]);

impl Params<'_> {
    /// The first value of `key`, as Go's `url.Values.Get` (and Kubernetes' conversion of
    /// query parameters) takes it.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Go's `strconv.ParseBool` spellings, which Go clients produce; a bare `?follow` (empty
    /// value) means true, as for a flag.
    fn flag(&self, key: &str) -> Result<bool, HttpError> {
        match self.get(key) {
            Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            None | Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(other) => Err(HttpError::bad_request(format!(
                "invalid value {other:?} for query parameter {key}: must be true or false"
            ))),
        }
    }

    /// An integer of at least `min`, if given.
    fn int(&self, key: &str, min: i64) -> Result<Option<i64>, HttpError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.parse::<i64>() {
            Ok(n) if n >= min => Ok(Some(n)),
            _ => Err(HttpError::bad_request(format!(
                "invalid value {v:?} for query parameter {key}: must be an integer >= {min}"
            ))),
        }
    }
}

/// Where the log starts in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// `sinceSeconds`: relative to the time of the request.
    Seconds(i64),
    /// `sinceTime`: an RFC 3339 timestamp.
    Time(jiff::Timestamp),
}

/// `GET /containerLogs/...` options (Kubernetes' PodLogOptions, as the kubelet receives them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub since: Option<Since>,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, HttpError> {
        let p = Params(pairs);
        let since_seconds = p.int("sinceSeconds", 1)?;
        let since_time = p
            .get("sinceTime")
            .map(|t| {
                t.parse::<jiff::Timestamp>().map_err(|e| {
                    HttpError::bad_request(format!(
                        "invalid value {t:?} for query parameter sinceTime: {e}"
                    ))
                })
            })
            .transpose()?;
        let since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(HttpError::bad_request(
                    "at most one of sinceTime or sinceSeconds may be specified",
                ));
            }
            (Some(s), None) => Some(Since::Seconds(s)),
            (None, Some(t)) => Some(Since::Time(t)),
            (None, None) => None,
        };
        // The minimums make the conversions below lossless.
        let unsigned = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(Self {
            follow: p.flag("follow")?,
            previous: p.flag("previous")?,
            timestamps: p.flag("timestamps")?,
            tail_lines: p.int("tailLines", 0)?.map(unsigned),
            since,
            limit_bytes: p.int("limitBytes", 1)?.map(unsigned),
        })
    }

    /// Docker's `since` (Unix seconds; 0 = from the start) for a request made at `now`.
    pub fn docker_since(&self, now: jiff::Timestamp) -> i32 {
        let secs = match self.since {
            None => return 0,
            Some(Since::Seconds(s)) => now.as_second().saturating_sub(s),
            Some(Since::Time(t)) => t.as_second(),
        };
        // Docker's API takes an i32 here; a start before 1970 is the whole log, after 2038 none.
        i32::try_from(secs.max(0)).unwrap_or(i32::MAX)
    }

    /// Docker's `tail`: a line count or `all`.
    pub fn docker_tail(&self) -> String {
        self.tail_lines
            .map_or_else(|| "all".to_string(), |n| n.to_string())
    }
}

/// `/exec/...` options (Kubernetes' PodExecOptions, as the kubelet receives them).
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "Kubernetes' PodExecOptions: one flag per stream and the terminal"
)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, HttpError> {
        let p = Params(pairs);
        let command = p.all("command");
        if command.is_empty() {
            return Err(HttpError::bad_request(
                "missing command: give the command and its arguments as repeated command=... parameters",
            ));
        }
        let AttachOptions {
            stdin,
            stdout,
            stderr,
            tty,
        } = AttachOptions::parse(pairs)?;
        Ok(Self {
            command,
            stdin,
            stdout,
            stderr,
            tty,
        })
    }
}

/// `/attach/...` options (Kubernetes' PodAttachOptions, as the kubelet receives them): the
/// streams alone, as for exec, with no command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "Kubernetes' PodAttachOptions: one flag per stream and the terminal"
)]
pub struct AttachOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl AttachOptions {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, HttpError> {
        let p = Params(pairs);
        let (stdin, stdout, mut stderr, tty) = (
            p.flag("stdin")?,
            p.flag("stdout")?,
            p.flag("stderr")?,
            p.flag("tty")?,
        );
        if !stdin && !stdout && !stderr {
            return Err(HttpError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        // A terminal has one output stream; like the kubelet, drop stderr rather than fail.
        if tty {
            stderr = false;
        }
        Ok(Self {
            stdin,
            stdout,
            stderr,
            tty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn q(s: &str) -> Vec<(String, String)> {
        pairs(Some(s))
    }

    #[test]
    fn decodes_pairs_in_order() {
        assert_eq!(
            q("command=sh&command=-c&command=echo+a%26b&&x"),
            [
                ("command".to_string(), "sh".to_string()),
                ("command".into(), "-c".into()),
                ("command".into(), "echo a&b".into()),
                ("x".into(), String::new()),
            ]
        );
        assert!(pairs(None).is_empty());
    }

    #[test]
    fn log_options() {
        assert_eq!(LogOptions::parse(&q("")).unwrap(), LogOptions::default());
        let o = LogOptions::parse(&q(
            "follow=true&previous=1&timestamps=True&tailLines=0&limitBytes=10&sinceSeconds=5",
        ))
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                previous: true,
                timestamps: true,
                tail_lines: Some(0),
                since: Some(Since::Seconds(5)),
                limit_bytes: Some(10),
            }
        );
        let now: jiff::Timestamp = "2024-05-01T00:00:10Z".parse().unwrap();
        let secs = i32::try_from(now.as_second()).unwrap();
        assert_eq!(o.docker_since(now), secs - 5);
        assert_eq!(o.docker_tail(), "0");
        assert_eq!(LogOptions::default().docker_tail(), "all");
        assert_eq!(LogOptions::default().docker_since(now), 0);

        let t = LogOptions::parse(&q("sinceTime=2024-05-01T00%3A00%3A00Z&follow=false")).unwrap();
        assert!(!t.follow);
        assert_eq!(t.docker_since(now), secs - 10);
        let old = LogOptions::parse(&q("sinceTime=1900-01-01T00:00:00Z")).unwrap();
        assert_eq!(old.docker_since(now), 0);
    }

    #[test]
    fn bad_log_options_are_400s_naming_the_parameter() {
        for (query, needle) in [
            ("tailLines=-3", "tailLines"),
            ("tailLines=ten", "tailLines"),
            ("follow=maybe", "follow"),
            ("previous=yes", "previous"),
            ("limitBytes=0", "limitBytes"),
            ("sinceSeconds=0", "sinceSeconds"),
            ("sinceTime=yesterday", "sinceTime"),
            (
                "sinceSeconds=5&sinceTime=2024-05-01T00:00:00Z",
                "at most one of sinceTime or sinceSeconds",
            ),
        ] {
            let err = LogOptions::parse(&q(query)).unwrap_err();
            assert_eq!(err.code, StatusCode::BAD_REQUEST, "{query}");
            assert!(err.message.contains(needle), "{query}: {}", err.message);
        }
    }

    #[test]
    fn exec_options() {
        let o = ExecOptions::parse(&q(
            "command=sh&command=-c&command=exit+3&stdin=true&stdout=true&stderr=true",
        ))
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "exit 3"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        // kube-rs starts its query with `&`.
        let t = ExecOptions::parse(&q("&stdout=true&stderr=true&tty=true&command=ls")).unwrap();
        assert!(t.tty && t.stdout && !t.stderr, "tty drops stderr");
    }

    #[test]
    fn bad_exec_options() {
        let none = ExecOptions::parse(&q("stdout=true")).unwrap_err();
        assert_eq!(none.code, StatusCode::BAD_REQUEST);
        assert!(none.message.contains("missing command"), "{}", none.message);
        let streams = ExecOptions::parse(&q("command=ls")).unwrap_err();
        assert_eq!(
            streams.message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        let flag = ExecOptions::parse(&q("command=ls&stdout=maybe")).unwrap_err();
        assert!(flag.message.contains("stdout"), "{}", flag.message);
    }

    #[test]
    fn attach_options() {
        let o = AttachOptions::parse(&q("stdin=true&stdout=true&stderr=true")).unwrap();
        assert_eq!(
            o,
            AttachOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false
            }
        );
        // A command is no attach parameter: ignored, as the kubelet ignores unknown ones.
        let t = AttachOptions::parse(&q("stdout=1&stderr=1&tty=true&command=ls")).unwrap();
        assert!(
            t.tty && t.stdout && !t.stderr && !t.stdin,
            "tty drops stderr"
        );
        let none = AttachOptions::parse(&q("tty=true")).unwrap_err();
        assert_eq!(none.code, StatusCode::BAD_REQUEST);
        assert_eq!(
            none.message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        let flag = AttachOptions::parse(&q("stdin=yes")).unwrap_err();
        assert!(flag.message.contains("stdin"), "{}", flag.message);
    }
}
