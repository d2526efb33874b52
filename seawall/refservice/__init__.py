"""The reference service: one small FastAPI app that implements the /health contract for real.

The lab deploys it under every platform service name. It runs on Debian 12's
own packages (FastAPI 0.92, uvicorn 0.17, redis-py 4.3, psycopg 3.1) and
imports nothing from seawall but ``seawall.runtime``.
"""
