"""The core layer: the project's own vocabulary, which every other layer may use and which uses
none of them: settings, errors, the pipeline's shared state and its doit glue, the protocols the
engine meets (ports), locks, safe file writes and hashes."""
