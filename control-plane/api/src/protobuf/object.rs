//! Schema-driven decoding of one message into the JSON that Go's encoding/json writes for the
//! same Kubernetes object: the protobuf decode fills a Go struct, the JSON encode prints it.
//!
//! Go's protobuf encoder writes every non-pointer field, zero values included, while its JSON
//! encoder drops zero values of `omitempty` fields. So a scalar's zero is kept when the Go
//! field is a pointer (presence is meaningful: `replicas: 0`) or has no `omitempty`, and
//! dropped otherwise; a field missing from the wire gets what Go's JSON shows for its zero
//! value (nothing, `null`, `0`, `""`, `{}`, ...).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::ProtobufError;
use super::messages;
use super::special::{self, Special};
use super::table::{Card, Field, INLINE, Message, OMIT, PTR, Ty};
use super::wire::{Reader, WireError, WireValue};

/// Nesting limit for messages (and objects embedded in RawExtensions), so hostile input
/// cannot exhaust the stack. Real objects nest about a dozen levels.
const MAX_DEPTH: usize = 100;

const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const TYPE_META: &str = "k8s.io.apimachinery.pkg.runtime.TypeMeta";

/// The Kubernetes protobuf prefix: "k8s" and a zero byte.
pub(super) const MAGIC: &[u8; 4] = b"k8s\0";

enum Seg {
    Field(&'static str),
    Index(usize),
    Key(String),
}

/// Decodes one body; remembers where it is for error messages.
pub(super) struct Decoder {
    path: Vec<Seg>,
    depth: usize,
}

type Occurrences<'a> = [(usize, WireValue<'a>)];

impl Decoder {
    pub(super) fn new() -> Self {
        Decoder {
            path: Vec::new(),
            depth: 0,
        }
    }

    /// "spec.containers[0].env" for error messages.
    fn path(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
                Seg::Key(k) => {
                    let _ = write!(out, "[{k:?}]");
                }
            }
        }
        out
    }

    fn wire(&self, message: &str, e: WireError) -> ProtobufError {
        match e {
            WireError::Truncated => ProtobufError::Truncated {
                message: message.to_string(),
                path: self.path(),
            },
            e => self.malformed(message, e.to_string()),
        }
    }

    fn malformed(&self, message: &str, detail: impl Into<String>) -> ProtobufError {
        ProtobufError::Malformed {
            message: message.to_string(),
            path: self.path(),
            detail: detail.into(),
        }
    }

    fn invalid(&self, message: &str, detail: impl Into<String>) -> ProtobufError {
        ProtobufError::InvalidValue {
            message: message.to_string(),
            path: self.path(),
            detail: detail.into(),
        }
    }

    fn unknown_field(&self, message: &str, number: u32) -> ProtobufError {
        ProtobufError::UnknownField {
            message: message.to_string(),
            number,
            path: self.path(),
        }
    }

    fn enter(&mut self) -> Result<(), ProtobufError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ProtobufError::TooDeep {
                path: self.path(),
                max: MAX_DEPTH,
            });
        }
        Ok(())
    }

    /// A whole body: the magic, then a runtime.Unknown {1: TypeMeta, 2: raw, 3:
    /// contentEncoding, 4: contentType} whose raw bytes are the object's message.
    pub(super) fn envelope(&mut self, body: &[u8]) -> Result<Value, ProtobufError> {
        let data = body
            .strip_prefix(MAGIC.as_slice())
            .ok_or(ProtobufError::BadMagic)?;
        self.enter()?;
        let (mut api_version, mut kind) = (String::new(), String::new());
        let (mut encoding, mut content_type) = (String::new(), String::new());
        let mut raw: &[u8] = &[];
        let mut r = Reader::new(data);
        while let Some((number, value)) = r.field().map_err(|e| self.wire(UNKNOWN, e))? {
            if !(1..=4).contains(&number) {
                return Err(self.unknown_field(UNKNOWN, number));
            }
            let bytes = self.bytes(UNKNOWN, number, value)?;
            match number {
                1 => {
                    let mut tm = Reader::new(bytes);
                    while let Some((n, v)) = tm.field().map_err(|e| self.wire(TYPE_META, e))? {
                        if !(1..=2).contains(&n) {
                            return Err(self.unknown_field(TYPE_META, n));
                        }
                        let text = self.utf8(TYPE_META, self.bytes(TYPE_META, n, v)?)?;
                        if n == 1 {
                            api_version = text;
                        } else {
                            kind = text;
                        }
                    }
                }
                2 => raw = bytes,
                3 => encoding = self.utf8(UNKNOWN, bytes)?,
                _ => content_type = self.utf8(UNKNOWN, bytes)?,
            }
        }
        // The protobuf serializer leaves both empty; anything else is not a raw message.
        if !encoding.is_empty() || !(content_type.is_empty() || content_type == super::CONTENT_TYPE)
        {
            return Err(ProtobufError::UnsupportedContent {
                content_type,
                content_encoding: encoding,
            });
        }
        let root = messages::root(&api_version, &kind)
            .map(messages::message)
            .filter(|m| Special::of(m.name).is_none())
            .ok_or_else(|| ProtobufError::UnknownKind {
                api_version: api_version.clone(),
                kind: kind.clone(),
            })?;
        let mut object = self.object(root, raw)?;
        object.insert("apiVersion".to_string(), Value::String(api_version));
        object.insert("kind".to_string(), Value::String(kind));
        self.depth -= 1;
        Ok(Value::Object(object))
    }

    fn bytes<'a>(
        &self,
        message: &str,
        number: u32,
        value: WireValue<'a>,
    ) -> Result<&'a [u8], ProtobufError> {
        match value {
            WireValue::Bytes(b) => Ok(b),
            other => Err(self.malformed(
                message,
                format!(
                    "field {number} has wire type {}, want length-delimited",
                    other.kind()
                ),
            )),
        }
    }

    fn utf8(&self, message: &str, bytes: &[u8]) -> Result<String, ProtobufError> {
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| self.invalid(message, "string is not valid UTF-8"))
    }

    /// The fields of one message as (index into `m.fields`, value), in wire order.
    fn scan<'a>(
        &self,
        m: &Message,
        data: &'a [u8],
    ) -> Result<Vec<(usize, WireValue<'a>)>, ProtobufError> {
        let mut r = Reader::new(data);
        let mut out = Vec::new();
        while let Some((number, value)) = r.field().map_err(|e| self.wire(m.name, e))? {
            let index = m
                .field_index(number)
                .ok_or_else(|| self.unknown_field(m.name, number))?;
            out.push((index, value));
        }
        Ok(out)
    }

    /// The JSON of the message `index` encoded in `data`.
    pub(super) fn message_value(
        &mut self,
        index: u16,
        data: &[u8],
    ) -> Result<Value, ProtobufError> {
        let m = messages::message(index);
        self.enter()?;
        let value = match Special::of(m.name) {
            Some(s) => self.special(s, m, data)?,
            None => Value::Object(self.object(m, data)?),
        };
        self.depth -= 1;
        Ok(value)
    }

    fn object(&mut self, m: &Message, data: &[u8]) -> Result<Map<String, Value>, ProtobufError> {
        let mut seen = self.scan(m, data)?;
        // Stable: repeated values keep their order.
        seen.sort_by_key(|(index, _)| *index);
        let mut out = Map::new();
        let mut rest = seen.as_slice();
        for (index, f) in m.fields.iter().enumerate() {
            let n = rest.iter().take_while(|(i, _)| *i == index).count();
            let (occurrences, tail) = rest.split_at(n);
            rest = tail;
            let value = if occurrences.is_empty() {
                zero_field(f)
            } else {
                self.path.push(Seg::Field(f.name));
                let value = self.present(m, f, occurrences)?;
                self.path.pop();
                value
            };
            if let Some(value) = value {
                put(&mut out, f, value);
            }
        }
        Ok(out)
    }

    /// The JSON of a field that is on the wire (`None`: Go's JSON leaves it out).
    fn present(
        &mut self,
        m: &Message,
        f: &Field,
        occurrences: &Occurrences<'_>,
    ) -> Result<Option<Value>, ProtobufError> {
        match (f.card, f.ty) {
            (Card::One, Ty::Msg(index)) => {
                // A message field seen twice is merged, which for protobuf is the same as
                // decoding the concatenation.
                let data = self.concat(m, f, occurrences)?;
                Ok(Some(self.message_value(index, &data)?))
            }
            (Card::One, ty) => {
                let Some((_, last)) = occurrences.last() else {
                    return Ok(zero_field(f));
                };
                let value = self.scalar(m.name, f.name, ty, *last)?;
                let omit_zero = f.go & (PTR | OMIT) == OMIT;
                Ok((!(omit_zero && is_zero(&value))).then_some(value))
            }
            (Card::Many, ty) => {
                let mut items = Vec::new();
                for (_, value) in occurrences {
                    match (ty, value) {
                        (Ty::Msg(index), value) => {
                            let data = self.bytes(m.name, f.num, *value)?;
                            self.path.push(Seg::Index(items.len()));
                            items.push(self.message_value(index, data)?);
                            self.path.pop();
                        }
                        (Ty::Str | Ty::Bytes, value) => {
                            items.push(self.scalar(m.name, f.name, ty, *value)?);
                        }
                        (ty, WireValue::Bytes(packed)) => {
                            self.packed(m, f, ty, packed, &mut items)?;
                        }
                        (ty, value) => items.push(self.scalar(m.name, f.name, ty, *value)?),
                    }
                }
                // An empty packed list leaves the Go slice nil.
                Ok(if items.is_empty() {
                    zero_field(f)
                } else {
                    Some(Value::Array(items))
                })
            }
            (Card::Map, ty) => {
                let mut out = Map::new();
                for (_, value) in occurrences {
                    let entry = self.bytes(m.name, f.num, *value)?;
                    let (key, value) = self.map_entry(m, f, ty, entry)?;
                    out.insert(key, value);
                }
                Ok(Some(Value::Object(out)))
            }
        }
    }

    fn concat<'a>(
        &self,
        m: &Message,
        f: &Field,
        occurrences: &Occurrences<'a>,
    ) -> Result<Cow<'a, [u8]>, ProtobufError> {
        if let [(_, value)] = occurrences {
            return Ok(Cow::Borrowed(self.bytes(m.name, f.num, *value)?));
        }
        let mut data = Vec::new();
        for (_, value) in occurrences {
            data.extend_from_slice(self.bytes(m.name, f.num, *value)?);
        }
        Ok(Cow::Owned(data))
    }

    /// A packed repeated scalar: the values back to back in one payload.
    fn packed(
        &self,
        m: &Message,
        f: &Field,
        ty: Ty,
        data: &[u8],
        items: &mut Vec<Value>,
    ) -> Result<(), ProtobufError> {
        let mut r = Reader::new(data);
        while !r.is_empty() {
            let value = match ty {
                Ty::Fixed32 | Ty::SFixed32 | Ty::F32 => r.fixed32().map(WireValue::Fixed32),
                Ty::Fixed64 | Ty::SFixed64 | Ty::F64 => r.fixed64().map(WireValue::Fixed64),
                _ => r.varint().map(WireValue::Varint),
            }
            .map_err(|e| self.wire(m.name, e))?;
            items.push(self.scalar(m.name, f.name, ty, value)?);
        }
        Ok(())
    }

    /// One `map<string, V>` entry message {1: key, 2: value}.
    fn map_entry(
        &mut self,
        m: &Message,
        f: &Field,
        ty: Ty,
        data: &[u8],
    ) -> Result<(String, Value), ProtobufError> {
        let entry = format!("{}.{} entry", m.name, f.name);
        let (mut key, mut value) = (String::new(), None);
        let mut r = Reader::new(data);
        while let Some((number, v)) = r.field().map_err(|e| self.wire(&entry, e))? {
            match number {
                1 => key = self.utf8(&entry, self.bytes(&entry, 1, v)?)?,
                2 => value = Some(v),
                n => return Err(self.unknown_field(&entry, n)),
            }
        }
        self.path.push(Seg::Key(key.clone()));
        let value = match (ty, value) {
            (Ty::Msg(index), Some(v)) => {
                let data = self.bytes(&entry, 2, v)?;
                self.message_value(index, data)?
            }
            (Ty::Msg(index), None) => zero_message(index),
            (ty, Some(v)) => self.scalar(&entry, "value", ty, v)?,
            (ty, None) => zero_scalar(ty),
        };
        self.path.pop();
        Ok((key, value))
    }

    #[expect(
        clippy::cast_possible_truncation,
        reason = "protobuf decoders narrow a varint by keeping its low bits"
    )]
    #[expect(
        clippy::match_same_arms,
        reason = "one arm per (type, wire type) pair reads as the protobuf table"
    )]
    fn scalar(
        &self,
        message: &str,
        field: &str,
        ty: Ty,
        value: WireValue<'_>,
    ) -> Result<Value, ProtobufError> {
        use WireValue as W;
        // Narrowing casts keep the low bits, as protobuf decoders do.
        Ok(match (ty, value) {
            (Ty::Bool, W::Varint(v)) => Value::Bool(v != 0),
            (Ty::I32, W::Varint(v)) => json!(v as i32),
            (Ty::I64, W::Varint(v)) => json!(v.cast_signed()),
            (Ty::U32, W::Varint(v)) => json!(v as u32),
            (Ty::U64, W::Varint(v)) => json!(v),
            (Ty::S32, W::Varint(v)) => {
                let v = v as u32;
                json!((v >> 1).cast_signed() ^ -(v & 1).cast_signed())
            }
            (Ty::S64, W::Varint(v)) => json!((v >> 1).cast_signed() ^ -(v & 1).cast_signed()),
            (Ty::Fixed32, W::Fixed32(v)) => json!(v),
            (Ty::SFixed32, W::Fixed32(v)) => json!(v.cast_signed()),
            // Go prints a float32 by its shortest float32 form ("0.1", not 0.10000000149).
            (Ty::F32, W::Fixed32(v)) => {
                let shortest = f32::from_bits(v)
                    .to_string()
                    .parse::<f64>()
                    .unwrap_or(f64::NAN);
                self.float(message, field, shortest)?
            }
            (Ty::Fixed64, W::Fixed64(v)) => json!(v),
            (Ty::SFixed64, W::Fixed64(v)) => json!(v.cast_signed()),
            (Ty::F64, W::Fixed64(v)) => self.float(message, field, f64::from_bits(v))?,
            (Ty::Str, W::Bytes(b)) => Value::String(
                std::str::from_utf8(b)
                    .map_err(|_| self.invalid(message, format!("{field} is not valid UTF-8")))?
                    .to_string(),
            ),
            (Ty::Bytes, W::Bytes(b)) => Value::String(special::base64(b)),
            (ty, value) => {
                return Err(self.malformed(
                    message,
                    format!("field {field} ({ty:?}) has wire type {}", value.kind()),
                ));
            }
        })
    }

    fn float(&self, message: &str, field: &str, v: f64) -> Result<Value, ProtobufError> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| self.invalid(message, format!("{field} is {v}, which JSON cannot hold")))
    }

    /// The JSON of a message with a hand-written form (see [`Special`]).
    fn special(&mut self, s: Special, m: &Message, data: &[u8]) -> Result<Value, ProtobufError> {
        if data.is_empty() {
            return Ok(s.zero());
        }
        let fields = self.scan(m, data)?;
        let last = |number: u32| {
            fields
                .iter()
                .rev()
                .find(|(i, _)| m.fields[*i].num == number)
                .map(|(i, v)| (&m.fields[*i], *v))
        };
        let scalar = |number: u32| -> Result<Option<Value>, ProtobufError> {
            last(number)
                .map(|(f, v)| self.scalar(m.name, f.name, f.ty, v))
                .transpose()
        };
        let int = |number: u32| -> Result<i64, ProtobufError> {
            Ok(scalar(number)?.and_then(|v| v.as_i64()).unwrap_or(0))
        };
        let raw = |number: u32| -> Result<Option<&[u8]>, ProtobufError> {
            last(number)
                .map(|(f, v)| self.bytes(m.name, f.num, v))
                .transpose()
        };
        Ok(match s {
            Special::Time | Special::MicroTime => {
                let (seconds, nanos) = (int(1)?, int(2)?);
                special::rfc3339(seconds, nanos, s == Special::MicroTime)
                    .map_err(|e| self.invalid(m.name, e))?
                    .map_or(Value::Null, Value::String)
            }
            Special::Duration => Value::String(special::go_duration(int(1)?)),
            Special::Quantity => scalar(1)?.unwrap_or_else(|| s.zero()),
            Special::IntOrString => match int(1)? {
                0 => json!(int(2)?),
                1 => scalar(3)?.unwrap_or_else(|| json!("")),
                t => {
                    return Err(self.invalid(
                        m.name,
                        format!("type {t} is neither 0 (int) nor 1 (string)"),
                    ));
                }
            },
            Special::RawExtension | Special::FieldsV1 => match raw(1)? {
                None | Some([]) => Value::Null,
                Some(bytes) if s == Special::RawExtension && bytes.starts_with(MAGIC) => {
                    self.envelope(bytes)?
                }
                Some(bytes) => serde_json::from_slice(bytes)
                    .map_err(|e| self.invalid(m.name, format!("raw bytes are not JSON: {e}")))?,
            },
            Special::Verbs => {
                let mut items = Vec::new();
                for (i, v) in &fields {
                    let f = &m.fields[*i];
                    items.push(self.scalar(m.name, f.name, f.ty, *v)?);
                }
                Value::Array(items)
            }
            Special::Unknown => {
                return Err(self.invalid(m.name, "a nested runtime.Unknown is not supported"));
            }
        })
    }
}

/// Adds a field's JSON to its object; an inline field's members go into the object itself
/// (a member of the outer struct wins over an inline one, as in Go).
fn put(out: &mut Map<String, Value>, f: &Field, value: Value) {
    match value {
        Value::Object(inner) if f.go & INLINE != 0 => {
            for (k, v) in inner {
                out.entry(k).or_insert(v);
            }
        }
        value => {
            out.insert(f.name.to_string(), value);
        }
    }
}

/// What Go's JSON shows for a field holding its zero value (`None`: left out).
fn zero_field(f: &Field) -> Option<Value> {
    let omit = f.go & OMIT != 0;
    // Slices, maps, []byte and pointers are nil: null, or nothing with omitempty.
    if f.card != Card::One || f.go & PTR != 0 || f.ty == Ty::Bytes {
        return (!omit).then_some(Value::Null);
    }
    match f.ty {
        // omitempty never drops a struct.
        Ty::Msg(index) => Some(zero_message(index)),
        ty => (!omit).then(|| zero_scalar(ty)),
    }
}

fn zero_message(index: u16) -> Value {
    let m = messages::message(index);
    if let Some(s) = Special::of(m.name) {
        return s.zero();
    }
    let mut out = Map::new();
    for f in m.fields {
        if let Some(value) = zero_field(f) {
            put(&mut out, f, value);
        }
    }
    Value::Object(out)
}

fn zero_scalar(ty: Ty) -> Value {
    match ty {
        Ty::Bool => Value::Bool(false),
        Ty::Str | Ty::Bytes => Value::String(String::new()),
        _ => json!(0),
    }
}

/// Go's omitempty test for scalars.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_of_every_message_are_finite() {
        for i in 0..super::super::generated::MESSAGES.len() {
            let _ = zero_message(u16::try_from(i).unwrap());
        }
    }

    fn value(index: &str, data: &[u8]) -> Result<Value, ProtobufError> {
        let m = messages::find(index).unwrap();
        Decoder::new().message_value(m, data)
    }

    #[test]
    fn durations_and_verbs() {
        let duration = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
        // 3600 s in ns as a varint.
        let hour = [0x08, 0x80, 0xc0, 0xe2, 0x85, 0xe3, 0x68];
        assert_eq!(value(duration, &hour).unwrap(), json!("1h0m0s"));
        assert_eq!(value(duration, &[]).unwrap(), json!("0s"));
        // -1 ns: a ten-byte varint.
        let minus = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(value(duration, &minus).unwrap(), json!("-1ns"));

        let resource = "k8s.io.apimachinery.pkg.apis.meta.v1.APIResource";
        let data = [
            &[0x0a, 4][..],
            b"pods",
            &[0x10, 1],
            &[0x22, 10, 0x0a, 3],
            b"get",
            &[0x0a, 3],
            b"put",
        ]
        .concat();
        assert_eq!(
            value(resource, &data).unwrap(),
            json!({"name": "pods", "namespaced": true, "kind": "", "verbs": ["get", "put"], "singularName": ""})
        );
    }

    #[test]
    fn scalar_conversions() {
        use WireValue as W;
        let d = Decoder::new();
        let s = |ty, v| d.scalar("M", "f", ty, v);
        assert_eq!(s(Ty::Bool, W::Varint(2)).unwrap(), json!(true));
        assert_eq!(s(Ty::I32, W::Varint(u64::MAX)).unwrap(), json!(-1));
        assert_eq!(s(Ty::I32, W::Varint(1 << 32 | 7)).unwrap(), json!(7));
        assert_eq!(s(Ty::I64, W::Varint(u64::MAX)).unwrap(), json!(-1));
        assert_eq!(s(Ty::U32, W::Varint(u64::MAX)).unwrap(), json!(u32::MAX));
        assert_eq!(s(Ty::U64, W::Varint(u64::MAX)).unwrap(), json!(u64::MAX));
        assert_eq!(s(Ty::S32, W::Varint(3)).unwrap(), json!(-2));
        assert_eq!(s(Ty::S32, W::Varint(4)).unwrap(), json!(2));
        assert_eq!(s(Ty::S64, W::Varint(u64::MAX)).unwrap(), json!(i64::MIN));
        assert_eq!(
            s(Ty::Fixed32, W::Fixed32(u32::MAX)).unwrap(),
            json!(u32::MAX)
        );
        assert_eq!(s(Ty::SFixed32, W::Fixed32(u32::MAX)).unwrap(), json!(-1));
        assert_eq!(
            s(Ty::Fixed64, W::Fixed64(u64::MAX)).unwrap(),
            json!(u64::MAX)
        );
        assert_eq!(s(Ty::SFixed64, W::Fixed64(u64::MAX)).unwrap(), json!(-1));
        assert_eq!(
            s(Ty::F32, W::Fixed32(0.1f32.to_bits())).unwrap(),
            json!(0.1)
        );
        assert_eq!(
            s(Ty::F64, W::Fixed64(2.5f64.to_bits())).unwrap(),
            json!(2.5)
        );
        assert_eq!(s(Ty::Str, W::Bytes(b"hi")).unwrap(), json!("hi"));
        assert_eq!(s(Ty::Bytes, W::Bytes(b"hi")).unwrap(), json!("aGk="));
        assert!(matches!(
            s(Ty::F64, W::Fixed64(f64::NAN.to_bits())),
            Err(ProtobufError::InvalidValue { .. })
        ));
        assert!(matches!(
            s(Ty::F32, W::Fixed32(f32::INFINITY.to_bits())),
            Err(ProtobufError::InvalidValue { .. })
        ));
        for (ty, v) in [
            (Ty::Bool, W::Fixed32(0)),
            (Ty::I64, W::Bytes(b"")),
            (Ty::F32, W::Fixed64(0)),
            (Ty::F64, W::Varint(0)),
            (Ty::Str, W::Varint(0)),
        ] {
            assert!(
                matches!(s(ty, v), Err(ProtobufError::Malformed { .. })),
                "{ty:?}"
            );
        }
    }

    #[test]
    fn go_omitempty_zero_test() {
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
        ] {
            assert!(is_zero(&v), "{v}");
        }
        for v in [json!(true), json!(1), json!("x"), json!([0]), json!({})] {
            assert!(!is_zero(&v), "{v}");
        }
    }
}
