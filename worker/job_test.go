package worker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

func TestDecodeJob(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		defaultOrg string
		want       worker.Job
		wantErr    error
	}{
		{"full", `{"org_id":"o1","run_id":"r1","request_id":"q 1"}`, "", worker.Job{OrgID: "o1", RunID: "r1", RequestID: "q 1"}, nil},
		{"default org", `{"run_id":"r1"}`, "dflt", worker.Job{OrgID: "dflt", RunID: "r1"}, nil},
		{"null org is absent", `{"org_id":null,"run_id":"r1"}`, "dflt", worker.Job{OrgID: "dflt", RunID: "r1"}, nil},
		{"unknown fields ignored", `{"run_id":"r1","org_id":"o","extra":{"a":[1,2,{"b":null}]},"n":1.5e3}`, "", worker.Job{OrgID: "o", RunID: "r1"}, nil},
		{"whitespace around", " \n{\"run_id\" : \"r1\"}\n ", "d", worker.Job{OrgID: "d", RunID: "r1"}, nil},
		{"64 chars", `{"run_id":"` + strings.Repeat("a", 64) + `"}`, "d", worker.Job{OrgID: "d", RunID: strings.Repeat("a", 64)}, nil},
		{"no default org", `{"run_id":"r1"}`, "", worker.Job{RunID: "r1"}, worker.ErrInvalidJob},
		{"empty org", `{"org_id":"","run_id":"r1"}`, "d", worker.Job{RunID: "r1"}, worker.ErrInvalidJob},
		{"empty run", `{"run_id":""}`, "d", worker.Job{}, worker.ErrInvalidJob},
		{"bad run keeps org", `{"org_id":"o1","run_id":"a/b"}`, "", worker.Job{OrgID: "o1"}, worker.ErrInvalidJob},
		{"duplicate org", `{"org_id":"o1","org_id":"o2","run_id":"r"}`, "", worker.Job{}, worker.ErrInvalidJob},
		{"case variant", `{"Org_Id":"o1","run_id":"r"}`, "d", worker.Job{}, worker.ErrInvalidJob},
		{"number", `{"run_id":1}`, "d", worker.Job{}, worker.ErrInvalidJob},
		{"trailing", `{"run_id":"r"}x`, "d", worker.Job{}, worker.ErrInvalidJob},
		{"too big", `{"run_id":"r","x":"` + strings.Repeat("x", worker.MaxJobSize) + `"}`, "d", worker.Job{}, worker.ErrInvalidJob},
		{"archive first", `{"run_id":"r1","archive_first":true}`, "d", worker.Job{OrgID: "d", RunID: "r1", ArchiveFirst: true}, nil},
		{"archive first false", `{"archive_first":false,"run_id":"r1"}`, "d", worker.Job{OrgID: "d", RunID: "r1"}, nil},
		{"archive first null", `{"run_id":"r1","archive_first":null}`, "d", worker.Job{OrgID: "d", RunID: "r1"}, nil},
		{"archive first string", `{"run_id":"r1","archive_first":"true"}`, "d", worker.Job{}, worker.ErrInvalidJob},
		{"archive first twice", `{"run_id":"r1","archive_first":false,"archive_first":true}`, "d", worker.Job{}, worker.ErrInvalidJob},
		{"archive first case", `{"run_id":"r1","Archive_First":true}`, "d", worker.Job{}, worker.ErrInvalidJob},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := worker.DecodeJob([]byte(tc.body), tc.defaultOrg)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && got != tc.want {
				t.Errorf("job = %+v, want %+v", got, tc.want)
			}
			// On error, only fields safe to report come back.
			if tc.wantErr != nil && (got.OrgID != "" && !tallyfy.ValidID(got.OrgID) || got.RunID != "" && !tallyfy.ValidID(got.RunID)) {
				t.Errorf("fields kept on error = %+v", got)
			}
			if tc.name == "bad run keeps org" && got.OrgID != "o1" {
				t.Errorf("org lost: %+v", got)
			}
		})
	}
}

// FuzzDecodeJob: whatever the bytes, decoding never panics, and a job it
// accepts has IDs that are safe in a URL path.
func FuzzDecodeJob(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"run_id":"r1"}`, `{"org_id":"o","run_id":"r","request_id":"q"}`,
		`{"run_id":"../x"}`, `{"run_id":"r\u0000"}`, `[`, `{"run_id":"r","run_id":"s"}`, `{"run_id":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		job, err := worker.DecodeJob(data, "dflt")
		if err != nil {
			if !errors.Is(err, worker.ErrInvalidJob) {
				t.Fatalf("error %v does not wrap ErrInvalidJob", err)
			}
			return
		}
		if !tallyfy.ValidID(job.OrgID) || !tallyfy.ValidID(job.RunID) {
			t.Fatalf("accepted invalid IDs %+v from %q", job, data)
		}
		// What it accepted is what encoding/json reads from the same bytes.
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber() // numbers in unknown fields may not fit a float64
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
		}
		want := func(key, dflt string) string {
			if v, ok := m[key].(string); ok {
				return v
			}
			return dflt
		}
		if job.OrgID != want("org_id", "dflt") || job.RunID != want("run_id", "") || job.RequestID != want("request_id", "") {
			t.Fatalf("read %+v from %q; encoding/json reads %v", job, data, m)
		}
		for _, c := range job.OrgID + job.RunID {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				t.Fatalf("accepted %q from %q", job.RunID, data)
			}
		}
	})
}
