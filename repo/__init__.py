"""otakit TUF repository: roles, keys, versions, expiry, storage, serving and inspection."""
