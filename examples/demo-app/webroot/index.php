<?php
declare(strict_types=1);

// Front controller. Works as the router script of `php -S ... -t webroot webroot/index.php`
// and under FrankenPHP `php-server --root webroot` (unknown paths fall back to index.php).
// Routing uses REQUEST_URI, not PATH_INFO, which differs between the two servers.

require dirname(__DIR__) . '/src/Database.php';

$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH) ?: '/';
$path = rtrim(rawurldecode($path), '/') ?: '/';
$path = $path === '/index.php' ? '/' : $path; // direct hits on the front controller mean the home page

// php -S: hand real static files (none today, but e.g. a favicon) back to the built-in server.
if (PHP_SAPI === 'cli-server' && $path !== '/' && basename($path) !== 'index.php' && is_file(__DIR__ . $path)) {
    return false;
}

function respond(int $status, string $body, string $type = 'application/json'): void
{
    http_response_code($status);
    header("Content-Type: $type; charset=utf-8");
    header('Cache-Control: no-store');
    echo $body;
}

function json(int $status, mixed $data): void
{
    respond($status, json_encode($data, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR) . "\n");
}

function healthcheck(): void
{
    try {
        Database::connect()->query('SELECT 1');
        json(200, ['status' => 'ok', 'database' => 'ok']);
    } catch (Throwable $e) {
        error_log($e->getMessage()); // details go to the server log only, never into the response
        json(503, ['status' => 'error', 'database' => 'unreachable']);
    }
}

function home(): void
{
    try {
        $count = (string) Database::connect()->query('SELECT count(*) FROM actions')->fetchColumn();
    } catch (Throwable $e) {
        error_log($e->getMessage());
        $count = 'database unreachable';
    }
    $version = trim((string) @file_get_contents(dirname(__DIR__) . '/VERSION'));
    $h = fn (string $s): string => htmlspecialchars($s, ENT_QUOTES);
    respond(200, "<!doctype html>\n<html><head><title>demo-app</title></head><body>\n"
        . "<h1>demo-app {$h($version)}</h1>\n<ul>\n"
        . "<li>PHP version: {$h(PHP_VERSION)}</li>\n"
        . "<li>Actions: <span id=\"actions-count\">{$h($count)}</span></li>\n"
        . "</ul>\n</body></html>\n", 'text/html');
}

function listActions(): void
{
    json(200, Database::connect()->query('SELECT id, name, created FROM actions ORDER BY id')->fetchAll());
}

function createAction(): void
{
    $name = trim((string) ($_POST['name'] ?? ''));
    if ($name === '') {
        json(400, ['error' => 'form field "name" is required']);
        return;
    }
    try {
        // No id given: this only works once pg_config_2.sql has moved the sequence past the seeded ids.
        $stmt = Database::connect()->prepare('INSERT INTO actions (name) VALUES (?) RETURNING id');
        $stmt->execute([$name]);
    } catch (PDOException $e) {
        if ($e->getCode() === '23505') {
            json(409, ['error' => 'an action with this name already exists']);
            return;
        }
        throw $e;
    }
    json(201, ['id' => (int) $stmt->fetchColumn(), 'name' => $name]);
}

$routes = [
    '/' => ['GET' => 'home'],
    '/home/healthcheck' => ['GET' => 'healthcheck'],
    '/api/actions' => ['GET' => 'listActions', 'POST' => 'createAction'],
];
$method = $_SERVER['REQUEST_METHOD'] ?? 'GET';
$method = $method === 'HEAD' ? 'GET' : $method;

if (!isset($routes[$path])) {
    json(404, ['error' => 'not found']);
} elseif (!isset($routes[$path][$method])) {
    header('Allow: ' . implode(', ', array_keys($routes[$path])));
    json(405, ['error' => 'method not allowed']);
} else {
    try {
        ($routes[$path][$method])();
    } catch (DatabaseException | PDOException $e) {
        error_log($e->getMessage());
        json(503, ['error' => 'database unavailable']);
    } catch (Throwable $e) {
        error_log((string) $e);
        json(500, ['error' => 'internal error']);
    }
}
