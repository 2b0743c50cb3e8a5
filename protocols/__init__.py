"""Front-ends: one subpackage per protocol, each calling the shared services."""
