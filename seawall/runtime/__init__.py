"""What the platform's services import: Redis reconnect and disk buffer, JSON logs, /health.

Only the standard library, redis-py and psycopg: no pyinfra, no typer.
"""
