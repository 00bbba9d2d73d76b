"""Controllers: level-triggered loops that drive the store toward what objects ask for."""
