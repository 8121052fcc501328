"""The formats layer: pure readers and writers of the file formats the pipeline handles
(Dockerfiles, ELF, the appended app payload, backup manifests, compose volumes, the app's
deployment facts, composer locks, env files). No engine, no network, no doit: each is a function
of its input, unit-tested in milliseconds."""
