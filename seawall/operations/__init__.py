"""pyinfra operations seawall needs and pyinfra does not have."""
