package h1

// common maps the canonical form of frequent header names to a constant
// string, so a client that sends them in another case ("content-type", as
// h2-minded clients and some load generators do) costs no allocation.
var common = map[string]string{}

func init() {
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Length", "Content-Type", "Cookie", "Host", "If-Modified-Since",
		"If-None-Match", "Keep-Alive", "Origin", "Pragma", "Referer", "Te", "Transfer-Encoding",
		"Upgrade", "User-Agent", "Expect", "Http2-Settings", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id", "Forwarded",
	} {
		common[k] = k
	}
}

// maxCanonical is the longest name canonicalized on the stack.
const maxCanonical = 64

// canonical returns name (a token) in the form http.CanonicalHeaderKey
// gives: upper case at the start and after each '-', lower case elsewhere.
// When name already has that form the substring itself is returned.
func canonical(name string) string {
	var buf [maxCanonical]byte
	b := buf[:0]
	if len(name) > maxCanonical {
		b = make([]byte, 0, len(name))
	}
	same := true
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		same = same && c == name[i]
		b = append(b, c)
		upper = c == '-'
	}
	if same {
		return name
	}
	if k, ok := common[string(b)]; ok {
		return k
	}
	return string(b)
}
