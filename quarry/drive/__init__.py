"""Google Drive: OAuth, the encrypted refresh token, folder configs and the sync (DESIGN §5)."""
