<?php
// The PHP side of the app's facts (app-facts.json, generated from the bundle's app.toml):
//   app-facts.php config APP_DIR   write the app's local config from its own template
//   app-facts.php marker APP_DIR   write the app's install marker unless it exists
// Run by the entrypoint with the binary's php-cli. The target is resolved through the app's
// link into the data folder and written beside it, then renamed: never half-written, and never
// inside the read-only app tree.
declare(strict_types=1);

function fail(string $message): never
{
    fwrite(STDERR, $message . PHP_EOL);
    exit(1);
}

function target(string $app, string $rel): string
{
    $path = $app . '/' . $rel;
    if (is_link($path)) {
        $path = readlink($path);
    }
    return $path;
}

function write_atomically(string $path, string $content): void
{
    $dir = dirname($path);
    if (!is_dir($dir) && !mkdir($dir, 0750, true) && !is_dir($dir)) {
        fail("cannot create $dir");
    }
    $tmp = $dir . '/.' . basename($path) . '.' . getmypid() . '.tmp';
    if (file_put_contents($tmp, $content) === false || !chmod($tmp, 0640) || !rename($tmp, $path)) {
        @unlink($tmp);
        fail("cannot write $path");
    }
}

[$self, $what, $app] = array_pad($argv, 3, '');
$facts = json_decode((string)file_get_contents(getenv('APP_FACTS_JSON') ?: __DIR__ . '/app-facts.json'), true);
if (!is_array($facts) || $app === '') {
    fail('usage: app-facts.php config|marker APP_DIR (with app-facts.json beside it)');
}

if ($what === 'config') {
    $config = $facts['local_config'];
    $template = $app . '/' . $config['template'];
    $text = @file_get_contents($template);
    if ($text === false) {
        fail("the app has no {$config['template']} (the facts' local_config.template)");
    }
    $text = str_replace(array_keys($config['replace']), array_values($config['replace']), $text);
    write_atomically(target($app, $config['output']), $text);
    exit(0);
}

if ($what === 'marker') {
    $marker = $facts['install_marker'];
    $path = target($app, $marker['path']);
    if (!file_exists($path)) {
        $time = time();
        $content = str_replace(['{now}', '{timestamp}'], [gmdate('Y-m-d H:i:s', $time), (string)$time], $marker['content']);
        write_atomically($path, ltrim($content));
        echo "Install marker: {$marker['path']} written\n";
    }
    exit(0);
}

fail("app-facts.php: unknown command '$what' (config or marker)");
