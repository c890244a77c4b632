//! The writer: an [`Object`] tree back into marshal bytes, exactly as it was read.

use super::object::{Code, Object, StrKind, Value};

/// Why a tree cannot be written (only a tree built or changed by hand can be like this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// A one-byte-length form holds 256 or more items or bytes.
    #[error(
        "a short string, float text or small tuple of {0} items does not fit its 1-byte length"
    )]
    TooLongForShortForm(usize),
    /// A four-byte length past `i32::MAX`.
    #[error("an object of {0} items is too large for marshal")]
    TooLarge(usize),
    /// A long's digit bytes do not match its digit count.
    #[error("a long integer has {bytes} digit bytes for {size} digits")]
    LongDigits {
        /// The digit count.
        size: i32,
        /// The bytes given.
        bytes: usize,
    },
    /// A code object whose field counts do not match its layout.
    #[error("a code object's fields do not match its layout")]
    CodeFields,
}

/// Writes `object` as marshal bytes, appending to `out`.
pub fn write(object: &Object<'_>, out: &mut Vec<u8>) -> Result<(), WriteError> {
    let flag = if object.flag_ref { 0x80 } else { 0 };
    // Only the containers recurse; each has its own small function so that a level of nesting
    // costs little stack, also in unoptimized builds.
    match &object.value {
        Value::Tuple { small, items } => tuple(*small, items, flag, out),
        Value::List(items) => sequence(b'[' | flag, items, out),
        Value::Set(items) => sequence(b'<' | flag, items, out),
        Value::FrozenSet(items) => sequence(b'>' | flag, items, out),
        Value::Dict(pairs) => dict(pairs, flag, out),
        Value::Code(c) => code(c, flag, out),
        Value::Slice(parts) => {
            out.push(b':' | flag);
            all(parts.as_slice(), out)
        }
        leaf_value => leaf(leaf_value, flag, out),
    }
}

#[inline(never)]
fn leaf(value: &Value<'_>, flag: u8, out: &mut Vec<u8>) -> Result<(), WriteError> {
    let (code, fixed): (u8, &[u8]) = match value {
        Value::None => (b'N', &[]),
        Value::False => (b'F', &[]),
        Value::True => (b'T', &[]),
        Value::StopIteration => (b'S', &[]),
        Value::Ellipsis => (b'.', &[]),
        Value::Int64(v) => (b'I', v),
        Value::BinaryFloat(v) => (b'g', v),
        Value::BinaryComplex(v) => (b'y', v),
        Value::Int(v) => {
            out.push(b'i' | flag);
            out.extend_from_slice(&v.to_le_bytes());
            return Ok(());
        }
        Value::Ref(index) => {
            out.push(b'r' | flag);
            out.extend_from_slice(&index.to_le_bytes());
            return Ok(());
        }
        Value::Long { size, digits } => {
            if digits.len() != size.unsigned_abs() as usize * 2 {
                return Err(WriteError::LongDigits {
                    size: *size,
                    bytes: digits.len(),
                });
            }
            out.push(b'l' | flag);
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(digits);
            return Ok(());
        }
        Value::Float(text) => {
            out.push(b'f' | flag);
            return short(text, out);
        }
        Value::Complex(re, im) => {
            out.push(b'x' | flag);
            short(re, out)?;
            return short(im, out);
        }
        Value::Bytes(bytes) => {
            out.push(b's' | flag);
            return long(bytes, out);
        }
        Value::Str(s) => {
            out.push(s.kind.code() | flag);
            return match s.kind {
                StrKind::ShortAscii | StrKind::ShortAsciiInterned => short(s.data, out),
                _ => long(s.data, out),
            };
        }
        Value::Tuple { .. }
        | Value::List(_)
        | Value::Set(_)
        | Value::FrozenSet(_)
        | Value::Dict(_)
        | Value::Code(_)
        | Value::Slice(_) => unreachable!("containers are written by `write`"),
    };
    out.push(code | flag);
    out.extend_from_slice(fixed);
    Ok(())
}

#[inline(never)]
fn tuple(small: bool, items: &[Object<'_>], flag: u8, out: &mut Vec<u8>) -> Result<(), WriteError> {
    if small {
        let n =
            u8::try_from(items.len()).map_err(|_| WriteError::TooLongForShortForm(items.len()))?;
        out.push(b')' | flag);
        out.push(n);
    } else {
        out.push(b'(' | flag);
        length(items.len(), out)?;
    }
    all(items, out)
}

#[inline(never)]
fn sequence(code: u8, items: &[Object<'_>], out: &mut Vec<u8>) -> Result<(), WriteError> {
    out.push(code);
    length(items.len(), out)?;
    all(items, out)
}

#[inline(never)]
fn dict(pairs: &[(Object<'_>, Object<'_>)], flag: u8, out: &mut Vec<u8>) -> Result<(), WriteError> {
    out.push(b'{' | flag);
    for (key, value) in pairs {
        write(key, out)?;
        write(value, out)?;
    }
    out.push(b'0');
    Ok(())
}

#[inline(never)]
fn code(c: &Code<'_>, flag: u8, out: &mut Vec<u8>) -> Result<(), WriteError> {
    let layout = c.layout;
    if c.ints.len() != layout.leading_ints()
        || c.objects.len() != layout.middle_objects()
        || c.tail.len() != layout.trailing_objects()
    {
        return Err(WriteError::CodeFields);
    }
    out.push(b'c' | flag);
    for v in &c.ints {
        out.extend_from_slice(&v.to_le_bytes());
    }
    all(&c.objects, out)?;
    out.extend_from_slice(&c.firstlineno.to_le_bytes());
    all(&c.tail, out)
}

/// [`write`] into a new buffer.
pub fn to_bytes(object: &Object<'_>) -> Result<Vec<u8>, WriteError> {
    let mut out = Vec::new();
    write(object, &mut out)?;
    Ok(out)
}

fn all(items: &[Object<'_>], out: &mut Vec<u8>) -> Result<(), WriteError> {
    items.iter().try_for_each(|item| write(item, out))
}

fn length(n: usize, out: &mut Vec<u8>) -> Result<(), WriteError> {
    let n = i32::try_from(n).map_err(|_| WriteError::TooLarge(n))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn short(data: &[u8], out: &mut Vec<u8>) -> Result<(), WriteError> {
    out.push(u8::try_from(data.len()).map_err(|_| WriteError::TooLongForShortForm(data.len()))?);
    out.extend_from_slice(data);
    Ok(())
}

fn long(data: &[u8], out: &mut Vec<u8>) -> Result<(), WriteError> {
    length(data.len(), out)?;
    out.extend_from_slice(data);
    Ok(())
}
