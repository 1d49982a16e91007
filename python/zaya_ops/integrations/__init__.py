"""Integrations of the zaya_ops ops with other libraries (``zaya_ops.integrations.transformers``)."""
