package h1

import (
	"bufio"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// newlines turns line breaks in field values into spaces.
var newlines = strings.NewReplacer("\r", " ", "\n", " ")

// WriteField writes one header field line, skipping invalid names and
// turning line breaks in values into spaces, as http.Header.Write does: a
// value from configuration or from a backend must never split the head.
func WriteField(bw *bufio.Writer, k, v string) {
	if !httpguts.ValidHeaderFieldName(k) {
		return
	}
	if strings.ContainsAny(v, "\r\n") {
		v = newlines.Replace(v)
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(strings.Trim(v, " \t"))
	bw.WriteString("\r\n")
}
