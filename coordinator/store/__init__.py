"""The coordinator's key-value store: the etcd-shaped Store Protocol and its implementations."""
