//! Node facts: what the host is. The inventory is read from the host's files only (through
//! [`HostPaths`]), so it reports the host, not the container, in a DaemonSet.

pub mod inventory;
