<?php
declare(strict_types=1);

// The only place that knows how to reach PostgreSQL; shared by bin/cake.php and webroot/index.php.

/** Connection/config problem whose message is safe to show (never contains the password). */
final class DatabaseException extends RuntimeException
{
}

final class Database
{
    public static function connect(): PDO
    {
        $host = self::env('DB_HOST', true);
        $port = self::env('DB_PORT') ?: '5432';
        $name = self::env('DB_NAME', true);
        $user = self::env('DB_USERNAME', true);
        $password = self::password();

        // connect_timeout keeps the healthcheck from hanging on an unreachable host.
        $dsn = sprintf('pgsql:host=%s;port=%s;dbname=%s;connect_timeout=5', $host, $port, $name);
        try {
            return new PDO($dsn, $user, $password, [
                PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
                PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
            ]);
        } catch (PDOException $e) {
            // libpq errors span several lines (and repeat per attempt): keep the first, scrub the password just in case.
            $reason = trim((string) preg_replace('/\s+/', ' ', strtok($e->getMessage(), "\n")));
            if ($password !== '') {
                $reason = str_replace($password, '***', $reason);
            }
            throw new DatabaseException(sprintf(
                'Cannot connect to PostgreSQL at %s:%s, database "%s" as user "%s": %s',
                $host, $port, $name, $user, $reason
            ));
        }
    }

    private static function env(string $key, bool $required = false): string
    {
        // getenv() works under the CLI, php -S and FrankenPHP; $_SERVER is a fallback for SAPIs that only fill it.
        $value = getenv($key);
        if ($value === false) {
            $value = $_SERVER[$key] ?? '';
        }
        if ($required && $value === '') {
            throw new DatabaseException("Missing required environment variable $key");
        }
        return (string) $value;
    }

    /** DB_PASSWORD_FILE (Docker/K8s secret) wins over DB_PASSWORD. */
    private static function password(): string
    {
        $file = self::env('DB_PASSWORD_FILE');
        if ($file === '') {
            return self::env('DB_PASSWORD');
        }
        $password = @file_get_contents($file);
        if ($password === false) {
            throw new DatabaseException("Cannot read DB_PASSWORD_FILE ($file)");
        }
        return rtrim($password, "\r\n"); // secret files usually end with a newline
    }
}
