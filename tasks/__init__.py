"""Durango Builder: the stages of the pipeline, one module each, wired by dodo.py."""
