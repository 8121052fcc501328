CREATE TABLE project_templates (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title text NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
