-- Run AFTER seeding: explicit ids do not advance the identity sequences, so the
-- next insert without an id would collide. Move each sequence past max(id), i.e.
-- SELECT setval(pg_get_serial_sequence('actions', 'id'), (SELECT max(id) FROM actions)); etc.
-- Empty tables restart at 1. Idempotent; usage: psql -v ON_ERROR_STOP=1 -f config/schema/pg_config_2.sql
DO $$
DECLARE
    c record;
    max_id bigint;
BEGIN
    FOR c IN
        SELECT table_schema, table_name, column_name
        FROM information_schema.columns
        WHERE table_schema = current_schema() AND is_identity = 'YES'
    LOOP
        EXECUTE format('SELECT max(%I) FROM %I.%I', c.column_name, c.table_schema, c.table_name)
            INTO max_id;
        PERFORM setval(pg_get_serial_sequence(format('%I.%I', c.table_schema, c.table_name), c.column_name),
                       coalesce(max_id, 1), max_id IS NOT NULL);
        RAISE NOTICE '%.%: next value %', c.table_name, c.column_name, coalesce(max_id, 0) + 1;
    END LOOP;
END
$$;
