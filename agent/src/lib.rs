//! The node agent: volume discovery on the host and the data mover. Filled in by the cluster issues.
