"""The Kubernetes REST API, a facade over the same servicer, registry and store as gRPC.

`coordinator serve --kube-listen HOST:PORT` serves it (coordinator.kube.server),
so that kubectl and Kubernetes client libraries work against Atoll. Modules:
resources (what is served), discovery, access (authentication, roles, audit),
convert (JSON <-> messages), selectors (field selectors), patch, tables
(server-side Table output), status (errors as Status), handlers (requests ->
ClusterService calls), streams (watch and logs), server (aiohttp and TLS).
"""
