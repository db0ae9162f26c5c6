"""The global control plane: where operators define global services and policy."""
