package main

import (
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// junit is the part of ginkgo's JUnit report the summary reads.
type junit struct {
	Suites []struct {
		Cases []junitCase `xml:"testcase"`
	} `xml:"testsuite"`
}

type junitCase struct {
	Name    string  `xml:"name,attr"`
	Status  string  `xml:"status,attr"`
	Time    float64 `xml:"time,attr"`
	Failure *struct {
		Message string `xml:"message,attr"`
	} `xml:"failure"`
	Skipped *struct{} `xml:"skipped"`
}

// ansi matches the colour codes ginkgo leaves in some failure messages.
var ansi = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// summary counts what the passes did.
type summary struct {
	Passed, Failed, Skipped int
	Took                    time.Duration
	Passes                  []string // one line per pass
	Failures                []string // test name: first line of the reason
}

func summarize(reports []string, took time.Duration) (summary, error) {
	s := summary{Took: took}
	for _, path := range reports {
		b, err := os.ReadFile(path)
		if err != nil {
			return s, err
		}
		var j junit
		if err := xml.Unmarshal(b, &j); err != nil {
			return s, fmt.Errorf("read JUnit report %s: %w", path, err)
		}
		var passed, failed int
		var secs float64
		for _, suite := range j.Suites {
			for _, tc := range suite.Cases {
				// Tests are "[It] ..."; suite set-up nodes
				// ("[SynchronizedBeforeSuite]", ...) count only when they
				// fail: then no test after them could run.
				setup := !strings.HasPrefix(tc.Name, "[It] ")
				switch {
				case tc.Failure != nil || tc.Status == "failed" || tc.Status == "panicked" || tc.Status == "timedout":
					failed++
					reason := ""
					if tc.Failure != nil {
						reason, _, _ = strings.Cut(strings.TrimSpace(ansi.ReplaceAllString(tc.Failure.Message, "")), "\n")
					}
					s.Failures = append(s.Failures, fmt.Sprintf("%s: %s", tc.Name, reason))
				case tc.Skipped != nil || tc.Status == "skipped" || tc.Status == "pending":
					if !setup {
						s.Skipped++
					}
				case !setup:
					passed++
				}
				secs += tc.Time
			}
		}
		s.Passed += passed
		s.Failed += failed
		s.Passes = append(s.Passes, fmt.Sprintf("%s: %d passed, %d failed (test time %v)",
			strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "junit_"), ".xml"), passed, failed,
			(time.Duration(secs)*time.Second).Round(time.Second)))
	}
	return s, nil
}

// String is the summary as Markdown; its first line is the plain
// "N passed, N failed" line test runners print.
func (s summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "conformance: %d passed, %d failed, %d skipped\n\n", s.Passed, s.Failed, s.Skipped)
	fmt.Fprintf(&b, "Wall time, cluster start to summary: %v\n\n", s.Took.Round(time.Second))
	for _, p := range s.Passes {
		fmt.Fprintf(&b, "- %s\n", p)
	}
	if len(s.Failures) > 0 {
		b.WriteString("\nFailed:\n")
		for _, f := range s.Failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	return b.String()
}
