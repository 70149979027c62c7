package service

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// otlpClient sends spans to an OTLP/HTTP collector: the otlptrace.Client
// that the SDK's own OTLP/HTTP exporter would be, but for the few settings
// below, without that exporter's dependencies (it links gRPC, whose start-up
// was 3.4 MB of every process's resident memory, tracing on or not).
//
// It reads the variables of the OpenTelemetry specification, the traces
// one of each pair winning: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT (see
// tracesURL), _PROTOCOL (http/protobuf, the default, or http/json),
// _HEADERS, _TIMEOUT (milliseconds, 10000 by default), _COMPRESSION (gzip
// or none), _CERTIFICATE, _CLIENT_CERTIFICATE and _CLIENT_KEY.
type otlpClient struct {
	url      string
	json     bool
	gzip     bool
	headers  map[string]string
	timeout  time.Duration
	hc       *http.Client
	retryMin time.Duration
}

const (
	otlpDefaultTimeout = 10 * time.Second
	// otlpMaxAnswer bounds what is read of a collector's answer.
	otlpMaxAnswer = 64 << 10
)

// newOTLPClient reads the client's settings with getenv. An error names
// the variable that cannot be used; tracing is then off.
func newOTLPClient(getenv func(string) string) (*otlpClient, error) {
	get := func(name string) (string, string) {
		if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_" + name)); v != "" {
			return "OTEL_EXPORTER_OTLP_TRACES_" + name, v
		}
		return "OTEL_EXPORTER_OTLP_" + name, strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_" + name))
	}
	c := &otlpClient{timeout: otlpDefaultTimeout, retryMin: time.Second}
	var err error
	if c.url, err = tracesURL(getenv); err != nil {
		return nil, err
	}
	if _, v := get("PROTOCOL"); v == "http/json" {
		c.json = true
	}
	if name, v := get("COMPRESSION"); v != "" {
		switch v {
		case "gzip":
			c.gzip = true
		case "none":
		default:
			return nil, fmt.Errorf("%s=%s: want gzip or none", name, v)
		}
	}
	if name, v := get("TIMEOUT"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 {
			return nil, fmt.Errorf("%s=%s: want a number of milliseconds", name, v)
		}
		c.timeout = time.Duration(ms) * time.Millisecond
	}
	if name, v := get("HEADERS"); v != "" {
		if c.headers, err = parseOTLPHeaders(v); err != nil {
			// The value is not shown: it holds the collector's keys.
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	tlsConf, err := otlpTLS(get)
	if err != nil {
		return nil, err
	}
	c.hc = &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tlsConf,
		MaxIdleConns:        2,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c, nil
}

// tracesURL is where spans are posted: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// as it is (its path, or "/"), or OTEL_EXPORTER_OTLP_ENDPOINT with
// v1/traces joined to its path; as the SDK's exporter does, without user
// information or query (see tracingEndpoint, which checks it).
func tracesURL(getenv func(string) string) (string, error) {
	endpoint, err := tracingEndpoint(getenv)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(endpoint)
	if err != nil || endpoint == "" {
		return "", errors.New("no OTLP endpoint")
	}
	switch {
	case strings.TrimSpace(getenv(envTracesEndpoint)) == "":
		u.Path = path.Join("/", u.Path, "v1/traces")
		u.RawPath = ""
	case u.Path == "":
		u.Path = "/"
	}
	return u.String(), nil
}

// parseOTLPHeaders reads key=value pairs separated by commas, the values
// percent-encoded.
func parseOTLPHeaders(v string) (map[string]string, error) {
	h := map[string]string{}
	for pair := range strings.SplitSeq(v, ",") {
		k, val, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t\r\n:") {
			return nil, errors.New("want key=value pairs separated by commas")
		}
		val, err := url.PathUnescape(val)
		if err != nil {
			return nil, errors.New("a value is not percent-encoded correctly")
		}
		h[k] = strings.TrimSpace(val)
	}
	return h, nil
}

// otlpTLS is the TLS configuration the certificate variables ask for, nil
// for the default one.
func otlpTLS(get func(string) (string, string)) (*tls.Config, error) {
	caName, ca := get("CERTIFICATE")
	certName, cert := get("CLIENT_CERTIFICATE")
	keyName, key := get("CLIENT_KEY")
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caName, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: %s holds no PEM certificate", caName, ca)
		}
		conf.RootCAs = pool
	}
	if cert != "" || key != "" {
		if cert == "" || key == "" {
			return nil, fmt.Errorf("%s and %s go together", certName, keyName)
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", certName, keyName, err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	return conf, nil
}

func (c *otlpClient) Start(context.Context) error { return nil }

func (c *otlpClient) Stop(context.Context) error {
	c.hc.CloseIdleConnections()
	return nil
}

// UploadTraces posts the spans, within the client's timeout, again after
// an answer that asks for it (429, 502, 503, 504: after its Retry-After,
// or a backoff from a second up).
func (c *otlpClient) UploadTraces(ctx context.Context, spans []*tracepb.ResourceSpans) error {
	if len(spans) == 0 {
		return nil
	}
	body, err := c.encode(spans)
	if err != nil {
		return fmt.Errorf("otlp: encoding spans: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	wait := c.retryMin
	for {
		retry, err := c.post(ctx, body)
		if err == nil || retry < 0 {
			return err
		}
		if retry == 0 {
			retry, wait = wait, min(2*wait, 30*time.Second)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (giving up: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// post sends body once. retry is negative when the error is final, zero
// to back off, or how long the collector asked to wait.
func (c *otlpClient) post(ctx context.Context, body []byte) (retry time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return -1, fmt.Errorf("otlp: %w", err)
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	if c.json {
		req.Header.Set("Content-Type", "application/json")
	} else {
		req.Header.Set("Content-Type", "application/x-protobuf")
	}
	if c.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	req.Header.Set("User-Agent", "tallyfy-deleter OTLP exporter")
	resp, err := c.hc.Do(req)
	if err != nil {
		// The URL is the collector's, already in the log; no headers here.
		return 0, fmt.Errorf("otlp: %w", err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, otlpMaxAnswer))
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return 0, nil
	case code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		return tallyfy.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), fmt.Errorf("otlp: the collector answered %s", resp.Status)
	default:
		return -1, fmt.Errorf("otlp: the collector answered %s: %s", resp.Status, tallyfy.OneLine(string(answer), 200))
	}
}

// encode is the ExportTraceServiceRequest holding spans: protobuf, or
// OTLP's JSON (field names in lowerCamelCase, enums as numbers, trace and
// span IDs in hex), gzipped if asked.
func (c *otlpClient) encode(spans []*tracepb.ResourceSpans) ([]byte, error) {
	var body []byte
	if c.json {
		var err error
		if body, err = encodeJSON(spans); err != nil {
			return nil, err
		}
	} else {
		// ExportTraceServiceRequest is field 1, repeated ResourceSpans.
		for _, rs := range spans {
			b, err := proto.Marshal(rs)
			if err != nil {
				return nil, err
			}
			body = protowire.AppendTag(body, 1, protowire.BytesType)
			body = protowire.AppendBytes(body, b)
		}
	}
	if !c.gzip {
		return body, nil
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(body); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func encodeJSON(spans []*tracepb.ResourceSpans) ([]byte, error) {
	opts := protojson.MarshalOptions{UseEnumNumbers: true}
	all := make([]any, 0, len(spans))
	for _, rs := range spans {
		b, err := opts.Marshal(rs)
		if err != nil {
			return nil, err
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		if err := hexIDs(v); err != nil {
			return nil, err
		}
		all = append(all, v)
	}
	return json.Marshal(map[string]any{"resourceSpans": all})
}

// hexIDs turns the trace and span IDs in v, which protojson writes in
// base64 as for any bytes, into the hex OTLP's JSON wants.
func hexIDs(v any) error {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "traceId" || k == "spanId" || k == "parentSpanId") {
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return fmt.Errorf("%s %q: %w", k, s, err)
				}
				v[k] = hex.EncodeToString(b)
				continue
			}
			if err := hexIDs(x); err != nil {
				return err
			}
		}
	case []any:
		for _, x := range v {
			if err := hexIDs(x); err != nil {
				return err
			}
		}
	}
	return nil
}
