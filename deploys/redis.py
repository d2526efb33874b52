"""Redis and Sentinel alone: ``pyinfra -y inventories/lab.py deploys/redis.py``."""

from seawall.components.redis import deploy_redis

deploy_redis()
