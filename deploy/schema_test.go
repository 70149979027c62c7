package deploy

// A small, strict checker of custom resources against their CRD's OpenAPI v3 schema, as the API
// server checks them: unknown fields, types, enums, patterns, bounds, required fields, and the
// schema's defaults applied. KEDA's Go API (github.com/kedacore/keda/v2/apis/keda/v1alpha1)
// would give ScaledObject a type, but v2.20.2 pulls in 822 packages (client-go's informers and
// listers, controller-runtime's webhooks), took 230 s to compile cold on two cores, and does not
// even compile without KEDA's own replace directives; v2.21 needs Go 1.27. The API server's own
// validator (k8s.io/apiextensions-apiserver's structural schemas, pruning and validation) is 465
// packages and 110 s, for CEL and more we do not need. The schemas here use a small subset of
// OpenAPI: this checker implements that subset and refuses a schema that uses anything else, so
// it cannot pass what it does not understand. The CRDs are copied from upstream into
// testdata/crds, each with its source and version.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// openAPISchema is the part of OpenAPI v3 the CRDs use.
type openAPISchema struct {
	Type                 string                    `json:"type"`
	Properties           map[string]*openAPISchema `json:"properties"`
	AdditionalProperties *openAPISchema            `json:"additionalProperties"`
	Items                *openAPISchema            `json:"items"`
	Required             []string                  `json:"required"`
	Enum                 []any                     `json:"enum"`
	Pattern              string                    `json:"pattern"`
	Minimum              *float64                  `json:"minimum"`
	Maximum              *float64                  `json:"maximum"`
	MinLength            *int                      `json:"minLength"`
	MinItems             *int                      `json:"minItems"`
	Format               string                    `json:"format"`
	Default              any                       `json:"default"`
	AnyOf                []*openAPISchema          `json:"anyOf"`
	IntOrString          bool                      `json:"x-kubernetes-int-or-string"`
	PreserveUnknown      bool                      `json:"x-kubernetes-preserve-unknown-fields"`

	// Documentation, and what the API server uses for merging lists: no effect on validity.
	Description string `json:"description"`
	ListType    string `json:"x-kubernetes-list-type"`
	// CEL rules cannot be evaluated here; the tests check by hand the one the KEDA CRD has
	// (minReplicaCount <= maxReplicaCount, in scaling_test.go).
	Validations []any `json:"x-kubernetes-validations"`
}

// crd is the part of a CustomResourceDefinition the checker needs.
type crd struct {
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Versions []struct {
			Name   string `json:"name"`
			Served bool   `json:"served"`
			Schema struct {
				OpenAPIV3Schema json.RawMessage `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// schemas maps group/version/kind to the schema of each served version.
type schemas map[string]*openAPISchema

var (
	crdsOnce   sync.Once
	crdSchemas schemas
	crdsErr    error
)

// crds reads every CRD in testdata/crds, once.
func crds(t testing.TB) schemas {
	t.Helper()
	crdsOnce.Do(func() { crdSchemas, crdsErr = loadCRDs(filepath.Join("testdata", "crds")) })
	if crdsErr != nil {
		t.Fatal(crdsErr)
	}
	return crdSchemas
}

func loadCRDs(dir string) (schemas, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.y*ml"))
	if err != nil {
		return nil, err
	}
	out := schemas{}
	for _, f := range files {
		docs, err := yamlDocs(f)
		if err != nil {
			return nil, err
		}
		for i, doc := range docs {
			var c crd
			if err := yaml.Unmarshal(doc, &c); err != nil {
				return nil, fmt.Errorf("%s, document %d: %w", f, i+1, err)
			}
			for _, v := range c.Spec.Versions {
				if !v.Served {
					continue
				}
				var s openAPISchema
				// Strict: a keyword this checker does not implement fails here, by name.
				if err := yaml.UnmarshalStrict(v.Schema.OpenAPIV3Schema, &s); err != nil {
					return nil, fmt.Errorf("%s, %s %s: the schema uses what this checker does not implement: %w", f, c.Spec.Names.Kind, v.Name, err)
				}
				out[c.Spec.Group+"/"+v.Name+"/"+c.Spec.Names.Kind] = &s
			}
		}
	}
	return out, nil
}

// validate checks o against its CRD's schema and returns it with the schema's defaults applied.
// metadata is checked as ObjectMeta, strictly.
func (s schemas) validate(o object) (map[string]any, error) {
	sch, ok := s[o.APIVersion+"/"+o.Kind]
	if !ok {
		return nil, fmt.Errorf("%s: no CRD for %s/%s in testdata/crds", o, o.APIVersion, o.Kind)
	}
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(o.JSON))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	var errs []string
	if meta, ok := v["metadata"]; ok {
		mj, _ := json.Marshal(meta)
		if err := yaml.UnmarshalStrict(mj, &metav1.ObjectMeta{}); err != nil {
			errs = append(errs, "metadata: "+err.Error())
		}
	}
	body := map[string]any{}
	for k, val := range v {
		if k != "apiVersion" && k != "kind" && k != "metadata" {
			body[k] = val
		}
	}
	out := validateValue(sch, body, "", &errs).(map[string]any)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s does not fit its CRD's schema:\n  %s", o, strings.Join(errs, "\n  "))
	}
	for _, k := range []string{"apiVersion", "kind", "metadata"} {
		if val, ok := v[k]; ok {
			out[k] = val
		}
	}
	return out, nil
}

// validateValue checks v against s at path, appending problems to errs, and returns v with
// defaults applied to the objects in it.
func validateValue(s *openAPISchema, v any, path string, errs *[]string) any {
	bad := func(format string, a ...any) { *errs = append(*errs, orRoot(path)+": "+fmt.Sprintf(format, a...)) }
	if v == nil {
		bad("null")
		return v
	}
	if len(s.AnyOf) > 0 {
		ok := false
		for _, alt := range s.AnyOf {
			var altErrs []string
			validateValue(alt, v, path, &altErrs)
			ok = ok || len(altErrs) == 0
		}
		if !ok {
			bad("%v fits none of its anyOf schemas", v)
		}
	}
	if s.IntOrString {
		switch x := v.(type) {
		case string:
		case json.Number:
			if _, err := x.Int64(); err != nil {
				bad("%v is neither an integer nor a string", v)
			}
		default:
			bad("%v is neither an integer nor a string", v)
		}
		return v
	}
	if len(s.Enum) > 0 {
		found := false
		for _, e := range s.Enum {
			found = found || fmt.Sprint(e) == fmt.Sprint(v)
		}
		if !found {
			bad("%v is not one of %v", v, s.Enum)
		}
	}
	switch s.Type {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want an object, not %T", v)
			return v
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch p, ok := s.Properties[k]; {
			case ok:
				m[k] = validateValue(p, m[k], path+"."+k, errs)
			case s.AdditionalProperties != nil:
				m[k] = validateValue(s.AdditionalProperties, m[k], path+"."+k, errs)
			case s.PreserveUnknown:
			default:
				bad("unknown field %q", k)
			}
		}
		for _, r := range s.Required {
			if _, ok := m[r]; !ok {
				bad("required field %q missing", r)
			}
		}
		names := make([]string, 0, len(s.Properties))
		for k := range s.Properties {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if _, ok := m[k]; !ok && s.Properties[k].Default != nil {
				m[k] = copyJSON(s.Properties[k].Default)
			}
		}
		return m
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("want an array, not %T", v)
			return v
		}
		if s.MinItems != nil && len(a) < *s.MinItems {
			bad("%d items, fewer than %d", len(a), *s.MinItems)
		}
		if s.Items != nil {
			for i := range a {
				a[i] = validateValue(s.Items, a[i], fmt.Sprintf("%s[%d]", path, i), errs)
			}
		}
		return a
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("want a string, not %v", v)
			return v
		}
		if s.MinLength != nil && utf8.RuneCountInString(str) < *s.MinLength {
			bad("%q is shorter than %d", str, *s.MinLength)
		}
		if s.Pattern != "" {
			re, err := regexp.Compile(s.Pattern)
			if err != nil {
				bad("the schema's pattern %q: %v", s.Pattern, err)
			} else if !re.MatchString(str) {
				bad("%q does not match %s", str, s.Pattern)
			}
		}
		switch s.Format {
		case "":
		case "date-time":
			if _, err := time.Parse(time.RFC3339, str); err != nil {
				bad("%q is not a date-time", str)
			}
		default:
			bad("string format %q: not implemented by this checker", s.Format)
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			bad("want a number, not %v", v)
			return v
		}
		f, err := n.Float64()
		if err != nil {
			bad("%v: %v", v, err)
			return v
		}
		if s.Type == "integer" {
			i, err := n.Int64()
			switch {
			case err != nil:
				bad("%v is not an integer", v)
			case s.Format == "int32" && (i < math.MinInt32 || i > math.MaxInt32):
				bad("%d does not fit int32", i)
			case s.Format != "" && s.Format != "int32" && s.Format != "int64":
				bad("integer format %q: not implemented by this checker", s.Format)
			}
		}
		if s.Minimum != nil && f < *s.Minimum {
			bad("%v is less than %v", v, *s.Minimum)
		}
		if s.Maximum != nil && f > *s.Maximum {
			bad("%v is more than %v", v, *s.Maximum)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want a boolean, not %v", v)
		}
	case "":
		if len(s.AnyOf) == 0 && !s.PreserveUnknown {
			bad("the schema gives no type")
		}
	default:
		bad("type %q: not implemented by this checker", s.Type)
	}
	return v
}

func orRoot(path string) string {
	if path == "" {
		return "."
	}
	return path
}

// copyJSON is a deep copy of a default, so that applying it twice shares nothing.
func copyJSON(v any) any {
	b, _ := json.Marshal(v)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	_ = dec.Decode(&out)
	return out
}

// TestSchemaChecker: the checker refuses what the API server would refuse, and applies defaults.
func TestSchemaChecker(t *testing.T) {
	const crdYAML = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  group: example.com
  names: {kind: Widget}
  versions:
  - name: v1
    served: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [name]
            properties:
              name: {type: string, pattern: '^[a-z]+$', minLength: 1}
              mode: {type: string, enum: [fast, slow], default: slow}
              count: {type: integer, format: int32, minimum: 1, maximum: 10}
              ratio: {type: number}
              enabled: {type: boolean}
              tags: {type: array, minItems: 1, items: {type: string}}
              labels: {type: object, additionalProperties: {type: string}}
              port: {x-kubernetes-int-or-string: true, anyOf: [{type: integer}, {type: string}]}
              nested:
                type: object
                properties:
                  depth: {type: integer, default: 3}
`
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "widget.yaml"), []byte(crdYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := loadCRDs(dir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		spec    string
		wantErr string // "" for valid
		want    string // the defaulted spec, when valid
	}{
		{name: "valid, defaults applied", spec: `{"name":"a","nested":{}}`,
			want: `{"mode":"slow","name":"a","nested":{"depth":3}}`},
		{name: "unknown field", spec: `{"name":"a","nmae":"b"}`, wantErr: `.spec: unknown field "nmae"`},
		{name: "unknown nested field", spec: `{"name":"a","nested":{"dept":1}}`, wantErr: `.spec.nested: unknown field "dept"`},
		{name: "required missing", spec: `{"mode":"fast"}`, wantErr: `required field "name" missing`},
		{name: "enum", spec: `{"name":"a","mode":"medium"}`, wantErr: `.spec.mode: medium is not one of`},
		{name: "pattern", spec: `{"name":"A"}`, wantErr: `does not match`},
		{name: "minLength", spec: `{"name":""}`, wantErr: `shorter than 1`},
		{name: "string for integer", spec: `{"name":"a","count":"3"}`, wantErr: `.spec.count: want a number`},
		{name: "fraction for integer", spec: `{"name":"a","count":1.5}`, wantErr: `not an integer`},
		{name: "maximum", spec: `{"name":"a","count":11}`, wantErr: `more than 10`},
		{name: "minimum", spec: `{"name":"a","count":0}`, wantErr: `less than 1`},
		{name: "boolean", spec: `{"name":"a","enabled":"yes"}`, wantErr: `want a boolean`},
		{name: "array", spec: `{"name":"a","tags":"x"}`, wantErr: `want an array`},
		{name: "minItems", spec: `{"name":"a","tags":[]}`, wantErr: `fewer than 1`},
		{name: "array item", spec: `{"name":"a","tags":[1]}`, wantErr: `.spec.tags[0]: want a string`},
		{name: "map values", spec: `{"name":"a","labels":{"k":1}}`, wantErr: `.spec.labels.k: want a string`},
		{name: "int or string", spec: `{"name":"a","port":true}`, wantErr: `neither an integer nor a string`},
		{name: "null", spec: `{"name":null}`, wantErr: `.spec.name: null`},
		{name: "int or string, both kinds", spec: `{"name":"a","port":"http","ratio":0.5,"labels":{"k":"v"}}`,
			want: `{"labels":{"k":"v"},"mode":"slow","name":"a","port":"http","ratio":0.5}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := object{APIVersion: "example.com/v1", Kind: "Widget", Name: "w", From: "test",
				JSON: []byte(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":` + tt.spec + `}`)}
			got, err := s.validate(o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want any
			_ = json.Unmarshal([]byte(tt.want), &want)
			gotSpec, _ := json.Marshal(got["spec"])
			var gotV any
			_ = json.Unmarshal(gotSpec, &gotV)
			if !reflect.DeepEqual(gotV, want) {
				t.Errorf("spec = %s, want %s", gotSpec, tt.want)
			}
		})
	}

	t.Run("metadata is ObjectMeta", func(t *testing.T) {
		o := object{APIVersion: "example.com/v1", Kind: "Widget", Name: "w", From: "test",
			JSON: []byte(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","lables":{}},"spec":{"name":"a"}}`)}
		if _, err := s.validate(o); err == nil || !strings.Contains(err.Error(), "lables") {
			t.Fatalf("err = %v, want unknown field lables", err)
		}
	})
	t.Run("a schema keyword the checker does not know", func(t *testing.T) {
		bad := strings.Replace(crdYAML, "minItems: 1", "maxItems: 1", 1)
		if err := os.WriteFile(filepath.Join(dir, "widget.yaml"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadCRDs(dir); err == nil || !strings.Contains(err.Error(), "maxItems") {
			t.Fatalf("err = %v, want one naming maxItems", err)
		}
	})
}
