//! Error reporting in kubectl's words: `Error from server (NotFound): pods "x" not found` for API
//! errors, `error: ...` for everything else.

use kube::core::Status;

/// Returned by commands that already printed their errors (e.g. `delete a b` where only `b`
/// failed): exit 1 without printing again.
#[derive(Debug, thiserror::Error)]
#[error("one or more operations failed")]
pub struct Reported;

/// The API status inside `err`, if the failure came from the server.
pub fn api_status(err: &anyhow::Error) -> Option<&Status> {
    err.chain()
        .find_map(|cause| match cause.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(status)) => Some(status.as_ref()),
            _ => None,
        })
}

/// Whether `err` is the server saying the object does not exist.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// The line kubectl would print for `err`.
pub fn render(err: &anyhow::Error) -> String {
    if let Some(status) = api_status(err) {
        return render_status(status, "");
    }
    if let Some(kube_err) = err.chain().find_map(|c| c.downcast_ref::<kube::Error>())
        && matches!(
            kube_err,
            kube::Error::HyperError(_) | kube::Error::Service(_)
        )
    {
        return format!("Unable to connect to the server: {}", error_chain(kube_err));
    }
    format!("error: {err:#}")
}

/// `Error from server (Reason): message`, with `prefix` inserted before the message (kubectl
/// says `error when creating "file.yaml": ...` for manifests).
pub fn render_status(status: &Status, prefix: &str) -> String {
    let (reason, message) = reason_and_message(status);
    let message = format!("{prefix}{message}");
    match reason.as_str() {
        "Unauthorized" => format!("error: You must be logged in to the server ({message})"),
        "" => format!("Error from server: {message}"),
        _ => format!("Error from server ({reason}): {message}"),
    }
}

/// kube turns bodies that are not a `Status` into one with this reason; kubectl would name the
/// HTTP status instead.
const UNPARSED: &str = "Failed to parse error data";

fn reason_and_message(status: &Status) -> (String, String) {
    if status.reason != UNPARSED {
        return (status.reason.clone(), status.message.clone());
    }
    let (reason, default_message) = match status.code {
        400 => (
            "BadRequest",
            "the server rejected our request for an unknown reason",
        ),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials",
        ),
        403 => (
            "Forbidden",
            "the server does not allow access to the requested resource",
        ),
        404 => (
            "NotFound",
            "the server could not find the requested resource",
        ),
        405 => (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        409 => ("Conflict", "the server reported a conflict"),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request",
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        500 => (
            "InternalError",
            "an error on the server has prevented the request from succeeding",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted",
        ),
        _ => (
            "",
            "an error on the server has prevented the request from succeeding",
        ),
    };
    let message = if status.message.is_empty() {
        default_message.to_string()
    } else {
        status.message.clone()
    };
    (reason.to_string(), message)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> Status {
        Status::failure(message, reason).with_code(code)
    }

    #[test]
    fn renders_api_errors_like_kubectl() {
        let err = anyhow::Error::new(kube::Error::Api(
            status(404, "NotFound", "pods \"x\" not found").boxed(),
        ));
        assert_eq!(
            render(&err),
            "Error from server (NotFound): pods \"x\" not found"
        );
        // Context added on the way up does not hide the server's words.
        let err = err.context("getting pods");
        assert_eq!(
            render(&err),
            "Error from server (NotFound): pods \"x\" not found"
        );
        assert_eq!(api_status(&err).map(|s| s.code), Some(404));
    }

    #[test]
    fn renders_reasonless_unauthorized_and_unparsed_bodies() {
        assert_eq!(
            render_status(&status(500, "", "boom"), ""),
            "Error from server: boom"
        );
        assert_eq!(
            render_status(&status(401, "Unauthorized", "Unauthorized"), ""),
            "error: You must be logged in to the server (Unauthorized)"
        );
        assert_eq!(
            render_status(&status(404, UNPARSED, ""), ""),
            "Error from server (NotFound): the server could not find the requested resource"
        );
        assert_eq!(
            render_status(&status(418, UNPARSED, "teapot"), ""),
            "Error from server: teapot"
        );
        assert_eq!(
            render_status(
                &status(409, "AlreadyExists", "namespaces \"a\" already exists"),
                "error when creating \"ns.yaml\": "
            ),
            "Error from server (AlreadyExists): error when creating \"ns.yaml\": namespaces \"a\" already exists"
        );
    }

    #[test]
    fn renders_other_errors_with_their_chain() {
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render(&err), "error: outer: inner");
        assert!(is_not_found(&kube::Error::Api(
            status(404, "NotFound", "x").boxed()
        )));
        assert!(!is_not_found(&kube::Error::Api(
            status(409, "Conflict", "x").boxed()
        )));
    }
}
