package tallyfy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Sentinels for the answers the worker routes on. They are *APIError values
// so that errors.Is matches any APIError with the same status code, whatever
// its message or request ID.
var (
	ErrNotFound     error = &APIError{StatusCode: http.StatusNotFound, Message: http.StatusText(http.StatusNotFound)}
	ErrNotArchived  error = &APIError{StatusCode: http.StatusUnprocessableEntity, Message: http.StatusText(http.StatusUnprocessableEntity)}
	ErrForbidden    error = &APIError{StatusCode: http.StatusForbidden, Message: http.StatusText(http.StatusForbidden)}
	ErrUnauthorized error = &APIError{StatusCode: http.StatusUnauthorized, Message: http.StatusText(http.StatusUnauthorized)}
	ErrRateLimited  error = &APIError{StatusCode: http.StatusTooManyRequests, Message: http.StatusText(http.StatusTooManyRequests)}
)

// ErrToken matches every *TokenError: no access token could be had, so no API
// request was made.
var ErrToken = errors.New("tallyfy: cannot get an access token")

// ErrCredentialsUnreadable matches the *TokenError of a local fault: a token
// or client secret file that cannot be read, is empty or holds what cannot
// go in a header, or a caller's token source that gave no usable token.
// Nothing was asked of Tallyfy, so it says nothing about Tallyfy's health;
// fixing the file (or the mount) fixes it.
var ErrCredentialsUnreadable = errors.New("tallyfy: credentials unreadable")

const (
	// maxErrorBody bounds what an error answer may cost us: enough for any
	// JSON error Tallyfy sends, small enough that a hostile body is free.
	maxErrorBody = 4 << 10
	// maxMessage keeps messages fit for a log line or a message header:
	// that many bytes of text, and an ellipsis after them if there was more.
	maxMessage   = 200
	maxRequestID = 128
	redacted     = "[REDACTED]"
)

// APIError is an answer from the API other than 2xx.
type APIError struct {
	StatusCode int
	// Message is the server's own explanation when it gave one, cleaned and
	// shortened, else the status text. Secrets are already redacted.
	Message string
	// RequestID is the X-Request-Id header, which Tallyfy support asks for.
	RequestID string
	// RetryAfter is the server's Retry-After, 0 when absent or unusable.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("tallyfy: ")
	b.WriteString(strconv.Itoa(e.StatusCode))
	text := http.StatusText(e.StatusCode)
	if text != "" {
		b.WriteString(" ")
		b.WriteString(text)
	}
	if e.Message != "" && e.Message != text {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	writeRequestID(&b, e.RequestID)
	return b.String()
}

// writeRequestID ends an error's text with Tallyfy's request ID, if any.
func writeRequestID(b *strings.Builder, id string) {
	if id != "" {
		b.WriteString(" (request_id ")
		b.WriteString(id)
		b.WriteString(")")
	}
}

// Is matches on the status code alone, so errors.Is(err, ErrNotArchived)
// holds for every 422 whatever the server wrote.
func (e *APIError) Is(target error) bool {
	t, ok := target.(*APIError)
	return ok && e != nil && t != nil && e.StatusCode == t.StatusCode
}

// TokenError means no access token could be had, from the token endpoint, a
// token file or a caller's token source. It is deliberately not an
// *APIError: a 404 from a misconfigured token URL must never read as "run
// already deleted". It matches ErrToken; ErrUnauthorized when the token
// endpoint refused the client with 401; ErrCredentialsUnreadable when the
// fault is local.
type TokenError struct {
	// StatusCode is the token endpoint's answer, 0 when there was none.
	StatusCode int
	// Message is already redacted.
	Message   string
	RequestID string
	// cause is kept for Is only: unwrapping it could hand out an unredacted
	// message.
	cause error
	// local: the credentials could not be read here; see
	// ErrCredentialsUnreadable.
	local bool
}

func (e *TokenError) Error() string {
	var b strings.Builder
	b.WriteString("tallyfy: access token: ")
	if e.StatusCode != 0 {
		b.WriteString("token endpoint answered ")
		b.WriteString(strconv.Itoa(e.StatusCode))
		if text := http.StatusText(e.StatusCode); text != "" {
			b.WriteString(" ")
			b.WriteString(text)
		}
		if e.Message != "" {
			b.WriteString(": ")
		}
	}
	b.WriteString(e.Message)
	writeRequestID(&b, e.RequestID)
	return b.String()
}

func (e *TokenError) Is(target error) bool {
	if target == ErrToken {
		return true
	}
	if target == ErrCredentialsUnreadable {
		return e.local
	}
	if t, ok := target.(*APIError); ok {
		return t.StatusCode == http.StatusUnauthorized && e.StatusCode == http.StatusUnauthorized
	}
	return e.cause != nil && errors.Is(e.cause, target)
}

// redactedError stands in for an error whose text held a secret. It answers
// errors.Is like the original (so context.DeadlineExceeded still matches) but
// has no Unwrap, because the original's text is exactly what must not leak.
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string        { return e.msg }
func (e *redactedError) Is(target error) bool { return errors.Is(e.cause, target) }

// CheckResponse returns nil for a 2xx answer and an *APIError otherwise. It
// reads at most 4 KiB of the body and leaves closing it to the caller. The
// bearer token of resp.Request, if any, is redacted from the message, since
// some servers echo request headers in their error pages.
func CheckResponse(resp *http.Response) error {
	var sec secrets
	if resp.Request != nil {
		if tok, ok := strings.CutPrefix(resp.Request.Header.Get("Authorization"), "Bearer "); ok {
			sec = newSecrets(tok)
		}
	}
	return checkResponse(resp, sec)
}

func checkResponse(resp *http.Response, sec secrets) error {
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	e := &APIError{
		StatusCode: resp.StatusCode,
		RequestID:  requestID(resp.Header),
		RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	var body []byte
	if resp.Body != nil {
		// A read error still leaves whatever arrived, which is the best
		// explanation there is.
		body, _ = io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	}
	e.Message = errorMessage(body, len(body) >= maxErrorBody, resp.Header.Get("Content-Type"), sec)
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		// Where it wanted us to go says more than the "Found" page body.
		e.Message = "redirect to " + redirectTarget(loc, sec) + " not followed"
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// message is OneLine with the bound of an error's message.
func message(s string) string {
	return OneLine(s, maxMessage+len(ellipsis))
}

// redirectTarget drops the query: it is where a misbehaving server would put
// something it should not have.
func redirectTarget(loc string, sec secrets) string {
	if u, err := url.Parse(loc); err == nil {
		u.RawQuery, u.Fragment, u.User = "", "", nil
		loc = u.String()
	}
	return message(sec.redact(loc))
}

func requestID(h http.Header) string {
	return OneLine(h.Get("X-Request-Id"), maxRequestID)
}

// ParseRetryAfter reads a Retry-After header's value in either form of
// RFC 9110, relative to now; anything unusable is 0, which callers read as
// "no advice".
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 || secs > int64((1<<63-1)/time.Second) {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if d := t.Sub(now); d > 0 {
		return d
	}
	return 0
}

// errorMessage finds the server's explanation in one of the shapes Tallyfy
// (and the OAuth server in front of it) is known to use, falling back to a
// cleaned excerpt. Secrets are redacted from the raw bytes before anything
// is parsed or cut, so a shortened message cannot end in half a token.
func errorMessage(body []byte, truncated bool, contentType string, sec secrets) string {
	if truncated {
		body = sec.redactTail(body)
	}
	body = sec.redactBytes(body)
	s := strings.TrimSpace(string(body))
	if s == "" {
		return ""
	}
	if msg, ok := jsonMessage(body); ok {
		return message(sec.redact(msg))
	}
	media, _, _ := mime.ParseMediaType(contentType)
	if media == "text/html" || strings.HasPrefix(s, "<") {
		s = htmlText(s)
	}
	return message(sec.redact(s))
}

func jsonMessage(body []byte) (string, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return "", false
	}
	msg := jsonText(m["message"])
	var code string
	if raw := m["error"]; len(raw) > 0 {
		var nested struct {
			Code    json.RawMessage `json:"code"`
			Message json.RawMessage `json:"message"`
		}
		switch raw[0] {
		case '"':
			// OAuth style: {"error":"invalid_client","error_description":...}
			code = jsonText(raw)
			if d := jsonText(m["error_description"]); d != "" {
				msg = d
			}
		case '{':
			if json.Unmarshal(raw, &nested) == nil {
				code = jsonText(nested.Code)
				if nm := jsonText(nested.Message); nm != "" {
					msg = nm
				}
			}
		}
	}
	switch {
	case code != "" && msg != "":
		return code + ": " + msg, true
	case code != "":
		return code, true
	}
	// {"error": true, "message": ""} is a known shape that says nothing; the
	// caller falls back to the status text rather than echoing the JSON.
	_, hasMessage := m["message"]
	_, hasError := m["error"]
	return msg, msg != "" || hasMessage || hasError
}

// jsonText reads a string, a number or a list of strings; APIs are not
// consistent about which.
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return strings.Join(list, "; ")
	}
	return ""
}

// htmlText prefers the <title>, which proxies fill with the status line, and
// otherwise strips tags crudely: this only has to be readable in a log.
func htmlText(s string) string {
	lower := strings.ToLower(s)
	if i := strings.Index(lower, "<title"); i >= 0 {
		if j := strings.IndexByte(lower[i:], '>'); j >= 0 {
			start := i + j + 1
			if k := strings.Index(lower[start:], "</title"); k >= 0 {
				if t := strings.TrimSpace(s[start : start+k]); t != "" {
					return t
				}
			}
		}
	}
	var b strings.Builder
	inTag := false
	for _, r := range s {
		switch {
		case r == '<':
			inTag = true
		case r == '>':
			inTag = false
			b.WriteByte(' ')
		case !inTag:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// ellipsis ends a text that OneLine cut short.
const ellipsis = "…"

// OneLine makes text that came from elsewhere (a server's answer, an
// error, a setting) safe for one log line or a message header: valid
// UTF-8, no control or format characters (which could forge log lines or
// reorder text), white space collapsed to single spaces and trimmed, and
// at most maxBytes bytes. Text cut short ends in "…", which counts toward
// maxBytes; the cut never splits a character.
func OneLine(s string, maxBytes int) string {
	if maxBytes <= 0 {
		return ""
	}
	if len(s) <= maxBytes && plainASCII(s) {
		return s // the usual case (an ID, a short message): nothing to copy
	}
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		case r == utf8.RuneError, unicode.IsControl(r), unicode.Is(unicode.Cf, r):
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		if b.Len() > maxBytes {
			break // cut short: the rest does not matter
		}
	}
	out := b.String()
	if len(out) <= maxBytes {
		return out
	}
	keep, tail := maxBytes-len(ellipsis), ellipsis
	if keep < 0 {
		keep, tail = maxBytes, "" // no room for the ellipsis
	}
	return strings.TrimRight(cutRunes(out, keep), " ") + tail
}

// plainASCII: printable ASCII without spaces, which OneLine leaves as it is.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// cutRunes is the longest prefix of s of at most n bytes that ends on a
// rune boundary.
func cutRunes(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// secrets are the strings that must never appear in an error: the bearer
// token of the request and whatever its token source declares. Each is held
// with the encodings a server might echo it in.
type secrets []string

func newSecrets(values ...string) secrets {
	var out secrets
	add := func(v string) {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	for _, v := range values {
		if v == "" {
			continue
		}
		add(v)
		if j, err := json.Marshal(v); err == nil {
			esc := string(j[1 : len(j)-1])
			add(esc)
			// PHP's json_encode escapes slashes.
			add(strings.ReplaceAll(esc, "/", `\/`))
		}
		add(url.QueryEscape(v))
		add(url.PathEscape(v))
	}
	// Longest first, so a secret that contains another is replaced whole.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

func (s secrets) redact(str string) string {
	for _, v := range s {
		str = strings.ReplaceAll(str, v, redacted)
	}
	return str
}

func (s secrets) redactBytes(b []byte) []byte {
	for _, v := range s {
		b = bytes.ReplaceAll(b, []byte(v), []byte(redacted))
	}
	return b
}

// redactTail handles a body cut off in the middle of a secret: the cut
// leaves a prefix that no whole-string replacement would find.
func (s secrets) redactTail(b []byte) []byte {
	for _, v := range s {
		for k := min(len(v)-1, len(b)); k > 0; k-- {
			if bytes.HasSuffix(b, []byte(v[:k])) {
				b = append(b[:len(b)-k:len(b)-k], redacted...)
				break
			}
		}
	}
	return b
}

// wrap hands err on unchanged, prefixed, when its text holds no secret, so
// callers keep errors.As on *url.Error and the like; otherwise only its
// redacted text and its errors.Is answers survive.
func (s secrets) wrap(prefix string, err error) error {
	msg := err.Error()
	if r := s.redact(msg); r != msg {
		return &redactedError{msg: prefix + r, cause: err}
	}
	return fmt.Errorf("%s%w", prefix, err)
}
