-- Plugin migration, tracked in gitsync_phinxlog (run with: bin/cake.php migrations migrate -p Gitsync).
CREATE TABLE gitsync_repositories (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id integer,
    url text NOT NULL,
    default_branch text NOT NULL DEFAULT 'main',
    created timestamptz NOT NULL DEFAULT now()
);
