package main

import (
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
