package caddyplugin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// statusWriter wraps the response writer to learn the status and size of the response
// without buffering it. It is pooled, so that recording costs no allocation per request;
// a writer whose connection was hijacked is never reused.
type statusWriter struct {
	caddyhttp.ResponseWriterWrapper
	status   int
	size     int
	hijacked bool
}

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

func newStatusWriter(w http.ResponseWriter) *statusWriter {
	sw := statusWriters.Get().(*statusWriter)
	*sw = statusWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	return sw
}

// release returns the writer to the pool; it must not be used afterwards.
func (sw *statusWriter) release() {
	if sw.hijacked {
		return
	}
	sw.ResponseWriter = nil
	statusWriters.Put(sw)
}

// WriteHeader records the status (the final one: 1xx are informational).
func (sw *statusWriter) WriteHeader(code int) {
	if sw.status == 0 && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		sw.status = code
	}
	sw.ResponseWriter.WriteHeader(code)
}

// Write records the size.
func (sw *statusWriter) Write(b []byte) (int, error) {
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	n, err := sw.ResponseWriter.Write(b)
	sw.size += n
	return n, err
}

// ReadFrom records the size of a response copied from a reader (reverse_proxy's path).
func (sw *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	n, err := sw.ResponseWriterWrapper.ReadFrom(r)
	sw.size += int(n)
	return n, err
}

// FlushError flushes the underlying writer.
func (sw *statusWriter) FlushError() error {
	return http.NewResponseController(sw.ResponseWriter).Flush()
}

// Hijack hands over the connection (websockets); the writer is then not pooled.
func (sw *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(sw.ResponseWriter).Hijack()
	if err == nil {
		sw.hijacked = true
		if sw.status == 0 {
			sw.status = http.StatusSwitchingProtocols
		}
	}
	return conn, brw, err
}
