//! Little-endian field access at fixed byte offsets.
//!
//! All NVMe and NVMe/TCP structures are little-endian. Callers pass buffers
//! whose size is fixed by the structure (`[u8; 64]`, `[u8; 4096]`...) together
//! with constant offsets, so the indexing below never depends on input; a
//! wrong offset is a programming error that the unit tests catch.

pub(crate) fn u16_at(buf: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(array_at(buf, offset))
}

pub(crate) fn u32_at(buf: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(array_at(buf, offset))
}

pub(crate) fn u64_at(buf: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(array_at(buf, offset))
}

pub(crate) fn u128_at(buf: &[u8], offset: usize) -> u128 {
    u128::from_le_bytes(array_at(buf, offset))
}

pub(crate) fn array_at<const N: usize>(buf: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[offset..offset + N]);
    out
}

pub(crate) fn put_u16(buf: &mut [u8], offset: usize, value: u16) {
    put_bytes(buf, offset, &value.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    put_bytes(buf, offset, &value.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut [u8], offset: usize, value: u64) {
    put_bytes(buf, offset, &value.to_le_bytes());
}

pub(crate) fn put_u128(buf: &mut [u8], offset: usize, value: u128) {
    put_bytes(buf, offset, &value.to_le_bytes());
}

pub(crate) fn put_bytes(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
}
