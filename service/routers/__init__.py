"""HTTP routers; ``service.app`` includes those whose modules exist."""
