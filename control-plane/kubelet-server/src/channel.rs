//! Kubernetes' remotecommand channel protocol over WebSocket (the kubelet side of
//! `kubectl exec`): every message carries one stream, named by its first byte.
//!
//! - `v5.channel.k8s.io` (kubectl ≥ 1.29, kube-rs first choice) and `v4.channel.k8s.io`:
//!   binary messages, a JSON `metav1.Status` on the error channel. v5 adds the close signal
//!   `[255, channel]`, with which a client says its stdin ended.
//! - `channel.k8s.io` (v1–v3): the same framing, but the error channel carries only a failure
//!   message (no exit code).
//! - the `base64.` variants of both: text messages, the channel as an ASCII digit followed by
//!   the base64 of the payload (for browsers).

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` half-closes that channel.
pub const CLOSE: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V4,
    V4Base64,
    V1,
    V1Base64,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::V5,
        Protocol::V4,
        Protocol::V4Base64,
        Protocol::V1,
        Protocol::V1Base64,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V4Base64 => "v4.base64.channel.k8s.io",
            Protocol::V1 => "channel.k8s.io",
            Protocol::V1Base64 => "base64.channel.k8s.io",
        }
    }

    /// The first protocol the client offers (in its order of preference) that we speak.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        offered
            .into_iter()
            .find_map(|o| Self::ALL.into_iter().find(|p| p.name() == o.trim()))
    }

    fn base64(self) -> bool {
        matches!(self, Protocol::V4Base64 | Protocol::V1Base64)
    }

    /// v4 and later report the outcome as a JSON Status, v5 and later know the close signal.
    fn json_status(self) -> bool {
        !matches!(self, Protocol::V1 | Protocol::V1Base64)
    }

    /// One message on `channel`.
    pub fn frame(self, channel: u8, payload: &[u8]) -> Message {
        if self.base64() {
            let mut text = String::with_capacity(1 + payload.len().div_ceil(3) * 4);
            text.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(payload, &mut text);
            Message::text(text)
        } else {
            let mut bin = Vec::with_capacity(1 + payload.len());
            bin.push(channel);
            bin.extend_from_slice(payload);
            Message::binary(bin)
        }
    }

    /// What a client message means. Control frames and channels a client has no business
    /// writing to are `Ignore`d; a malformed message is an error (the caller logs it).
    pub fn parse(self, msg: &Message) -> Result<Input, FrameError> {
        let (channel, payload): (u8, Bytes) = match msg {
            Message::Binary(b) if !self.base64() => match b.split_first() {
                None => return Ok(Input::Ignore),
                Some((ch, _)) => (*ch, b.slice(1..)),
            },
            Message::Text(t) if self.base64() => {
                let t = t.as_str();
                let Some(first) = t.bytes().next() else {
                    return Ok(Input::Ignore);
                };
                let channel = first.wrapping_sub(b'0');
                if channel > 9 {
                    return Err(FrameError::Channel(first));
                }
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&t[1..])
                    .map_err(|e| FrameError::Base64(e.to_string()))?;
                (channel, Bytes::from(data))
            }
            Message::Binary(_) | Message::Text(_) => return Err(FrameError::WrongType),
            _ => return Ok(Input::Ignore),
        };
        Ok(match channel {
            STDIN => Input::Stdin(payload),
            RESIZE => {
                let size: TerminalSize = serde_json::from_slice(&payload)
                    .map_err(|e| FrameError::Resize(e.to_string()))?;
                Input::Resize(size)
            }
            CLOSE if self == Protocol::V5 && payload.first() == Some(&STDIN) => Input::CloseStdin,
            _ => Input::Ignore,
        })
    }

    /// The error-channel payload for `outcome` of `command`, if the protocol sends one.
    pub fn status(self, outcome: &Outcome, command: &[String]) -> Option<Vec<u8>> {
        let message = outcome.message(command);
        if !self.json_status() {
            return message.map(String::into_bytes);
        }
        let status = match outcome {
            Outcome::Success => json!({"metadata": {}, "status": "Success"}),
            Outcome::ExitCode(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(_) => json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "code": 500,
            }),
        };
        Some(status.to_string().into_bytes())
    }
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin(Bytes),
    /// v5 close signal for stdin.
    CloseStdin,
    Resize(TerminalSize),
    Ignore,
}

/// The resize channel's payload: Go's `remotecommand.TerminalSize`, which has no JSON tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("binary message on a base64 subprotocol or text on a binary one")]
    WrongType,
    #[error("bad channel byte {0:#x}")]
    Channel(u8),
    #[error("bad base64 payload: {0}")]
    Base64(String),
    #[error("bad terminal size: {0}")]
    Resize(String),
}

/// How an exec session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ExitCode(i64),
    /// The command could not be run or followed (Docker failed).
    Failed(String),
}

impl Outcome {
    /// Kubernetes' message for a failure (the exit-code wording is the kubelet's, wrapping
    /// the container runtime's `error executing command [..], exit code N`).
    fn message(&self, command: &[String]) -> Option<String> {
        match self {
            Outcome::Success => None,
            Outcome::ExitCode(code) => Some(format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            )),
            Outcome::Failed(m) => Some(m.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn negotiates_in_the_clients_order() {
        assert_eq!(
            Protocol::negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"]),
            Some(Protocol::V5)
        );
        assert_eq!(
            Protocol::negotiate(["v4.channel.k8s.io", "v5.channel.k8s.io"]),
            Some(Protocol::V4)
        );
        assert_eq!(
            Protocol::negotiate(["SPDY/3.1", " base64.channel.k8s.io"]),
            Some(Protocol::V1Base64)
        );
        assert_eq!(Protocol::negotiate(["v6.channel.k8s.io"]), None);
        assert_eq!(Protocol::negotiate([]), None);
    }

    #[test]
    fn binary_frames() {
        let p = Protocol::V5;
        assert_eq!(p.frame(STDOUT, b"hi"), Message::binary(vec![1, b'h', b'i']));
        assert_eq!(p.frame(STDOUT, b""), Message::binary(vec![1]));
        assert_eq!(
            p.parse(&Message::binary(vec![0, b'x'])),
            Ok(Input::Stdin(Bytes::from_static(b"x")))
        );
        assert_eq!(
            p.parse(&Message::binary(vec![255, 0])),
            Ok(Input::CloseStdin)
        );
        assert_eq!(p.parse(&Message::binary(vec![255, 1])), Ok(Input::Ignore));
        // v4 has no close signal: the bytes are an ignored channel.
        assert_eq!(
            Protocol::V4.parse(&Message::binary(vec![255, 0])),
            Ok(Input::Ignore)
        );
        assert_eq!(p.parse(&Message::binary(vec![])), Ok(Input::Ignore));
        assert_eq!(p.parse(&Message::binary(vec![1, 2])), Ok(Input::Ignore));
        assert_eq!(
            p.parse(&Message::binary(
                b"\x04{\"Width\":80,\"Height\":24}".to_vec()
            )),
            Ok(Input::Resize(TerminalSize {
                width: 80,
                height: 24
            }))
        );
        assert!(matches!(
            p.parse(&Message::binary(b"\x04{\"Width\":-1}".to_vec())),
            Err(FrameError::Resize(_))
        ));
        assert_eq!(p.parse(&Message::text("0abc")), Err(FrameError::WrongType));
        assert_eq!(p.parse(&Message::Ping(Bytes::new())), Ok(Input::Ignore));
    }

    #[test]
    fn base64_frames() {
        let p = Protocol::V4Base64;
        assert_eq!(p.frame(STDERR, b"hi"), Message::text("2aGk="));
        assert_eq!(
            p.parse(&Message::text("0aGk=")),
            Ok(Input::Stdin(Bytes::from_static(b"hi")))
        );
        assert!(matches!(
            p.parse(&Message::text("0!!")),
            Err(FrameError::Base64(_))
        ));
        assert_eq!(
            p.parse(&Message::text("xaGk=")),
            Err(FrameError::Channel(b'x'))
        );
        assert_eq!(
            p.parse(&Message::binary(vec![0])),
            Err(FrameError::WrongType)
        );
    }

    fn status(p: Protocol, o: &Outcome) -> Option<Value> {
        p.status(o, &["sh".into(), "-c".into(), "exit 3".into()])
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn statuses() {
        assert_eq!(
            status(Protocol::V5, &Outcome::Success),
            Some(json!({"metadata": {}, "status": "Success"}))
        );
        assert_eq!(
            status(Protocol::V4, &Outcome::ExitCode(3)),
            Some(json!({
                "metadata": {},
                "status": "Failure",
                "message": "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
            }))
        );
        let failed = status(Protocol::V5, &Outcome::Failed("boom".into())).unwrap();
        assert_eq!(
            (&failed["reason"], &failed["message"], &failed["code"]),
            (&json!("InternalError"), &json!("boom"), &json!(500))
        );
        // v1: nothing on success, the bare message otherwise.
        assert_eq!(Protocol::V1.status(&Outcome::Success, &[]), None);
        assert_eq!(
            Protocol::V1.status(&Outcome::Failed("boom".into()), &[]),
            Some(b"boom".to_vec())
        );
    }
}
