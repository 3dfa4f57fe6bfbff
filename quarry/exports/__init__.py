"""Data export (GDPR Art. 20): requests, the streamed archive, its storage, links and expiry."""
