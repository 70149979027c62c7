package tallyfy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestListRunsRequest: the list is a GET of /organizations/{org}/runs,
// with the headers of every call, the page asked for, 100 per page unless
// told otherwise, and the filters as Tallyfy names them.
func TestListRunsRequest(t *testing.T) {
	tests := []struct {
		name string
		q    ListQuery
		want url.Values
	}{
		{"defaults", ListQuery{}, url.Values{"page": {"1"}, "per_page": {"100"}}},
		{"archived=only", ListQuery{Page: 3, Archived: ArchivedOnly}, url.Values{"page": {"3"}, "per_page": {"100"}, "archived": {"only"}}},
		{"status=archived", ListQuery{Archived: StatusArchived, PerPage: 25}, url.Values{"page": {"1"}, "per_page": {"25"}, "status": {"archived"}}},
		{"checklist and tag", ListQuery{Archived: ArchivedOnly, ChecklistID: "cl1", TagID: "t_1"},
			url.Values{"page": {"1"}, "per_page": {"100"}, "archived": {"only"}, "checklist_id": {"cl1"}, "tag": {"t_1"}, "with": {"tags"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *http.Request
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				got = r.Clone(context.Background())
				fmt.Fprint(w, `{"data":[]}`)
			})
			c := newClient(t, srv.URL+"/api", WithToken(testToken))
			if _, _, err := c.ListRuns(t.Context(), "org-1", tc.q); err != nil {
				t.Fatal(err)
			}
			if got.Method != http.MethodGet || got.URL.EscapedPath() != "/api/organizations/org-1/runs" {
				t.Errorf("%s %s, want GET /api/organizations/org-1/runs", got.Method, got.URL.EscapedPath())
			}
			if q := got.URL.Query(); !reflect.DeepEqual(q, tc.want) {
				t.Errorf("query %v, want %v", q, tc.want)
			}
			for k, v := range map[string]string{"Authorization": "Bearer " + testToken, "Accept": "application/json", "X-Tallyfy-Client": "APIClient"} {
				if got.Header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, got.Header.Get(k), v)
				}
			}
		})
	}
}

// TestListRunsRefusesBadQuery: IDs are checked before they reach a URL,
// and a page size over the server's cap is refused rather than silently
// cut: no request is made.
func TestListRunsRefusesBadQuery(t *testing.T) {
	var n counter
	srv := newServer(t, n.wrap(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"data":[]}`) }))
	c := newClient(t, srv.URL, WithToken(testToken))
	tests := []struct {
		name    string
		org     string
		q       ListQuery
		wantErr error
		want    string
	}{
		{"org", "a/b", ListQuery{}, ErrInvalidID, "org ID"},
		{"checklist", "org1", ListQuery{ChecklistID: "../x"}, ErrInvalidID, "checklist ID"},
		{"tag", "org1", ListQuery{TagID: "a b"}, ErrInvalidID, "tag ID"},
		{"per_page over the cap", "org1", ListQuery{PerPage: 101}, nil, "per_page 101"},
		{"negative page", "org1", ListQuery{Page: -1}, nil, "page -1"},
		{"unknown filter", "org1", ListQuery{Archived: 7}, nil, "archived filter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := c.ListRuns(t.Context(), tc.org, tc.q)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Errorf("error %v, want one with %q (is %v)", err, tc.want, tc.wantErr)
			}
		})
	}
	if n.get() != 0 {
		t.Errorf("%d requests made for refused queries", n.get())
	}
}

func ptr(s string) *string { return &s }

// TestListRunsDecodes: the known quirks of the answer (links as [], meta
// or pagination as [], numbers as strings) and odd runs (a number for an
// ID, archived_at that is not a string, an entry that is not an object)
// decode without losing the page.
func TestListRunsDecodes(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantRuns []ListedRun
		wantBad  int
		wantPg   Pagination
	}{
		{
			name: "object links",
			body: `{"data":[{"id":"r1","name":"Onboarding","status":"archived","checklist_id":"c1","archived_at":"2025-01-02T03:04:05Z","extra":{"x":1}}],
				"meta":{"pagination":{"total":250,"count":1,"per_page":100,"current_page":1,"total_pages":25,"links":{"next":"https://x/runs?page=2"}}}}`,
			wantRuns: []ListedRun{{ID: "r1", Name: "Onboarding", Status: "archived", ChecklistID: "c1", ArchivedAt: ptr("2025-01-02T03:04:05Z")}},
			wantPg:   Pagination{Total: 250, Count: 1, PerPage: 100, CurrentPage: 1, TotalPages: 25, Links: true, Next: "https://x/runs?page=2"},
		},
		{
			name:     "links as an empty list",
			body:     `{"data":[{"id":"r1","archived_at":null}],"meta":{"pagination":{"total":1,"count":1,"per_page":100,"current_page":1,"total_pages":1,"links":[]}}}`,
			wantRuns: []ListedRun{{ID: "r1"}},
			wantPg:   Pagination{Total: 1, Count: 1, PerPage: 100, CurrentPage: 1, TotalPages: 1, Links: true},
		},
		{
			name:     "null links and previous",
			body:     `{"data":[{"id":"r1"}],"meta":{"pagination":{"total":"120","per_page":"100","current_page":"2","links":{"previous":"p","next":null}}}}`,
			wantRuns: []ListedRun{{ID: "r1"}},
			wantPg:   Pagination{Total: 120, Count: -1, PerPage: 100, CurrentPage: 2, TotalPages: -1, Links: true, Previous: "p"},
		},
		{
			name:     "meta as an empty list",
			body:     `{"data":[],"meta":[]}`,
			wantRuns: []ListedRun{},
			wantPg:   Pagination{Total: -1, Count: -1, PerPage: -1, CurrentPage: -1, TotalPages: -1},
		},
		{
			name: "odd runs",
			body: `{"data":[{"id":12345,"archived_at":false},"r2",null,{"id":"r3","archived_at":"yesterday","name":null},
				{"id":"r4","tags":{"data":[{"id":"t1","title":"GDPR"},{"title":"no id"}]}},{"id":"r5","tags":["t2",3]},{"id":"r6","tags":null},{"id":"r7","tags":"t1"}]}`,
			wantRuns: []ListedRun{
				{ID: "12345", ArchivedAt: ptr("false")},
				{ID: "r3", ArchivedAt: ptr("yesterday")},
				{ID: "r4", Tags: []string{"t1"}, TagsShown: true},
				{ID: "r5", Tags: []string{"t2", "3"}, TagsShown: true},
				{ID: "r6", TagsShown: true},
				{ID: "r7"},
			},
			wantBad: 2,
			wantPg:  Pagination{Total: -1, Count: -1, PerPage: -1, CurrentPage: -1, TotalPages: -1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, tc.body) })
			c := newClient(t, srv.URL, WithToken(testToken))
			page, resp, err := c.ListRuns(t.Context(), "org1", ListQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if resp == nil || resp.StatusCode != 200 {
				t.Errorf("response %+v", resp)
			}
			if !reflect.DeepEqual(page.Runs, tc.wantRuns) {
				t.Errorf("runs\n%+v\nwant\n%+v", page.Runs, tc.wantRuns)
			}
			if page.Malformed != tc.wantBad {
				t.Errorf("malformed %d, want %d", page.Malformed, tc.wantBad)
			}
			if page.Pagination != tc.wantPg {
				t.Errorf("pagination %+v, want %+v", page.Pagination, tc.wantPg)
			}
		})
	}
}

// TestListRunsRefusesBodiesWithoutData: a 200 that is not a page is an
// error, not an empty page that would end a sweep as if it were done.
func TestListRunsRefusesBodiesWithoutData(t *testing.T) {
	for _, body := range []string{`{}`, `{"data":{"id":"r1"}}`, `{"data":null}`, `<html>maintenance</html>`, `[]`} {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) })
		c := newClient(t, srv.URL, WithToken(testToken))
		if page, _, err := c.ListRuns(t.Context(), "org1", ListQuery{}); err == nil {
			t.Errorf("%s: page %+v, want an error", body, page)
		}
	}
}

// TestListRunsErrors: answers other than 2xx are *APIError as for every
// call; a 429 carries its Retry-After.
func TestListRunsErrors(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.Header().Set("X-Request-Id", "req-9")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"message":"slow down"}`)
	})
	c := newClient(t, srv.URL, WithToken(testToken))
	_, resp, err := c.ListRuns(t.Context(), "org1", ListQuery{})
	var apiErr *APIError
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &apiErr) || apiErr.RetryAfter != 7*time.Second || apiErr.RequestID != "req-9" {
		t.Errorf("error %#v, want a 429 with Retry-After 7s and its request ID", err)
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("response %+v", resp)
	}
}

// TestListRunsPageTooLarge: a page over what the client reads of any body
// is ErrPageTooLarge, so that the caller can ask for smaller pages, and is
// not read further.
func TestListRunsPageTooLarge(t *testing.T) {
	ct := newCountingTransport(t)
	name := strings.Repeat("n", 20<<10)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"data":[`)
		for i := range 100 {
			if i > 0 {
				fmt.Fprint(w, ",")
			}
			fmt.Fprintf(w, `{"id":"r%d","name":%q}`, i, name)
		}
		fmt.Fprint(w, `]}`)
	})
	c := newClient(t, srv.URL, WithToken(testToken), WithHTTPClient(&http.Client{Transport: ct}))
	_, _, err := c.ListRuns(t.Context(), "org1", ListQuery{})
	if !errors.Is(err, ErrPageTooLarge) {
		t.Fatalf("error %v, want ErrPageTooLarge", err)
	}
	if n := ct.read.Load(); n > maxDecode+maxDrain+64<<10 {
		t.Errorf("read %d bytes of a 2 MiB page", n)
	}
}

func TestListedRunArchived(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC)
	tests := []struct {
		name     string
		raw      *string
		want     time.Time
		archived bool
		wantErr  bool
	}{
		{"null", nil, time.Time{}, false, false},
		{"empty", ptr(""), time.Time{}, false, false},
		{"UTC", ptr("2025-01-02T03:04:05.0000006Z"), at, true, false},
		{"offset", ptr("2025-01-02T05:04:05.0000006+02:00"), at, true, false},
		{"no zone", ptr("2025-01-02 03:04:05"), time.Time{}, false, true},
		{"not a time", ptr("false"), time.Time{}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, archived, err := ListedRun{ArchivedAt: tc.raw}.Archived()
			if !got.Equal(tc.want) || archived != tc.archived || (err != nil) != tc.wantErr {
				t.Errorf("%v, %v, %v; want %v, %v, error %v", got, archived, err, tc.want, tc.archived, tc.wantErr)
			}
		})
	}
}

// TestRunPageLast: the first sign that nothing is left ends the listing;
// total_pages computed for the default page size of 10 is corrected from
// total and the page size.
func TestRunPageLast(t *testing.T) {
	runs := func(n int) []ListedRun { return make([]ListedRun, n) }
	unknown := Pagination{Total: -1, Count: -1, PerPage: -1, CurrentPage: -1, TotalPages: -1}
	with := func(f func(*Pagination)) Pagination { p := unknown; f(&p); return p }
	tests := []struct {
		name string
		page RunPage
		q    ListQuery
		want bool
	}{
		{"empty page", RunPage{Runs: runs(0), Pagination: with(func(p *Pagination) { p.Total, p.TotalPages, p.Links, p.Next = 500, 50, true, "n" })}, ListQuery{Page: 2}, true},
		{"total_pages for 10 a page, recomputed", RunPage{Runs: runs(50), Pagination: with(func(p *Pagination) {
			p.Total, p.PerPage, p.CurrentPage, p.TotalPages, p.Links, p.Next = 250, 100, 3, 25, true, "n"
		})}, ListQuery{Page: 3}, true},
		{"more by every sign", RunPage{Runs: runs(100), Pagination: with(func(p *Pagination) {
			p.Total, p.PerPage, p.CurrentPage, p.TotalPages, p.Links, p.Next = 250, 100, 2, 25, true, "n"
		})}, ListQuery{Page: 2}, false},
		{"no next link", RunPage{Runs: runs(100), Pagination: with(func(p *Pagination) {
			p.Total, p.PerPage, p.CurrentPage, p.TotalPages, p.Links = 250, 100, 1, 3, true
		})}, ListQuery{Page: 1}, true},
		{"links unknown, total says more", RunPage{Runs: runs(100), Pagination: with(func(p *Pagination) { p.Total = 250 })}, ListQuery{Page: 1}, false},
		{"per_page missing: the asked size", RunPage{Runs: runs(20), Pagination: with(func(p *Pagination) { p.Total = 40 })}, ListQuery{Page: 2, PerPage: 20}, true},
		{"a page holding more than per_page says", RunPage{Runs: runs(100), Pagination: with(func(p *Pagination) {
			p.Total, p.PerPage = 150, 10
		})}, ListQuery{Page: 1}, false},
		{"current_page stuck at 1", RunPage{Runs: runs(100), Pagination: with(func(p *Pagination) {
			p.Total, p.PerPage, p.CurrentPage, p.Links, p.Next = 300, 100, 1, true, "n"
		})}, ListQuery{Page: 3}, true},
		{"total_pages says last", RunPage{Runs: runs(100), Pagination: with(func(p *Pagination) { p.CurrentPage, p.TotalPages = 4, 4 })}, ListQuery{Page: 4}, true},
		{"nothing known: only emptiness ends it", RunPage{Runs: runs(100), Pagination: unknown}, ListQuery{Page: 7}, false},
		{"malformed entries count as entries", RunPage{Malformed: 3, Pagination: unknown}, ListQuery{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.page.Last(tc.q); got != tc.want {
				t.Errorf("Last = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseArchivedFilter(t *testing.T) {
	for _, f := range []ArchivedFilter{ArchivedOnly, StatusArchived} {
		if got, err := ParseArchivedFilter(f.String()); got != f || err != nil {
			t.Errorf("%s: %v, %v", f, got, err)
		}
	}
	for _, s := range []string{"", "archived=true", "only"} {
		if _, err := ParseArchivedFilter(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
