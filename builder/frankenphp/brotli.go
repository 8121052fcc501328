//go:build !nobrotli

package main

// Brotli compression for Caddy's encode directive (links Debian's libbrotli).
import _ "github.com/dunglas/caddy-cbrotli"
