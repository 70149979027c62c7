package servers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// How the fake answers: routing a request to a run, scripts and outages,
// and the bodies it writes.

// endpoint is what a request path names.
type endpoint int

const (
	noEndpoint          endpoint = iota
	apiNoRoute                   // under the API prefix but no route: 404 once authenticated
	runEndpoint                  // /organizations/{org}/runs/{run}
	runDeleteEndpoint            // .../delete
	runActivateEndpoint          // .../activate
	runsEndpoint                 // /organizations/{org}/runs: the list
	tokenEndpoint
)

type target struct {
	endpoint endpoint
	key      runKey // only the org for runsEndpoint
	page     int    // the list page asked for (runsEndpoint)
}

func parseTarget(escapedPath string) target {
	if escapedPath == tokenPath {
		return target{endpoint: tokenEndpoint}
	}
	rest, ok := strings.CutPrefix(escapedPath, apiPrefix+"/")
	if !ok {
		if escapedPath == apiPrefix {
			return target{endpoint: apiNoRoute}
		}
		return target{endpoint: noEndpoint}
	}
	seg := strings.Split(rest, "/")
	if len(seg) == 3 && seg[0] == "organizations" && seg[2] == "runs" {
		org, err := url.PathUnescape(seg[1])
		if err != nil || org == "" {
			return target{endpoint: apiNoRoute}
		}
		return target{endpoint: runsEndpoint, key: runKey{org: org}}
	}
	if len(seg) < 4 || len(seg) > 5 || seg[0] != "organizations" || seg[2] != "runs" {
		return target{endpoint: apiNoRoute}
	}
	// Unescape each segment on its own, so an escaped "/" inside an ID stays
	// part of that ID instead of making a new segment.
	org, err1 := url.PathUnescape(seg[1])
	run, err2 := url.PathUnescape(seg[3])
	if err1 != nil || err2 != nil || org == "" || run == "" {
		return target{endpoint: apiNoRoute}
	}
	t := target{endpoint: runEndpoint, key: runKey{org, run}}
	if len(seg) == 5 {
		switch seg[4] {
		case "delete":
			t.endpoint = runDeleteEndpoint
		case "activate":
			t.endpoint = runActivateEndpoint
		default:
			return target{endpoint: apiNoRoute}
		}
	}
	return t
}

func (t target) isRun() bool {
	return t.endpoint == runEndpoint || t.endpoint == runDeleteEndpoint || t.endpoint == runActivateEndpoint
}

func (f *FakeTallyfy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	reqID := fmt.Sprintf("%s-%d", f.idPrefix, f.requestSeq.Add(1))
	tg := parseTarget(r.URL.EscapedPath())
	if tg.endpoint == runsEndpoint {
		tg.page = listPageOf(r.URL.Query())
	}
	isDelete := tg.endpoint == runDeleteEndpoint && r.Method == http.MethodDelete

	f.mu.Lock()
	count := f.requestCount.Add(1)
	if isDelete {
		f.deleteCount.Add(1)
		f.deletes[tg.key]++
	}
	idx := -1
	if f.record {
		idx = len(f.requests)
		f.requests = append(f.requests, Request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header.Clone(), At: at})
	}
	f.wakeWaitersLocked(count)
	forced := f.takeScriptLocked(tg)
	latency := f.latency
	f.mu.Unlock()

	if forced != nil {
		latency += forced.Delay
	}
	if !f.wait(r.Context(), latency) {
		return
	}
	resp := forced
	if resp == nil {
		answer := f.answer(r, tg)
		resp = &answer
	}
	f.write(w, r, idx, reqID, resp)
}

func (f *FakeTallyfy) wakeWaitersLocked(count int64) {
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if count >= w.n {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	f.waiters = kept
}

// takeScriptLocked picks the answer that overrides normal behaviour, if any.
func (f *FakeTallyfy) takeScriptLocked(tg target) *Response {
	if f.outage != nil {
		r := *f.outage
		return &r
	}
	pop := func(q *[]Response) *Response {
		if len(*q) == 0 {
			return nil
		}
		r := (*q)[0]
		*q = (*q)[1:]
		return &r
	}
	switch {
	case tg.endpoint == tokenEndpoint:
		return pop(&f.scriptToken)
	case tg.isRun():
		if q := f.scripts[tg.key]; len(q) > 0 {
			r := pop(&q)
			if len(q) == 0 {
				delete(f.scripts, tg.key)
			} else {
				f.scripts[tg.key] = q
			}
			return r
		}
		return pop(&f.scriptAll)
	case tg.endpoint == runsEndpoint:
		if r := f.popListScriptLocked(tg); r != nil {
			return r
		}
		return pop(&f.scriptAll)
	case tg.endpoint == apiNoRoute:
		return pop(&f.scriptAll)
	}
	return nil
}

// wait reports whether the answer should still be given.
func (f *FakeTallyfy) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-f.closing:
		return false
	}
}

// runLocked is the run a request names, or the answer when there is none
// to act on: 404 for a run that never was or is deleted, 403 for one the
// token may not touch.
func (f *FakeTallyfy) runLocked(k runKey) (runState, *Response) {
	st, ok := f.runs[k]
	switch {
	case !ok || st.deleted:
		return st, &Response{Status: http.StatusNotFound, Body: bodyRunNotFound}
	case f.denied[k]:
		return st, &Response{Status: http.StatusForbidden, Body: bodyForbidden}
	}
	return st, nil
}

// answer is the API's normal behaviour.
func (f *FakeTallyfy) answer(r *http.Request, tg target) Response {
	switch tg.endpoint {
	case tokenEndpoint:
		return f.issueToken(r)
	case noEndpoint:
		return Response{Status: http.StatusNotFound, Body: bodyNoRoute}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.authorizedLocked(r) {
		return Response{Status: http.StatusUnauthorized, Body: bodyUnauthenticated}
	}
	k := tg.key
	switch {
	case tg.endpoint == runsEndpoint && r.Method == http.MethodGet:
		return f.listLocked(r, k.org, tg.page)

	case tg.endpoint == runEndpoint && r.Method == http.MethodGet:
		st, refused := f.runLocked(k)
		if refused != nil {
			return *refused
		}
		return Response{Status: http.StatusOK, Body: runBody(k.run, st)}

	case tg.endpoint == runEndpoint && r.Method == http.MethodDelete:
		st, refused := f.runLocked(k)
		if refused != nil {
			return *refused
		}
		if !st.archived {
			st.archived, st.archivedAt = true, f.now()
			f.runs[k] = st
		}
		return Response{Status: http.StatusOK, Body: runBody(k.run, st)}

	case tg.endpoint == runActivateEndpoint && r.Method == http.MethodPut:
		st, refused := f.runLocked(k)
		if refused != nil {
			return *refused
		}
		st.archived, st.archivedAt = false, time.Time{}
		f.runs[k] = st
		return Response{Status: http.StatusOK, Body: runBody(k.run, st)}

	case tg.endpoint == runDeleteEndpoint && r.Method == http.MethodDelete:
		st, ok := f.runs[k]
		switch {
		case !ok || st.deleted:
			return Response{Status: http.StatusNotFound, Body: bodyRunNotFound}
		case f.nonAdmin[k.org] || f.denied[k]:
			return Response{Status: http.StatusForbidden, Body: bodyForbidden}
		case !st.archived:
			return Response{Status: http.StatusUnprocessableEntity, Body: bodyNotArchived}
		}
		st.deleted = true
		f.runs[k] = st
		f.deletedRuns++
		return Response{Status: http.StatusOK}
	}
	return Response{Status: http.StatusNotFound, Body: bodyNoRoute}
}

func (f *FakeTallyfy) authorizedLocked(r *http.Request) bool {
	if r.Header.Get("X-Tallyfy-Client") != "APIClient" {
		return false
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return false
	}
	if f.token != "" && tok == f.token {
		return true
	}
	it, ok := f.issued[tok]
	return ok && f.now().Before(it.expires)
}

func runBody(id string, st runState) string {
	type run struct {
		ID         string     `json:"id"`
		Status     string     `json:"status"`
		ArchivedAt *time.Time `json:"archived_at"`
	}
	v := run{ID: id, Status: "active"}
	if st.archived {
		at := st.archivedAt.UTC()
		v.Status, v.ArchivedAt = "archived", &at
	}
	b, err := json.Marshal(struct {
		Data run `json:"data"`
	}{v})
	if err != nil {
		// Only strings and a time are marshalled: this cannot happen.
		panic(err)
	}
	return string(b)
}

func (f *FakeTallyfy) write(w http.ResponseWriter, r *http.Request, idx int, reqID string, resp *Response) {
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
		if resp.RedirectTo != "" {
			status = http.StatusFound
		}
	}
	h := w.Header()
	h.Set("X-Request-Id", reqID)
	if resp.Body != "" || resp.BodySize > 0 || resp.Endless {
		h.Set("Content-Type", "application/json")
	}
	if resp.RetryAfter != "" {
		h.Set("Retry-After", resp.RetryAfter)
	}
	if resp.RedirectTo != "" {
		h.Set("Location", resp.RedirectTo)
	}
	for k, v := range resp.Header {
		h[http.CanonicalHeaderKey(k)] = append([]string(nil), v...)
	}

	// Recorded before the client can see the answer, so a test that has its
	// answer finds it in Requests.
	if idx >= 0 {
		f.mu.Lock()
		f.requests[idx].Status = status
		f.mu.Unlock()
	}

	switch {
	case resp.Endless:
		w.WriteHeader(status)
		f.writeEndless(w, r)
	case resp.BodySize > 0:
		h.Set("Content-Length", strconv.FormatInt(resp.BodySize, 10))
		w.WriteHeader(status)
		f.writeFiller(w, r, resp.BodySize)
	default:
		h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
		w.WriteHeader(status)
		_, _ = w.Write([]byte(resp.Body))
	}
}

const fillerChunk = 32 << 10

func filler() []byte {
	b := make([]byte, fillerChunk)
	for i := range b {
		b[i] = 'x'
	}
	return b
}

// writeFiller stops as soon as the client stops reading: a client that reads
// 4 KiB of a 100 MB answer and hangs up must not keep the handler busy.
func (f *FakeTallyfy) writeFiller(w http.ResponseWriter, r *http.Request, n int64) {
	chunk := filler()
	for n > 0 {
		if r.Context().Err() != nil || f.isClosing() {
			return
		}
		c := chunk
		if n < int64(len(c)) {
			c = c[:n]
		}
		if _, err := w.Write(c); err != nil {
			return
		}
		n -= int64(len(c))
	}
}

func (f *FakeTallyfy) writeEndless(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	chunk := filler()
	for r.Context().Err() == nil && !f.isClosing() {
		if _, err := w.Write(chunk); err != nil {
			return
		}
		// Flushed so the client has the headers and a trickle of body: the
		// hang it must survive is in reading the body, not in waiting for
		// the answer to start.
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (f *FakeTallyfy) isClosing() bool {
	select {
	case <-f.closing:
		return true
	default:
		return false
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	// crypto/rand.Read never returns an error (Go 1.24 and later).
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
