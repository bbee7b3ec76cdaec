//! Identify data structures (NVMe Base 2.0 §5.17 and the NVM Command Set
//! Specification 1.0).
//!
//! Each builder writes its structure into a caller-provided 4096-byte buffer
//! with every field at its spec offset and everything else zero, and each
//! has a parser for Keel's initiator. Offsets live in one `offset` module
//! per structure, used by both directions; the tests check them against
//! literal numbers from the specification.

mod controller;
mod namespace;
mod namespace_list;
mod nid_descriptors;
mod nvm_controller;

pub use controller::{
    cmic, cntrltype, ctratt, lpa, nvme_version, oaes, oncs, sgls, IdentifyController,
};
pub use namespace::{flbas, IdentifyNamespace, LbaFormat, MAX_LBA_FORMATS};
pub use namespace_list::{read_namespace_list, write_active_namespace_list, MAX_NAMESPACE_LIST};
pub use nid_descriptors::{nidt, NamespaceIdDescriptors};
pub use nvm_controller::IdentifyControllerNvm;

/// Size of every Identify data structure.
pub const IDENTIFY_DATA_LEN: usize = 4096;
