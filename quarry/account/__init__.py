"""Who the caller is: api.me() as a service."""
