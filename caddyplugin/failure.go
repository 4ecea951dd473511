package caddyplugin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"

	"github.com/vigilgw/vigil/detector"
)

// classifyFailure says why a proxied call failed, from the error the handler chain
// returned: the upstream could not be reached, did not answer in time, or failed the
// TLS handshake.
func classifyFailure(err error) detector.Failure {
	if err == nil {
		return detector.FailureNone
	}
	var (
		certInvalid  x509.CertificateInvalidError
		unknownAuth  x509.UnknownAuthorityError
		hostname     x509.HostnameError
		recordHeader tls.RecordHeaderError
		alert        tls.AlertError
		certVerify   *tls.CertificateVerificationError
		dnsErr       *net.DNSError
		opErr        *net.OpError
		netErr       net.Error
	)
	switch {
	case errors.As(err, &certInvalid), errors.As(err, &unknownAuth), errors.As(err, &hostname),
		errors.As(err, &recordHeader), errors.As(err, &alert), errors.As(err, &certVerify):
		return detector.FailureTLS
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return detector.FailureTimeout
	case errors.As(err, &dnsErr):
		return detector.FailureConnect
	case errors.As(err, &opErr) && opErr.Op == "dial":
		if opErr.Timeout() {
			return detector.FailureTimeout
		}
		return detector.FailureConnect
	case errors.As(err, &netErr) && netErr.Timeout():
		return detector.FailureTimeout
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:"):
		return detector.FailureTLS
	case strings.Contains(msg, "connection refused") || strings.Contains(msg, "no upstreams available") || strings.Contains(msg, "no such host"):
		return detector.FailureConnect
	case strings.Contains(msg, "timeout") || strings.Contains(msg, "deadline exceeded"):
		return detector.FailureTimeout
	}
	return detector.FailureOther
}
