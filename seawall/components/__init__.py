"""Packaged pyinfra deploys, one module per concern, each with a ``deploy_<concern>()``."""
