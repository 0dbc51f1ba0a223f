//! Arrow values as JSON bytes, the way request bodies write them.

use std::io::Write;

use arrow::array::{
    Array, AsArray, Float64Array, Int64Array, LargeStringArray, ListArray, StringArray,
    StringViewArray,
};
use arrow::datatypes::DataType;

use crate::{ContactField, SinkError};

/// A column downcast once per batch, with its `"name":` key pre-encoded.
pub(crate) struct Column<'a> {
    pub(crate) key: &'a [u8],
    values: Values<'a>,
}

pub(crate) enum Values<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    Utf8List(&'a ListArray, &'a StringArray),
}

impl<'a> Column<'a> {
    pub(crate) fn new(
        array: &'a dyn Array,
        field: &ContactField,
        key: &'a [u8],
    ) -> Result<Self, SinkError> {
        let values = match array.data_type() {
            DataType::Utf8 => Values::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Values::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => Values::Utf8View(array.as_string_view()),
            DataType::Int64 => Values::Int64(array.as_primitive()),
            DataType::Float64 => Values::Float64(array.as_primitive()),
            DataType::List(item) if item.data_type() == &DataType::Utf8 => {
                let list = array.as_list::<i32>();
                Values::Utf8List(list, list.values().as_string::<i32>())
            }
            other => {
                return Err(SinkError::Internal(format!(
                    "field {} arrived as {other}, which the encoder does not write",
                    field.name
                )));
            }
        };
        Ok(Self { key, values })
    }

    /// The value of a text column.
    pub(crate) fn text(&self, row: usize) -> Option<&'a str> {
        match self.values {
            Values::Utf8(a) => a.is_valid(row).then(|| a.value(row)),
            Values::LargeUtf8(a) => a.is_valid(row).then(|| a.value(row)),
            Values::Utf8View(a) => a.is_valid(row).then(|| a.value(row)),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self, row: usize) -> bool {
        match self.values {
            Values::Utf8(a) => a.is_null(row),
            Values::LargeUtf8(a) => a.is_null(row),
            Values::Utf8View(a) => a.is_null(row),
            Values::Int64(a) => a.is_null(row),
            Values::Float64(a) => a.is_null(row) || !a.value(row).is_finite(),
            Values::Utf8List(a, _) => a.is_null(row),
        }
    }

    pub(crate) fn write_value(&self, out: &mut Vec<u8>, row: usize) {
        match self.values {
            Values::Utf8(a) => write_json_string(out, a.value(row)),
            Values::LargeUtf8(a) => write_json_string(out, a.value(row)),
            Values::Utf8View(a) => write_json_string(out, a.value(row)),
            Values::Int64(a) => {
                let _ = write!(out, "{}", a.value(row));
            }
            Values::Float64(a) => {
                let _ = write!(out, "{}", a.value(row));
            }
            Values::Utf8List(list, strings) => {
                out.push(b'[');
                let offsets = list.value_offsets();
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                let mut first = true;
                for i in start..end {
                    if strings.is_null(i) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_json_string(out, strings.value(i));
                }
                out.push(b']');
            }
        }
    }
}

/// Writes `s` as a JSON string: quotes, backslashes and control characters escaped,
/// everything else (including non-ASCII) as UTF-8.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}
