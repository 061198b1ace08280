//! The protobuf wire format, read without a schema: tags, varints, fixed-width words and
//! length-delimited payloads borrowed from the input.

/// One field value as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl WireValue<'_> {
    /// The wire type's name, for error messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            WireValue::Varint(_) => "varint",
            WireValue::Fixed64(_) => "fixed64",
            WireValue::Bytes(_) => "length-delimited",
            WireValue::Fixed32(_) => "fixed32",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum WireError {
    /// The data ends inside a tag, a value or a length-delimited payload.
    Truncated,
    /// A varint longer than ten bytes or above 64 bits.
    VarintOverflow,
    /// Wire types 3 and 4 (groups, unused by Kubernetes) and 6, 7 (undefined).
    WireType(u8),
    /// Field number 0 or above 2^29 - 1.
    FieldNumber(u64),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => f.write_str("data ends early"),
            WireError::VarintOverflow => f.write_str("varint longer than 64 bits"),
            WireError::WireType(t) => write!(f, "unsupported wire type {t}"),
            WireError::FieldNumber(n) => write!(f, "invalid field number {n}"),
        }
    }
}

const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

/// A cursor over one message's bytes.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub(super) fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.data.get(self.pos).ok_or(WireError::Truncated)?;
            self.pos += 1;
            // The tenth byte holds only the 64th bit.
            if i == 9 && byte > 1 {
                return Err(WireError::VarintOverflow);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError::VarintOverflow)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let bytes = self.data.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    pub(super) fn fixed32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn fixed64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        Ok(u64::from_le_bytes(word))
    }

    /// The next field (number and value), or `None` at the end of the message.
    pub(super) fn field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, WireError> {
        if self.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = match u32::try_from(tag >> 3) {
            Ok(n) if n != 0 && n <= MAX_FIELD_NUMBER => n,
            _ => return Err(WireError::FieldNumber(tag >> 3)),
        };
        // The wire type is the tag's low three bits.
        let value = match tag.to_le_bytes()[0] & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(self.fixed64()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => WireValue::Fixed32(self.fixed32()?),
            other => return Err(WireError::WireType(other)),
        };
        Ok(Some((number, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(data: &[u8]) -> Result<Vec<(u32, WireValue<'_>)>, WireError> {
        let mut r = Reader::new(data);
        let mut out = Vec::new();
        while let Some(f) = r.field()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn reads_every_wire_type() {
        let data = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 0, 0, 0, 0, 0, 0, 0x80, // 2: fixed64
            0x1a, 3, b'a', b'b', b'c', // 3: bytes "abc"
            0x25, 0x78, 0x56, 0x34, 0x12, // 4: fixed32
        ];
        assert_eq!(
            fields(&data).unwrap(),
            vec![
                (1, WireValue::Varint(150)),
                (2, WireValue::Fixed64(0x8000_0000_0000_0001)),
                (3, WireValue::Bytes(b"abc")),
                (4, WireValue::Fixed32(0x1234_5678)),
            ]
        );
    }

    #[test]
    fn ten_byte_varints() {
        // -1 as int64: ten bytes, the last one 0x01.
        let mut data = vec![0x08];
        data.extend([0xff; 9]);
        data.push(0x01);
        assert_eq!(
            fields(&data).unwrap(),
            vec![(1, WireValue::Varint(u64::MAX))]
        );
        *data.last_mut().unwrap() = 0x02;
        assert_eq!(fields(&data), Err(WireError::VarintOverflow));
        let mut long = vec![0x08];
        long.extend([0x80; 10]);
        long.push(0);
        assert_eq!(fields(&long), Err(WireError::VarintOverflow));
    }

    #[test]
    fn large_field_numbers() {
        // Field 2^29 - 1, varint 0.
        assert_eq!(
            fields(&[0xf8, 0xff, 0xff, 0xff, 0x0f, 0]).unwrap(),
            vec![(MAX_FIELD_NUMBER, WireValue::Varint(0))]
        );
        assert_eq!(
            fields(&[0x80, 0x80, 0x80, 0x80, 0x10, 0]),
            Err(WireError::FieldNumber(1 << 29))
        );
    }

    #[test]
    fn rejects_truncation_and_bad_tags() {
        assert_eq!(fields(&[0x08]), Err(WireError::Truncated));
        assert_eq!(fields(&[0x08, 0x80]), Err(WireError::Truncated));
        assert_eq!(fields(&[0x0a, 5, b'a']), Err(WireError::Truncated));
        assert_eq!(fields(&[0x11, 1, 2]), Err(WireError::Truncated));
        assert_eq!(fields(&[0x15, 1]), Err(WireError::Truncated));
        assert_eq!(
            fields(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(WireError::Truncated)
        );
        assert_eq!(fields(&[0x0b]), Err(WireError::WireType(3)));
        assert_eq!(fields(&[0x0e]), Err(WireError::WireType(6)));
        assert_eq!(fields(&[0x00, 0]), Err(WireError::FieldNumber(0)));
        assert_eq!(fields(&[]).unwrap(), vec![]);
    }
}
