<?php
/**
 * FrankenPHP worker for a CakePHP 4/5 app: the app is booted once per PHP thread, then serves
 * requests through frankenphp_handle_request() until it has to boot again.
 *
 * The extract stage puts this file at .frankenphp/cakephp-worker.php of the embedded app, with
 * .frankenphp/worker.json (rendered from the app's facts, [server]) beside it, and the embedded
 * Caddyfile's php_server sends every request that is not a static file here (`match *`).
 *
 * Per request it does what webroot/index.php and Cake\Http\Server::run() do, minus the boot:
 * a ServerRequest from the request's superglobals (FrankenPHP re-imports $_GET, $_POST, $_COOKIE,
 * $_FILES, $_SERVER and drops $_SESSION for every request; frankenphp.c
 * frankenphp_reset_super_globals, and closes PHP's session, frankenphp_reset_session_state), the
 * app's middleware queue built anew (apps read the request's $_SERVER while building it), the
 * Server.buildMiddleware event, the queue run, the session closed, the response emitted.
 *
 * State that PHP would have dropped at the end of a request and a worker keeps is put back to what
 * it was right after the boot: Configure's values, the Router (its route collection is rebuilt by
 * RoutingMiddleware, as on every classic request), the global event manager's listeners, the ORM
 * table locator, the DI container, the I18n locale, the default time zone, changed ini settings,
 * the working folder, global variables, and the static properties of the app's own classes (not
 * vendor/). A connection left inside a transaction is rolled back.
 *
 * What PHP cannot undo ends the worker instead, so that the next request on this thread finds a
 * freshly booted app (FrankenPHP runs the script again after a clean exit, threadworker.go
 * tearDownWorkerScript): constants defined by a request (define() lasts until the PHP request
 * ends, which for a worker is its whole life) unless new_constants is "keep", a change of one of
 * the watched files (config files the app writes at run time and reads at boot), max_requests,
 * and exit() in the app, which FrankenPHP turns into the end of the worker script.
 */

declare(strict_types=1);

use Cake\Core\Configure;
use Cake\Core\ContainerApplicationInterface;
use Cake\Core\PluginApplicationInterface;
use Cake\Datasource\ConnectionManager;
use Cake\Datasource\FactoryLocator;
use Cake\Event\EventManager;
use Cake\Http\BaseApplication;
use Cake\Http\MiddlewareQueue;
use Cake\Http\ResponseEmitter;
use Cake\Http\Runner;
use Cake\Http\Server;
use Cake\Http\ServerRequest;
use Cake\Http\ServerRequestFactory;
use Cake\I18n\I18n;
use Cake\Routing\RouteCollection;
use Cake\Routing\Router;

/** Reads and writes the protected static state of framework classes it names. */
final class CakeWorkerState
{
    /** @return mixed */
    public static function getStatic(string $class, string $name)
    {
        $property = new ReflectionProperty($class, $name);
        $property->setAccessible(true);

        return $property->getValue();
    }

    /** @param mixed $value */
    public static function setStatic(string $class, string $name, $value): void
    {
        $property = new ReflectionProperty($class, $name);
        $property->setAccessible(true);
        $property->setValue(null, $value);
    }

    /** @return mixed */
    public static function get(object $object, string $name)
    {
        $property = new ReflectionProperty($object, $name);
        $property->setAccessible(true);

        return $property->getValue($object);
    }

    /** @param mixed $value */
    public static function set(object $object, string $name, $value): void
    {
        $property = new ReflectionProperty($object, $name);
        $property->setAccessible(true);
        $property->setValue($object, $value);
    }
}

/** One booted app and what it looked like right after the boot. */
final class CakeWorker
{
    private const SUPERGLOBALS = ['GLOBALS', '_GET', '_POST', '_COOKIE', '_FILES', '_SERVER',
        '_ENV', '_REQUEST', '_SESSION'];

    private BaseApplication $app;
    private Server $server;
    private Runner $runner;
    /** @var array<string, mixed> */
    private array $config;
    /** @var array<string, mixed> */
    private array $configure;
    /** @var array<string, mixed> */
    private array $router = [];
    /** @var array<string, mixed> */
    private array $listeners;
    /** @var array<string, string|false> */
    private array $ini;
    /** @var array<string, mixed> */
    private array $globals = [];
    /** @var array<string, array<string, mixed>> class => property => value at boot */
    private array $statics = [];
    /** @var array<string, list<ReflectionProperty>> */
    private array $appStatics = [];
    private int $classesSeen = 0;
    private int $constants;
    /** @var array<string, string> path => stat signature at boot */
    private array $watched = [];
    private string $timezone;
    private string $cwd;
    private string $appDir;
    private string $webroot;
    private int $served = 0;
    private string $stop = '';

    /** @param array<string, mixed> $config */
    public function __construct(string $appDir, array $config)
    {
        $this->appDir = $appDir;
        $this->config = $config;
        $this->webroot = $appDir . '/' . trim((string)$config['docroot'], '/');
        $this->primeServer();
        chdir($this->webroot);
        $configDir = $appDir . '/' . trim((string)$config['config_dir'], '/');
        if (is_file($configDir . '/requirements.php')) {
            require $configDir . '/requirements.php'; // what the skeleton's front controller checks first
        }
        require $appDir . '/vendor/autoload.php';
        $class = (string)$config['application'];
        $this->app = new $class($configDir);
        $this->app->bootstrap();
        if ($this->app instanceof PluginApplicationInterface) {
            $this->app->pluginBootstrap();
        }
        $this->server = new Server($this->app);
        $this->runner = new Runner();
        $this->snapshot();
    }

    /** Boot with the $_SERVER a request to the app's own URL would bring: config files derive
     * constants from it (host, scheme, script name) once, at boot. */
    private function primeServer(): void
    {
        $url = (string)getenv((string)($this->config['boot_url_env'] ?? ''));
        $parts = $url !== '' ? parse_url($url) : false;
        if (is_array($parts) && isset($parts['host'])) {
            $https = ($parts['scheme'] ?? 'http') === 'https';
            $port = (string)($parts['port'] ?? ($https ? 443 : 80));
            $_SERVER['HTTP_HOST'] = $parts['host'] . (isset($parts['port']) ? ':' . $port : '');
            $_SERVER['SERVER_NAME'] = $parts['host'];
            $_SERVER['SERVER_PORT'] = $port;
            $_SERVER['REQUEST_SCHEME'] = $https ? 'https' : 'http';
            if ($https) {
                $_SERVER['HTTPS'] = 'on';
            }
        }
        $_SERVER['REQUEST_METHOD'] = $_SERVER['REQUEST_METHOD'] ?? 'GET';
        $_SERVER['REQUEST_URI'] = $_SERVER['REQUEST_URI'] ?? '/';
        $_SERVER['DOCUMENT_ROOT'] = $this->webroot; // the boot's own is the worker's folder
        $this->scriptServer();
    }

    /** SCRIPT_NAME and friends as for the front controller in classic mode: FrankenPHP gives a
     * worker outside the web root none (cgi.go splitCgiPath), CakePHP derives its base from
     * PHP_SELF (ServerRequestFactory::getBase). */
    private function scriptServer(): void
    {
        $front = '/' . ltrim((string)($this->config['front_controller'] ?? 'index.php'), '/');
        $_SERVER['SCRIPT_NAME'] = $front;
        $_SERVER['PHP_SELF'] = $front;
        $_SERVER['DOCUMENT_URI'] = $front;
        $_SERVER['SCRIPT_FILENAME'] = $this->webroot . $front;
    }

    private function snapshot(): void
    {
        $this->configure = Configure::read();
        foreach ((new ReflectionClass(Router::class))->getProperties(ReflectionProperty::IS_STATIC) as $p) {
            $p->setAccessible(true);
            $this->router[$p->getName()] = $p->getValue();
        }
        $this->listeners = CakeWorkerState::get(EventManager::instance(), '_listeners');
        $this->ini = ini_get_all(null, false);
        foreach ($GLOBALS as $name => $value) {
            if (!in_array($name, self::SUPERGLOBALS, true)) {
                $this->globals[$name] = $value;
            }
        }
        $this->appStatics();
        foreach ($this->appStatics as $class => $properties) {
            foreach ($properties as $p) {
                if ($p->isInitialized()) {
                    $this->statics[$class][$p->getName()] = $p->getValue();
                }
            }
        }
        $this->constants = count(get_defined_constants(true)['user'] ?? []);
        foreach ((array)($this->config['watch'] ?? []) as $file) {
            $path = $this->appDir . '/' . $file;
            $this->watched[$path] = $this->signature($path);
        }
        $this->timezone = date_default_timezone_get();
        $this->cwd = (string)getcwd();
    }

    /** The static properties declared by the app's own classes (files outside vendor/),
     * for the classes loaded since the last look. */
    private function appStatics(): void
    {
        $classes = get_declared_classes();
        $vendor = $this->appDir . '/vendor/';
        foreach (array_slice($classes, $this->classesSeen) as $class) {
            $reflection = new ReflectionClass($class);
            $file = $reflection->getFileName();
            if ($file === false || strncmp($file, $this->appDir . '/', strlen($this->appDir) + 1) !== 0
                || strncmp($file, $vendor, strlen($vendor)) === 0 || $class === self::class
                || $class === CakeWorkerState::class) {
                continue;
            }
            foreach ($reflection->getProperties(ReflectionProperty::IS_STATIC) as $p) {
                if ($p->getDeclaringClass()->getName() === $class) {
                    $p->setAccessible(true);
                    $this->appStatics[$class][] = $p;
                }
            }
        }
        $this->classesSeen = count($classes);
    }

    private function signature(string $path): string
    {
        clearstatcache(true, $path);
        $stat = @stat($path);

        return $stat === false ? 'none' : $stat['mtime'] . ':' . $stat['size'] . ':' . $stat['ino'];
    }

    /** One request, as webroot/index.php + Server::run() would serve it after the boot. */
    public function handle(): void
    {
        $this->before();
        try {
            $this->scriptServer();
            $request = ServerRequestFactory::fromGlobals();
            $queue = $this->app instanceof ContainerApplicationInterface
                ? new MiddlewareQueue([], $this->app->getContainer())
                : new MiddlewareQueue();
            $middleware = $this->app->middleware($queue);
            if ($this->app instanceof PluginApplicationInterface) {
                $middleware = $this->app->pluginMiddleware($middleware);
            }
            $this->server->dispatchEvent('Server.buildMiddleware', ['middleware' => $middleware]);
            $response = $this->runner->run($middleware, $request, $this->app);
            if ($request instanceof ServerRequest) {
                $request->getSession()->close();
            }
            (new ResponseEmitter())->emit($response);
        } catch (Throwable $e) {
            // The app's ErrorHandlerMiddleware renders its own errors; this is what escaped it.
            error_log('cakephp-worker: ' . get_class($e) . ': ' . $e->getMessage() . ' at '
                . $e->getFile() . ':' . $e->getLine());
            if (!headers_sent()) {
                http_response_code(500);
                header('Content-Type: text/plain');
            }
            echo "Internal Server Error\n";
        }
    }

    /** Put back the state the previous request may have changed, before this one runs. */
    private function before(): void
    {
        CakeWorkerState::setStatic(Configure::class, '_values', $this->configure);
        foreach ($this->router as $name => $value) {
            CakeWorkerState::setStatic(Router::class, $name, $value);
        }
        Router::setRouteCollection(new RouteCollection());
        CakeWorkerState::set(EventManager::instance(), '_listeners', $this->listeners);
        if ($this->app instanceof ContainerApplicationInterface) {
            CakeWorkerState::set($this->app, 'container', null);
        }
        I18n::setLocale(I18n::getDefaultLocale());
        date_default_timezone_set($this->timezone);
    }

    /** After the response: undo what would leak into the next request, and say whether this
     * worker may serve another one. */
    public function after(): bool
    {
        $this->served++;
        $this->rollBack();
        $locator = FactoryLocator::get('Table');
        if (method_exists($locator, 'clear')) {
            $locator->clear();
        }
        foreach (ini_get_all(null, false) as $name => $value) {
            if (array_key_exists($name, $this->ini) && $this->ini[$name] !== $value) {
                @ini_set($name, (string)$this->ini[$name]);
            }
        }
        if (getcwd() !== $this->cwd) {
            chdir($this->cwd);
        }
        foreach (array_keys($GLOBALS) as $name) {
            if (!in_array($name, self::SUPERGLOBALS, true) && !array_key_exists($name, $this->globals)) {
                unset($GLOBALS[$name]);
            }
        }
        foreach ($this->globals as $name => $value) {
            $GLOBALS[$name] = $value;
        }
        $this->resetStatics();
        $this->stop = $this->reasonToStop();
        gc_collect_cycles();

        return $this->stop === '';
    }

    private function rollBack(): void
    {
        $registry = CakeWorkerState::getStatic(ConnectionManager::class, '_registry');
        if ($registry === null) {
            return;
        }
        foreach ($registry->loaded() as $name) {
            $connection = $registry->get($name);
            if (method_exists($connection, 'inTransaction') && $connection->inTransaction()) {
                error_log("cakephp-worker: connection {$name} was left in a transaction; rolled back");
                $connection->rollback(true);
            }
        }
    }

    private function resetStatics(): void
    {
        $this->appStatics();
        foreach ($this->appStatics as $class => $properties) {
            foreach ($properties as $p) {
                $name = $p->getName();
                if (isset($this->statics[$class]) && array_key_exists($name, $this->statics[$class])) {
                    $p->setValue(null, $this->statics[$class][$name]);
                } elseif ($p->hasDefaultValue()) {
                    $p->setValue(null, $p->getDefaultValue());
                }
            }
        }
    }

    private function reasonToStop(): string
    {
        $max = (int)($this->config['max_requests'] ?? 0);
        if ($max > 0 && $this->served >= $max) {
            return "{$max} requests served";
        }
        if (($this->config['new_constants'] ?? 'restart') !== 'keep') {
            $user = get_defined_constants(true)['user'] ?? [];
            if (count($user) !== $this->constants) {
                $new = array_slice(array_keys($user), $this->constants, 5);
                return 'the request defined constants (' . implode(', ', $new) . ')';
            }
        }
        foreach ($this->watched as $path => $signature) {
            if ($this->signature($path) !== $signature) {
                return substr($path, strlen($this->appDir) + 1) . ' changed';
            }
        }

        return '';
    }

    public function stopReason(): string
    {
        return $this->stop;
    }
}

(static function (): void {
    $appDir = dirname(__DIR__);
    $config = json_decode((string)file_get_contents(__DIR__ . '/worker.json'), true);
    if (!is_array($config)) {
        fwrite(STDERR, "cakephp-worker: .frankenphp/worker.json is missing or not JSON\n");
        exit(1);
    }
    $worker = new CakeWorker($appDir, $config);
    $handler = static function () use ($worker): void {
        $worker->handle();
    };
    $debug = (string)getenv('FRANKENPHP_WORKER_DEBUG') !== '';
    do {
        $more = frankenphp_handle_request($handler);
        $again = $worker->after();
    } while ($more && $again);
    if ($debug && $worker->stopReason() !== '') {
        error_log('cakephp-worker: booting again: ' . $worker->stopReason());
    }
})();
