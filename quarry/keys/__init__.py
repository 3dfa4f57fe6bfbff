"""API keys: the format, and create/list/revoke through the same SQL supabase-js calls."""
