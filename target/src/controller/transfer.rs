//! Checks of the data pointer (SGL1) against what a command transfers.
//!
//! NVMe/TCP (TCP Transport 1.0 §3.3.6) describes command data with one
//! SGL descriptor: Data Block/Offset (01h) for in-capsule data, Transport
//! Data Block (5Ah) for data moved by C2HData or R2T + H2CData. The data
//! length in the descriptor must equal what the command implies; a
//! mismatch is "Data SGL Length Invalid" (NVMe Base 2.0 §4.3.2).

use crate::nvme::sgl::SglDescriptor;
use crate::nvme::sqe::{Psdt, SubmissionQueueEntry};
use crate::nvme::status::Status;

/// Where the data of a host-to-controller command comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSource {
    /// Already in the command capsule: `len` bytes at `offset` of the
    /// in-capsule data.
    InCapsule {
        /// Offset in the in-capsule data.
        offset: usize,
        /// Length in bytes.
        len: usize,
    },
    /// To be fetched with R2T and H2CData.
    FromHost {
        /// Length in bytes.
        len: u64,
    },
}

impl DataSource {
    /// Bytes to transfer.
    pub fn len(&self) -> u64 {
        match *self {
            Self::InCapsule { len, .. } => len as u64,
            Self::FromHost { len } => len,
        }
    }

    /// Whether there is nothing to transfer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The in-capsule bytes, when the data came in the capsule.
    pub fn in_capsule<'a>(&self, capsule_data: &'a [u8]) -> Option<&'a [u8]> {
        match *self {
            Self::InCapsule { offset, len } => capsule_data.get(offset..offset.checked_add(len)?),
            Self::FromHost { .. } => None,
        }
    }
}

/// Fabrics commands use SGLs; PRPs and the reserved PSDT value are invalid
/// (NVMe Base 2.0 §4.1.2: "PSDT shall be 01b for fabrics").
pub(crate) fn check_psdt(sqe: &SubmissionQueueEntry) -> Result<(), Status> {
    match sqe.psdt() {
        Psdt::SglMetadataBuffer => Ok(()),
        Psdt::Prp | Psdt::SglMetadataSegment | Psdt::Reserved => Err(Status::INVALID_FIELD),
    }
}

/// A command that transfers no data must not describe any.
pub(crate) fn expect_no_data(sqe: &SubmissionQueueEntry) -> Result<(), Status> {
    match sqe.sgl1().data_length() {
        None | Some(0) => Ok(()),
        Some(_) => Err(Status::DATA_SGL_LENGTH_INVALID),
    }
}

/// A command that sends `len` bytes to the host: SGL1 must be a transport
/// data block of exactly `len` bytes.
pub(crate) fn expect_data_to_host(sqe: &SubmissionQueueEntry, len: u64) -> Result<(), Status> {
    match sqe.sgl1() {
        SglDescriptor::TransportDataBlock { length } if u64::from(length) == len => Ok(()),
        SglDescriptor::TransportDataBlock { .. } => Err(Status::DATA_SGL_LENGTH_INVALID),
        // In-capsule data only travels host to controller.
        SglDescriptor::InCapsule { .. } => Err(Status::INVALID_FIELD),
        _ => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
    }
}

/// A command that receives `len` bytes from the host, in the capsule
/// (`capsule_data` holds what arrived, at most `in_capsule_max` bytes are
/// allowed) or by R2T.
pub(crate) fn expect_data_from_host(
    sqe: &SubmissionQueueEntry,
    len: u64,
    capsule_data: &[u8],
    in_capsule_max: u32,
) -> Result<DataSource, Status> {
    expect_data_from_host_within(sqe, len..=len, capsule_data, in_capsule_max)
}

/// Like [`expect_data_from_host`] for a command whose data may be longer
/// than what it uses: Dataset Management, whose range list the Linux host
/// always sends in a 4 KiB buffer (room for 256 ranges) whatever NR says;
/// nvmet accepts any length of at least NR ranges too.
pub(crate) fn expect_data_from_host_within(
    sqe: &SubmissionQueueEntry,
    len: std::ops::RangeInclusive<u64>,
    capsule_data: &[u8],
    in_capsule_max: u32,
) -> Result<DataSource, Status> {
    match sqe.sgl1() {
        SglDescriptor::InCapsule { offset, length } => {
            if !len.contains(&u64::from(length)) {
                return Err(Status::DATA_SGL_LENGTH_INVALID);
            }
            let end = offset.checked_add(u64::from(length));
            let fits = end.is_some_and(|end| {
                end <= u64::from(in_capsule_max) && end <= capsule_data.len() as u64
            });
            if !fits {
                return Err(Status::SGL_OFFSET_INVALID);
            }
            // Both bounded by capsule_data.len() above.
            Ok(DataSource::InCapsule {
                offset: offset as usize,
                len: length as usize,
            })
        }
        SglDescriptor::TransportDataBlock { length } if len.contains(&u64::from(length)) => {
            Ok(DataSource::FromHost {
                len: u64::from(length),
            })
        }
        SglDescriptor::TransportDataBlock { .. } => Err(Status::DATA_SGL_LENGTH_INVALID),
        _ => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
    }
}

/// Copies `page[offset..]` into `out` (whose length is the transfer
/// length), zero-filling past the end of the page: reads beyond a log page
/// return zeros. An offset past the end is Invalid Field (NVMe Base 2.0
/// §5.16, "Log Page Offset").
pub(crate) fn copy_window(page: &[u8], offset: u64, out: &mut [u8]) -> Result<(), Status> {
    let start = usize::try_from(offset).map_err(|_| Status::INVALID_FIELD)?;
    let tail = page.get(start..).ok_or(Status::INVALID_FIELD)?;
    let copied = tail.len().min(out.len());
    let (head, rest) = out.split_at_mut(copied);
    head.copy_from_slice(&tail[..copied]);
    rest.fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqe_with(sgl: SglDescriptor) -> SubmissionQueueEntry {
        let mut sqe = SubmissionQueueEntry::default();
        sqe.set_psdt(Psdt::SglMetadataBuffer);
        sqe.set_sgl1(sgl);
        sqe
    }

    #[test]
    fn to_host_rules() {
        let sqe = sqe_with(SglDescriptor::TransportDataBlock { length: 4096 });
        assert_eq!(expect_data_to_host(&sqe, 4096), Ok(()));
        assert_eq!(
            expect_data_to_host(&sqe, 512),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        let sqe = sqe_with(SglDescriptor::InCapsule {
            offset: 0,
            length: 4096,
        });
        assert_eq!(expect_data_to_host(&sqe, 4096), Err(Status::INVALID_FIELD));
        let sqe = sqe_with(SglDescriptor::KeyedDataBlock {
            address: 0,
            length: 1,
            key: 0,
            invalidate: false,
        });
        assert_eq!(
            expect_data_to_host(&sqe, 1),
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
        );
    }

    #[test]
    fn from_host_rules() {
        let data = [0u8; 100];
        let sqe = sqe_with(SglDescriptor::InCapsule {
            offset: 4,
            length: 96,
        });
        assert_eq!(
            expect_data_from_host(&sqe, 96, &data, 4096),
            Ok(DataSource::InCapsule { offset: 4, len: 96 })
        );
        assert_eq!(
            expect_data_from_host(&sqe, 96, &data, 64),
            Err(Status::SGL_OFFSET_INVALID)
        );
        let sqe = sqe_with(SglDescriptor::InCapsule {
            offset: u64::MAX,
            length: 96,
        });
        assert_eq!(
            expect_data_from_host(&sqe, 96, &data, 4096),
            Err(Status::SGL_OFFSET_INVALID)
        );
        let sqe = sqe_with(SglDescriptor::TransportDataBlock { length: 8192 });
        assert_eq!(
            expect_data_from_host(&sqe, 8192, &data, 0),
            Ok(DataSource::FromHost { len: 8192 })
        );
        assert_eq!(
            DataSource::InCapsule { offset: 4, len: 2 }
                .in_capsule(&data)
                .map(<[u8]>::len),
            Some(2)
        );
    }

    #[test]
    fn window_zero_fills() {
        let page = [1u8, 2, 3, 4];
        let mut out = [9u8; 6];
        copy_window(&page, 2, &mut out).unwrap();
        assert_eq!(out, [3, 4, 0, 0, 0, 0]);
        assert_eq!(copy_window(&page, 5, &mut out), Err(Status::INVALID_FIELD));
        copy_window(&page, 4, &mut out).unwrap();
        assert_eq!(out, [0; 6]);
    }
}
