//! The HTTP upgrade handshake shared by exec/attach (WebSocket) and port-forward (WebSocket or
//! SPDY): header tokens and the WebSocket key check, as the kubelet does them.

use axum::http::{HeaderMap, HeaderValue, header};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::HttpError;

/// Whether a comma-separated header has `token` (case-insensitive), over all its lines.
pub fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// The non-empty entries of a comma-separated header, over all its lines.
pub fn list<K: header::AsHeaderName>(headers: &HeaderMap, name: K) -> Vec<&str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// The WebSocket handshake's version check and `Sec-WebSocket-Accept` answer, with the
/// subprotocols the client offered (for the caller to choose from).
pub fn ws_key(headers: &HeaderMap) -> Result<(String, Vec<&str>), HttpError> {
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(HttpError::bad_request(
            "unsupported WebSocket version (Sec-WebSocket-Version must be 13)",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| HttpError::bad_request("missing Sec-WebSocket-Key"))?;
    Ok((
        derive_accept_key(key.as_bytes()),
        list(headers, header::SEC_WEBSOCKET_PROTOCOL),
    ))
}
