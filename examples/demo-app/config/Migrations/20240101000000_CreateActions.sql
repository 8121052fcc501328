-- GENERATED ALWAYS on purpose: seeds insert explicit ids, so deployment runs pg_config_1.sql first.
CREATE TABLE actions (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created timestamptz NOT NULL DEFAULT now()
);
