"""Cluster address allocation: flannel subnet leases for nodes, cluster IPs for services."""
