"""rtbook.checks."""
