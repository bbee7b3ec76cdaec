//! Bounds-checked little-endian cursors.
//!
//! All peer input is read through [`Reader`], whose every method returns
//! `None` instead of panicking when the input is short; [`Writer`] returns
//! an error instead of panicking when the output is short.

use crate::wire::error::{DecodeError, EncodeError, FieldProblem};

/// Reads fixed-size little-endian values from the front of a byte slice.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[byte]| byte)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Turns a short read into the typed error naming the field.
pub(crate) trait Required<T> {
    fn field(self, field: &'static str) -> Result<T, DecodeError>;
}

impl<T> Required<T> for Option<T> {
    fn field(self, field: &'static str) -> Result<T, DecodeError> {
        self.ok_or(DecodeError::malformed(field, FieldProblem::Truncated))
    }
}

/// Appends little-endian values to a caller-provided buffer.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    written: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, written: 0 }
    }

    pub(crate) fn written(&self) -> usize {
        self.written
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let available = self.buf.len();
        let too_small = |needed| EncodeError::BufferTooSmall { needed, available };
        let end = self
            .written
            .checked_add(bytes.len())
            .ok_or(too_small(usize::MAX))?;
        let target = self.buf.get_mut(self.written..end).ok_or(too_small(end))?;
        target.copy_from_slice(bytes);
        self.written = end;
        Ok(())
    }

    pub(crate) fn zeros<const N: usize>(&mut self) -> Result<(), EncodeError> {
        self.put(&[0; N])
    }

    pub(crate) fn u8(&mut self, value: u8) -> Result<(), EncodeError> {
        self.put(&[value])
    }

    pub(crate) fn u16(&mut self, value: u16) -> Result<(), EncodeError> {
        self.put(&value.to_le_bytes())
    }

    pub(crate) fn u32(&mut self, value: u32) -> Result<(), EncodeError> {
        self.put(&value.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, value: u64) -> Result<(), EncodeError> {
        self.put(&value.to_le_bytes())
    }
}
