//! Validation of objects on create and update, as the Kubernetes API server does it
//! (pkg/apis/*/validation): the body is decoded into its typed k8s-openapi struct first (a body
//! that does not decode is a 400), then checked field by field (each problem a [`FieldError`],
//! together a 422).
//!
//! Checks skip fields that defaulting fills in when they are absent (a missing protocol is not
//! "Required"), so calling [`validate`] before or after [`crate::defaults::apply_defaults`] gives
//! the same verdict on those fields.

mod accounts;
mod apps;
mod batch;
mod config;
mod daemonset;
mod ephemeral;
mod ip;
mod meta;
mod network;
mod pod;
mod service;
mod simple;

use std::fmt;
use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use self::config::{MAX_DATA_BYTES, config_key};

/// The kind of problem, as Kubernetes' field.ErrorType.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
    Forbidden,
    NotFound,
}

impl ErrorType {
    /// The phrase Kubernetes prints for this type.
    fn phrase(&self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::TooLong => "Too long",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::NotFound => "Not found",
        }
    }
}

/// One problem with one field.
///
/// `value` is the offending value already rendered the way Kubernetes prints it: strings
/// Go-quoted (`"Foo"`), numbers bare (`0`), anything structured as JSON. `None` when the
/// message carries no value.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub error_type: ErrorType,
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    /// The StatusCause reason of this error in a 422 response.
    pub fn reason(&self) -> &'static str {
        match self.error_type {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::NotFound => "FieldValueNotFound",
        }
    }

    fn new(
        field: &Path,
        error_type: ErrorType,
        value: Option<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.to_string(),
            error_type,
            value,
            detail: detail.into(),
        }
    }

    pub(crate) fn required(field: &Path, detail: impl Into<String>) -> Self {
        Self::new(field, ErrorType::Required, None, detail)
    }

    pub(crate) fn invalid(field: &Path, value: impl Render, detail: impl Into<String>) -> Self {
        Self::new(field, ErrorType::Invalid, Some(value.render()), detail)
    }

    pub(crate) fn not_supported(field: &Path, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        let detail = if list.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", list.join(", "))
        };
        Self::new(
            field,
            ErrorType::NotSupported,
            Some(go_quote(value)),
            detail,
        )
    }

    pub(crate) fn duplicate(field: &Path, value: impl Render) -> Self {
        Self::new(field, ErrorType::Duplicate, Some(value.render()), "")
    }

    pub(crate) fn too_long(field: &Path, max_bytes: usize) -> Self {
        Self::new(
            field,
            ErrorType::TooLong,
            None,
            format!("must have at most {max_bytes} bytes"),
        )
    }

    pub(crate) fn forbidden(field: &Path, detail: impl Into<String>) -> Self {
        Self::new(field, ErrorType::Forbidden, None, detail)
    }

    pub(crate) fn not_found(field: &Path, value: impl Render) -> Self {
        Self::new(field, ErrorType::NotFound, Some(value.render()), "")
    }
}

impl fmt::Display for FieldError {
    /// `field: <Type phrase>[: value][: detail]`, exactly as field.Error.Error() in Go. Required,
    /// Forbidden and TooLong never print the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error_type.phrase())?;
        let shows_value = !matches!(
            self.error_type,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong
        );
        if let (true, Some(v)) = (shows_value, &self.value) {
            write!(f, ": {v}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Why an object was rejected.
#[derive(Debug)]
pub enum Invalid {
    /// The body is not a valid object of this kind (400 Bad Request).
    Decode(String),
    /// The object decodes but breaks field rules (422 Unprocessable Entity).
    Fields(Vec<FieldError>),
}

impl fmt::Display for Invalid {
    /// One error alone, several as Kubernetes' aggregate `[a, b]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Decode(msg) => f.write_str(msg),
            Invalid::Fields(errs) if errs.len() == 1 => write!(f, "{}", errs[0]),
            Invalid::Fields(errs) => {
                let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", list.join(", "))
            }
        }
    }
}

impl std::error::Error for Invalid {}

/// Validates `obj` (wire format) of `kind`; `old` is the stored object on update (None on
/// create). Kinds without specific rules get the generic metadata checks.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Result<(), Invalid> {
    type_meta(kind, obj)?;
    let errs = match kind {
        "Namespace" => run(obj, old, fields_only(simple::namespace))?,
        "Pod" => run(obj, old, |p, o| {
            let mut errs = pod::pod(p, o)?;
            errs.extend(ephemeral::pod(p, o));
            Ok(errs)
        })?,
        "Service" => run(obj, old, fields_only(service::service))?,
        "Endpoints" => run(obj, old, fields_only(network::endpoints))?,
        "EndpointSlice" => run(obj, old, fields_only(network::endpoint_slice))?,
        "Node" => run(obj, old, fields_only(simple::node))?,
        "Event" => run(obj, old, fields_only(simple::event))?,
        "Lease" => run(obj, old, fields_only(simple::lease))?,
        "ServiceAccount" => run(obj, old, fields_only(accounts::service_account))?,
        "Job" => {
            let has_selector = !obj
                .pointer("/spec/selector")
                .unwrap_or(&Value::Null)
                .is_null();
            run(obj, old, |j, o| batch::job(j, o, has_selector))?
        }
        "ConfigMap" => run(obj, old, fields_only(config::config_map))?,
        "Secret" => run(obj, old, fields_only(config::secret))?,
        "DaemonSet" => {
            let has_selector = !obj
                .pointer("/spec/selector")
                .unwrap_or(&Value::Null)
                .is_null();
            run(obj, old, |d, o| daemonset::daemon_set(d, o, has_selector))?
        }
        "Deployment" | "ReplicaSet" => {
            // A missing selector and `selector: {}` decode alike; Kubernetes tells them apart.
            let has_selector = !obj
                .pointer("/spec/selector")
                .unwrap_or(&Value::Null)
                .is_null();
            if kind == "Deployment" {
                run(obj, old, |d, o| apps::deployment(d, o, has_selector))?
            } else {
                run(obj, old, |r, o| apps::replica_set(r, o, has_selector))?
            }
        }
        _ => run(obj, old, fields_only(simple::generic))?,
    };
    if errs.is_empty() {
        Ok(())
    } else {
        Err(Invalid::Fields(errs))
    }
}

/// Decodes new (and old) and applies `check`. A check returns `Err` for what Kubernetes
/// rejects while decoding (malformed quantities).
fn run<T: DeserializeOwned>(
    obj: &Value,
    old: Option<&Value>,
    check: impl FnOnce(&T, Option<&T>) -> Result<Vec<FieldError>, Invalid>,
) -> Result<Vec<FieldError>, Invalid> {
    let new: T = decode(obj)?;
    // The stored object passed validation when it was written; if it no longer decodes (an
    // older format), the update-only checks are skipped rather than blocking every update.
    let old: Option<T> = old.and_then(|o| decode(o).ok());
    check(&new, old.as_ref())
}

/// Adapts a check that finds only field errors (nothing it rejects while decoding) to [`run`].
fn fields_only<T>(
    check: fn(&T, Option<&T>) -> Vec<FieldError>,
) -> impl FnOnce(&T, Option<&T>) -> Result<Vec<FieldError>, Invalid> {
    move |new, old| Ok(check(new, old))
}

/// The apiVersion each served kind is written in.
fn api_version_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Namespace" | "Pod" | "Service" | "Endpoints" | "Node" | "Event" | "ConfigMap"
        | "Secret" | "ServiceAccount" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "Lease" => "coordination.k8s.io/v1",
        "Job" => "batch/v1",
        "Deployment" | "ReplicaSet" | "DaemonSet" => "apps/v1",
        _ => return None,
    })
}

/// A body of another kind or version is a bad request, not an invalid object.
fn type_meta(kind: &str, obj: &Value) -> Result<(), Invalid> {
    let Some(want) = api_version_of(kind) else {
        return Ok(());
    };
    let given = |field: &str| {
        obj.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(v) = given("apiVersion").filter(|v| *v != want) {
        return Err(Invalid::Decode(format!(
            "the API version in the data ({v}) does not match the expected API version ({want})"
        )));
    }
    if let Some(k) = given("kind").filter(|k| *k != kind) {
        return Err(Invalid::Decode(format!(
            "the kind in the data ({k}) does not match the expected kind ({kind})"
        )));
    }
    Ok(())
}

/// serde's message, prefixed with the path of the field that failed.
fn decode<T: DeserializeOwned>(obj: &Value) -> Result<T, Invalid> {
    // Empty type fields mean "the kind of the URL", as in Kubernetes; the typed structs only
    // accept their own apiVersion and kind.
    let blank = |f: &str| {
        obj.get(f)
            .is_some_and(|v| v.is_null() || v.as_str() == Some(""))
    };
    if blank("apiVersion") || blank("kind") {
        let mut trimmed = obj.clone();
        if let Some(m) = trimmed.as_object_mut() {
            m.retain(|k, v| {
                !((k == "apiVersion" || k == "kind") && (v.is_null() || v.as_str() == Some("")))
            });
        }
        return decode(&trimmed);
    }
    // The plain decode first: tracking the path of every field costs as much again, and is
    // only needed to name the field of an error.
    if let Ok(typed) = T::deserialize(obj) {
        return Ok(typed);
    }
    serde_path_to_error::deserialize(obj).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            Invalid::Decode(inner.to_string())
        } else {
            Invalid::Decode(format!("{path}: {inner}"))
        }
    })
}

/// A field path as Kubernetes prints it: `spec.containers[0].ports[1].name`,
/// `spec.resources.limits[cpu]`.
#[derive(Clone, Debug)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root(name: &str) -> Self {
        Self(name.to_string())
    }

    // Built by appending, not format!: validation makes a path for every field it visits,
    // error or not, and formatting them was 3 % of the API server's CPU per pod create.
    pub(crate) fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            return Self(name.to_string());
        }
        self.with(&[".", name])
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        self.with(&["[", itoa::Buffer::new().format(i), "]"])
    }

    pub(crate) fn key(&self, k: &str) -> Self {
        self.with(&["[", k, "]"])
    }

    fn with(&self, parts: &[&str]) -> Self {
        let mut s =
            String::with_capacity(self.0.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        s.push_str(&self.0);
        for p in parts {
            s.push_str(p);
        }
        Self(s)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a bad value appears in a message (Go's `%q` for strings, `%v` for numbers, JSON for
/// structures, as Kubernetes ≥ 1.34 prints them).
pub(crate) trait Render {
    fn render(self) -> String;
}

impl Render for &str {
    fn render(self) -> String {
        go_quote(self)
    }
}

impl Render for &String {
    fn render(self) -> String {
        go_quote(self)
    }
}

impl Render for String {
    fn render(self) -> String {
        go_quote(&self)
    }
}

impl Render for i32 {
    fn render(self) -> String {
        self.to_string()
    }
}

impl Render for i64 {
    fn render(self) -> String {
        self.to_string()
    }
}

/// A value printed as-is (Go's Stringer values such as IntOrString: `25%`, `8080`).
pub(crate) struct Raw(pub String);

impl Render for Raw {
    fn render(self) -> String {
        self.0
    }
}

/// A structured value printed as JSON.
pub(crate) struct Json<'a, T: serde::Serialize>(pub &'a T);

impl<T: serde::Serialize> Render for Json<'_, T> {
    fn render(self) -> String {
        serde_json::to_string(self.0).unwrap_or_else(|_| "<unprintable>".into())
    }
}

/// Go's strconv.Quote for the characters that occur in practice.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Shared rules used by several kinds.
pub(crate) const PORT_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
pub(crate) const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
pub(crate) const NON_NEGATIVE_MSG: &str = "must be greater than or equal to 0";

/// IsValidPortNum.
pub(crate) fn port_num(field: &Path, port: i32) -> Option<FieldError> {
    (!(1..=65535).contains(&port)).then(|| FieldError::invalid(field, port, PORT_RANGE_MSG))
}

/// ValidatePortNumOrName: a number in range or an IANA service name.
pub(crate) fn port_num_or_name(
    field: &Path,
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> Vec<FieldError> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(n) => port_num(field, *n).into_iter().collect(),
        IntOrString::String(s) => kproxy_apimachinery::names::iana_svc_name(s)
            .into_iter()
            .map(|m| FieldError::invalid(field, s, m))
            .collect(),
    }
}

/// A protocol that defaulting fills in: checked only when given.
pub(crate) fn protocol(field: &Path, value: Option<&str>) -> Option<FieldError> {
    match value {
        Some("") => Some(FieldError::required(field, "")),
        Some(p) if !PORT_PROTOCOLS.contains(&p) => {
            Some(FieldError::not_supported(field, p, PORT_PROTOCOLS))
        }
        _ => None,
    }
}

/// An enum field that defaulting fills in: checked only when given.
pub(crate) fn one_of(field: &Path, value: Option<&str>, supported: &[&str]) -> Option<FieldError> {
    value
        .filter(|v| !supported.contains(v))
        .map(|v| FieldError::not_supported(field, v, supported))
}

/// ValidateNonnegativeField.
pub(crate) fn non_negative(field: &Path, value: Option<i64>) -> Option<FieldError> {
    value
        .filter(|v| *v < 0)
        .map(|v| FieldError::invalid(field, v, NON_NEGATIVE_MSG))
}

/// Each message of a name check as an Invalid error on `field`.
pub(crate) fn name_errors(field: &Path, value: &str, msgs: Vec<String>) -> Vec<FieldError> {
    msgs.into_iter()
        .map(|m| FieldError::invalid(field, value, m))
        .collect()
}

#[cfg(test)]
mod tests;
