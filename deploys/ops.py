"""The ops host as controller: ``pyinfra -y inventories/lab.py deploys/ops.py``.

The first ``ops`` host gets seawall's venv, the site copies, the drift cron and
the restart timer; every host trusts its key.
"""

from seawall.components.ops import deploy_ops

deploy_ops()
