package tallyfy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// MaxPerPage is the most runs one page holds, whatever is asked: Tallyfy's
// CLI notes that the server caps per_page at 100.
const MaxPerPage = 100

// ErrPageTooLarge means a page's body was larger than the client reads of
// any answer (1 MiB): ask again with a smaller ListQuery.PerPage.
var ErrPageTooLarge = errors.New("tallyfy: page larger than 1 MiB")

// ArchivedFilter is how ListRuns asks for archived runs. Tallyfy's API docs
// say status=archived; Tallyfy's own MCP server says archived=only, and
// that archived=true lists archived runs beside active ones. Neither is
// known to work, so whoever acts on the answer checks each run's own
// ArchivedAt.
type ArchivedFilter int

const (
	// NoArchivedFilter sends neither: the server's default selection.
	NoArchivedFilter ArchivedFilter = iota
	// ArchivedOnly sends archived=only, as Tallyfy's MCP server does.
	ArchivedOnly
	// StatusArchived sends status=archived, as Tallyfy's API docs say.
	StatusArchived
)

// String is the query parameter the filter sends, as key=value.
func (f ArchivedFilter) String() string {
	switch f {
	case ArchivedOnly:
		return "archived=only"
	case StatusArchived:
		return "status=archived"
	}
	return ""
}

// ParseArchivedFilter reads what String writes: "archived=only" or
// "status=archived".
func ParseArchivedFilter(s string) (ArchivedFilter, error) {
	for _, f := range []ArchivedFilter{ArchivedOnly, StatusArchived} {
		if s == f.String() {
			return f, nil
		}
	}
	return NoArchivedFilter, fmt.Errorf("tallyfy: archived filter %q is neither archived=only nor status=archived", s)
}

// ListQuery selects one page of an organization's runs. Zero values are
// the defaults.
type ListQuery struct {
	// Page is the page to read, from 1 (0 means 1).
	Page int
	// PerPage is the page size asked for, 1 to MaxPerPage (0 means
	// MaxPerPage). The server's own default, when none is sent, is 10.
	PerPage int
	// Archived is how archived runs are asked for.
	Archived ArchivedFilter
	// ChecklistID lists only runs launched from this template
	// (checklist_id).
	ChecklistID string
	// TagID lists only runs with this tag (tag), and asks for each run's
	// tags (with=tags) so that the caller can check them.
	TagID string
}

func (q ListQuery) page() int { return max(q.Page, 1) }

func (q ListQuery) perPage() int {
	if q.PerPage == 0 {
		return MaxPerPage
	}
	return q.PerPage
}

// ListedRun is a run as a page of the list shows it. Fields that the
// answer left out, or gave in a shape other than expected, are empty.
type ListedRun struct {
	ID          string
	Name        string
	Status      string
	ChecklistID string
	// ArchivedAt is archived_at as sent: nil when null or absent. A value
	// that is not a JSON string is kept as its JSON text, so that Archived
	// fails on it rather than reading it as "not archived".
	ArchivedAt *string
	// Tags are the IDs of the run's tags, when the answer showed them
	// (TagsShown); Tallyfy shows them only when asked (with=tags).
	Tags      []string
	TagsShown bool
}

// Archived reads ArchivedAt: archived is false (and err nil) for a run that
// is not archived; err says that archived_at is set but not RFC 3339.
func (r ListedRun) Archived() (at time.Time, archived bool, err error) {
	if r.ArchivedAt == nil || *r.ArchivedAt == "" {
		return time.Time{}, false, nil
	}
	at, err = time.Parse(time.RFC3339Nano, *r.ArchivedAt)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("archived_at %s is not an RFC 3339 time", strconv.QuoteToASCII(OneLine(*r.ArchivedAt, 64)))
	}
	return at, true, nil
}

// HasTag reports whether the answer showed the run with tag id.
func (r ListedRun) HasTag(id string) bool { return slices.Contains(r.Tags, id) }

// RunPage is one page of runs.
type RunPage struct {
	Runs []ListedRun
	// Malformed counts the entries of data that were not JSON objects;
	// they are left out of Runs.
	Malformed int
	// Pagination is meta.pagination as sent.
	Pagination Pagination
}

// Pagination is meta.pagination. A number the answer did not give (or
// gave as something other than a number) is -1.
type Pagination struct {
	Total, Count, PerPage, CurrentPage, TotalPages int
	// Links says whether links was there, as an object or as the empty
	// list PHP makes of an empty object; Next and Previous are its URLs,
	// "" when absent or null.
	Links          bool
	Next, Previous string
}

// Last reports whether no page after this one (asked for with q) can hold
// runs. The server's pagination is not trusted to be right, so the first
// sign wins: the page is empty; the current page is the last by
// total_pages; it is the last by total and the page size (recomputed,
// since total_pages may be computed for the server's default page size
// rather than the one asked for); links were sent and name no next page.
func (p *RunPage) Last(q ListQuery) bool {
	if len(p.Runs)+p.Malformed == 0 {
		return true
	}
	pg := p.Pagination
	current := max(pg.CurrentPage, q.page())
	if pg.TotalPages >= 0 && current >= pg.TotalPages {
		return true
	}
	if pg.Total >= 0 {
		// A page that holds more than it says it may is not believed about
		// its size: trusting the smaller size can only cost a request.
		per := pg.PerPage
		if per <= 0 {
			per = q.perPage()
		}
		per = max(per, len(p.Runs)+p.Malformed)
		if current >= (pg.Total+per-1)/per {
			return true
		}
	}
	return pg.Links && pg.Next == ""
}

// ListRuns reads one page of an organization's runs
// (GET /organizations/{org_id}/runs). Errors are as for DeleteRun, and
// ErrInvalidID for an org, checklist or tag ID that is not an ID, before
// any request. A body larger than 1 MiB is ErrPageTooLarge. Entries of
// data are decoded one by one, so one odd run does not lose the page.
func (c *Client) ListRuns(ctx context.Context, orgID string, q ListQuery) (*RunPage, *Response, error) {
	u, err := c.listURL(orgID, q)
	if err != nil {
		return nil, nil, err
	}
	var page *RunPage
	resp, err := c.do(ctx, http.MethodGet, u, func(r io.Reader) error {
		cr := &countingReader{r: r}
		p, err := decodeRunPage(cr)
		if err != nil && cr.n >= maxDecode {
			return fmt.Errorf("%w (asked for %d per page)", ErrPageTooLarge, q.perPage())
		}
		page = p
		return err
	})
	if err != nil {
		return nil, resp, err
	}
	return page, resp, nil
}

func (c *Client) listURL(orgID string, q ListQuery) (string, error) {
	if !ValidID(orgID) {
		return "", invalidID("org", orgID)
	}
	if q.ChecklistID != "" && !ValidID(q.ChecklistID) {
		return "", invalidID("checklist", q.ChecklistID)
	}
	if q.TagID != "" && !ValidID(q.TagID) {
		return "", invalidID("tag", q.TagID)
	}
	if q.Page < 0 {
		return "", fmt.Errorf("tallyfy: ListRuns: page %d is not positive", q.Page)
	}
	if q.PerPage < 0 || q.PerPage > MaxPerPage {
		return "", fmt.Errorf("tallyfy: ListRuns: per_page %d is not from 1 to %d", q.PerPage, MaxPerPage)
	}
	v := url.Values{}
	v.Set("page", strconv.Itoa(q.page()))
	v.Set("per_page", strconv.Itoa(q.perPage()))
	switch q.Archived {
	case NoArchivedFilter:
	case ArchivedOnly:
		v.Set("archived", "only")
	case StatusArchived:
		v.Set("status", "archived")
	default:
		return "", fmt.Errorf("tallyfy: ListRuns: unknown archived filter %d", q.Archived)
	}
	if q.ChecklistID != "" {
		v.Set("checklist_id", q.ChecklistID)
	}
	if q.TagID != "" {
		v.Set("tag", q.TagID)
		v.Set("with", "tags")
	}
	return c.prefix + "/organizations/" + url.PathEscape(orgID) + "/runs?" + v.Encode(), nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// decodeRunPage reads {"data": [...], "meta": {"pagination": {...}}}. Only
// data is required; PHP writes an empty object as [], so meta, pagination
// and links may be lists and are then taken as empty.
func decodeRunPage(r io.Reader) (*RunPage, error) {
	var env map[string]json.RawMessage
	if err := json.NewDecoder(r).Decode(&env); err != nil {
		return nil, err
	}
	var data []json.RawMessage
	if raw := bytes.TrimSpace(env["data"]); len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &data) != nil {
		return nil, errors.New(`no "data" list`)
	}
	p := &RunPage{Runs: make([]ListedRun, 0, len(data))}
	for _, raw := range data {
		run, ok := decodeListedRun(raw)
		if !ok {
			p.Malformed++
			continue
		}
		p.Runs = append(p.Runs, run)
	}
	meta := object(env["meta"])
	p.Pagination = decodePagination(object(meta["pagination"]))
	return p, nil
}

func decodePagination(m map[string]json.RawMessage) Pagination {
	pg := Pagination{
		Total:       number(m["total"]),
		Count:       number(m["count"]),
		PerPage:     number(m["per_page"]),
		CurrentPage: number(m["current_page"]),
		TotalPages:  number(m["total_pages"]),
	}
	links := bytes.TrimSpace(m["links"])
	switch {
	case len(links) > 0 && links[0] == '[':
		pg.Links = true
	case len(links) > 0 && links[0] == '{':
		l := object(links)
		pg.Links = true
		pg.Next, _ = scalar(l["next"])
		pg.Previous, _ = scalar(l["previous"])
	}
	return pg
}

func decodeListedRun(raw json.RawMessage) (ListedRun, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return ListedRun{}, false
	}
	m := object(raw)
	var r ListedRun
	r.ID, _ = scalar(m["id"])
	r.Name, _ = scalar(m["name"])
	r.Status, _ = scalar(m["status"])
	r.ChecklistID, _ = scalar(m["checklist_id"])
	if at := bytes.TrimSpace(m["archived_at"]); len(at) > 0 && !bytes.Equal(at, []byte("null")) {
		s, ok := scalar(at)
		if !ok || at[0] != '"' {
			s = string(at)
		}
		r.ArchivedAt = &s
	}
	r.Tags, r.TagsShown = decodeTags(m["tags"])
	return r, true
}

// decodeTags reads the shapes tags come in: {"data": [...]} (Tallyfy's
// includes), a list of objects with an id, or a list of IDs. null is a run
// shown with no tags.
func decodeTags(raw json.RawMessage) ([]string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, false
	}
	if bytes.Equal(raw, []byte("null")) {
		return nil, true
	}
	if raw[0] == '{' {
		raw = bytes.TrimSpace(object(raw)["data"])
	}
	var list []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &list) != nil {
		return nil, false
	}
	var ids []string
	for _, t := range list {
		t = bytes.TrimSpace(t)
		if len(t) > 0 && t[0] == '{' {
			t = object(t)["id"]
		}
		if id, ok := scalar(t); ok && id != "" {
			ids = append(ids, id)
		}
	}
	return ids, true
}

// object is raw as an object, or nil when it is anything else.
func object(raw json.RawMessage) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if raw = bytes.TrimSpace(raw); len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m
}

// scalar reads a string or a number as text; anything else is "", false.
func scalar(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch {
	case raw[0] == '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s, true
		}
	case raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9':
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			return n.String(), true
		}
	}
	return "", false
}

// number reads a whole number, or one written as a string ("10"); -1 when
// there is none.
func number(raw json.RawMessage) int {
	s, ok := scalar(raw)
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return -1
	}
	return n
}
