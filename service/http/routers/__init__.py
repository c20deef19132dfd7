"""One router per endpoint; ``service.app`` includes each of them explicitly."""
