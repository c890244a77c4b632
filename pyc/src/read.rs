//! The reader: a .pyc body into an [`Object`] tree, with CPython's own limits and checks on
//! references, and a bounded amount of work for any input.

use super::object::{Code, Object, Str, StrKind, Value};
use super::Format;

/// Deepest nesting accepted.
///
/// CPython reads and writes up to 2000 levels, but real bodies stay far below: the tokenizer
/// allows 200 nested brackets and 100 indentation levels, and the standard library's deepest
/// bodies have a few dozen levels (`client/tests/marshal.rs` prints the measure). 512 keeps the recursive reader,
/// writer and relocation within 1 MiB of stack even in an unoptimized build (about 1–2 KiB a
/// level there), so a hostile body cannot overflow a 2 MiB thread stack; a deeper body is
/// refused, never misread.
pub const MAX_DEPTH: usize = 512;

/// Why a byte string is not a marshal stream this reader accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarshalError {
    /// The stream ends inside an object.
    #[error("marshal data ends early at byte {offset}")]
    Truncated {
        /// Where more bytes were needed.
        offset: usize,
    },
    /// A type code that is not one of marshal's (or not one of this version's).
    #[error("unknown marshal type code 0x{code:02x} at byte {offset}")]
    UnknownType {
        /// The type byte, without the reference flag.
        code: u8,
        /// Its position.
        offset: usize,
    },
    /// A negative or out-of-range length or count.
    #[error("bad length {length} at byte {offset}")]
    BadLength {
        /// The length as read.
        length: i64,
        /// Its position.
        offset: usize,
    },
    /// A reference to an object that is not (yet) in the reference table.
    #[error("invalid reference {index} at byte {offset}")]
    BadRef {
        /// The index as read.
        index: u32,
        /// Its position.
        offset: usize,
    },
    /// A null object outside the end of a dict, or a flagged one.
    #[error("null object in marshal data at byte {offset}")]
    Null {
        /// Its position.
        offset: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("marshal data nested deeper than {MAX_DEPTH} at byte {offset}")]
    TooDeep {
        /// Where the limit was passed.
        offset: usize,
    },
    /// Bytes after the top object.
    #[error("{extra} bytes after the marshalled object")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// Reads a whole marshal stream (a .pyc body without its 16-byte header) written in `format`.
///
/// The input must be exactly one object. Work and memory are linear in the input's length,
/// nesting is bounded by [`MAX_DEPTH`], and every reference must point to an object already
/// complete, as CPython requires.
pub fn read(body: &[u8], format: Format) -> Result<Object<'_>, MarshalError> {
    let mut reader = Reader {
        data: body,
        pos: 0,
        depth: 0,
        refs: Vec::new(),
        format,
    };
    let top = reader.object()?;
    if reader.pos != body.len() {
        return Err(MarshalError::TrailingBytes {
            extra: body.len() - reader.pos,
        });
    }
    Ok(top)
}

const FLAG_REF: u8 = 0x80;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    depth: usize,
    /// One entry per reference-table slot: true once the object is complete.
    refs: Vec<bool>,
    format: Format,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MarshalError> {
        if self.data.len() - self.pos < n {
            return Err(MarshalError::Truncated { offset: self.pos });
        }
        let bytes = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, MarshalError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MarshalError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn i32(&mut self) -> Result<i32, MarshalError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// A four-byte count of things that each take at least `unit` bytes: refused when negative
    /// or when the rest of the stream cannot hold them, before anything is allocated.
    fn count(&mut self, unit: usize) -> Result<usize, MarshalError> {
        let offset = self.pos;
        let n = self.i32()?;
        let bad = MarshalError::BadLength {
            length: n.into(),
            offset,
        };
        let n = usize::try_from(n).map_err(|_| bad.clone())?;
        if n.saturating_mul(unit) > self.data.len() - self.pos {
            return Err(MarshalError::Truncated { offset: self.pos });
        }
        Ok(n)
    }

    fn short_text(&mut self) -> Result<&'a [u8], MarshalError> {
        let n = self.byte()?;
        self.take(n.into())
    }

    /// Adds a slot to the reference table; `complete` is false for the types CPython registers
    /// only once their contents are read (code, non-empty frozenset, slice).
    fn register(&mut self, flag_ref: bool, complete: bool) -> Option<usize> {
        flag_ref.then(|| {
            self.refs.push(complete);
            self.refs.len() - 1
        })
    }

    fn items(&mut self, n: usize) -> Result<Vec<Object<'a>>, MarshalError> {
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.object()?);
        }
        Ok(items)
    }

    fn object(&mut self) -> Result<Object<'a>, MarshalError> {
        let offset = self.pos;
        let code = self.byte()?;
        if self.depth >= MAX_DEPTH {
            return Err(MarshalError::TooDeep { offset });
        }
        let flag_ref = code & FLAG_REF != 0;
        let code = code & !FLAG_REF;
        // Only the container types recurse; each has its own small function so that a level of
        // nesting costs little stack, also in unoptimized builds.
        self.depth += 1;
        let value = match code {
            b')' | b'(' => self.tuple(code == b')', flag_ref),
            b'[' | b'<' | b'>' => self.sequence(code, flag_ref),
            b'{' => self.dict(flag_ref),
            b'c' => self.code(flag_ref),
            b':' if self.format.slices => self.slice(flag_ref),
            _ => self.leaf(code, flag_ref, offset),
        }?;
        self.depth -= 1;
        Ok(Object { flag_ref, value })
    }

    /// A type that holds no other object.
    #[inline(never)]
    fn leaf(&mut self, code: u8, flag_ref: bool, offset: usize) -> Result<Value<'a>, MarshalError> {
        let value = match code {
            b'N' => return Ok(Value::None),
            b'F' => return Ok(Value::False),
            b'T' => return Ok(Value::True),
            b'S' => return Ok(Value::StopIteration),
            b'.' => return Ok(Value::Ellipsis),
            b'r' => return self.reference(),
            b'0' => return Err(MarshalError::Null { offset }),
            b'i' => Value::Int(self.i32()?),
            b'I' => Value::Int64(self.array()?),
            b'l' => {
                let at = self.pos;
                let size = self.i32()?;
                if size == i32::MIN {
                    return Err(MarshalError::BadLength {
                        length: size.into(),
                        offset: at,
                    });
                }
                let digits = self.take(size.unsigned_abs() as usize * 2)?;
                Value::Long { size, digits }
            }
            b'f' => Value::Float(self.short_text()?),
            b'g' => Value::BinaryFloat(self.array()?),
            b'x' => Value::Complex(self.short_text()?, self.short_text()?),
            b'y' => Value::BinaryComplex(self.array()?),
            b's' => {
                let n = self.count(1)?;
                Value::Bytes(self.take(n)?)
            }
            b'z' | b'Z' | b'a' | b'A' | b'u' | b't' => {
                let kind = match code {
                    b'z' => StrKind::ShortAscii,
                    b'Z' => StrKind::ShortAsciiInterned,
                    b'a' => StrKind::Ascii,
                    b'A' => StrKind::AsciiInterned,
                    b'u' => StrKind::Unicode,
                    _ => StrKind::Interned,
                };
                let n = match kind {
                    StrKind::ShortAscii | StrKind::ShortAsciiInterned => self.byte()?.into(),
                    _ => self.count(1)?,
                };
                Value::Str(Str {
                    kind,
                    data: self.take(n)?,
                })
            }
            _ => return Err(MarshalError::UnknownType { code, offset }),
        };
        // Registered once read: the same index CPython gives, as nothing is nested inside.
        self.register(flag_ref, true);
        Ok(value)
    }

    #[inline(never)]
    fn reference(&mut self) -> Result<Value<'a>, MarshalError> {
        let offset = self.pos;
        let index = u32::from_le_bytes(self.array()?);
        match self.refs.get(index as usize) {
            Some(true) => Ok(Value::Ref(index)),
            _ => Err(MarshalError::BadRef { index, offset }),
        }
    }

    #[inline(never)]
    fn tuple(&mut self, small: bool, flag_ref: bool) -> Result<Value<'a>, MarshalError> {
        let n = if small {
            let n: usize = self.byte()?.into();
            if n > self.data.len() - self.pos {
                return Err(MarshalError::Truncated { offset: self.pos });
            }
            n
        } else {
            self.count(1)?
        };
        self.register(flag_ref, true);
        let items = self.items(n)?;
        Ok(Value::Tuple { small, items })
    }

    #[inline(never)]
    fn sequence(&mut self, code: u8, flag_ref: bool) -> Result<Value<'a>, MarshalError> {
        let n = self.count(1)?;
        // CPython registers lists, sets and the empty frozenset at once, a non-empty frozenset
        // only when it is complete.
        let slot = self.register(flag_ref, code != b'>' || n == 0);
        let items = self.items(n)?;
        self.complete(slot);
        Ok(match code {
            b'[' => Value::List(items),
            b'<' => Value::Set(items),
            _ => Value::FrozenSet(items),
        })
    }

    #[inline(never)]
    fn dict(&mut self, flag_ref: bool) -> Result<Value<'a>, MarshalError> {
        self.register(flag_ref, true);
        let mut pairs = Vec::new();
        loop {
            if self.data.get(self.pos) == Some(&b'0') {
                self.pos += 1;
                return Ok(Value::Dict(pairs));
            }
            let key = self.object()?;
            let value = self.object()?;
            pairs.push((key, value));
        }
    }

    #[inline(never)]
    fn slice(&mut self, flag_ref: bool) -> Result<Value<'a>, MarshalError> {
        let slot = self.register(flag_ref, false);
        let parts = [self.object()?, self.object()?, self.object()?];
        self.complete(slot);
        Ok(Value::Slice(Box::new(parts)))
    }

    fn complete(&mut self, slot: Option<usize>) {
        if let Some(slot) = slot {
            self.refs[slot] = true;
        }
    }

    #[inline(never)]
    fn code(&mut self, flag_ref: bool) -> Result<Value<'a>, MarshalError> {
        let slot = self.register(flag_ref, false);
        let layout = self.format.layout;
        let ints = (0..layout.leading_ints())
            .map(|_| self.i32())
            .collect::<Result<Vec<_>, _>>()?;
        let objects = self.items(layout.middle_objects())?;
        let firstlineno = self.i32()?;
        let tail = self.items(layout.trailing_objects())?;
        self.complete(slot);
        Ok(Value::Code(Box::new(Code {
            layout,
            ints,
            objects,
            firstlineno,
            tail,
        })))
    }
}
