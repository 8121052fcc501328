// Command frankenphp: Caddy with the FrankenPHP module. It is linked once, as the base binary,
// with FrankenPHP's own app.tar left empty; the app rides appended to the file (package
// payload) and appdir makes it ready before Caddy starts.
package main

import (
	"fmt"
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/dunglas/frankenphp"

	"durango.invalid/frankenphp/appdir"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/dunglas/frankenphp/caddy"
)

func main() {
	// A server gets a symlink of its own to the app: FrankenPHP's Shutdown removes
	// EmbeddedAppPath (frankenphp v1.12.7 frankenphp.go:382-385), and must not remove the tree.
	server := len(os.Args) > 1 && (os.Args[1] == "run" || os.Args[1] == "php-server")
	app, err := appdir.Settle(server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "frankenphp:", err)
		os.Exit(1)
	}
	if app != "" {
		// Read only at run time, after this: php-cli.go:34-38, php-server.go:82-85 (caddy
		// v1.12.6), the caddy module's Provision (module.go:110-120, 508-515), Shutdown.
		frankenphp.EmbeddedAppPath = app
	}
	caddycmd.Main()
}
