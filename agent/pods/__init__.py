"""Running pods: render specs, plan actions, execute them, report status."""
