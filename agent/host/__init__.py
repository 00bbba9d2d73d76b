"""The host itself: facts and usage behind the HostMetrics Protocol, and the node status built from them."""
