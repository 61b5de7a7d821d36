"""rtbook.clients."""
