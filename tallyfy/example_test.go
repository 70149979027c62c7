package tallyfy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

func ExampleClient_DeleteRun() {
	// A stand-in for Tallyfy that refuses because the run is not archived.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "abc")
		w.WriteHeader(http.StatusUnprocessableEntity)
		io.WriteString(w, `{"error": true, "message": "Process isn't archived"}`)
	}))
	defer srv.Close()

	api, err := tallyfy.New(srv.URL+"/api", tallyfy.WithToken("personal-access-token"))
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = api.DeleteRun(context.Background(), "org1", "run1")
	var apiErr *tallyfy.APIError
	fmt.Println(err)
	fmt.Println(errors.Is(err, tallyfy.ErrNotArchived), errors.Is(err, tallyfy.ErrNotFound))
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, apiErr.RequestID)
	}
	// Output:
	// tallyfy: 422 Unprocessable Entity: Process isn't archived (request_id abc)
	// true false
	// 422 abc
}
