//! Keel replication (see ../shared/ARCHITECTURE.md, "Replication").
