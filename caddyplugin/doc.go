// Package caddyplugin holds everything of Vigil that touches Caddy: the vigil app (one engine
// per process, kept across config reloads), the http.handlers.vigil gateway handler, the
// Caddyfile global option and directive, the admin API and the "caddy vigil" commands.
package caddyplugin
