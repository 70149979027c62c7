package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	nackv1beta2 "github.com/nats-io/nack/pkg/jetstream/apis/jetstream/v1beta2"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The directories of this module that hold manifests, and the base that includes the others.
const (
	baseDir       = "kubernetes"
	prometheusDir = "prometheus"
	grafanaDir    = "grafana"
	// examplesDir holds what the base must not apply (a placeholder Secret would overwrite the
	// real token at every `kubectl apply -k`): the one subdirectory the kustomization does not
	// list.
	examplesDir = "kubernetes/examples"
)

// object is one Kubernetes object, as JSON: a document of a file, or one that kustomize built.
type object struct {
	APIVersion string
	Kind       string
	Name       string
	JSON       []byte
	From       string // where it came from, for messages
}

func (o object) String() string { return fmt.Sprintf("%s %s (%s)", o.Kind, o.Name, o.From) }

// newObject reads the identity of the object j.
func newObject(j []byte, from string) (object, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(j, &head); err != nil {
		return object{}, fmt.Errorf("%s: %w", from, err)
	}
	if head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
		return object{}, fmt.Errorf("%s: apiVersion, kind or metadata.name missing", from)
	}
	return object{APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, JSON: j, From: from}, nil
}

var rendered sync.Map // dir → []object

// render builds dir as `kubectl apply -k dir` does (kustomize's krusty with kubectl's default
// options: files only from within the kustomization's root), once per test run.
func render(t testing.TB, dir string) []object {
	t.Helper()
	if objs, ok := rendered.Load(dir); ok {
		return objs.([]object)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []object
	for _, r := range resMap.Resources() {
		j, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("kustomize build %s: %v", dir, err)
		}
		o, err := newObject(j, "kustomize build "+dir)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	rendered.Store(dir, objs)
	return objs
}

// readDocs reads every YAML document of path as an object; duplicate keys are errors.
func readDocs(t testing.TB, path string) []object {
	t.Helper()
	docs, err := yamlDocs(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs []object
	for i, doc := range docs {
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Fatalf("%s, document %d: %v", path, i+1, err)
		}
		o, err := newObject(j, fmt.Sprintf("%s, document %d", path, i+1))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	return objs
}

// yamlDocs splits the YAML file path into its documents, leaving out those that hold only
// comments.
func yamlDocs(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := k8syaml.NewYAMLReader(bufio.NewReader(f))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

// stripComments drops comment-only lines, to tell an empty document from a real one.
func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// typedKinds are the kinds this module's manifests may hold with Go types of their own, each
// decoded strictly: a field the type does not know is an error, as `kubectl apply
// --validate=strict` would make it. ScaledObject has none (KEDA's Go API is too heavy to
// import: see schema_test.go) and is checked against its CRD's schema instead.
var typedKinds = map[string]func() any{
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"batch/v1/CronJob":                        func() any { return &batchv1.CronJob{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
	"jetstream.nats.io/v1beta2/Stream":        func() any { return &nackv1beta2.Stream{} },
	"jetstream.nats.io/v1beta2/Consumer":      func() any { return &nackv1beta2.Consumer{} },
}

// schemaKinds are checked against the OpenAPI schema of their CRD in testdata/crds, as the API
// server would check them, defaults applied.
var schemaKinds = map[string]bool{
	"keda.sh/v1alpha1/ScaledObject":      true,
	"jetstream.nats.io/v1beta2/Stream":   true,
	"jetstream.nats.io/v1beta2/Consumer": true,
}

// check decodes o strictly as its kind, and validates it against its CRD where there is one.
// It returns the typed object, or for a kind without Go types the object with the CRD's
// defaults applied, as a map.
func check(t testing.TB, o object) (any, error) {
	t.Helper()
	gvk := o.APIVersion + "/" + o.Kind
	newT, typed := typedKinds[gvk]
	if !typed && !schemaKinds[gvk] {
		return nil, fmt.Errorf("%s: no decoder for %s; add its Go type to typedKinds or its CRD to schemaKinds", o, gvk)
	}
	j := o.JSON
	var defaulted map[string]any
	if schemaKinds[gvk] {
		var err error
		if defaulted, err = crds(t).validate(o); err != nil {
			return nil, err
		}
		if j, err = json.Marshal(defaulted); err != nil {
			return nil, err
		}
	}
	if !typed {
		return defaulted, nil
	}
	v := newT()
	if err := yaml.UnmarshalStrict(j, v); err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	return v, nil
}

// mustCheck is check, failing the test on an error.
func mustCheck[T any](t testing.TB, o object) T {
	t.Helper()
	v, err := check(t, o)
	if err != nil {
		t.Fatal(err)
	}
	typed, ok := v.(T)
	if !ok {
		t.Fatalf("%s: decoded as %T, not %T", o, v, typed)
	}
	return typed
}

// one is the only object of that kind (and name, if given) in objs.
func one(t testing.TB, objs []object, kind, name string) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.Kind == kind && (name == "" || o.Name == name) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s %q, found %d", kind, name, len(found))
	}
	return found[0]
}

// manifestFiles are this module's YAML files that hold Kubernetes objects.
func manifestFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{baseDir, examplesDir, prometheusDir, grafanaDir} {
		for _, pattern := range []string{"*.yaml", "*.yml"} {
			m, err := filepath.Glob(filepath.Join(dir, pattern))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range m {
				if filepath.Base(f) != "kustomization.yaml" {
					files = append(files, f)
				}
			}
		}
	}
	sort.Strings(files)
	return files
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	var objs []object
	for _, f := range manifestFiles(t) {
		objs = append(objs, readDocs(t, f)...)
	}
	objs = append(objs, render(t, baseDir)...)
	for _, o := range objs {
		t.Run(o.Kind+"/"+o.Name+"/"+o.From, func(t *testing.T) {
			if _, err := check(t, o); err != nil {
				t.Fatal(err)
			}
			// The decoder is really strict for this kind: a field no one knows is refused.
			var m map[string]any
			if err := json.Unmarshal(o.JSON, &m); err != nil {
				t.Fatal(err)
			}
			if spec, ok := m["spec"].(map[string]any); ok {
				spec["tallyfyNoSuchField"] = true
			} else {
				m["tallyfyNoSuchField"] = true
			}
			bad, _ := json.Marshal(m)
			if _, err := check(t, object{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, JSON: bad, From: o.From + ", with an unknown field"}); err == nil || !strings.Contains(err.Error(), "tallyfyNoSuchField") {
				t.Errorf("an unknown field was not refused: %v", err)
			}
		})
	}
}

// kustomization reads dir/kustomization.yaml strictly.
func kustomization(t testing.TB, dir string) types.Kustomization {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

// TestKustomizationsListEveryFile: every file beside a kustomization.yaml is in it (a manifest
// left out is never applied), everything it lists is there, and the base includes the alerts and
// the dashboard, so that one `kubectl apply -k deploy/kubernetes` applies everything.
func TestKustomizationsListEveryFile(t *testing.T) {
	for _, dir := range []string{baseDir, prometheusDir, grafanaDir} {
		t.Run(dir, func(t *testing.T) {
			k := kustomization(t, dir)
			listed := map[string]bool{}
			var dirs []string
			for _, r := range k.Resources {
				fi, err := os.Stat(filepath.Join(dir, r))
				if err != nil {
					t.Errorf("resource %s: %v", r, err)
					continue
				}
				if fi.IsDir() {
					dirs = append(dirs, filepath.Clean(filepath.Join(dir, r)))
					continue
				}
				listed[filepath.Clean(r)] = true
			}
			for _, g := range k.ConfigMapGenerator {
				for _, f := range append(append([]string{}, g.EnvSources...), g.FileSources...) {
					if _, path, ok := strings.Cut(f, "="); ok {
						f = path
					}
					listed[filepath.Clean(f)] = true
				}
			}
			if len(k.SecretGenerator) > 0 {
				t.Errorf("a secretGenerator would put a secret's value in the repository, or fail when its file is missing")
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				name := e.Name()
				switch {
				case e.IsDir() && filepath.Join(dir, name) == examplesDir:
				case e.IsDir():
					t.Errorf("%s/%s: a directory the kustomization does not build", dir, name)
				case name == "kustomization.yaml":
				case !listed[name]:
					t.Errorf("%s/%s is not listed in %s/kustomization.yaml: it would never be applied", dir, name, dir)
				}
				delete(listed, name)
			}
			for f := range listed {
				if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
					t.Errorf("%s/kustomization.yaml lists %s, from a subdirectory: only files beside it belong there (%s is never applied)", dir, f, examplesDir)
				} else {
					t.Errorf("%s/kustomization.yaml lists %s, which is not there", dir, f)
				}
			}
			if dir == baseDir {
				for _, want := range []string{prometheusDir, grafanaDir} {
					if !slices.Contains(dirs, want) {
						t.Errorf("%s/kustomization.yaml does not include ../%s", dir, want)
					}
				}
			}
		})
	}
}

// TestExampleSecretIsNotApplied: the placeholder token Secret is an example, never applied; the
// worker's pods mount a Secret of its name and key.
func TestExampleSecretIsNotApplied(t *testing.T) {
	for _, o := range render(t, baseDir) {
		if o.Kind == "Secret" {
			t.Errorf("kustomize build %s holds a Secret (%s): `kubectl apply -k` would overwrite the real one", baseDir, o.Name)
		}
	}
	s := exampleSecret(t)
	for k, v := range s.StringData {
		if !strings.Contains(v, "REPLACE") {
			t.Errorf("examples Secret key %s: %q does not look like a placeholder", k, v)
		}
	}
	if len(s.Data) > 0 {
		t.Errorf("examples Secret has data: only placeholders in stringData belong in the repository")
	}
}

// exampleSecret is examples/tallyfy-deleter-token.yaml.
func exampleSecret(t testing.TB) *corev1.Secret {
	t.Helper()
	docs := readDocs(t, filepath.Join(examplesDir, "tallyfy-deleter-token.yaml"))
	if len(docs) != 1 {
		t.Fatalf("examples/tallyfy-deleter-token.yaml: %d documents", len(docs))
	}
	return mustCheck[*corev1.Secret](t, docs[0])
}
