// Package vigil is an API gateway with built-in alerting, shipped as Caddy v2 modules.
//
// Importing this package registers Vigil's modules with Caddy, so that
//
//	xcaddy build --with github.com/vigilgw/vigil
//
// produces a Caddy binary with the vigil app, the vigil and vigil_metrics HTTP handlers, the
// vigil admin API and the "caddy vigil" commands. The modules themselves live in package
// caddyplugin; the store, rule engine and anomaly detector in package detector; alert
// delivery in package notifier.
package vigil

import (
	// Register Vigil's Caddy modules, Caddyfile directives and commands.
	_ "github.com/vigilgw/vigil/caddyplugin"
)
