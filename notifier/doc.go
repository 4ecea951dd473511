// Package notifier delivers Vigil's alerts: the channels that turn a batch of events into
// one request (webhook, Slack, PagerDuty, Alertmanager, e-mail, SMS) and the Queue that
// carries batches to them without ever blocking the gateway or losing one silently.
//
// The Queue is a pipeline of small stages, after Alertmanager's notify package:
//
//	Notify ──> bounded queue per channel ──> worker: attempt (timeout) ──> retry (backoff, jitter, Retry-After)
//	   │ full: dropped                             │ Channel.Send                 │ caps on attempts and age
//	   └──────────────── outcomes (queued, dropped, retrying, delivered, failed) ──> DeliveryRecorder
//
// Channels only build and send a request; they never retry, queue or throttle, and the
// throttle, resolve and grouping decisions are the rule engine's: the Queue sends what it
// is given, once. Secrets (webhook secret, routing key, SMTP password, SMS token, Slack URL)
// live in Secret values, which print as "[redacted]", and are removed from every error text.
//
// The package knows nothing of Caddy. The Caddy glue builds channels with NewAll (passing a
// Resolver for placeholders), starts a Queue with NewQueue, hands it to the rule engine as
// its alert.Notifier, calls Update on config reloads and Close on shutdown.
package notifier
