//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into the
//! JSON the same object has in `application/json`.
//!
//! kubectl's typed clients send protobuf and do not fall back to JSON, so the server decodes
//! it. The decoding is schema-driven: a table generated from Kubernetes' own message
//! definitions (see `protobuf/generated.rs`) gives every field's number, JSON name and type,
//! plus the Go details that decide how Kubernetes' JSON shows it (pointer or value,
//! `omitempty`, `,inline`). Covered packages: meta/v1, resource (Quantity), intstr, runtime,
//! core/v1, apps/v1, discovery/v1, coordination/v1, autoscaling/v1 and policy/v1.

mod generated;
mod messages;
mod object;
mod special;
mod table;
mod wire;

#[cfg(test)]
mod tests;

use serde_json::Value;

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Decodes a Kubernetes protobuf body: the 4-byte magic "k8s\0" followed by a runtime.Unknown
/// message (1: TypeMeta{1: apiVersion, 2: kind}, 2: raw bytes, 3: contentEncoding, 4:
/// contentType) whose `raw` is the object's message. Returns the object as Kubernetes JSON
/// (what the same object looks like in application/json), with "apiVersion" and "kind" set
/// from the TypeMeta.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    object::Decoder::new().envelope(body)
}

/// Why a body could not be decoded. `path` is where in the object (e.g.
/// `spec.template.spec.containers[0]`), empty at the top level.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf body: it does not start with \"k8s\\0\"")]
    BadMagic,
    #[error("{}protobuf data of message {message} ends early", at(.path))]
    Truncated { message: String, path: String },
    #[error("{}malformed protobuf data in message {message}: {detail}", at(.path))]
    Malformed {
        message: String,
        path: String,
        detail: String,
    },
    #[error("{}unknown field number {number} in message {message}", at(.path))]
    UnknownField {
        message: String,
        number: u32,
        path: String,
    },
    #[error("{}invalid value in message {message}: {detail}", at(.path))]
    InvalidValue {
        message: String,
        path: String,
        detail: String,
    },
    #[error("unknown kind {kind:?} in apiVersion {api_version:?}: no protobuf schema for it")]
    UnknownKind { api_version: String, kind: String },
    #[error(
        "unsupported embedded object: content type {content_type:?}, content encoding {content_encoding:?}"
    )]
    UnsupportedContent {
        content_type: String,
        content_encoding: String,
    },
    #[error("{}objects nested more than {max} levels deep", at(.path))]
    TooDeep { path: String, max: usize },
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}
