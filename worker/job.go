package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// MaxJobSize bounds a job body. A job is three short IDs; anything near this
// size is a producer bug, and refusing it early keeps a hostile payload from
// costing more than a copy.
const MaxJobSize = 64 << 10

// maxRequestIDLen bounds the caller's request_id, which is copied into logs,
// events and headers.
const maxRequestIDLen = 128

var (
	// ErrInvalidJob marks a job that cannot be decoded or whose IDs are not
	// acceptable. Such a job never reaches the API.
	ErrInvalidJob = errors.New("invalid job")
	// ErrOrgNotAllowed marks a valid job whose organization is outside the
	// allow-list. Such a job never reaches the API.
	ErrOrgNotAllowed = errors.New("organization not allowed")
)

// Job is one request to permanently delete a run.
type Job struct {
	OrgID     string `json:"org_id"`
	RunID     string `json:"run_id"`
	RequestID string `json:"request_id,omitempty"`
	// ArchiveFirst asks the worker to archive the run if Tallyfy refuses to
	// delete it because it is not archived; see Config.ArchiveFirst.
	ArchiveFirst bool `json:"archive_first,omitempty"`
}

// DecodeJob parses and validates a job body. defaultOrg fills a missing or
// null org_id; an org_id that is present but empty is an error, because a
// producer that meant some organization must not have its run looked up in
// another.
//
// Decoding is stricter than encoding/json: field names are matched exactly
// (a near miss such as "Org_ID" is an error, not an ignored field), a
// duplicated field is an error (which one was meant is unknowable), and the
// known fields must be strings (archive_first a boolean). Unknown fields are ignored. Every error wraps
// ErrInvalidJob. On error the returned Job holds the fields that were valid,
// so that reports can name them.
func DecodeJob(data []byte, defaultOrg string) (Job, error) {
	var job Job
	if err := decodeFields(data, &job); err != nil {
		return keepValid(job), err
	}
	if job.RunID == "" {
		return keepValid(job), invalid("run_id is missing")
	}
	if !tallyfy.ValidID(job.RunID) {
		return keepValid(job), invalid("run_id is not 1 to 64 letters, digits, '-' or '_'")
	}
	if job.OrgID == "" {
		if defaultOrg == "" {
			return keepValid(job), invalid("org_id is missing and no default organization is configured")
		}
		job.OrgID = defaultOrg
	}
	if !tallyfy.ValidID(job.OrgID) {
		return keepValid(job), invalid("org_id is not 1 to 64 letters, digits, '-' or '_'")
	}
	if !validRequestID(job.RequestID) {
		return keepValid(job), invalid(fmt.Sprintf("request_id is longer than %d bytes or has control characters", maxRequestIDLen))
	}
	return job, nil
}

func invalid(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalidJob, reason)
}

func keepValid(j Job) Job {
	if !tallyfy.ValidID(j.OrgID) {
		j.OrgID = ""
	}
	if !tallyfy.ValidID(j.RunID) {
		j.RunID = ""
	}
	if !validRequestID(j.RequestID) {
		j.RequestID = ""
	}
	return j
}

func validRequestID(s string) bool {
	if len(s) > maxRequestIDLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// decodeFields reads the top-level object into job without validating IDs.
// json.Valid checks the syntax first (without allocating); the scan after
// it can then be simple, and allocates only for the strings it keeps. It is
// the worker's per-job hot path: encoding/json's token API cost more than
// the rest of a job's CPU together.
func decodeFields(data []byte, job *Job) error {
	if err := checkBody(data); err != nil {
		return err
	}
	s := scan{b: data}
	if s.ws() != '{' {
		return invalid("body is not a JSON object")
	}
	s.i++
	var seen [4]bool
	for {
		switch s.ws() {
		case '}':
			return nil
		case ',':
			s.i++
			s.ws()
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		s.i++ // ':'
		c := s.ws()
		idx, err := fieldIndex(key)
		if err != nil {
			return err
		}
		if idx < 0 {
			s.skip()
			continue
		}
		if seen[idx] {
			return invalid(fmt.Sprintf("field %q appears more than once", key))
		}
		seen[idx] = true
		if idx == fieldArchiveFirst {
			switch {
			case bytes.HasPrefix(s.b[s.i:], []byte("true")):
				job.ArchiveFirst = true
				s.i += len("true")
			case bytes.HasPrefix(s.b[s.i:], []byte("false")):
				s.i += len("false")
			case bytes.HasPrefix(s.b[s.i:], []byte("null")):
				s.i += len("null")
			default:
				return invalid(`field "archive_first" is not true or false`)
			}
			continue
		}
		var v string
		switch c {
		case '"':
			if v, err = s.str(); err != nil {
				return err
			}
		case 'n':
			// null reads as absent: some producers write every optional field.
			s.i += len("null")
			continue
		default:
			return invalid(fmt.Sprintf("field %q is not a string", key))
		}
		switch idx {
		case 0:
			if v == "" {
				return invalid("org_id is empty")
			}
			job.OrgID = v
		case 1:
			job.RunID = v
		case 2:
			job.RequestID = v
		}
	}
}

// checkBody refuses, before any scan, a body that cannot be a job.
func checkBody(data []byte) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return invalid("body is empty")
	}
	if len(data) > MaxJobSize {
		return invalid(fmt.Sprintf("body is %d bytes, more than the %d allowed", len(data), MaxJobSize))
	}
	if !utf8.Valid(data) {
		return invalid("body is not valid UTF-8")
	}
	if !json.Valid(data) {
		// Off the hot path: say which of the two it is.
		dec := json.NewDecoder(bytes.NewReader(data))
		var first json.RawMessage
		if dec.Decode(&first) == nil {
			return invalid("body has data after the JSON object")
		}
		return invalid("body is not valid JSON")
	}
	return nil
}

const fieldArchiveFirst = 3

// fieldIndex is key's index among the job's fields (org_id, run_id,
// request_id, archive_first), or -1 for a field the job does not have; a near miss is an
// error.
func fieldIndex(key string) (int, error) {
	switch key {
	case "org_id":
		return 0, nil
	case "run_id":
		return 1, nil
	case "request_id":
		return 2, nil
	case "archive_first":
		return fieldArchiveFirst, nil
	}
	for _, known := range []string{"org_id", "run_id", "request_id", "archive_first"} {
		if strings.EqualFold(key, known) {
			return -1, invalid(fmt.Sprintf("field %q is not %q: field names are case-sensitive", key, known))
		}
	}
	return -1, nil
}

// scan walks JSON that json.Valid has accepted.
type scan struct {
	b []byte
	i int
}

// ws skips white space and returns the next byte (0 at the end).
func (s *scan) ws() byte {
	for s.i < len(s.b) {
		switch c := s.b[s.i]; c {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return c
		}
	}
	return 0
}

// str reads the string at s.i.
func (s *scan) str() (string, error) {
	start := s.i
	escaped := false
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i++
		case '"':
			s.i++
			raw := s.b[start:s.i]
			if !escaped {
				return string(raw[1 : len(raw)-1]), nil
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return "", invalid("body has a string that cannot be read")
			}
			return v, nil
		}
	}
	return "", invalid("body is not valid JSON")
}

// skipStr passes over the string at s.i without reading it.
func (s *scan) skipStr() {
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			s.i++
		case '"':
			s.i++
			return
		}
	}
}

// skip passes over the value at s.i.
func (s *scan) skip() {
	depth := 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			s.skipStr()
			if depth == 0 {
				return
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return // the end of the enclosing object
			}
			depth--
			if depth == 0 {
				s.i++
				return
			}
		case ',':
			if depth == 0 {
				return
			}
		}
		s.i++
	}
}
