//go:build !nomercure

package main

// The Mercure hub module; left out with the nomercure build tag.
import _ "github.com/dunglas/mercure/caddy"
