"""The coordinator's gRPC servicers: ClusterService for clients, NodeService for agents."""
