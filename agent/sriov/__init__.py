"""SR-IOV in the agent: PFs sized through sysfs, VFs counted as resources, attached to pods and released clean."""
