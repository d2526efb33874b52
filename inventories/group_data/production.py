"""Data of the `production` group (example values: adjust to your site)."""

ssh_user = "root"

# The admin's public key, on the controller.
admin_ssh_public_key_file = "/etc/seawall/admin_ed25519.pub"

# 0600 file of name=value lines; SEAWALL_SECRET_<NAME> variables override it.
secrets_file = "/etc/seawall/secrets"

ntp_servers = ["ntp1.trading.internal", "ntp2.trading.internal"]

# The gateway's certificate chain and key, already on the gateway host (the
# deploy never generates one in production).
gateway_tls_certificate = "/etc/ssl/trading/gateway.fullchain.pem"
gateway_tls_certificate_key = "/etc/ssl/private/gateway.key"

# Where admins deploy and run seawall from (bastion, VPN range): they reach SSH
# and the admin ports of the firewall. A deploy from anywhere else is shut out
# by the new firewall, and its rollback restores the old table (docs/security.md).
firewall_admin_sources = ["10.20.9.0/24"]
