package worker_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestEveryConstantListed: worker.Outcomes and worker.Reasons hold every
// Outcome and Reason constant the package declares, once. The constants
// are read from the package's source, so one added and not listed fails
// here.
func TestEveryConstantListed(t *testing.T) {
	declared := declaredConstants(t, "Outcome", "Reason")
	tests := []struct {
		typ    string
		listed []string
	}{
		{"Outcome", stringsOf(worker.Outcomes)},
		{"Reason", stringsOf(worker.Reasons)},
	}
	for _, tc := range tests {
		t.Run(tc.typ, func(t *testing.T) {
			want := declared[tc.typ]
			if len(want) == 0 {
				t.Fatalf("found no %s constants in the source: the parse is broken", tc.typ)
			}
			got := slices.Sorted(slices.Values(tc.listed))
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("listed %ss %v, declared %v", tc.typ, got, want)
			}
		})
	}
}

func stringsOf[S ~string](xs []S) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return out
}

// declaredConstants maps each of types to the values of the constants of
// that type declared in the package's non-test files, whether typed
// (X Outcome = "x") or converted (X = Outcome("x")).
func declaredConstants(t *testing.T, types ...string) map[string][]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i := range vs.Names {
					if typ, val, ok := typedString(vs, i); ok && slices.Contains(types, typ) {
						out[typ] = append(out[typ], val)
					}
				}
			}
		}
	}
	return out
}

// typedString reads the type and string value of the i'th constant of vs.
func typedString(vs *ast.ValueSpec, i int) (typ, val string, ok bool) {
	if i >= len(vs.Values) {
		return "", "", false
	}
	v := vs.Values[i]
	if id, isIdent := vs.Type.(*ast.Ident); isIdent {
		typ = id.Name
	} else if call, isCall := v.(*ast.CallExpr); isCall && len(call.Args) == 1 {
		if id, isIdent := call.Fun.(*ast.Ident); isIdent {
			typ, v = id.Name, call.Args[0]
		}
	}
	lit, isLit := v.(*ast.BasicLit)
	if typ == "" || !isLit || lit.Kind != token.STRING {
		return "", "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return typ, s, err == nil
}
