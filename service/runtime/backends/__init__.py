"""Inference backends behind one interface (:class:`service.runtime.backends.base.Backend`)."""
