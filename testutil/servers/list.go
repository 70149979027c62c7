package servers

import (
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The list endpoint, GET /organizations/{org}/runs, with the quirks
// Tallyfy is known or said to have (see tallyfy-api.md, "Listing runs"):
//
//   - per_page is capped at listMaxPerPage; without one, a page holds
//     listDefaultPerPage;
//   - total_pages, and so the next link, are computed for the default page
//     size whatever per_page asked, so the real last page still names a
//     next one (which is empty);
//   - links is an empty JSON list, [], when there is no previous and no
//     next page, as PHP writes an empty object;
//   - archived runs are listed for archived=only (Tallyfy's MCP server) and
//     status=archived (the docs); archived=true lists them beside active
//     ones; otherwise only active runs are listed;
//   - checklist_id (or blueprint_id) and tag filter; with=tags adds each
//     run's tags as {"data": [{"id", "title"}]}.
const (
	listMaxPerPage     = 100
	listDefaultPerPage = 10
)

// RunSpec is a run as AddRunWith adds it.
type RunSpec struct {
	ID          string
	Name        string
	ChecklistID string
	// Tags are tag IDs.
	Tags []string
	// ArchivedAt archives the run at that time; zero leaves it active.
	ArchivedAt time.Time
}

// AddRunWith adds a run the list shows with a name, checklist and tags,
// archived at a chosen time; an existing run is replaced, keeping its place
// in the list (runs are listed in the order they were first added).
func (f *FakeTallyfy) AddRunWith(org string, r RunSpec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := runState{name: r.Name, checklist: r.ChecklistID, tags: slices.Clone(r.Tags)}
	if !r.ArchivedAt.IsZero() {
		st.archived, st.archivedAt = true, r.ArchivedAt
	}
	f.putRunLocked(runKey{org, r.ID}, st)
}

// listPage names a page of an org's list for ScriptList; page 0 is any.
type listPage struct {
	org  string
	page int
}

// ScriptList makes the next len(rs) list requests of org for that page
// (from 1; 0 for whatever page) get rs, in order, before any
// authentication: Response{Status: 500} once makes a page fail once, and
// Response{Status: 429, RetryAfter: "1"} rate-limits it. A page's own
// script goes before the any-page script, which goes before ScriptAll's.
func (f *FakeTallyfy) ScriptList(org string, page int, rs ...Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := listPage{org, max(page, 0)}
	f.listScripts[k] = append(f.listScripts[k], rs...)
}

// IgnoreListFilters makes the list ignore every filter (archived, status,
// checklist, tag) and list all of an org's runs, as a server that does not
// know a parameter would: for clients that must check each run themselves.
func (f *FakeTallyfy) IgnoreListFilters(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ignoreFilter = on
}

func (f *FakeTallyfy) popListScriptLocked(tg target) *Response {
	for _, k := range []listPage{{tg.key.org, tg.page}, {tg.key.org, 0}} {
		q := f.listScripts[k]
		if len(q) == 0 {
			continue
		}
		r := q[0]
		if len(q) == 1 {
			delete(f.listScripts, k)
		} else {
			f.listScripts[k] = q[1:]
		}
		return &r
	}
	return nil
}

// listPageOf is the page a list request asks for: 1 unless a positive
// page is given.
func listPageOf(q url.Values) int {
	if n, err := strconv.Atoi(q.Get("page")); err == nil && n > 0 {
		return n
	}
	return 1
}

func (f *FakeTallyfy) listLocked(r *http.Request, org string, page int) Response {
	q := r.URL.Query()
	per := listDefaultPerPage
	if n, err := strconv.Atoi(q.Get("per_page")); err == nil && n > 0 {
		per = min(n, listMaxPerPage)
	}
	var matched []listedRun
	for _, id := range f.order[org] {
		st := f.runs[runKey{org, id}]
		if st.deleted || !f.listedLocked(q, st) {
			continue
		}
		matched = append(matched, newListedRun(id, st, strings.Contains(","+q.Get("with")+",", ",tags,")))
	}
	total := len(matched)
	from := min((page-1)*per, total)
	data := matched[from:min(from+per, total)]
	if data == nil {
		data = []listedRun{}
	}
	// The quirk: pages counted for the default size, not the one asked for.
	totalPages := max(1, int(math.Ceil(float64(total)/listDefaultPerPage)))
	links := map[string]string{}
	if page > 1 {
		links["previous"] = pageURL(r, page-1)
	}
	if page < totalPages {
		links["next"] = pageURL(r, page+1)
	}
	var rawLinks any = links
	if len(links) == 0 {
		rawLinks = []string{}
	}
	body := map[string]any{
		"data": data,
		"meta": map[string]any{"pagination": map[string]any{
			"total": total, "count": len(data), "per_page": per,
			"current_page": page, "total_pages": totalPages, "links": rawLinks,
		}},
	}
	b, err := json.Marshal(body)
	if err != nil {
		// Only strings, numbers and times are marshalled: this cannot happen.
		panic(err)
	}
	return Response{Status: http.StatusOK, Body: string(b)}
}

// listedLocked reports whether the list's filters keep a run.
func (f *FakeTallyfy) listedLocked(q url.Values, st runState) bool {
	if f.ignoreFilter {
		return true
	}
	switch archived, status := q.Get("archived"), q.Get("status"); {
	case archived == "only" || status == "archived":
		if !st.archived {
			return false
		}
	case archived == "true" || archived == "1":
	default:
		if st.archived {
			return false
		}
	}
	checklist := q.Get("checklist_id")
	if checklist == "" {
		checklist = q.Get("blueprint_id")
	}
	if checklist != "" && st.checklist != checklist {
		return false
	}
	if tag := q.Get("tag"); tag != "" && !slices.Contains(st.tags, tag) {
		return false
	}
	return true
}

// listedRun is a run as the list shows it.
type listedRun struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	ChecklistID string     `json:"checklist_id,omitempty"`
	Status      string     `json:"status"`
	ArchivedAt  *time.Time `json:"archived_at"`
	Tags        *tagList   `json:"tags,omitempty"`
}

type tagList struct {
	Data []tag `json:"data"`
}

type tag struct {
	ID    string `json:"id"`
	Title string `json:"title"`
}

func newListedRun(id string, st runState, withTags bool) listedRun {
	v := listedRun{ID: id, Name: st.name, ChecklistID: st.checklist, Status: "active"}
	if st.archived {
		at := st.archivedAt.UTC()
		v.Status, v.ArchivedAt = "archived", &at
	}
	if withTags {
		v.Tags = &tagList{Data: []tag{}}
		for _, t := range st.tags {
			v.Tags.Data = append(v.Tags.Data, tag{ID: t, Title: "Tag " + t})
		}
	}
	return v
}

// pageURL is the request's URL with another page, as the links give it.
func pageURL(r *http.Request, page int) string {
	q := r.URL.Query()
	q.Set("page", strconv.Itoa(page))
	return "http://" + r.Host + r.URL.EscapedPath() + "?" + q.Encode()
}
