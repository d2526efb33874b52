"""Everything, on every host: ``pyinfra -y inventories/lab.py deploys/site.py``.

Each concern is one ``local.include`` line, in the order they build on each
other; a concern's deploy picks its hosts by their groups.
"""

from pyinfra import local

from seawall.components import name_deploy_files

name_deploy_files(__file__)
local.include("deploys/common.py")
local.include("deploys/firewall.py")
local.include("deploys/logging.py")
local.include("deploys/redis.py")
local.include("deploys/etcd.py")
local.include("deploys/postgres.py")
local.include("deploys/pgroute.py")
local.include("deploys/pgbackrest.py")
local.include("deploys/services.py")
local.include("deploys/gateway.py")
local.include("deploys/metrics.py")
local.include("deploys/ops.py")
