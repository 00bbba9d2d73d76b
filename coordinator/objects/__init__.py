"""API objects in the store: typed access (registry), caches kept by watch (informer), events."""
