package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
}

// DecodeJob parses and validates a job body. defaultOrg fills a missing or
// null org_id; an org_id that is present but empty is an error, because a
// producer that meant some organization must not have its run looked up in
// another.
//
// Decoding is stricter than encoding/json: field names are matched exactly
// (a near miss such as "Org_ID" is an error, not an ignored field), a
// duplicated field is an error (which one was meant is unknowable), and the
// known fields must be strings. Unknown fields are ignored. Every error wraps
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
func decodeFields(data []byte, job *Job) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return invalid("body is empty")
	}
	if len(data) > MaxJobSize {
		return invalid(fmt.Sprintf("body is %d bytes, more than the %d allowed", len(data), MaxJobSize))
	}
	if !utf8.Valid(data) {
		return invalid("body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return invalid("body is not JSON")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return invalid("body is not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalid("body is not valid JSON")
		}
		key, _ := tok.(string)
		var dst *string
		switch key {
		case "org_id":
			dst = &job.OrgID
		case "run_id":
			dst = &job.RunID
		case "request_id":
			dst = &job.RequestID
		default:
			for _, known := range []string{"org_id", "run_id", "request_id"} {
				if strings.EqualFold(key, known) {
					return invalid(fmt.Sprintf("field %q is not %q: field names are case-sensitive", key, known))
				}
			}
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return invalid("body is not valid JSON")
			}
			continue
		}
		if seen[key] {
			return invalid(fmt.Sprintf("field %q appears more than once", key))
		}
		seen[key] = true
		val, err := dec.Token()
		if err != nil {
			return invalid("body is not valid JSON")
		}
		switch v := val.(type) {
		case string:
			if v == "" && key == "org_id" {
				return invalid("org_id is empty")
			}
			*dst = v
		case nil:
			// null reads as absent: some producers write every optional field.
		default:
			return invalid(fmt.Sprintf("field %q is not a string", key))
		}
	}
	if _, err := dec.Token(); err != nil {
		return invalid("body is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("body has data after the JSON object")
	}
	return nil
}
