"""The Atoll coordinator: API, scheduler, controllers and the operator CLI."""
