"""pyinfra facts seawall needs and pyinfra does not have."""
