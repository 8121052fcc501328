// Command frankenphp: Caddy with the FrankenPHP module, built by the local builder profile.
// The embed stage replaces the frankenphp module's app.tar and links this command again.
package main

import (
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/dunglas/frankenphp"

	"durango.invalid/frankenphp/appdir"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/dunglas/frankenphp/caddy"
)

func main() {
	if frankenphp.EmbeddedAppPath != "" {
		server := len(os.Args) > 1 && (os.Args[1] == "run" || os.Args[1] == "php-server")
		frankenphp.EmbeddedAppPath = appdir.Settle(frankenphp.EmbeddedAppPath, server)
	}
	caddycmd.Main()
}
