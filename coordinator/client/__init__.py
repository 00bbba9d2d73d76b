"""How to reach the coordinator: client config files and the gRPC API client.

Below both the CLI and the operator-side provisioning code; the daemon uses
only the config file format (it writes the admin's client config).
"""
