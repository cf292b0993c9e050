"""anoncam provisioning: installer tooling (fleet inventory, credentials, card writing)."""
