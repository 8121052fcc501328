#!/usr/bin/env php
<?php
declare(strict_types=1);

// Tiny stand-in for CakePHP's bin/cake: `version`, `migrations migrate [-p Plugin]`, `migrations seed`.
// Every failure prints one line on stderr and exits 1, so a deploy script can rely on the exit code.

require dirname(__DIR__) . '/src/Database.php';

define('APP_ROOT', dirname(__DIR__));

function fail(string $message): never
{
    fwrite(STDERR, trim((string) preg_replace('/\s+/', ' ', $message)) . PHP_EOL);
    exit(1);
}

/** Applies pending <version>_<Name>.sql files, each in its own transaction with its phinxlog row. */
function migrate(PDO $db, ?string $plugin): void
{
    $dir = APP_ROOT . ($plugin === null ? '' : "/plugins/$plugin") . '/config/Migrations';
    if (!is_dir($dir)) {
        fail("Migrations directory not found: $dir");
    }
    // Like CakePHP migrations: one log table for the app, <plugin>_phinxlog per plugin.
    $table = $plugin === null ? 'phinxlog' : strtolower($plugin) . '_phinxlog';

    // Serialize concurrent deploys (two replicas starting at once) before touching the log table.
    $db->query("SELECT pg_advisory_lock(hashtext('$table'))");
    $db->exec("CREATE TABLE IF NOT EXISTS $table (
        version bigint PRIMARY KEY,
        migration_name text,
        plugin text NULL,
        start_time timestamptz,
        end_time timestamptz,
        breakpoint boolean NOT NULL DEFAULT false
    )");
    $applied = array_flip(array_map('strval', $db->query("SELECT version FROM $table")->fetchAll(PDO::FETCH_COLUMN)));

    $files = glob("$dir/*.sql") ?: [];
    sort($files, SORT_STRING);
    $new = 0;
    foreach ($files as $path) {
        $file = basename($path);
        if (!preg_match('/^(\d+)_(\w+)\.sql$/', $file, $m)) {
            fail("Migration $file failed: file name must look like <version>_<Name>.sql");
        }
        if (isset($applied[$m[1]])) {
            continue;
        }
        try {
            $db->beginTransaction();
            $db->exec((string) file_get_contents($path)); // pdo_pgsql exec() accepts several statements
            $db->prepare("INSERT INTO $table (version, migration_name, plugin, start_time, end_time)
                          VALUES (?, ?, ?, now(), clock_timestamp())")
               ->execute([$m[1], $m[2], $plugin]);
            $db->commit();
        } catch (Throwable $e) {
            if ($db->inTransaction()) {
                $db->rollBack();
            }
            fail("Migration $file failed: " . $e->getMessage());
        }
        echo "Applied $file" . PHP_EOL;
        $new++;
    }
    echo "All migrations applied ($new new)" . PHP_EOL;
}

/**
 * Inserts config/Seeds/*.php (each returns ['table' => ..., 'rows' => [...]]) in one transaction,
 * so a failed seed leaves no half-seeded database. Rows carry explicit ids, which needs
 * config/schema/pg_config_1.sql first. Deliberately no "already seeded?" check: the entrypoint decides.
 */
function seed(PDO $db): void
{
    $files = glob(APP_ROOT . '/config/Seeds/*.php') ?: [];
    sort($files, SORT_STRING);
    $quote = fn (string $ident): string => '"' . str_replace('"', '""', $ident) . '"';
    $total = 0;
    $db->beginTransaction();
    foreach ($files as $path) {
        try {
            $seed = require $path;
            foreach ($seed['rows'] as $row) {
                $sql = sprintf(
                    'INSERT INTO %s (%s) VALUES (%s)',
                    $quote($seed['table']),
                    implode(', ', array_map($quote, array_keys($row))),
                    implode(', ', array_fill(0, count($row), '?'))
                );
                $db->prepare($sql)->execute(array_values($row));
            }
        } catch (Throwable $e) {
            $db->rollBack();
            fail('Seed ' . basename($path) . ' failed: ' . $e->getMessage());
        }
        echo "Seeded {$seed['table']}: " . count($seed['rows']) . ' rows (' . basename($path) . ')' . PHP_EOL;
        $total += count($seed['rows']);
    }
    $db->commit();
    echo "All seeds applied ($total rows)" . PHP_EOL;
}

$usage = 'Usage: cake.php version | migrations migrate [-p Plugin] | migrations seed | queue worker';
$args = array_slice($argv, 1);

try {
    switch (implode(' ', array_slice($args, 0, 2))) {
        case 'version':
            $version = @file_get_contents(APP_ROOT . '/VERSION');
            if ($version === false) {
                fail('Cannot read VERSION file');
            }
            echo 'demo-app ' . trim($version) . PHP_EOL;
            break;
        case 'migrations migrate':
            $opts = array_slice($args, 2);
            $plugin = null;
            if ($opts !== []) {
                if (count($opts) !== 2 || !in_array($opts[0], ['-p', '--plugin'], true)) {
                    fail($usage);
                }
                $plugin = $opts[1];
                if (!preg_match('/^[A-Za-z][A-Za-z0-9_]*$/', $plugin)) { // also used in a table name
                    fail("Invalid plugin name: $plugin");
                }
            }
            migrate(Database::connect(), $plugin);
            break;
        case 'migrations seed':
            if (count($args) !== 2) {
                fail($usage);
            }
            seed(Database::connect());
            break;
        case 'queue worker':
            // A stand-in for a queue consumer: checks the database, then waits for jobs (there
            // are none) until stopped, saying it is alive every minute.
            $db = Database::connect();
            echo 'queue worker: started' . PHP_EOL;
            while (true) {
                $db->query('SELECT 1');
                sleep(60);
                echo 'queue worker: alive' . PHP_EOL;
            }
        default:
            fail($usage);
    }
} catch (Throwable $e) { // e.g. connection failure, or no permission to create phinxlog
    fail($e->getMessage());
}
exit(0);
