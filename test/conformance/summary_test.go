package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	s, err := summarize([]string{"testdata/junit.xml"}, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if s.Passed != 1 || s.Failed != 1 || s.Skipped != 2 {
		t.Errorf("got %d passed, %d failed, %d skipped; want 1, 1, 2 (suite set-up nodes not counted)", s.Passed, s.Failed, s.Skipped)
	}
	text := s.String()
	for _, want := range []string{
		"conformance: 1 passed, 1 failed, 2 skipped\n",
		"- [It] [sig-network] Services should be able to up and down services: service verification failed for: 10.96.0.12\n",
		"- junit: 1 passed, 1 failed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
}

func TestSummarizeRefusesAReportItCannotRead(t *testing.T) {
	if _, err := summarize([]string{"testdata/missing.xml"}, 0); err == nil {
		t.Error("a missing report gave no error")
	}
}

// A run whose suite never started (seen: a relative image list path that
// e2e.test could not open) summarizes as 0 passed, 0 failed: it must fail.
func TestPassErrors(t *testing.T) {
	ok := []passResult{{name: "parallel", log: "p.log"}}
	broken := []passResult{{name: "parallel", log: "p.log", err: errors.New("exit status 1")}}
	for _, tc := range []struct {
		name    string
		rs      []passResult
		s       summary
		wantErr string
	}{
		{"all passed", ok, summary{Passed: 3}, ""},
		{"nothing ran", ok, summary{}, "no test ran"},
		{"ginkgo failed with every test passed", broken, summary{Passed: 3}, "the parallel pass failed outside any test"},
	} {
		err := passErrors(tc.rs, tc.s)
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}
