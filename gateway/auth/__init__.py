"""Who is calling: JWT verification and the request's principal."""
