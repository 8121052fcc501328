// Command frankenphp: Caddy with the FrankenPHP module, built by the local builder profile.
// The embed stage replaces the frankenphp module's app.tar and links this command again.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/dunglas/frankenphp/caddy"
)

func main() {
	caddycmd.Main()
}
