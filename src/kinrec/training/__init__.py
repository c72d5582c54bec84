"""Training utilities shared by iterative models: samplers, early stopping, seeding."""
