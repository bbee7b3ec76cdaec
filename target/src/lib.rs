//! Keel NVMe/TCP target.
