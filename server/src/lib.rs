//! The server: controllers, the velero.io/v1 API types and the agent service. Filled in by the cluster issues.
