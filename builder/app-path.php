<?php
// Embedded next to the app: `<binary> php-cli .frankenphp/app-path.php` prints where the binary
// extracted the app, so the entrypoint can find the embedded Caddyfile, php.ini and SQL files.
echo dirname(__DIR__), PHP_EOL;
