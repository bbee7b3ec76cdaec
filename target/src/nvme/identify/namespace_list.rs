//! Namespace lists (CNS 02h Active Namespace ID list), NVMe Base 2.0
//! §5.17.2 and "Namespace List": up to 1024 NSIDs in increasing order, each
//! greater than the NSID in the command, zero-filled after the last one.

use crate::nvme::identify::IDENTIFY_DATA_LEN;
use crate::nvme::text::FieldError;
use crate::wire::{put_u32, u32_at};

/// Most NSIDs one list holds (4096 / 4).
pub const MAX_NAMESPACE_LIST: usize = IDENTIFY_DATA_LEN / 4;

/// Writes the active NSIDs greater than `after` (the command's NSID), up
/// to 1024 of them. `active` must be strictly increasing and hold no 0 or
/// broadcast (FFFFFFFFh) value. Returns how many NSIDs were written.
pub fn write_active_namespace_list(
    active: &[u32],
    after: u32,
    out: &mut [u8; IDENTIFY_DATA_LEN],
) -> Result<usize, FieldError> {
    let ascending = active.windows(2).all(|pair| pair[0] < pair[1]);
    let valid = active.iter().all(|&nsid| nsid != 0 && nsid != u32::MAX);
    if !(ascending && valid) {
        return Err(FieldError::Invalid {
            field: "NSID list",
            reason: "NSIDs must be strictly increasing, non-zero and not FFFFFFFFh",
        });
    }
    out.fill(0);
    let mut written = 0;
    for &nsid in active
        .iter()
        .filter(|&&nsid| nsid > after)
        .take(MAX_NAMESPACE_LIST)
    {
        put_u32(out, written * 4, nsid);
        written += 1;
    }
    Ok(written)
}

/// Reads a namespace list: the NSIDs before the first zero entry.
pub fn read_namespace_list(bytes: &[u8; IDENTIFY_DATA_LEN]) -> impl Iterator<Item = u32> + '_ {
    (0..MAX_NAMESPACE_LIST)
        .map(move |index| u32_at(bytes, index * 4))
        .take_while(|&nsid| nsid != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_nsids_after_the_given_one() {
        let mut b = Box::new([0xFFu8; IDENTIFY_DATA_LEN]);
        assert_eq!(write_active_namespace_list(&[1, 2, 7], 0, &mut b), Ok(3));
        assert_eq!(&b[0..12], &[1, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0]);
        assert!(b[12..].iter().all(|&c| c == 0));
        assert_eq!(read_namespace_list(&b).collect::<Vec<_>>(), vec![1, 2, 7]);

        assert_eq!(write_active_namespace_list(&[1, 2, 7], 2, &mut b), Ok(1));
        assert_eq!(read_namespace_list(&b).collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn caps_at_1024_entries_and_rejects_bad_input() {
        let many: Vec<u32> = (1..=2000).collect();
        let mut b = Box::new([0u8; IDENTIFY_DATA_LEN]);
        assert_eq!(write_active_namespace_list(&many, 0, &mut b), Ok(1024));
        assert_eq!(read_namespace_list(&b).last(), Some(1024));
        assert!(write_active_namespace_list(&[2, 1], 0, &mut b).is_err());
        assert!(write_active_namespace_list(&[0], 0, &mut b).is_err());
        assert!(write_active_namespace_list(&[u32::MAX], 0, &mut b).is_err());
    }
}
