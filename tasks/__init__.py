"""Durango Builder's code, in layers that import only downwards (tests/unit/test_layers.py
keeps it so): core <- formats <- engine <- build <- deploy <- cli. dodo.py wires them into
doit tasks."""
