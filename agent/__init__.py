"""atoll-agent: the per-host daemon (kubelet, kube-proxy and flanneld in one)."""
