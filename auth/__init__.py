"""Authentication: server secrets, accounts and API keys, tokens and their permissions."""
