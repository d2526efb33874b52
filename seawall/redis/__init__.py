"""Redis HA on the controller side: client settings from inventory, status, drills."""
