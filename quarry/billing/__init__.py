"""Plans and usage as the caller sees them (the limits themselves are SQL)."""
