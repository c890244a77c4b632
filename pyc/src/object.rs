//! The tree a marshal stream is read into: every byte-level choice CPython made when it wrote
//! the stream (reference flags, which string or tuple form, raw number encodings) is kept, so
//! writing the tree back gives the same bytes.

/// One object of the stream: its value and whether its type byte carried `FLAG_REF` (0x80).
///
/// The flag is kept on every object, also where CPython ignores it (`None`, a reference), so a
/// stream round-trips exactly; it adds an entry to the reference table only for the types
/// [`Value::registers_ref`] names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object<'a> {
    /// `FLAG_REF` was set on the type byte.
    pub flag_ref: bool,
    /// The object itself.
    pub value: Value<'a>,
}

/// The value of an object, one variant per marshal type code. Data is borrowed from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// `N`
    None,
    /// `F`
    False,
    /// `T`
    True,
    /// `S`: the `StopIteration` type.
    StopIteration,
    /// `.`
    Ellipsis,
    /// `i`: a 32-bit signed integer.
    Int(i32),
    /// `I`: a 64-bit integer (read by CPython, no longer written).
    Int64([u8; 8]),
    /// `l`: a long integer: signed count of base-2**15 digits, then the digits as stored.
    Long {
        /// The digit count; negative for a negative number.
        size: i32,
        /// `2 * |size|` bytes of little-endian 15-bit digits.
        digits: &'a [u8],
    },
    /// `f`: a float as text (marshal versions 0 and 1).
    Float(&'a [u8]),
    /// `g`: a float as 8 little-endian IEEE bytes.
    BinaryFloat([u8; 8]),
    /// `x`: a complex as two texts.
    Complex(&'a [u8], &'a [u8]),
    /// `y`: a complex as two 8-byte floats.
    BinaryComplex([u8; 16]),
    /// `s`: a bytes object.
    Bytes(&'a [u8]),
    /// A str, in one of its six encodings.
    Str(Str<'a>),
    /// `)` (small, count in one byte) or `(`: a tuple.
    Tuple {
        /// Written as `)` with a one-byte count.
        small: bool,
        /// The items.
        items: Vec<Object<'a>>,
    },
    /// `[`
    List(Vec<Object<'a>>),
    /// `{`: key/value pairs, ended by a `0` byte.
    Dict(Vec<(Object<'a>, Object<'a>)>),
    /// `<`
    Set(Vec<Object<'a>>),
    /// `>`
    FrozenSet(Vec<Object<'a>>),
    /// `c`: a code object.
    Code(Box<Code<'a>>),
    /// `r`: a reference to an earlier object that carried `FLAG_REF`, by index.
    Ref(u32),
    /// `:` (marshal version 5, CPython 3.14): a slice constant's start, stop and step.
    Slice(Box<[Object<'a>; 3]>),
}

impl Value<'_> {
    /// Whether `FLAG_REF` on this type adds an entry to the reference table, as CPython's reader
    /// does (the singletons and references themselves never do).
    pub fn registers_ref(&self) -> bool {
        !matches!(
            self,
            Value::None
                | Value::False
                | Value::True
                | Value::StopIteration
                | Value::Ellipsis
                | Value::Ref(_)
        )
    }
}

/// A str object: its encoding and its bytes (ASCII, or UTF-8 with surrogates passed through).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Str<'a> {
    /// Which of the six string type codes it was written with.
    pub kind: StrKind,
    /// The encoded characters.
    pub data: &'a [u8],
}

/// The six ways marshal writes a str; CPython picks one from the string's content (ASCII or
/// not, fewer than 256 characters or not) and whether the string object is interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrKind {
    /// `z`: ASCII, length in one byte.
    ShortAscii,
    /// `Z`: interned ASCII, length in one byte.
    ShortAsciiInterned,
    /// `a`: ASCII, length in four bytes.
    Ascii,
    /// `A`: interned ASCII, length in four bytes.
    AsciiInterned,
    /// `u`: UTF-8 (surrogatepass).
    Unicode,
    /// `t`: interned UTF-8 (surrogatepass).
    Interned,
}

impl StrKind {
    /// The type code, without `FLAG_REF`.
    pub fn code(self) -> u8 {
        match self {
            StrKind::ShortAscii => b'z',
            StrKind::ShortAsciiInterned => b'Z',
            StrKind::Ascii => b'a',
            StrKind::AsciiInterned => b'A',
            StrKind::Unicode => b'u',
            StrKind::Interned => b't',
        }
    }

    /// Whether the string object was interned when it was written.
    pub fn is_interned(self) -> bool {
        matches!(
            self,
            StrKind::ShortAsciiInterned | StrKind::AsciiInterned | StrKind::Interned
        )
    }

    /// The kind `w_object` (marshal version 3 and later) writes for a string with these
    /// encoded bytes: ASCII strings of fewer than 256 characters get the one-byte length form,
    /// other ASCII strings the four-byte one, everything else UTF-8.
    pub fn for_content(data: &[u8], interned: bool) -> StrKind {
        match (data.is_ascii(), data.len() < 256, interned) {
            (true, true, false) => StrKind::ShortAscii,
            (true, true, true) => StrKind::ShortAsciiInterned,
            (true, false, false) => StrKind::Ascii,
            (true, false, true) => StrKind::AsciiInterned,
            (false, _, false) => StrKind::Unicode,
            (false, _, true) => StrKind::Interned,
        }
    }
}

/// Which field list a code object has in the stream; it changed with CPython 3.11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeLayout {
    /// CPython 3.8–3.10: argcount, posonlyargcount, kwonlyargcount, nlocals, stacksize, flags;
    /// code, consts, names, varnames, freevars, cellvars, filename, name; firstlineno; lnotab
    /// (linetable on 3.10).
    Py38,
    /// CPython 3.11 and later: argcount, posonlyargcount, kwonlyargcount, stacksize, flags;
    /// code, consts, names, localsplusnames, localspluskinds, filename, name, qualname;
    /// firstlineno; linetable, exceptiontable.
    Py311,
}

impl CodeLayout {
    /// Number of 32-bit integers before the first object field.
    pub fn leading_ints(self) -> usize {
        match self {
            CodeLayout::Py38 => 6,
            CodeLayout::Py311 => 5,
        }
    }

    /// Number of object fields between the leading integers and `co_firstlineno`.
    pub fn middle_objects(self) -> usize {
        8
    }

    /// Number of object fields after `co_firstlineno`.
    pub fn trailing_objects(self) -> usize {
        match self {
            CodeLayout::Py38 => 1,
            CodeLayout::Py311 => 2,
        }
    }

    /// Index of `co_filename` among the middle object fields.
    pub fn filename_index(self) -> usize {
        match self {
            CodeLayout::Py38 => 6,
            CodeLayout::Py311 => 5,
        }
    }
}

/// A code object's fields, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code<'a> {
    /// The field list this code object was read with.
    pub layout: CodeLayout,
    /// The leading 32-bit integers (argument counts, stack size, flags, ...).
    pub ints: Vec<i32>,
    /// The object fields before `co_firstlineno` (bytecode, constants, names, ..., filename).
    pub objects: Vec<Object<'a>>,
    /// `co_firstlineno`.
    pub firstlineno: i32,
    /// The object fields after `co_firstlineno` (line table, exception table).
    pub tail: Vec<Object<'a>>,
}

impl<'a> Code<'a> {
    /// The `co_filename` field.
    pub fn filename(&self) -> &Object<'a> {
        &self.objects[self.layout.filename_index()]
    }

    /// The `co_filename` field, to change it.
    pub fn filename_mut(&mut self) -> &mut Object<'a> {
        &mut self.objects[self.layout.filename_index()]
    }
}
