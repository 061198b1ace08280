//! Request errors: an HTTP status and a one-line plain-text message, as the real kubelet
//! answers. The API server turns them into `Status` objects with the same code.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    pub code: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A failed Docker call: Docker's own 404 stays a 404 (the container went away between
    /// lookup and use), everything else is ours to report as a 500.
    pub fn docker(context: &str, err: &bollard::errors::Error) -> Self {
        match err {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            } => Self::not_found(format!("{context}: {message}")),
            bollard::errors::Error::DockerResponseServerError { message, .. } => {
                Self::internal(format!("{context}: {message}"))
            }
            other => Self::internal(format!("{context}: {other}")),
        }
    }
}

/// Why the endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The serving certificate or the client CA.
    #[error("setting up the kubelet endpoint's TLS")]
    Tls(#[source] kproxy_node_tls::TlsError),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_errors_keep_not_found() {
        let gone = bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "No such container: abc".into(),
        };
        assert_eq!(
            HttpError::docker("reading logs", &gone),
            HttpError::not_found("reading logs: No such container: abc")
        );
        let conflict = bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message: "container abc is not running".into(),
        };
        assert_eq!(
            HttpError::docker("exec", &conflict).code,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
