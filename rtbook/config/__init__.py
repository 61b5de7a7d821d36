"""rtbook.config."""
