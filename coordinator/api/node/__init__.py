"""The node API: what agents call (register, heartbeat, assignments, node config, services)."""
