"""The build layer: the stages (archive, base, embed, extract, runtime), verify and publish, and
what image stages share (keys, status, contexts, the registry cache). Each stage decides from
cheap facts whether it must run (`why`) and talks to the engine only through core/ports.py."""
